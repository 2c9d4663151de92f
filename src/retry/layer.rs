//! [`RetryAfterLayer`]: the configuration of [`RetryAfter`].

use std::any::type_name;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::backoff::{self, Backoff};
use super::budget::{Budget, TpsBudget};
use super::policy::{Limits, Standard};
use super::replay::DEFAULT_MAX_REPLAY_BYTES;
use super::service::{RetryAfter, Shared};
use crate::classify::{Classification, QuotaClass};
use crate::clock::WallClock;

/// Retries requests exactly as the server asks: see the [module docs](crate::retry).
///
/// | setting | default |
/// |---|---|
/// | [`with_max_attempts`](Self::with_max_attempts) | 5 attempts in all |
/// | [`with_max_delay`](Self::with_max_delay) | 60 s |
/// | [`with_deadline`](Self::with_deadline) | none |
/// | [`with_backoff`](Self::with_backoff) | 0.5 s doubling to 8 s, equal jitter |
/// | [`with_budget`](Self::with_budget) | [`TpsBudget::default()`], shared by every service the layer makes |
/// | [`with_max_replay_bytes`](Self::with_max_replay_bytes) | 2 MiB |
/// | [`with_decide`](Self::with_decide) | [`Standard`] |
///
/// `D` is the [`Decide`](super::Decide) that says whether an attempt is worth repeating.
#[derive(Clone)]
pub struct RetryAfterLayer<D = Standard> {
    pub(crate) limits: Limits,
    pub(crate) max_replay_bytes: usize,
    pub(crate) budget: Arc<dyn Budget + Send + Sync>,
    pub(crate) decide: D,
    pub(crate) seed: Option<u64>,
    pub(crate) clock: WallClock,
    /// Whether a JSON body in memory is read for the limiter below (`tokens::RequestFacts`).
    /// A `QuotaLayer` turns it off when its rate limit has no use for it.
    pub(crate) read_facts: bool,
}

impl RetryAfterLayer {
    /// A layer with the defaults above.
    pub fn new() -> Self {
        RetryAfterLayer {
            limits: Limits::default(),
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            budget: Arc::new(TpsBudget::default()),
            decide: Standard,
            seed: None,
            clock: WallClock::system(),
            read_facts: true,
        }
    }
}

