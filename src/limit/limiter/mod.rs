//! The [`Limiter`]: the shared handle that paces requests, usable with or without the layer.
//!
//! A file per job: this one holds the handle, its configuration and its clock;
//! `acquire.rs` the [`Acquire`] state machine (queues, store round trips, waits);
//! `learn.rs` what a response teaches (cooldowns, pauses, learned limits and windows);
//! `snapshot.rs` the state of a key's windows, for metrics.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Sleep};

use super::cost::Cost;
use super::error::{AcquireError, CostExceedsLimit, RateLimited, Reason};
use super::gate::{Gates, Joined};
use super::in_flight::InFlight;
use super::key::{Key, KeyHasher, KeySecret};
use super::margin::Margin;
use super::quota::{counts_tokens, dur_ns, smallcosts::Costs, Quota, Tier, Window};
use super::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreError, StoreFuture, Update,
    UpdateRequest,
};
use super::window::Now;
use crate::classify::{Classification, QuotaClass, Scope};
use crate::clock::WallClock;
use crate::headers::RateLimitWindow;

mod acquire;
mod foresee;
mod learn;
mod snapshot;

pub use acquire::Acquire;
pub use foresee::Foreseen;
use learn::Learned;

pub use learn::{LearnOptions, Learning};
pub use snapshot::{Snapshot, WindowSnapshot};

/// What to do with a request that is not admissible at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Hold it until it is admissible (the default), failing at once if that would take
    /// longer than `max_wait`.
    #[default]
    Wait,
    /// Fail at once with [`RateLimited`].
    Reject,
}

/// The default longest wait: five minutes (a burst of 100 requests on 20 per minute).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The default bound on the requests of one key waiting in one process: past it, a request
/// fails at once with [`Reason::QueueFull`].
pub const DEFAULT_MAX_QUEUE: usize = 1024;

/// The default bound on one store round trip made to learn from a response: past it the
/// response goes on and a warning is logged.
pub const DEFAULT_LEARN_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
struct Config {
    tier: Tier,
    store: Arc<dyn Store>,
    margin: Duration,
    learn_margin: bool,
    max_wait: Option<Duration>,
    max_queue: usize,
    learn_timeout: Duration,
    mode: Mode,
    clock: WallClock,
    key_secret: KeySecret,
    max_in_flight: Option<u32>,
}

struct Shared {
    config: Config,
    /// Replicas of the configured tier, one per thread (up to [`REPLICAS`] threads): a
    /// refusal holds its tier, and refusals on different cores then clone reference counts
    /// on cache lines of their own rather than passing one line between the cores (a
    /// gateway under a flood of rejections).
    replicas: Box<[Tier]>,
    gates: Gates,
    margin: Margin,
    /// Quotas learned from servers, per store key: the tier in force is the configured one
    /// plus these.
    learned: Learned,
    /// The blocks learned, numbered: which refusals were foreseen.
    blocks: foresee::Blocks,
    /// The keys' caps on requests in flight at once, learned or configured.
    in_flight: InFlight,
    /// The limiter's clock: `wall_epoch + (tokio::time::Instant::now() - epoch)`, in
    /// nanoseconds since the Unix epoch. Monotonic and follows tokio's paused clock; every
    /// time that crosses the store is on it. Calendar periods read the wall clock itself,
    /// as it is at each decision.
    epoch: Instant,
    wall_epoch: u64,
}

/// The shared rate limiter: a default [`Tier`], a [`Store`], FIFO queues of waiters, and a
/// clock. Cheap to clone; every clone (and every service of a
/// [`RateLimitLayer`](super::RateLimitLayer)) shares the same state.
///
/// ```
/// use tower_quota::{Quota, Tier};
/// use tower_quota::limit::{Key, Limiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = Limiter::new(Tier::new("demo").with_quota(Quota::per_minute(2)));
/// let key = Key::of("alice");
/// let start = tokio::time::Instant::now();
/// limiter.acquire(key, 1).await.unwrap();
/// limiter.acquire(key, 1).await.unwrap();
/// limiter.acquire(key, 1).await.unwrap(); // waits for the first to leave the window
/// assert!(start.elapsed() >= std::time::Duration::from_secs(60));
/// let snap = limiter.snapshot(key).await.unwrap();
/// assert_eq!(snap.windows[0].used, 1); // the first two have left the window
/// # }
/// ```
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// Replicas of the configured tier (see `Shared::replicas`).
const REPLICAS: usize = 16;

