//! The [`Limiter`]: the shared handle that paces requests, usable with or without the layer.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Sleep};

use super::error::{AcquireError, CostExceedsLimit, RateLimited, Reason};
use super::gate::{Gates, Joined};
use super::key::{Key, KeyHasher, KeySecret};
use super::margin::Margin;
use super::quota::{dur_ns, smallcosts::Costs, Quota, Tier, Window};
use super::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreError, StoreFuture, Update,
    UpdateRequest,
};
use super::window::Now;
use crate::classify::{Classification, QuotaClass, Scope};
use crate::clock::WallClock;
use crate::headers::RateLimitWindow;

/// What to do with a request that is not admissible at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
}

struct Shared {
    config: Config,
    gates: Gates,
    margin: Margin,
    /// Quotas learned from servers, per store key: the tier in force is the configured one
    /// plus these.
    learned: Learned,
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

static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

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
    pub fn with_store(self, store: impl Store) -> Limiter {
        self.with_shared_store(Arc::new(store))
    }

    /// Sets a shared store (a new limiter: configure before sharing); like
    /// [`with_store`](Self::with_store).
    pub fn with_shared_store(self, store: Arc<dyn Store>) -> Limiter {
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

    /// Sets the longest a request may wait (`None`: no bound). Default: [`DEFAULT_MAX_WAIT`].
    pub fn with_max_wait(self, max_wait: Option<Duration>) -> Limiter {
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

    fn margin_ns(&self, tier: &Tier) -> u64 {
        self.shared.margin.get(tier.shortest_window_ns())
    }

    /// A round trip from admission to response, for the learned margin.
    pub(crate) fn observe_round_trip(&self, admitted: Instant) {
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
    fn times(&self, tier: &Tier, at: Instant) -> Now {
        let now = self.to_ns(at);
        let wall = if tier.has_calendar() {
            self.wall_ns()
        } else {
            now
        };
        Now { now, wall }
    }

    fn wall_ns(&self) -> u64 {
        self.now_wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, dur_ns)
    }

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

    /// Waits until `key` may send a request of weight `cost` under the default tier, and
    /// records it. Quotas of [`Dimension::Requests`](crate::headers::Dimension::Requests)
    /// count 1, weighted quotas count `cost`.
    ///
    /// Dropping the future before it completes gives its place in the queue back and records
    /// nothing.
    pub fn acquire(&self, key: Key, cost: u64) -> Acquire {
        self.acquire_tier(key, self.shared.config.tier.clone(), cost)
    }

    /// Like [`acquire`](Self::acquire), under `tier`. Keys are scoped to the tier: the same
    /// key under two tiers has two sets of windows.
    pub fn acquire_with(&self, key: Key, tier: &Tier, cost: u64) -> Acquire {
        self.acquire_tier(key, tier.clone(), cost)
    }

    pub(crate) fn acquire_tier(&self, key: Key, tier: Tier, cost: u64) -> Acquire {
        let store_key = key.with_tier(tier.id());
        let tier = self.shared.learned.in_force(store_key, tier);
        Acquire {
            limiter: self.clone(),
            store_key,
            key,
            costs: tier.costs(cost),
            tier,
            id: 0,
            deadline: None,
            state: State::Start,
            sleep: None,
        }
    }

    /// Admits `key` under the default tier *now* or fails at once, without a future — the
    /// counterpart of governor's `check`. It respects the queue: if requests of this
    /// process wait on the key, it fails with [`RateLimited`] (reason
    /// [`Reason::Rejected`]) rather than pass them. Needs a store that answers at once (the
    /// in-memory store); other stores fail with [`AcquireError::Store`].
    pub fn try_acquire(&self, key: Key, cost: u64) -> Result<(), AcquireError> {
        let s = &*self.shared;
        // A tier without quotas still goes to the store: what was learned from the server
        // (cooldowns, pauses until a reset, quotas) holds for it too.
        let store_key = key.with_tier(s.config.tier.id());
        let tier = &s.learned.in_force(store_key, s.config.tier.clone());
        if s.gates.has_waiters(store_key) {
            return Err(limited(key, tier, Reason::Rejected, None));
        }
        let costs = tier.costs(cost);
        let t = self.times(tier, Instant::now());
        match self.ask_now(tier, store_key, costs.as_slice(), t) {
            Some(Ok(Decision::Admitted)) => Ok(()),
            Some(Ok(Decision::NotBefore(t))) => Err(limited(
                key,
                tier,
                Reason::Rejected,
                Some(self.to_instant(t)),
            )),
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

    /// The state of `key`'s windows under the default tier: per quota the limit in force,
    /// the units used and remaining, and when one more fits; whether the key is blocked
    /// (cooling down after a 429, or paused until a reset) and how many requests wait on it.
    ///
    /// This is the way to export the limiter's state as metrics: read it on an interval (or
    /// when your metrics are scraped) and set gauges. The key of a request is what the
    /// layer's [`KeyBy`](super::KeyBy) makes of its head.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::limit::{KeyBy, RequestHead};
    /// use tower_quota::{tiers, QuotaLayer};
    ///
    /// /// Stands in for your metrics library (`metrics::gauge!`, a Prometheus `GaugeVec`, …).
    /// fn gauge(name: &str, labels: &[(&str, &str)], value: f64) {
    ///     println!("{name}{labels:?} {value}");
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = QuotaLayer::new(tiers::openrouter::free()).key_by(KeyBy::ApiKey);
    /// let limiter = layer.limiter().clone(); // shares the state of every service the layer makes
    /// # for _ in 0..3 { let req = http::Request::builder().header("authorization", "Bearer sk-or-v1-team").body(()).unwrap();
    /// #     let key = KeyBy::ApiKey.key(&RequestHead::of(&req)); limiter.acquire(key, 1).await.unwrap(); }
    ///
    /// // The key the layer gives a team's requests.
    /// let req = http::Request::builder()
    ///     .header("authorization", "Bearer sk-or-v1-team")
    ///     .body(())
    ///     .unwrap();
    /// let key = KeyBy::ApiKey.key(&RequestHead::of(&req));
    ///
    /// // In a task of its own: `loop { interval.tick().await; … }`.
    /// let snap = limiter.snapshot(key).await.unwrap();
    /// let tier = limiter.tier().name();
    /// for w in &snap.windows {
    ///     let window = w.quota.to_string(); // "20/60s rolling", "50/86400s calendar"
    ///     let labels = [("tier", tier), ("window", window.as_str())];
    ///     gauge("llm_quota_limit", &labels, w.limit as f64);
    ///     gauge("llm_quota_used", &labels, w.used as f64);
    ///     gauge("llm_quota_remaining", &labels, w.remaining as f64);
    /// }
    /// let blocked = snap.blocked_until.map_or(Duration::ZERO, |t| {
    ///     t.saturating_duration_since(tokio::time::Instant::now())
    /// });
    /// gauge("llm_quota_blocked_seconds", &[("tier", tier)], blocked.as_secs_f64());
    /// gauge("llm_quota_waiting", &[("tier", tier)], snap.waiting as f64);
    ///
    /// assert_eq!(snap.windows[0].used, 3);
    /// assert_eq!(snap.windows[1].remaining, 47);
    /// # }
    /// ```
    ///
    /// A [`Key`] is a hash: metrics per API key should be labelled with a name of your own,
    /// never the key itself.
    pub async fn snapshot(&self, key: Key) -> Result<Snapshot, StoreError> {
        let tier = self.shared.config.tier.clone();
        self.snapshot_with(key, &tier).await
    }

    /// The state of `key`'s windows under `tier`.
    pub async fn snapshot_with(&self, key: Key, tier: &Tier) -> Result<Snapshot, StoreError> {
        let store_key = key.with_tier(tier.id());
        let tier = &self.shared.learned.in_force(store_key, tier.clone());
        let t = self.times(tier, Instant::now());
        let now = t.now;
        let s = &self.shared;
        let req = SnapshotRequest::new(store_key, tier.specs(), t.now)
            .with_wall(t.wall)
            .with_margin(self.margin_ns(tier));
        let snap = s.config.store.snapshot(req).await?;
        let windows = tier
            .quotas()
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let w = snap.as_ref().and_then(|s| s.windows.get(i).copied());
                let limit = w.map_or(q.limit(), |w| w.limit);
                let used = w.map_or(0, |w| w.used);
                WindowSnapshot {
                    quota: q.clone(),
                    limit,
                    used,
                    remaining: limit.saturating_sub(used),
                    next_free: self.to_instant(w.map_or(now, |w| w.next_free).max(now)),
                }
            })
            .collect();
        let blocked = snap.as_ref().map_or(0, |s| s.blocked_until);
        Ok(Snapshot {
            windows,
            blocked_until: (blocked > now).then(|| self.to_instant(blocked)),
            waiting: s.gates.waiting(store_key),
        })
    }

    /// Blocks `key` (under `tier`) until `delay` from now (plus the margin): waiting requests
    /// are held too.
    pub async fn cool_down(
        &self,
        key: Key,
        tier: &Tier,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let until = self
            .now_ns()
            .saturating_add(dur_ns(delay))
            .saturating_add(self.margin_ns(tier));
        tracing::info!(key = %key, tier = tier.name(), delay_ms = delay.as_millis() as u64, "rate limit: cooling down");
        let store_key = key.with_tier(tier.id());
        let tier = self.shared.learned.in_force(store_key, tier.clone());
        match self.apply(store_key, &tier, vec![Update::BlockUntil(until)]) {
            Some(fut) => fut.await,
            None => Ok(()),
        }
    }

    /// Applies `updates` to `key` under `tier` in one batch: at once when the store can,
    /// else returns the future of the one round trip.
    fn apply(
        &self,
        store_key: Key,
        tier: &Tier,
        updates: Vec<Update>,
    ) -> Option<StoreFuture<'static, ()>> {
        let s = &self.shared;
        let t = self.times(tier, Instant::now());
        let margin = self.margin_ns(tier);
        let req = UpdateRequest::new(store_key, tier.specs(), &updates, t.now)
            .with_wall(t.wall)
            .with_margin(margin);
        if s.config.store.update_now(&req) {
            return None;
        }
        let store = s.config.store.clone();
        let tier = tier.clone();
        Some(Box::pin(async move {
            let req = UpdateRequest::new(store_key, tier.specs(), &updates, t.now)
                .with_wall(t.wall)
                .with_margin(margin);
            store.update(req).await
        }))
    }

    /// Learns from a response's classification for `key` under `tier`: a cooldown after a
    /// rate-limited response with a delay, a block until an exhausted quota resets, a pause
    /// until a window with nothing remaining resets, a tightened count when the server says
    /// fewer units remain than the local count, and (with `learn_limits`) the server's
    /// limits. Model- and upstream-scoped limits are applied only when `keys_model` says the
    /// key is the model's: an upstream 429 never pauses a whole account.
    ///
    /// Everything one response taught goes to the store as one batch. Returns `None` when
    /// the store applied it at once, else a [`Learning`] future to drive: it is bounded by
    /// the learn timeout and never fails (a store error or a timeout is logged as a warning).
    pub fn learn(
        &self,
        key: Key,
        tier: &Tier,
        classification: &Classification,
        options: LearnOptions,
    ) -> Option<Learning> {
        let store_key = key.with_tier(tier.id());
        let mut in_force = self.shared.learned.in_force(store_key, tier.clone());
        if let Some(grown) = self.learn_quotas(key, &in_force, classification, options) {
            in_force = self.shared.learned.set(store_key, tier, grown);
        }
        let updates = self.updates(key, tier, &in_force, classification, options);
        if updates.is_empty() {
            return None;
        }
        let fut = self.apply(store_key, &in_force, updates)?;
        let timeout = self.shared.config.learn_timeout;
        Some(Learning {
            fut,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        })
    }

    /// The tier in force grown by the windows the server announced that it has no quota for
    /// (an empty tier learns its quotas so), or `None` when nothing is new.
    fn learn_quotas(
        &self,
        key: Key,
        in_force: &Tier,
        c: &Classification,
        options: LearnOptions,
    ) -> Option<Tier> {
        let applies = match c.scope() {
            Scope::Model | Scope::Upstream => options.keys_model,
            _ => true,
        };
        if !applies {
            return None;
        }
        let mut grown: Option<Tier> = None;
        for w in c.rate_limit().windows() {
            let current = grown.as_ref().unwrap_or(in_force);
            if current
                .quotas()
                .iter()
                .any(|q| q.dimension() == &w.dimension)
            {
                continue;
            }
            let (Some(limit), Some(window)) =
                (w.limit.filter(|&l| l > 0), infer_window(w, self.now_wall()))
            else {
                continue;
            };
            let quota = window.quota(limit).with_dimension(w.dimension.clone());
            tracing::info!(key = %key, tier = in_force.name(), quota = %quota, "rate limit: learned a quota from the server");
            grown = Some(current.clone().with_quota(quota));
        }
        grown
    }

    fn updates(
        &self,
        key: Key,
        configured: &Tier,
        tier: &Tier,
        c: &Classification,
        options: LearnOptions,
    ) -> Vec<Update> {
        let mut out = Vec::new();
        let applies = match c.scope() {
            Scope::Model | Scope::Upstream => options.keys_model,
            _ => true,
        };
        if !applies {
            if c.class() == QuotaClass::RateLimited {
                tracing::debug!(key = %key, tier = tier.name(), scope = c.scope().as_str(), "rate limit: not cooling the key down for a model- or upstream-scoped limit");
            }
            return out;
        }
        let now = self.now_ns();
        if c.class() == QuotaClass::RateLimited
            && matches!(c.scope(), Scope::Account | Scope::Unknown)
            && !tier.quotas().is_empty()
        {
            // The windows admitted this request: the server counted it in a window they
            // did not see, so its arrivals run further from our sends than the margin says.
            self.shared.margin.surprise(now, tier.shortest_window_ns());
            tracing::debug!(key = %key, tier = tier.name(), learned_margin_ms = self.learned_margin().as_millis() as u64, "rate limit: a 429 the windows did not predict, widening the margin");
        }
        let margin = self.margin_ns(tier);
        let until = |d: Duration| now.saturating_add(dur_ns(d)).saturating_add(margin);
        let info = c.rate_limit();
        let delay = match c.class() {
            QuotaClass::RateLimited => c.retry_after().or_else(|| info.exhausted_reset()),
            QuotaClass::QuotaExhausted => c
                .reset_after()
                .or(c.retry_after())
                .or_else(|| info.exhausted_reset()),
            _ => None,
        };
        if let Some(d) = delay {
            tracing::info!(key = %key, tier = tier.name(), class = c.class().as_str(), delay_ms = d.as_millis() as u64, "rate limit: cooling down");
            out.push(Update::BlockUntil(until(d)));
        }
        for w in info.windows() {
            if w.remaining == Some(0) {
                if let Some(r) = w.reset {
                    tracing::info!(key = %key, tier = tier.name(), reset_ms = r.as_millis() as u64, "rate limit: window exhausted, pausing until reset");
                    out.push(Update::BlockUntil(until(r)));
                }
            }
            let Some(quota) = match_quota(tier.quotas(), w) else {
                continue;
            };
            if let Some(remaining) = w.remaining {
                out.push(Update::Remaining {
                    quota,
                    remaining,
                    reset: w.reset.map(dur_ns),
                });
            }
            // The server's limit is adopted when asked, when it is tighter than the one
            // configured, and always for a quota learned from the server.
            if let Some(limit) = w.limit.filter(|&l| l > 0) {
                let configured_limit = configured
                    .quotas()
                    .iter()
                    .find(|q| {
                        q.window() == tier.quotas()[quota].window() && q.dimension() == &w.dimension
                    })
                    .map(Quota::limit);
                let adopt = match configured_limit {
                    Some(mine) => options.learn_limits || limit < mine,
                    None => true,
                };
                if adopt {
                    if limit != tier.quotas()[quota].limit() {
                        tracing::info!(key = %key, tier = tier.name(), quota, limit, "rate limit: adopting the server's limit");
                    }
                    out.push(Update::Limit { quota, limit });
                }
            }
        }
        out
    }
}

/// What [`Limiter::learn`] may apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnOptions {
    /// Replace configured limits with the ones the server announces.
    pub learn_limits: bool,
    /// The key tells models apart: model- and upstream-scoped limits may cool it down.
    pub keys_model: bool,
}

