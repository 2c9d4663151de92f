//! [`RetryAfter`]: the service.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::Body;
use tower_service::Service;

use super::backoff::{splitmix64, GOLDEN_GAMMA};
use super::budget::Budget;
use super::future::ResponseFuture;
use super::policy::{Decide, Limits, Standard};
use super::replay::ReplayBody;
use super::RetryAfterLayer;
use crate::classify::Classification;
use crate::clock::WallClock;

/// Retries requests exactly as the server asks: see the [module docs](crate::retry).
///
/// Made by [`RetryAfterLayer`]. Clones share the configuration, the jitter source and the
/// retry budget.
pub struct RetryAfter<S, D = Standard> {
    inner: S,
    shared: Arc<Shared<D>>,
}

/// What every clone of a [`RetryAfter`] shares.
pub(crate) struct Shared<D> {
    pub(crate) limits: Limits,
    pub(crate) max_replay_bytes: usize,
    pub(crate) budget: Arc<dyn Budget + Send + Sync>,
    pub(crate) decide: D,
    pub(crate) rng: AtomicU64,
    pub(crate) clock: WallClock,
    /// What the decision sees for a 1xx–3xx response that carries no classification.
    pub(crate) success: Classification,
}

impl<D> Shared<D> {
    /// A uniformly random word (SplitMix64 over a shared atomic counter).
    pub(crate) fn random(&self) -> u64 {
        let x = self.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed);
        splitmix64(x.wrapping_add(GOLDEN_GAMMA))
    }
}

impl<S> RetryAfter<S> {
    /// Wraps `inner` with the default [`RetryAfterLayer`].
    pub fn new(inner: S) -> Self {
        Self::from_shared(inner, RetryAfterLayer::new().shared())
    }

    /// The default [`RetryAfterLayer`].
    pub fn layer() -> RetryAfterLayer {
        RetryAfterLayer::new()
    }
}

impl<S, D> RetryAfter<S, D> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<D>>) -> Self {
        RetryAfter { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, D> Clone for RetryAfter<S, D> {
    fn clone(&self) -> Self {
        RetryAfter {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, D> fmt::Debug for RetryAfter<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryAfter")
            .field("inner", &self.inner)
            .field("max_attempts", &self.shared.limits.max_attempts)
            .field("max_wait", &self.shared.limits.max_wait)
            .field("deadline", &self.shared.limits.deadline)
            .finish_non_exhaustive()
    }
}

impl<S, D, ReqB, ResB> Service<http::Request<ReqB>> for RetryAfter<S, D>
where
    S: Service<http::Request<ReplayBody<ReqB>>, Response = http::Response<ResB>> + Clone,
    ReqB: Body,
    D: Decide<S::Error>,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, D>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        // The service that was driven ready sends the first attempt and stays with the
        // future for the retries; a clone takes its place here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        shared.budget.deposit();
        let (parts, body) = req.into_parts();
        let body = ReplayBody::new(body, shared.max_replay_bytes);
        let template = if shared.limits.max_attempts > 1 {
            Some((parts.clone(), body.replay()))
        } else {
            None
        };
        let future = inner.call(http::Request::from_parts(parts, body));
        ResponseFuture::new(future, inner, shared, template)
    }
}
