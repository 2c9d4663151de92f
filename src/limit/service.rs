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
use super::layer::Policy;
use super::limiter::Limiter;
use super::BoxError;

/// Holds each request until its tier admits it (or fails it), then calls the inner service
/// and learns from the response. Made by [`RateLimitLayer`](super::RateLimitLayer); clones
/// share one [`Limiter`].
///
/// `poll_ready` forwards the inner service's readiness. The wait happens in the response
/// future, since the key is only known from the request: when a request is admitted at once
/// (the common case) the inner service is called right in `call`; otherwise the ready inner
/// service is moved into the future (a clone takes its place) and called on admission.
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some((mut acquire, learn)) = self.policy.admission(&RequestHead::of(&req)) else {
            return ResponseFuture::calling(self.inner.call(req), None);
        };
        // Most requests are admissible at once: decide now, with a no-op waker (a pending
        // `Acquire` re-registers the real waker when the response future polls it).
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut acquire).poll(&mut cx) {
            Poll::Ready(Ok(())) => ResponseFuture::calling(self.inner.call(req), learn),
            Poll::Ready(Err(e)) => ResponseFuture::failed(e.into_box()),
            Poll::Pending => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(acquire, inner, req, learn)
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