/// This thread's number, given as it first refuses (from 1; 0: none yet).
#[inline]
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(0) };
    }
    SLOT.with(|slot| {
        if slot.get() == 0 {
            slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        slot.get()
    })
}

impl Limiter {
    /// A limiter enforcing `tier` by default, in memory, in [`Mode::Wait`] with
    /// [`DEFAULT_MAX_WAIT`], no margin, on the system wall clock.
    pub fn new(tier: Tier) -> Limiter {
        Limiter::from_config(Config {
            tier,
            store: Arc::new(MemoryStore::new()),
            margin: Duration::ZERO,
            learn_margin: true,
            max_wait: Some(DEFAULT_MAX_WAIT),
            max_queue: DEFAULT_MAX_QUEUE,
            learn_timeout: DEFAULT_LEARN_TIMEOUT,
            mode: Mode::Wait,
            clock: WallClock::system(),
            key_secret: KeySecret::per_process(),
            max_in_flight: None,
        })
    }

    fn from_config(config: Config) -> Limiter {
        let wall_epoch = config
            .clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, dur_ns);
        Limiter {
            shared: Arc::new(Shared {
                // In reject mode the limiter is the one counting (a gateway deciding for its
                // own clients): no server's arrivals to allow for.
                margin: Margin::new(
                    dur_ns(config.margin),
                    config.learn_margin && config.mode == Mode::Wait,
                ),
                learned: Learned::default(),
                blocks: foresee::Blocks::default(),
                in_flight: InFlight::new(config.max_in_flight),
                replicas: (0..REPLICAS).map(|_| config.tier.replica()).collect(),
                config,
                gates: Gates::new(),
                epoch: Instant::now(),
                wall_epoch,
            }),
        }
    }

    fn reconfigure(self, f: impl FnOnce(&mut Config)) -> Limiter {
        let mut config = self.shared.config.clone();
        f(&mut config);
        Limiter::from_config(config)
    }

    /// Sets the store (a new limiter: configure before sharing). A store with a
    /// [`key_secret`](Store::key_secret) (a store shared by several processes) sets the
    /// limiter's too.
    ///
    /// An `Arc` of a store is a store: `with_store(Arc::clone(&store))` shares one.
    pub fn with_store(self, store: impl Store) -> Limiter {
        self.set_store(Arc::new(store))
    }

    /// The old way to share a store: [`with_store`](Self::with_store) takes an `Arc` of one.
    #[deprecated(since = "0.2.0", note = "use `with_store(Arc::clone(&store))`")]
    pub fn with_shared_store(self, store: Arc<dyn Store>) -> Limiter {
        self.set_store(store)
    }

    fn set_store(self, store: Arc<dyn Store>) -> Limiter {
        self.reconfigure(|c| {
            if let Some(secret) = store.key_secret() {
                c.key_secret = secret.clone();
            }
            c.store = store;
        })
    }

    /// Sets the secret the layer hashes request keys with (default:
    /// [`KeySecret::per_process`]). Processes that share a store must share it; a store that
    /// holds one sets it already ([`with_store`](Self::with_store)).
    pub fn with_key_secret(self, secret: KeySecret) -> Limiter {
        self.reconfigure(|c| c.key_secret = secret)
    }

    /// The secret request keys are hashed with ([`KeyBy::key_with`](super::KeyBy::key_with)).
    pub fn key_secret(&self) -> &KeySecret {
        &self.shared.config.key_secret
    }

    /// Sets the least margin added to every window (and cooldown), to absorb the difference
    /// between when requests are sent and when the server counts them. Default: zero — the
    /// limiter learns the margin from the round trips it sees and from any 429 its windows
    /// did not predict ([`learn_margin`](Self::learn_margin)); this is a floor for those who
    /// know their network.
    pub fn with_margin(self, margin: Duration) -> Limiter {
        self.reconfigure(|c| c.margin = margin)
    }

    /// Whether to learn the margin (default: yes, in [`Mode::Wait`]; a limiter in
    /// [`Mode::Reject`] is the one counting and learns none): the spread of round trips (the
    /// 5th to the 95th percentile of the last 64, once 8 are seen, at most a fiftieth of the
    /// window), and surprise 429s (each
    /// doubles it, at least 20 ms, at most a twentieth, halving every 5 minutes without
    /// another); never more than 2 s. See [`margin_for`](Self::margin_for).
    pub fn learn_margin(self, learn: bool) -> Limiter {
        self.reconfigure(|c| c.learn_margin = learn)
    }

    /// Sets the longest a request may wait for admission — a `Duration`, or `None` for no
    /// bound. Default: [`DEFAULT_MAX_WAIT`].
    pub fn with_max_wait(self, max_wait: impl Into<Option<Duration>>) -> Limiter {
        let max_wait = max_wait.into();
        self.reconfigure(|c| c.max_wait = max_wait)
    }

    /// Sets the most requests of one key that may wait in this process (default
    /// [`DEFAULT_MAX_QUEUE`]); one more fails at once with [`Reason::QueueFull`]. At least 1.
    pub fn with_max_queue(self, max_queue: usize) -> Limiter {
        self.reconfigure(|c| c.max_queue = max_queue.max(1))
    }

    /// Sets the bound on the store round trip that records what a response taught (default
    /// [`DEFAULT_LEARN_TIMEOUT`]). Past it the response is returned and a warning logged:
    /// learning never fails a request nor holds it long.
    pub fn with_learn_timeout(self, timeout: Duration) -> Limiter {
        self.reconfigure(|c| c.learn_timeout = timeout)
    }

    /// Caps every key at `max` requests in flight at once (at least 1; `None`, the default:
    /// no cap but the ones learned). A request takes a place before it is admitted to the windows and
    /// holds it until its response ends: through the layers, until the response body ends
    /// or is dropped (with [`QuotaClassifyLayer`](crate::QuotaClassifyLayer) below the
    /// rate-limit layer, as in [`QuotaLayer`](crate::QuotaLayer) and the reqwest
    /// middleware; else until the response's head arrives). In wait mode a request waits for
    /// a place (in order, up to `max_wait`); in reject mode it is refused at once
    /// ([`Reason::InFlight`]). [`acquire`](Self::acquire) and
    /// [`try_acquire`](Self::try_acquire) admit to the windows alone: a place is the layers'.
    ///
    /// Set it to a LiteLLM key's `max_parallel_requests`. Without it, a refusal of the
    /// requests in flight ([`Scope::InFlight`](crate::classify::Scope::InFlight)) caps the
    /// key for a minute to the number the server names (else 1). The cap is this process's:
    /// several processes sharing a key each hold their own.
    ///
    /// ```
    /// use tower_quota::{Quota, Tier};
    /// use tower_quota::limit::Limiter;
    ///
    /// let limiter = Limiter::new(Tier::new("litellm-key").with_quota(Quota::per_minute(60)))
    ///     .with_max_in_flight(4);
    /// assert_eq!(limiter.max_in_flight(), Some(4));
    /// assert_eq!(limiter.with_max_in_flight(0).max_in_flight(), Some(1));
    /// ```
    pub fn with_max_in_flight(self, max: impl Into<Option<u32>>) -> Limiter {
        let max = max.into().map(|m| m.max(1));
        self.reconfigure(|c| c.max_in_flight = max)
    }

    /// The configured cap on each key's requests in flight at once.
    pub fn max_in_flight(&self) -> Option<u32> {
        self.shared.config.max_in_flight
    }

    /// The keys' caps on requests in flight.
    #[inline]
    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.shared.in_flight
    }

    /// Sets the mode. Default: [`Mode::Wait`].
    pub fn with_mode(self, mode: Mode) -> Limiter {
        self.reconfigure(|c| c.mode = mode)
    }

    /// Sets the wall clock: calendar windows reset at multiples of their period on it, read
    /// as it is at each decision (an NTP step or a suspend moves the next reset, not the
    /// admissions counted). Waits and rolling windows use `tokio::time::Instant`. In paused
    /// tokio time use [`WallClock::starting_at`], which follows virtual time.
    pub fn with_wall_clock(self, clock: WallClock) -> Limiter {
        self.reconfigure(|c| c.clock = clock)
    }

    /// The default tier.
    pub fn tier(&self) -> &Tier {
        &self.shared.config.tier
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.config.store
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.shared.config.mode
    }

    /// The longest wait.
    pub fn max_wait(&self) -> Option<Duration> {
        self.shared.config.max_wait
    }

    /// The configured margin: the floor of the margin in force.
    pub fn margin(&self) -> Duration {
        self.shared.config.margin
    }

    /// The margin learned so far (before the per-tier bound and the floor apply).
    pub fn learned_margin(&self) -> Duration {
        Duration::from_nanos(self.shared.margin.learned())
    }

    /// The margin in force for `tier`: the learned one, bounded by a twentieth of the tier's
    /// shortest window, and at least the configured one.
    pub fn margin_for(&self, tier: &Tier) -> Duration {
        Duration::from_nanos(self.margin_ns(tier))
    }

    #[inline]
    fn margin_ns(&self, tier: &Tier) -> u64 {
        self.shared.margin.get(tier.shortest_window_ns())
    }

    /// Whether the margin is learned (from round trips and surprises).
    pub(crate) fn learns_margin(&self) -> bool {
        self.shared.margin.learns()
    }

    /// A round trip from admission (`admitted`) to response, now, for the learned margin:
    /// the clock is read only for a round trip the margin samples.
    pub(crate) fn observe_round_trip(&self, admitted: Instant) {
        if !self.shared.margin.samples(self.to_ns(admitted)) {
            return;
        }
        let now = Instant::now();
        self.shared.margin.observe_rtt(
            dur_ns(now.saturating_duration_since(admitted)),
            self.to_ns(now),
        );
    }

    /// The most requests of one key that may wait in this process.
    pub fn max_queue(&self) -> usize {
        self.shared.config.max_queue
    }

    /// The requests waiting in this process, on every key: the limiter's backlog. The layer
    /// holds waiting requests in their response futures (its `poll_ready` is always ready),
    /// so a `ConcurrencyLimit` above it counts them as in flight; this is the number to
    /// export as a gauge or to shed load on.
    pub fn waiting(&self) -> usize {
        self.shared.gates.total()
    }

    /// The limiter's monotonic clock, in nanoseconds since the Unix epoch: what it passes to
    /// the store as `now`.
    pub fn now_ns(&self) -> u64 {
        self.to_ns(Instant::now())
    }

    /// The number of the latest block (cooldown, pause) learned on any key: what an attempt
    /// reads as it is admitted, for [`foresaw`](Self::foresaw).
    #[inline]
    pub(crate) fn blocks_learned(&self) -> u64 {
        self.shared.blocks.latest()
    }

    /// Whether a refusal of `key` under `tier` now, answering an attempt admitted when
    /// [`blocks_learned`](Self::blocks_learned) said `admitted`, was foreseen: a block of
    /// the key was learned (from another response) after the attempt was admitted, and it
    /// still holds.
    pub(crate) fn foresaw(&self, key: Key, tier: &Tier, admitted: u64) -> bool {
        self.shared
            .blocks
            .foresaw(key.with_tier(tier.id()).0, admitted, self.now_ns())
    }

    /// The wall clock as it is now (the configured [`WallClock`]).
    pub fn now_wall(&self) -> SystemTime {
        self.shared.config.clock.now()
    }

    /// The configured [`WallClock`]: hand it to other layers so that everyone reads the same
    /// wall time.
    pub fn wall_clock(&self) -> WallClock {
        self.shared.config.clock.clone()
    }

    /// Both clocks now; the wall clock is read only when `tier` has a calendar window (a
    /// rolling window needs no wall time: the store's `wall` then equals `now`).
    #[inline]
    fn times(&self, tier: &Tier, at: Instant) -> Now {
        let now = self.to_ns(at);
        let wall = if tier.has_calendar() {
            self.wall_ns()
        } else {
            now
        };
        Now { now, wall }
    }

    #[inline]
    fn wall_ns(&self) -> u64 {
        self.now_wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, dur_ns)
    }

    #[inline]
    fn to_ns(&self, t: Instant) -> u64 {
        let s = &self.shared;
        s.wall_epoch
            .saturating_add(dur_ns(t.saturating_duration_since(s.epoch)))
    }

    fn to_instant(&self, ns: u64) -> Instant {
        let s = &self.shared;
        let d = Duration::from_nanos(ns.saturating_sub(s.wall_epoch));
        s.epoch.checked_add(d).unwrap_or_else(far_future)
    }

    /// Asks a store that answers at once; `None` for a network store.
    #[inline]
    fn ask_now(
        &self,
        tier: &Tier,
        key: Key,
        costs: &[u64],
        t: Now,
    ) -> Option<Result<Decision, StoreError>> {
        let req = AcquireRequest::new(key, tier.specs(), costs, t.now)
            .with_wall(t.wall)
            .with_margin(self.margin_ns(tier));
        self.shared.config.store.acquire_now(&req)
    }

    /// The same question as a future that owns what it needs.
    fn ask(&self, tier: &Tier, key: Key, costs: &Costs, t: Now) -> StoreFuture<'static, Decision> {
        let store = self.shared.config.store.clone();
        let tier = tier.clone();
        let costs = costs.clone();
        let margin = self.margin_ns(&tier);
        Box::pin(async move {
            let req = AcquireRequest::new(key, tier.specs(), costs.as_slice(), t.now)
                .with_wall(t.wall)
                .with_margin(margin);
            store.acquire(req).await
        })
    }

    /// Waits until `key` may send a request that costs `cost` under the default tier, and
    /// records it. Quotas of [`Dimension::Requests`](crate::headers::Dimension::Requests)
    /// count 1; the others count what the [`Cost`] says for their dimension (a number is
    /// [`Cost::weight`]: every weighted quota counts it).
    ///
    /// Dropping the future before it completes gives its place in the queue back and records
    /// nothing.
    pub fn acquire(&self, key: Key, cost: impl Into<Cost>) -> Acquire {
        self.acquire_tier(key, self.shared.config.tier.clone(), cost.into())
    }

    /// Like [`acquire`](Self::acquire), under `tier`. Keys are scoped to the tier: the same
    /// key under two tiers has two sets of windows.
    pub fn acquire_with(&self, key: Key, tier: &Tier, cost: impl Into<Cost>) -> Acquire {
        self.acquire_tier(key, tier.clone(), cost.into())
    }

    pub(crate) fn acquire_tier(&self, key: Key, tier: Tier, cost: Cost) -> Acquire {
        Acquire::new(self, key, tier, cost)
    }

    /// The refusal in reject mode of a request of `key` whose places in flight are all
    /// taken: no time is known when one frees.
    pub(crate) fn in_flight_refusal(&self, key: Key, tier: &Tier) -> AcquireError {
        refusal(key, self.refusal_tier(tier), Reason::InFlight, None, None)
    }

    /// The refusal in reject mode of `key` under `tier`, at `now` (the store's clock, read
    /// once for the decision), admissible at `at`: computed from the store's nanoseconds,
    /// not from instants.
    #[inline]
    fn refused(&self, key: Key, tier: &Tier, at: u64, now: u64) -> AcquireError {
        let retry_after = Duration::from_nanos(at.saturating_sub(now));
        refusal(
            key,
            tier,
            Reason::Rejected,
            Some(self.to_instant(at)),
            Some(retry_after),
        )
    }

    /// The tier a refusal under `tier` holds: the calling thread's replica of the configured
    /// tier (see `Shared::replicas`), or `tier` itself.
    #[inline]
    fn refusal_tier<'a>(&'a self, tier: &'a Tier) -> &'a Tier {
        let s = &*self.shared;
        if Tier::ptr_eq(tier, &s.config.tier) {
            &s.replicas[thread_slot() % REPLICAS]
        } else {
            tier
        }
    }

    /// The decision on `key` under `tier` when it can be made now without a future — the
    /// store answers at once, nobody waits on the key, and the answer is final (admitted, a
    /// refusal in reject mode, a cost that never fits, a store error) — else `None`, and the
    /// caller awaits an [`Acquire`], which decides the same way. The common case of a front
    /// end: no future, no reference count touched. An admission is `Ok` with the time it was
    /// decided at (the clock is read once).
    pub(crate) fn admit_now(
        &self,
        key: Key,
        tier: &Tier,
        cost: &Cost,
    ) -> Option<Result<Instant, AcquireError>> {
        let s = &*self.shared;
        let store_key = key.with_tier(tier.id());
        if s.gates.has_waiters(store_key) {
            return None;
        }
        let learned;
        let tier = if s.learned.none() {
            tier
        } else {
            learned = s.learned.in_force(store_key, tier.clone());
            &learned
        };
        let costs = tier.costs(cost);
        let now = Instant::now();
        let t = self.times(tier, now);
        match self.ask_now(tier, store_key, costs.as_slice(), t)? {
            Ok(Decision::Admitted) => Some(Ok(now)),
            Ok(Decision::NotBefore(at)) if s.config.mode == Mode::Reject => {
                Some(Err(self.refused(key, self.refusal_tier(tier), at, t.now)))
            }
            Ok(Decision::NotBefore(_)) => None,
            Ok(Decision::Exceeds { quota, limit }) => {
                Some(Err(AcquireError::CostExceedsLimit(CostExceedsLimit {
                    tier: tier.clone(),
                    quota,
                    cost: costs.as_slice().get(quota).copied().unwrap_or(0),
                    limit,
                })))
            }
            Err(e) => Some(Err(AcquireError::Store(e))),
        }
    }

    /// Admits `key` under the default tier *now* or fails at once, without a future — the
    /// counterpart of governor's `check`. It respects the queue: if requests of this
    /// process wait on the key, it fails with [`RateLimited`] (reason
    /// [`Reason::Rejected`]) rather than pass them. Needs a store that answers at once (the
    /// in-memory store); other stores fail with [`AcquireError::Store`].
    pub fn try_acquire(&self, key: Key, cost: impl Into<Cost>) -> Result<(), AcquireError> {
        let s = &*self.shared;
        // A tier without quotas still goes to the store: what was learned from the server
        // (cooldowns, pauses until a reset, quotas) holds for it too.
        let store_key = key.with_tier(s.config.tier.id());
        // The configured tier, borrowed (no reference count touched) unless one was learned.
        let learned;
        let tier = if s.learned.none() {
            &s.config.tier
        } else {
            learned = s.learned.in_force(store_key, s.config.tier.clone());
            &learned
        };
        if s.gates.has_waiters(store_key) {
            let tier = self.refusal_tier(tier);
            return Err(refusal(key, tier, Reason::Rejected, None, None));
        }
        let costs = tier.costs(&cost.into());
        let t = self.times(tier, Instant::now());
        match self.ask_now(tier, store_key, costs.as_slice(), t) {
            Some(Ok(Decision::Admitted)) => Ok(()),
            Some(Ok(Decision::NotBefore(at))) => {
                Err(self.refused(key, self.refusal_tier(tier), at, t.now))
            }
            Some(Ok(Decision::Exceeds { quota, limit })) => {
                Err(AcquireError::CostExceedsLimit(CostExceedsLimit {
                    tier: tier.clone(),
                    quota,
                    cost: costs.as_slice()[quota],
                    limit,
                }))
            }
            Some(Err(e)) => Err(AcquireError::Store(e)),
            None => Err(AcquireError::Store(StoreError::new(
                "the store cannot answer at once: use `acquire`",
            ))),
        }
    }
}