/// The quota of the tier a server-reported window describes: same dimension, and the same
/// window length if the server said, else the same limit, else the only one.
fn match_quota(quotas: &[Quota], w: &RateLimitWindow) -> Option<usize> {
    let mut same_dim = quotas
        .iter()
        .enumerate()
        .filter(|(_, q)| q.dimension() == &w.dimension);
    if let Some(len) = w.window {
        return same_dim
            .find(|(_, q)| q.window().length() == len)
            .map(|(i, _)| i);
    }
    let cands: Vec<usize> = same_dim.map(|(i, _)| i).collect();
    if let Some(limit) = w.limit {
        if let Some(&i) = cands.iter().find(|&&i| quotas[i].limit() == limit) {
            return Some(i);
        }
    }
    (cands.len() == 1).then(|| cands[0])
}

/// The window a server-reported window describes: its own length when it said (IETF `w`);
/// else, from the time until it resets, a UTC day when it resets at a UTC midnight hours
/// away, else the shortest common window (1 s, 10 s, 1 min, 1 h, 1 day) that reset fits in
/// (with 10 % of slack).
fn infer_window(w: &RateLimitWindow, wall: SystemTime) -> Option<Window> {
    if let Some(len) = w.window.filter(|d| !d.is_zero()) {
        return Some(Window::Rolling(len));
    }
    let reset = w.reset?;
    const DAY: u64 = 86_400;
    if reset > Duration::from_secs(3600) {
        let at = wall.checked_add(reset)?;
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let off = secs.rem_euclid(DAY as f64);
        if off < 2.0 || off > DAY as f64 - 2.0 {
            return Some(Window::Calendar(Duration::from_secs(DAY)));
        }
    }
    // A reset a little past a common window is that window, seen late (rounding, the way
    // back): 10 % of slack.
    [1, 10, 60, 3600, DAY]
        .into_iter()
        .map(Duration::from_secs)
        .find(|&len| reset <= len + len / 10)
        .map(Window::Rolling)
}

