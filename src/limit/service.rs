//! [`RateLimit`]: the service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::key::RequestHead;
use super::layer::{Admit, Policy};
use super::limiter::Limiter;
use super::BoxError;

/// Holds each request until its tier admits it (or fails it), then calls the inner service
/// and learns from the response. Made by [`RateLimitLayer`](super::RateLimitLayer); clones
/// share one [`Limiter`].
///
/// `poll_ready` is always ready: the key is known only from the request, so the wait happens
/// in the response future, and only once admitted does the request call a clone of the inner
/// service — at once, in `call`, when the request is admitted at once and the clone is ready
/// (the common case: the response future then holds the inner service's future, not the
/// request); else the response future drives the clone ready (tower's `Oneshot`) and calls
/// it. A waiting request so never holds a slot that the inner service's readiness reserves
/// (a `Buffer`, a tonic `Channel`, a `ConcurrencyLimit`, a connection pool): the requests of
/// other keys pass it. The backlog is bounded by the limiter's `max_wait` and `max_queue`,
/// and visible as [`Limiter::waiting`]; a `ConcurrencyLimit` above this layer counts waiting
/// requests as in flight.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> RateLimit<S> {
    pub(crate) fn from_policy(inner: S, policy: Arc<Policy>) -> RateLimit<S> {
        RateLimit { inner, policy }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.policy.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let Some((admit, learn)) = self.policy.admission(&RequestHead::of(&req)) else {
            return ResponseFuture::calling(inner, req, None, None, None);
        };
        // The classification layer below takes it, to correct a token reservation to the
        // usage the response reports.
        if let Some(hook) = learn.as_ref().and_then(|l| l.hook.clone()) {
            req.extensions_mut().insert(hook);
        }
        match admit {
            Admit::Now(Ok(at), place) => {
                ResponseFuture::calling(inner, req, learn, Some(at), place)
            }
            Admit::Now(Err(e), _) => ResponseFuture::failed(e.into_box()),
            Admit::Wait(mut acquire) => {
                // Decide now if the store can, with a no-op waker (a pending `Acquire`
                // re-registers the real waker when the response future polls it).
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut acquire).poll(&mut cx) {
                    Poll::Ready(Ok(())) => {
                        let place = acquire.take_place();
                        ResponseFuture::calling(inner, req, learn, None, place)
                    }
                    Poll::Ready(Err(e)) => ResponseFuture::failed(e.into_box()),
                    Poll::Pending => ResponseFuture::waiting(*acquire, inner, req, learn),
                }
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policy", &*self.policy)
            .finish()
    }
}