/// The refusal of `key` under `tier`, at `now` (the caller's clock read: a rejection reads
/// it no more than an admission does).
fn limited(
    key: Key,
    tier: &Tier,
    reason: Reason,
    available_at: Option<Instant>,
    now: Instant,
) -> AcquireError {
    let retry_after = available_at.map(|t| t.saturating_duration_since(now));
    refusal(key, tier, reason, available_at, retry_after)
}

#[inline]
fn refusal(
    key: Key,
    tier: &Tier,
    reason: Reason,
    available_at: Option<Instant>,
    retry_after: Option<Duration>,
) -> AcquireError {
    let e = RateLimited {
        key,
        tier: tier.clone(),
        reason,
        available_at,
        retry_after,
    };
    tracing::debug!(key = %key, tier = tier.name(), reason = reason.as_str(), retry_after_ms = e.retry_after.map(|d| d.as_millis() as u64), "rate limit: request not admitted");
    AcquireError::RateLimited(e)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.shared.config;
        f.debug_struct("Limiter")
            .field("tier", &c.tier)
            .field("store", &c.store)
            .field("mode", &c.mode)
            .field("max_wait", &c.max_wait)
            .field("margin", &c.margin)
            .field("learned_margin", &self.learned_margin())
            .field("clock", &c.clock)
            .field("key_secret", &c.key_secret)
            .finish()
    }
}