/// The quotas learned per store key, beside the configured tier.
#[derive(Default)]
struct Learned {
    tiers: Mutex<HashMap<u64, Tier, BuildHasherDefault<KeyHasher>>>,
    /// Whether any tier was learned: the common case reads one atomic.
    any: AtomicBool,
}

/// The most keys whose quotas are learned; past it, no new key learns any (cooldowns and
/// pauses still apply).
const MAX_LEARNED_KEYS: usize = 100_000;

impl Learned {
    /// The tier in force for `store_key`: the learned one, else `configured`.
    fn in_force(&self, store_key: Key, configured: Tier) -> Tier {
        if !self.any.load(Ordering::Acquire) {
            return configured;
        }
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers.get(&store_key.0).cloned().unwrap_or(configured)
    }

    /// Records `grown` for `store_key` (within the bound) and returns the tier in force.
    fn set(&self, store_key: Key, configured: &Tier, grown: Tier) -> Tier {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        if tiers.len() >= MAX_LEARNED_KEYS && !tiers.contains_key(&store_key.0) {
            return tiers
                .get(&store_key.0)
                .cloned()
                .unwrap_or_else(|| configured.clone());
        }
        tiers.insert(store_key.0, grown.clone());
        self.any.store(true, Ordering::Release);
        grown
    }
}

