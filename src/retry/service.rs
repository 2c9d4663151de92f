//! [`RetryAfter`]: the service.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::attempts::Attempts;
use super::backoff::{splitmix64, GOLDEN_GAMMA};
use super::budget::Budget;
use super::future::ResponseFuture;
use super::policy::{
    self, Attempt, Decide, Facts, Limits, Outcome, Standard, Step, StopReason, Verdict,
};
use super::replay::ReplayBody;
use super::RetryAfterLayer;
use crate::classify::{Classification, QuotaClass};
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
    /// Whether a JSON body in memory is read for the limiter (see `RetryAfterLayer`).
    pub(crate) read_facts: bool,
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

    /// The next step after the `attempts`th attempt (started at `start`, read only with a
    /// deadline): decides, applies the bounds and the budget, and says so in a tracing event.
    /// Shared by the tower service and the reqwest middleware.
    pub(crate) fn next_step<E>(
        &self,
        attempts: u32,
        start: Option<Instant>,
        outcome: Outcome<'_, E>,
        replayable: bool,
    ) -> Step
    where
        D: Decide<E>,
    {
        let verdict = self.decide.decide(&Attempt::new(attempts, outcome));
        let classification = match outcome {
            Outcome::Response { classification, .. } => Some(classification),
            Outcome::Error(_) => None,
        };
        let class = classification.map(Classification::class);
        if verdict == Verdict::Stop && class == Some(QuotaClass::Success) {
            // The common case: no randomness, no budget, no event.
            return Step::Stop(StopReason::Success);
        }
        // Time is read only when a deadline needs it.
        let elapsed = start.map_or(Duration::ZERO, |t| t.elapsed());
        let facts = Facts {
            attempts,
            elapsed,
            class,
            server_delay: classification.and_then(Classification::retry_after),
            replayable,
        };
        let mut step = policy::plan(&self.limits, facts, verdict, self.random());
        if let Step::Retry(_) = step {
            if !self.budget.withdraw() {
                step = Step::Stop(StopReason::BudgetExhausted);
            }
        }
        let class = class.map_or("transport_error", QuotaClass::as_str);
        match step {
            Step::Retry(delay) => tracing::debug!(
                attempts,
                class,
                delay_ms = delay_ms(delay),
                server_delay_ms = facts.server_delay.map(delay_ms),
                "retrying"
            ),
            Step::Stop(reason) => tracing::debug!(
                attempts,
                class,
                reason = reason.as_str(),
                server_delay_ms = facts.server_delay.map(delay_ms),
                "not retrying"
            ),
        }
        step
    }
}

fn delay_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
            .field("max_delay", &self.shared.limits.max_delay)
            .field("deadline", &self.shared.limits.deadline)
            .finish_non_exhaustive()
    }
}

impl<S, D, ReqB, ResB> Service<http::Request<ReqB>> for RetryAfter<S, D>
where
    S: Service<http::Request<ReplayBody<ReqB>>, Response = http::Response<ResB>> + Clone,
    S::Error: 'static,
    ReqB: Body + Unpin,
    ReqB::Error: Into<tower::BoxError>,
    D: Decide<S::Error>,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, D, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        // The service that was driven ready sends the first attempt and stays with the
        // future for the retries; a clone takes its place here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut attempts = Attempts::new(Arc::clone(&self.shared));
        let (mut parts, body) = req.into_parts();
        let cap = attempts.shared().max_replay_bytes;
        let mut body = ReplayBody::new(body, cap);
        // A JSON body in memory is read once, now, for the limiter: its model and token
        // costs (`tokens::RequestFacts`). What is read is recorded; a replay sends it.
        if attempts.shared().read_facts
            && crate::tokens::extract::worth_reading(&parts.headers, &body.size_hint(), cap as u64)
        {
            let (replay, chunks) = body.read_ready();
            body = replay;
            if let Some(chunks) = chunks {
                crate::tokens::extract::note_facts(&mut parts.extensions, &chunks);
            }
        }
        let template = attempts.may_retry().then(|| (parts.clone(), body.replay()));
        attempts.begin();
        let future = inner.call(http::Request::from_parts(parts, body));
        ResponseFuture::new(future, inner, attempts, template)
    }
}
