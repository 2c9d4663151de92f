//! [`RateLimitLayer`]: the configuration holder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tower_layer::Layer;

use super::cost::{Cost, DEFAULT_MAX_TOKENS};
use super::error::AcquireError;
use super::future::Learn;
use super::in_flight::{InFlightSlot, Slot};
use super::key::{Key, KeyBy, KeySecret, RequestHead};
use super::limiter::{Acquire, LearnOptions, Limiter, Mode};
use super::quota::Tier;
use super::reconcile::{Reconcile, UsageHook};
use super::service::RateLimit;
use super::store::Store;
use crate::clock::WallClock;
use crate::tokens::RequestFacts;

pub(crate) type TierFn = dyn Fn(&RequestHead<'_>) -> Option<Tier> + Send + Sync;
pub(crate) type CostFn = dyn Fn(&RequestHead<'_>) -> Cost + Send + Sync;

/// Paces requests so that a tier's quotas are never exceeded, and learns from responses.
///
/// Every service this layer makes, and every clone of them, shares one [`Limiter`].
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(crate) policy: Arc<Policy>,
}

// Aligned to a cache line: every response future holds a clone of the `Arc` (its counts sit
// just before), which then never invalidates the line that every request reads.
#[derive(Clone)]
#[repr(align(64))]
pub(crate) struct Policy {
    pub(crate) limiter: Limiter,
    pub(crate) key_by: KeyBy,
    pub(crate) tiers: Option<Arc<TierFn>>,
    pub(crate) cost: Option<Arc<CostFn>>,
    pub(crate) learn: bool,
    pub(crate) learn_limits: bool,
    pub(crate) default_max_tokens: u64,
    pub(crate) reconcile: Reconcile,
}

impl Policy {
    pub(crate) fn learn_options(&self) -> LearnOptions {
        LearnOptions {
            learn_limits: self.learn_limits,
            keys_model: self.key_by.keys_model(),
        }
    }

    /// What admitting a request takes — its tier, key and weight, turned into the
    /// [`Acquire`] to await and what to learn from its response — or `None` when its tier
    /// selector lets it through unlimited. Shared by the tower service and the reqwest
    /// middleware.
    pub(crate) fn admission(
        self: &Arc<Self>,
        head: &RequestHead<'_>,
    ) -> Option<(Admit, Option<Learn>)> {
        // The limiter's own tier is borrowed: no reference count touched on the way.
        let selected = match &self.tiers {
            Some(select) => Some(select(head)?),
            None => None,
        };
        let tier = selected.as_ref().unwrap_or_else(|| self.limiter.tier());
        let key = self.key_by.key_with(head, self.limiter.key_secret());
        let cost = self.cost_of(head, tier);
        // A token cost is corrected to the usage the response reports.
        let hook = (self.learn
            && self.reconcile != Reconcile::Off
            && cost.token_counts().is_some())
        .then(|| {
            UsageHook::new(
                self.limiter.clone(),
                key,
                tier.clone(),
                cost,
                self.reconcile,
            )
        });
        // Most requests are decided at once, without a future; a capped key's takes a place
        // among its requests in flight first (one atomic load when no key is capped).
        let admit = if self.limiter.in_flight().none() {
            match self.limiter.admit_now(key, tier, &cost) {
                Some(decided) => Admit::Now(decided, None),
                None => Admit::Wait(Box::new(self.limiter.acquire_tier(key, tier.clone(), cost))),
            }
        } else {
            self.admit_capped(key, tier, cost)
        };
        // Nothing to learn from a request that is not sent.
        let sent = !matches!(admit, Admit::Now(Err(_), _));
        let learn = (self.learn && sent).then(|| Learn {
            blocks: self.limiter.blocks_learned(),
            policy: Arc::clone(self),
            key,
            tier: selected,
            hook,
        });
        Some((admit, learn))
    }

    /// The admission of a request when some key is capped: a place first (at once, waited
    /// for, or refused in reject mode), then the windows.
    #[inline(never)]
    fn admit_capped(&self, key: Key, tier: &Tier, cost: Cost) -> Admit {
        let place = match self.limiter.in_flight().try_slot(key) {
            Slot::Uncapped => None,
            Slot::Held(place) => Some(place),
            Slot::Full(_) if self.limiter.mode() == Mode::Reject => {
                let refused = self.limiter.in_flight_refusal(key, tier);
                return Admit::Now(Err(refused), None);
            }
            Slot::Full(sem) => {
                let acquire = self.limiter.acquire_tier(key, tier.clone(), cost);
                return Admit::Wait(Box::new(acquire.after_place(sem)));
            }
        };
        match self.limiter.admit_now(key, tier, &cost) {
            Some(Ok(at)) => Admit::Now(Ok(at), place),
            Some(Err(e)) => Admit::Now(Err(e), None),
            None => {
                let acquire = self.limiter.acquire_tier(key, tier.clone(), cost);
                Admit::Wait(Box::new(acquire.holding(place)))
            }
        }
    }

    /// Whether the request body's facts can matter: a tier selector or a key that may read
    /// the model, or token quotas costed by the built-in estimate.
    pub(crate) fn wants_facts(&self) -> bool {
        self.tiers.is_some()
            || self.key_by.keys_model()
            || (self.cost.is_none() && self.limiter.tier().counts_tokens())
    }

    /// What `head` costs under `tier`: the cost function's figure; else, for a tier that
    /// counts tokens and a request whose body was read, the built-in estimate; else 1.
    pub(crate) fn cost_of(&self, head: &RequestHead<'_>, tier: &Tier) -> Cost {
        if let Some(f) = &self.cost {
            return f(head);
        }
        if !tier.counts_tokens() {
            return Cost::default();
        }
        match head.extensions.get::<RequestFacts>() {
            Some(facts) => Cost::estimate(facts, self.default_max_tokens),
            None => Cost::default(),
        }
    }
}

/// A request's admission: decided at once, or a future to await.
pub(crate) enum Admit {
    /// Decided without waiting; an admission carries the time it was decided at, and the
    /// place it took among its key's requests in flight (a capped key's).
    Now(Result<Instant, AcquireError>, Option<InFlightSlot>),
    /// To wait for ([`Acquire::take_place`] then hands over the place). Boxed: the slow
    /// path (a wait, or a network store) pays for it, and the admission decided at once,
    /// moved on every request, stays small.
    Wait(Box<Acquire>),
}

#[cfg(feature = "reqwest-middleware")]
impl Admit {
    /// The decision, waited for if it must be (the reqwest middleware's; the tower service
    /// polls the `Acquire` in its own future), with the place in flight to hold until the
    /// response ends.
    pub(crate) async fn decide(self) -> Result<Option<InFlightSlot>, AcquireError> {
        match self {
            Admit::Now(decided, place) => decided.map(|_| place),
            Admit::Wait(mut acquire) => {
                (&mut acquire).await?;
                Ok(acquire.take_place())
            }
        }
    }
}

impl RateLimitLayer {
    /// Enforces `tier` on every request, all of them under one global key, waiting up to
    /// [`DEFAULT_MAX_WAIT`](super::DEFAULT_MAX_WAIT), learning from responses.
    pub fn new(tier: Tier) -> RateLimitLayer {
        RateLimitLayer::with_limiter(Limiter::new(tier))
    }

    /// Picks each request's tier with `select` (e.g. the free tier for `:free` models, a
    /// tier per client API key in a gateway); `None` lets the request through unlimited.
    /// The limiter's own tier is the empty [`Tier::default`]. See
    /// [`with_tier_selector`](Self::with_tier_selector).
    ///
    /// ```
    /// use tower_quota::limit::{KeyBy, Mode};
    /// use tower_quota::{Quota, RateLimitLayer, Tier};
    ///
    /// // A gateway: a tier per client API key, in reject mode.
    /// let layer = RateLimitLayer::selecting(|head| {
    ///     let key = head.headers.get("authorization")?.to_str().ok()?;
    ///     let n = if key.ends_with("-pro") { 600 } else { 60 };
    ///     Some(Tier::new("client").with_quota(Quota::per_minute(n)))
    /// })
    /// .key_by(KeyBy::ApiKey)
    /// .with_mode(Mode::Reject);
    /// # let _ = layer;
    /// ```
    pub fn selecting(
        select: impl Fn(&RequestHead<'_>) -> Option<Tier> + Send + Sync + 'static,
    ) -> RateLimitLayer {
        RateLimitLayer::new(Tier::default()).with_tier_selector(select)
    }

    /// Uses an existing limiter (its tier, store, mode, wait bound and margin): several
    /// layers, or a layer and direct callers, then share its state.
    pub fn with_limiter(limiter: Limiter) -> RateLimitLayer {
        RateLimitLayer {
            policy: Arc::new(Policy {
                limiter,
                key_by: KeyBy::Global,
                tiers: None,
                cost: None,
                learn: true,
                learn_limits: false,
                default_max_tokens: DEFAULT_MAX_TOKENS,
                reconcile: Reconcile::default(),
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Policy)) -> RateLimitLayer {
        let mut p = Arc::unwrap_or_clone(self.policy);
        f(&mut p);
        RateLimitLayer {
            policy: Arc::new(p),
        }
    }

    fn map_limiter(self, f: impl FnOnce(Limiter) -> Limiter) -> RateLimitLayer {
        self.map(|p| p.limiter = f(p.limiter.clone()))
    }

    /// Sets how requests are keyed (default: [`KeyBy::Global`]).
    pub fn key_by(self, key_by: KeyBy) -> RateLimitLayer {
        self.map(|p| p.key_by = key_by)
    }

    /// Picks the tier of each request (e.g. the free tier for `:free` models); `None` lets
    /// the request through unlimited. Without a selector, every request gets the layer's tier.
    pub fn with_tier_selector(
        self,
        select: impl Fn(&RequestHead<'_>) -> Option<Tier> + Send + Sync + 'static,
    ) -> RateLimitLayer {
        self.map(|p| p.tiers = Some(Arc::new(select)))
    }

    /// Sets what each request costs: a number (its weight, counted by every weighted quota)
    /// or a [`Cost`] (tokens in and out, counted by the quotas of each dimension); request
    /// quotas count 1 regardless.
    ///
    /// Default: for a tier with a token quota, the built-in estimate from the request's JSON
    /// body ([`Cost::estimate`]: the prompt's estimated tokens in, `max_tokens` out), which
    /// the [`RetryAfterLayer`](crate::RetryAfterLayer) (or the reqwest middleware) reads
    /// once; else 1.
    pub fn with_cost<C: Into<Cost>>(
        self,
        cost: impl Fn(&RequestHead<'_>) -> C + Send + Sync + 'static,
    ) -> RateLimitLayer {
        self.map(|p| p.cost = Some(Arc::new(move |head| cost(head).into())))
    }

    /// Sets how a token reservation is corrected once the response reports its usage
    /// (default [`Reconcile::Usage`]: refund what was not used, charge what the estimate
    /// missed). Needs the [`QuotaClassifyLayer`](crate::QuotaClassifyLayer) below this layer
    /// (the [`QuotaLayer`](crate::QuotaLayer) stack has it): it reads the usage as the
    /// response body streams through, never buffering it.
    pub fn with_reconcile(self, reconcile: Reconcile) -> RateLimitLayer {
        self.map(|p| p.reconcile = reconcile)
    }

    /// Sets the output tokens reserved for a request whose body names no maximum
    /// (default [`DEFAULT_MAX_TOKENS`]).
    pub fn with_default_max_tokens(self, tokens: u64) -> RateLimitLayer {
        self.map(|p| p.default_max_tokens = tokens)
    }

    /// Sets the mode (default: [`Mode::Wait`]).
    pub fn with_mode(self, mode: Mode) -> RateLimitLayer {
        self.map_limiter(|l| l.with_mode(mode))
    }

    /// The old name of `with_mode(Mode::Reject)`.
    #[deprecated(since = "0.2.0", note = "use `with_mode(Mode::Reject)`")]
    pub fn reject(self) -> RateLimitLayer {
        self.with_mode(Mode::Reject)
    }

    /// Sets the longest a request may wait for admission — a `Duration`, or `None` to wait
    /// as long as the quotas demand; a longer wait fails at once with
    /// [`RateLimited`](super::RateLimited). Default: [`DEFAULT_MAX_WAIT`](super::DEFAULT_MAX_WAIT).
    pub fn with_max_wait(self, max_wait: impl Into<Option<Duration>>) -> RateLimitLayer {
        let max_wait = max_wait.into();
        self.map_limiter(|l| l.with_max_wait(max_wait))
    }

    /// Caps every key at `max` requests in flight at once (default: none but the caps
    /// learned from refusals of the requests in flight); see
    /// [`Limiter::with_max_in_flight`].
    pub fn with_max_in_flight(self, max: impl Into<Option<u32>>) -> RateLimitLayer {
        let max = max.into();
        self.map_limiter(|l| l.with_max_in_flight(max))
    }

    /// The old name of `with_max_wait(None)`.
    #[deprecated(since = "0.2.0", note = "use `with_max_wait(None)`")]
    pub fn without_max_wait(self) -> RateLimitLayer {
        self.with_max_wait(None)
    }

    /// Sets the least margin added to every window and cooldown (default: zero).
    ///
    /// The server counts a request when it *arrives*; two requests sent exactly one window
    /// apart can arrive less than a window apart when the first took longer on the way. The
    /// limiter learns the margin that covers this from the round trips it sees and from any
    /// 429 its windows did not predict ([`Limiter::learn_margin`]); set one here only as a
    /// floor, when you know your network's spread.
    pub fn with_margin(self, margin: Duration) -> RateLimitLayer {
        self.map_limiter(|l| l.with_margin(margin))
    }

    /// Whether the limiter learns its margin (default: yes; see [`Limiter::learn_margin`]).
    pub fn learn_margin(self, learn: bool) -> RateLimitLayer {
        self.map_limiter(|l| l.learn_margin(learn))
    }

    /// Sets the store (default: a [`MemoryStore`](super::store::MemoryStore)).
    pub fn with_store(self, store: impl Store) -> RateLimitLayer {
        self.map_limiter(|l| l.with_store(store))
    }

    /// Sets the secret request keys are hashed with (see [`Limiter::with_key_secret`]); a
    /// store shared by several processes sets it already.
    pub fn with_key_secret(self, secret: KeySecret) -> RateLimitLayer {
        self.map_limiter(|l| l.with_key_secret(secret))
    }

    /// Sets the wall clock the limiter is anchored to (for calendar windows).
    pub fn with_wall_clock(self, clock: WallClock) -> RateLimitLayer {
        self.map_limiter(|l| l.with_wall_clock(clock))
    }

    /// Whether to learn from responses (default: yes).
    pub fn learn(self, learn: bool) -> RateLimitLayer {
        self.map(|p| p.learn = learn)
    }

    /// Whether a limit the server announces replaces the configured one (default: no).
    pub fn learn_limits(self, learn_limits: bool) -> RateLimitLayer {
        self.map(|p| p.learn_limits = learn_limits)
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.policy.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::from_policy(inner, self.policy.clone())
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key_by", &self.key_by)
            .field("tier_selector", &self.tiers.as_ref().map(|_| ".."))
            .field("cost", &self.cost.as_ref().map(|_| ".."))
            .field("learn", &self.learn)
            .field("learn_limits", &self.learn_limits)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("reconcile", &self.reconcile)
            .finish()
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.policy.fmt(f)
    }
}