fn limited(key: Key, tier: &Tier, reason: Reason, available_at: Option<Instant>) -> AcquireError {
    let now = Instant::now();
    let e = RateLimited {
        key,
        tier: tier.clone(),
        reason,
        available_at,
        retry_after: available_at.map(|t| t.saturating_duration_since(now)),
    };
    tracing::info!(key = %key, tier = tier.name(), reason = reason.as_str(), retry_after_ms = e.retry_after.map(|d| d.as_millis() as u64), "rate limit: request not admitted");
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

/// The state of one key's windows (see [`Limiter::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per quota of the tier, in order.
    pub windows: Vec<WindowSnapshot>,
    /// The key is blocked (cooling down or paused) until then.
    pub blocked_until: Option<Instant>,
    /// Requests waiting on the key in this process.
    pub waiting: usize,
}

/// The state of one window of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSnapshot {
    /// The quota as configured.
    pub quota: Quota,
    /// The limit in force (a learned limit replaces the configured one).
    pub limit: u64,
    /// Units counted in the window now.
    pub used: u64,
    /// Units left now.
    pub remaining: u64,
    /// The earliest time one more unit fits (now if it fits now).
    pub next_free: Instant,
}

// === impl Learning ===

/// The future of [`Limiter::learn`] for a store that answers asynchronously: one round trip
/// carrying every update of a response, bounded by the learn timeout. It never fails: a store
/// error or a timeout is logged (`warn`) and what the response taught is lost for this once.
#[must_use = "futures do nothing unless polled"]
pub struct Learning {
    fut: StoreFuture<'static, ()>,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Future for Learning {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Poll::Ready(out) = self.fut.as_mut().poll(cx) {
            if let Err(e) = out {
                tracing::warn!(error = %e, "rate limit: could not record what a response taught");
            }
            return Poll::Ready(());
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            tracing::warn!(
                timeout_ms = self.timeout.as_millis() as u64,
                "rate limit: the store did not record what a response taught in time"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Learning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Learning")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl Acquire ===

enum State {
    Start,
    /// Asking a network store, not queued (nobody waits on the key).
    Asking(StoreFuture<'static, Decision>),
    /// Behind other waiters.
    Queued,
    /// At the head of the queue: ask the store.
    Check,
    /// At the head, a network store's answer outstanding.
    Storing(StoreFuture<'static, Decision>),
    /// At the head, sleeping until the time the store named.
    Sleeping,
    Done,
}

/// The future of [`Limiter::acquire`]: resolves once the request is admitted (and recorded),
/// or fails with an [`AcquireError`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    limiter: Limiter,
    tier: Tier,
    key: Key,
    store_key: Key,
    costs: Costs,
    /// The waiter's id in the key's queue, 0 when not queued.
    id: u64,
    deadline: Option<Instant>,
    state: State,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Acquire {
    /// The (hashed) key.
    pub fn key(&self) -> Key {
        self.key
    }

    fn leave(&mut self) {
        if self.id != 0 {
            self.limiter.shared.gates.leave(self.store_key, self.id);
            self.id = 0;
        }
    }

    /// Arms the timer for `at` (polled by the caller's state).
    fn arm(&mut self, at: Instant) {
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    fn limited(&self, reason: Reason, available_at: Option<Instant>) -> AcquireError {
        limited(self.key, &self.tier, reason, available_at)
    }

    fn mode(&self) -> Mode {
        self.limiter.shared.config.mode
    }

    /// Asks the store for this request: at once if it can answer so, else as a future.
    fn ask(
        &self,
        at: Instant,
    ) -> Result<Result<Decision, StoreError>, StoreFuture<'static, Decision>> {
        let l = &self.limiter;
        let t = l.times(&self.tier, at);
        match l.ask_now(&self.tier, self.store_key, self.costs.as_slice(), t) {
            Some(d) => Ok(d),
            None => Err(l.ask(&self.tier, self.store_key, &self.costs, t)),
        }
    }

    /// The earliest time the waiter behind `ahead` (per-quota units queued before it) could
    /// be admitted, when the head goes no earlier than `head_at`: a quota of N units per W
    /// admits at most N units in any W, so the units ahead plus this request's own need at
    /// least `floor((ahead + cost - 1) / N)` more windows after the head's admission. A lower
    /// bound: honest as a `retry_after`, and a sure sign the request cannot make its deadline.
    fn earliest_behind(&self, head_at: Instant, ahead: &Costs) -> Instant {
        let margin = self.limiter.margin_for(&self.tier);
        let mut at = head_at;
        for ((q, &units), &cost) in self
            .tier
            .quotas()
            .iter()
            .zip(ahead.as_slice())
            .zip(self.costs.as_slice())
        {
            let limit = q.limit().max(1);
            let windows = units.saturating_add(cost).saturating_sub(1) / limit;
            let window = q.window();
            let span = if window.is_calendar() {
                windows.saturating_sub(1)
            } else {
                windows
            };
            let length = window.length().saturating_add(margin);
            let wait = length.saturating_mul(u32::try_from(span).unwrap_or(u32::MAX));
            at = at.max(head_at.checked_add(wait).unwrap_or_else(far_future));
        }
        at
    }

    /// Handles a final decision, or a wait: for a request not yet queued, joins the queue.
    fn decide(
        &mut self,
        decision: Result<Decision, StoreError>,
        cx: &mut Context<'_>,
    ) -> Option<Result<(), AcquireError>> {
        match decision {
            Ok(Decision::Admitted) => {
                self.leave();
                Some(Ok(()))
            }
            Ok(Decision::NotBefore(t)) => {
                let at = self.limiter.to_instant(t);
                if self.mode() == Mode::Reject {
                    self.leave();
                    return Some(Err(self.limited(Reason::Rejected, Some(at))));
                }
                if self.deadline.is_some_and(|d| at > d) {
                    self.leave();
                    return Some(Err(self.limited(Reason::MaxWait, Some(at))));
                }
                if self.id == 0 {
                    return self.join(cx, Some(t));
                }
                self.sleep_until(t, at);
                None
            }
            Ok(Decision::Exceeds { quota, limit }) => {
                self.leave();
                Some(Err(AcquireError::CostExceedsLimit(CostExceedsLimit {
                    tier: self.tier.clone(),
                    quota,
                    cost: self.costs.as_slice().get(quota).copied().unwrap_or(0),
                    limit,
                })))
            }
            Err(e) => {
                self.leave();
                Some(Err(AcquireError::Store(e)))
            }
        }
    }

    /// As the head, sleeps until `t` (`at` as an instant).
    fn sleep_until(&mut self, t: u64, at: Instant) {
        self.limiter.shared.gates.set_head_until(self.store_key, t);
        tracing::debug!(key = %self.key, tier = self.tier.name(), wait_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64, "rate limit: waiting");
        self.arm(at);
        self.state = State::Sleeping;
    }

    /// Joins the key's queue. `not_before` is the store's answer when it was just asked (the
    /// caller becomes the head and sleeps until then); `None` when the request joins without
    /// asking, because others wait.
    fn join(
        &mut self,
        cx: &mut Context<'_>,
        not_before: Option<u64>,
    ) -> Option<Result<(), AcquireError>> {
        let shared = self.limiter.shared.clone();
        let id = NEXT_WAITER.fetch_add(1, Ordering::Relaxed);
        let joined = shared.gates.join(
            self.store_key,
            id,
            cx.waker(),
            &self.costs,
            shared.config.max_queue,
        );
        let (head_until, ahead, full) = match joined {
            Joined::Head => {
                self.id = id;
                match not_before {
                    Some(t) => self.sleep_until(t, self.limiter.to_instant(t)),
                    None => self.state = State::Check,
                }
                return None;
            }
            Joined::Queued { head_until, ahead } => {
                self.id = id;
                (head_until, ahead, false)
            }
            Joined::Full { head_until, ahead } => (head_until, ahead, true),
        };
        let now = Instant::now();
        let mut head_at = now;
        if head_until != 0 {
            head_at = head_at.max(self.limiter.to_instant(head_until));
        }
        if let Some(t) = not_before {
            head_at = head_at.max(self.limiter.to_instant(t));
        }
        let at = self.earliest_behind(head_at, &ahead);
        if full {
            return Some(Err(self.limited(Reason::QueueFull, Some(at))));
        }
        if let Some(d) = self.deadline {
            if at > d {
                self.leave();
                return Some(Err(self.limited(Reason::MaxWait, Some(at))));
            }
            self.arm(d);
        }
        self.state = State::Queued;
        None
    }
}

impl Future for Acquire {
    type Output = Result<(), AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Start => {
                    let now = Instant::now();
                    let shared = this.limiter.shared.clone();
                    this.deadline = match shared.config.mode {
                        Mode::Reject => Some(now),
                        Mode::Wait => shared.config.max_wait.and_then(|d| now.checked_add(d)),
                    };
                    // Behind waiters, join them without asking: nobody passes the queue.
                    if shared.config.mode == Mode::Wait && shared.gates.has_waiters(this.store_key)
                    {
                        if let Some(out) = this.join(cx, None) {
                            return Poll::Ready(out);
                        }
                        continue;
                    }
                    // Nobody waits: ask on our own (concurrently with others, for a network
                    // store), and queue only if told to wait.
                    match this.ask(now) {
                        Ok(d) => {
                            if let Some(out) = this.decide(d, cx) {
                                return Poll::Ready(out);
                            }
                        }
                        Err(fut) => this.state = State::Asking(fut),
                    }
                }
                State::Asking(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Poll::Pending => {
                        this.state = State::Asking(fut);
                        return Poll::Pending;
                    }
                },
                State::Queued => {
                    if this
                        .limiter
                        .shared
                        .gates
                        .is_head(this.store_key, this.id, cx.waker())
                    {
                        this.state = State::Check;
                        continue;
                    }
                    this.state = State::Queued;
                    if let Some(s) = &mut this.sleep {
                        if s.as_mut().poll(cx).is_ready() {
                            this.leave();
                            return Poll::Ready(Err(this.limited(Reason::MaxWait, None)));
                        }
                    }
                    return Poll::Pending;
                }
                State::Check => match this.ask(Instant::now()) {
                    Ok(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Err(fut) => this.state = State::Storing(fut),
                },
                State::Storing(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Poll::Pending => {
                        this.state = State::Storing(fut);
                        return Poll::Pending;
                    }
                },
                State::Sleeping => {
                    let s = this.sleep.as_mut().expect("sleeping has a timer");
                    if s.as_mut().poll(cx).is_ready() {
                        this.state = State::Check;
                    } else {
                        this.state = State::Sleeping;
                        return Poll::Pending;
                    }
                }
                State::Done => panic!("Acquire polled after completion"),
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        self.leave();
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("key", &self.key)
            .field("tier", &self.tier.name())
            .field("costs", &self.costs.as_slice())
            .finish()
    }
}