impl Default for RetryAfterLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> RetryAfterLayer<D> {
    /// Sets the number of attempts in all, the first included (at least 1: `1` never retries).
    /// An attempt refused for a reason this process learned while it was on the wire (a
    /// [`Foreseen`](crate::limit::Foreseen) refusal) is not counted, unless it was the last;
    /// up to `attempts` of them are let off, so a request is sent at most twice `attempts`
    /// times.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.limits.max_attempts = attempts.max(1);
        self
    }

    /// Sets the longest server-given delay that is waited out. A longer one (a daily quota
    /// that resets at midnight, say) is not waited for: the response is returned at once, with
    /// [`StopReason::DelayTooLong`](super::StopReason::DelayTooLong).
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.limits.max_delay = max_delay;
        self
    }

    /// The old name of [`with_max_delay`](Self::with_max_delay): "max wait" is the limiter's
    /// bound on a wait for admission.
    #[deprecated(since = "0.2.0", note = "renamed `with_max_delay`")]
    pub fn with_max_wait(self, max_delay: Duration) -> Self {
        self.with_max_delay(max_delay)
    }

    /// Sets an overall deadline, measured from the request's entry into the service: no retry
    /// is started (nor waited for) that would begin later than this. It does not cut an
    /// attempt short — put a `tower::timeout::TimeoutLayer` outside this layer for that.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.limits.deadline = Some(deadline);
        self
    }

    /// Sets the backoff used when the server gave no delay.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.limits.backoff = backoff;
        self
    }

    /// Sets the retry budget. It is shared by every service this layer makes (and their
    /// clones); pass [`NoBudget`](super::NoBudget) to go without one.
    pub fn with_budget(mut self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// Sets the retry budget to one shared with others (other layers, or your own code).
    pub fn with_shared_budget(mut self, budget: Arc<dyn Budget + Send + Sync>) -> Self {
        self.budget = budget;
        self
    }

    /// Sets how many bytes of a request body are recorded for replay. A body larger than this
    /// is sent once, intact, and not retried. See [`ReplayBody`](super::ReplayBody).
    pub fn with_max_replay_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_bytes = bytes;
        self
    }

    /// Seeds the jitter, for reproducible delays (by default each service is seeded at
    /// random).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the wall clock that HTTP-date delays are resolved against when a response carries
    /// no [`Classification`](crate::classify::Classification) and one is derived.
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether a JSON request body in memory is read for a rate limit below this layer
    /// ([`tokens::RequestFacts`](crate::tokens::RequestFacts): the model, for
    /// [`KeyBy::Model`](crate::limit::KeyBy::Model) and tier selectors, and the token
    /// estimate of token quotas). On by default: this layer cannot see what is below it. Turn
    /// it off when nothing below uses them (a chat request of 60 bytes costs about 0.4 µs
    /// more with it, `cargo bench --bench retry`); a [`QuotaLayer`](crate::QuotaLayer) sets
    /// it from its own rate limit.
    ///
    /// ```
    /// use tower_quota::RetryAfterLayer;
    ///
    /// let layer = RetryAfterLayer::new().with_request_facts(false);
    /// assert!(!layer.request_facts());
    /// ```
    pub fn with_request_facts(mut self, read: bool) -> Self {
        self.read_facts = read;
        self
    }

    /// Whether a JSON request body is read for a rate limit below (see
    /// [`with_request_facts`](Self::with_request_facts)).
    pub fn request_facts(&self) -> bool {
        self.read_facts
    }

    /// Replaces the decision of whether an attempt is worth repeating. The bounds still apply.
    pub fn with_decide<D2>(self, decide: D2) -> RetryAfterLayer<D2> {
        RetryAfterLayer {
            limits: self.limits,
            max_replay_bytes: self.max_replay_bytes,
            budget: self.budget,
            decide,
            seed: self.seed,
            clock: self.clock,
            read_facts: self.read_facts,
        }
    }

    /// The number of attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.limits.max_attempts
    }

    /// The longest server-given delay waited out.
    pub fn max_delay(&self) -> Duration {
        self.limits.max_delay
    }

    /// The overall deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.limits.deadline
    }

    /// The backoff used when the server gave no delay.
    pub fn backoff(&self) -> Backoff {
        self.limits.backoff
    }

    /// The replay cap in bytes.
    pub fn max_replay_bytes(&self) -> usize {
        self.max_replay_bytes
    }

    /// The decision.
    pub fn decide(&self) -> &D {
        &self.decide
    }
}

impl<D: Clone> RetryAfterLayer<D> {
    pub(crate) fn shared(&self) -> Arc<Shared<D>> {
        Arc::new(Shared {
            limits: self.limits,
            max_replay_bytes: self.max_replay_bytes,
            read_facts: self.read_facts,
            budget: Arc::clone(&self.budget),
            decide: self.decide.clone(),
            rng: AtomicU64::new(self.seed.unwrap_or_else(backoff::random_seed)),
            success: Classification::new_at(QuotaClass::Success, self.clock.now()),
            clock: self.clock.clone(),
        })
    }
}

impl<S, D: Clone> Layer<S> for RetryAfterLayer<D> {
    type Service = RetryAfter<S, D>;

    fn layer(&self, inner: S) -> RetryAfter<S, D> {
        RetryAfter::from_shared(inner, self.shared())
    }
}

impl<D> fmt::Debug for RetryAfterLayer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryAfterLayer")
            .field("max_attempts", &self.limits.max_attempts)
            .field("max_delay", &self.limits.max_delay)
            .field("deadline", &self.limits.deadline)
            .field("backoff", &self.limits.backoff)
            .field("max_replay_bytes", &self.max_replay_bytes)
            .field("decide", &type_name::<D>())
            .field("seed", &self.seed)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
