//! The Redis store (feature `redis`): one limit shared by every process that holds the same
//! [`KeySecret`].
//!
//! ```no_run
//! use tower_quota::limit::store::RedisStore;
//! use tower_quota::limit::{KeyBy, KeySecret};
//! use tower_quota::{tiers, RateLimitLayer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = KeySecret::new(std::env::var("TOWER_QUOTA_SECRET")?)?;
//! let layer = RateLimitLayer::new(tiers::openrouter::free())
//!     .key_by(KeyBy::ApiKey)
//!     .with_store(RedisStore::open("redis://127.0.0.1/", secret)?);
//! # Ok(()) }
//! ```
//!
//! # How
//!
//! Each admission is **one round trip**: a Lua script, loaded once and run by `EVALSHA`
//! (reloaded by itself after a `NOSCRIPT`, e.g. when Redis restarted), checks every quota of
//! the key — exact rolling logs, bucketed logs, calendar counters, a block, learned limits,
//! exactly as the in-memory store does (`window.rs`; the
//! [conformance suite](super::conformance) runs against both) — records the admission, sets
//! the keys' expiry, and answers "admitted" or the delay until the request is admissible.
//! A response's updates are one more script call; a snapshot is a read-only script.
//!
//! **Time** is Redis's own (`TIME`, in microseconds) by default ([`TimeSource::Redis`]): the
//! processes' clocks may drift apart, the decisions do not. A delay comes back as a delay, and
//! the limiter sleeps it on its own clock.
//!
//! **Keys.** A key's state lives under `<prefix>{<hash>}` and `<prefix>{<hash>}:<quota id>`:
//! the hash tag puts every key of one limit in one Redis Cluster slot. `<hash>` is the
//! limiter's 64-bit key — a keyed hash of the API key under the [`KeySecret`], mixed with the
//! tier — so Redis never holds an API key, nor anything computable from one without the
//! secret. Keys expire once their state no longer matters (the windows emptied, the block
//! passed).
//!
//! # Faults
//!
//! Every operation is bounded by a [timeout](RedisStoreBuilder::timeout) (default 200 ms).
//! When Redis is unreachable, slow, restarting or answers an error, the store follows its
//! [`FaultPolicy`]: fall back to an in-process [`MemoryStore`] holding a
//! share of each limit (the default, with the whole limit), or fail with a [`StoreError`]
//! whose source is a [`RedisStoreError`]. After a failure it stops asking Redis for a
//! [while](RedisStoreBuilder::retry_interval) (default 1 s), so a dead server costs one
//! timeout per interval, not one per request; the connection reconnects by itself (redis-rs's
//! `ConnectionManager`, or the Cluster connection's own).
//!
//! What a fault loses: while Redis is away, each process counts only its own admissions, in
//! its fallback store, which starts empty; a Redis that restarts without persistence forgets
//! the admissions, blocks and learned limits of the current windows. Pick a share of `1 /
//! processes` to stay under the server's limit during an outage, at the cost of slower pacing.
//! An operation that timed out may still have run on Redis: an admission is then counted
//! twice, never zero times.
//!
//! # Resolution and range
//!
//! Times are kept in whole microseconds (a Lua number is a double); durations are rounded up
//! to the next microsecond, so a window is never shortened. Limits and costs above 2⁵³ are
//! treated as 2⁵³.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script, ScriptInvocation};

use super::{
    AcquireRequest, Decision, MemoryStore, QuotaSpec, SnapshotRequest, Store, StoreError,
    StoreFuture, StoreSnapshot, StoreWindow, Update, UpdateRequest,
};
use crate::limit::key::{Key, KeySecret};

macro_rules! lua {
    ($head:literal, $body:literal) => {
        concat!($head, include_str!("redis/lib.lua"), include_str!($body))
    };
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(lua!("", "redis/acquire.lua")));
static UPDATE: LazyLock<Script> = LazyLock::new(|| Script::new(lua!("", "redis/update.lua")));
static SNAPSHOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(lua!("#!lua flags=no-writes\n", "redis/snapshot.lua")));

/// The largest integer a Lua number holds exactly.
const MAX_EXACT: u64 = 1 << 53;

/// The default bound on one Redis operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// The default time the store leaves Redis alone after a failure.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tower-quota:";

/// Whose clock the script decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TimeSource {
    /// Redis's `TIME` (the default): one clock for every process, whatever theirs say.
    #[default]
    Redis,
    /// The `now` and `wall` each request carries (the limiter's clocks): exact and
    /// reproducible, for tests and the [conformance suite](super::conformance), or for
    /// processes whose clocks are known to agree.
    Caller,
}

/// What the store does when Redis fails (unreachable, slow past the timeout, an error).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FaultPolicy {
    /// Decide in this process, in a [`MemoryStore`], with `share` of
    /// each limit (at least 1 unit of a non-zero limit): `1.0` keeps pacing each process to
    /// the whole limit, `1.0 / processes` keeps the sum under it.
    Fallback {
        /// The share of each limit this process may use while Redis is away, in `(0, 1]`.
        share: f64,
    },
    /// Fail: [`Limiter::acquire`](crate::limit::Limiter::acquire) returns
    /// [`AcquireError::Store`](crate::limit::AcquireError::Store), whose source is a
    /// [`RedisStoreError`]; learning logs a warning.
    FailClosed,
}

impl FaultPolicy {
    /// Falls back to this process's memory with `share` of each limit (clamped to `(0, 1]`).
    pub fn fallback(share: f64) -> FaultPolicy {
        let share = if share.is_nan() { 1.0 } else { share };
        FaultPolicy::Fallback {
            share: share.clamp(f64::MIN_POSITIVE, 1.0),
        }
    }
}

impl Default for FaultPolicy {
    /// [`FaultPolicy::Fallback`] with the whole limit.
    fn default() -> Self {
        FaultPolicy::fallback(1.0)
    }
}

/// What went wrong with Redis: the source of the [`StoreError`] a [`RedisStore`] returns.
///
/// ```
/// use tower_quota::limit::store::redis::{RedisFault, RedisStoreError};
/// use tower_quota::limit::store::StoreError;
///
/// fn is_timeout(e: &StoreError) -> bool {
///     std::error::Error::source(e)
///         .and_then(|s| s.downcast_ref::<RedisStoreError>())
///         .is_some_and(|r| r.fault() == RedisFault::Timeout)
/// }
/// # let _ = is_timeout;
/// ```
#[derive(Debug)]
pub struct RedisStoreError {
    fault: RedisFault,
    source: Option<RedisError>,
}

/// The kind of a [`RedisStoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisFault {
    /// No answer within the timeout.
    Timeout,
    /// Not asked: Redis failed moments ago and is left alone for the retry interval.
    Unavailable,
    /// The connection or the server failed.
    Redis,
    /// An answer the script cannot give (a bug, or a foreign key under the prefix).
    Reply,
    /// The store's configuration is invalid (a URL, a prefix).
    Config,
}

impl RedisStoreError {
    fn new(fault: RedisFault, source: Option<RedisError>) -> RedisStoreError {
        RedisStoreError { fault, source }
    }

    /// What went wrong.
    pub fn fault(&self) -> RedisFault {
        self.fault
    }
}

impl fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.fault {
            RedisFault::Timeout => "redis did not answer in time",
            RedisFault::Unavailable => "redis failed moments ago; not asked",
            RedisFault::Redis => "redis failed",
            RedisFault::Reply => "unexpected reply from the redis script",
            RedisFault::Config => "invalid redis store configuration",
        };
        match &self.source {
            Some(e) => write!(f, "{what}: {e}"),
            None => f.write_str(what),
        }
    }
}

impl std::error::Error for RedisStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

fn fault(fault: RedisFault, source: Option<RedisError>) -> StoreError {
    StoreError::new(RedisStoreError::new(fault, source))
}

/// Configures a [`RedisStore`]: made by [`RedisStore::builder`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    secret: KeySecret,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    time: TimeSource,
    faults: FaultPolicy,
}

impl RedisStoreBuilder {
    /// Sets the prefix of every key (default [`DEFAULT_PREFIX`]); it may not contain `{` or
    /// `}` (the store's hash tags).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the bound on each operation (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long Redis is left alone after a failure (default
    /// [`DEFAULT_RETRY_INTERVAL`]); meanwhile the [`FaultPolicy`] answers.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Sets whose clock decides (default [`TimeSource::Redis`]).
    pub fn time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// Sets what happens when Redis fails (default: [`FaultPolicy::fallback`]`(1.0)`).
    pub fn on_fault(mut self, policy: FaultPolicy) -> Self {
        self.faults = policy;
        self
    }

    /// A store on one Redis server (or a primary behind a proxy) at `url`, e.g.
    /// `redis://127.0.0.1:6379/` or `rediss://user:pass@host/0`. It connects on first use and
    /// reconnects by itself; it fails only on an invalid URL or prefix.
    pub fn open(self, url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| fault(RedisFault::Config, Some(e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| fault(RedisFault::Config, Some(e)))?;
        self.build(Conn::Single(manager))
    }

    /// A store on a Redis Cluster, found from any of `nodes` (URLs as for
    /// [`open`](Self::open)). Connects before it returns.
    pub async fn open_cluster<I, T>(self, nodes: I) -> Result<RedisStore, StoreError>
    where
        I: IntoIterator<Item = T>,
        T: redis::IntoConnectionInfo,
    {
        let client = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(self.timeout.max(Duration::from_millis(100)))
            .build()
            .map_err(|e| fault(RedisFault::Config, Some(e)))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| fault(RedisFault::Redis, Some(e)))?;
        self.build(Conn::Cluster(conn))
    }

    /// A store on a connection you made (its reconnection settings are yours).
    pub fn with_connection_manager(
        self,
        manager: ConnectionManager,
    ) -> Result<RedisStore, StoreError> {
        self.build(Conn::Single(manager))
    }

    /// A store on a Cluster connection you made.
    pub fn with_cluster_connection(
        self,
        conn: ClusterConnection,
    ) -> Result<RedisStore, StoreError> {
        self.build(Conn::Cluster(conn))
    }

    fn build(self, conn: Conn) -> Result<RedisStore, StoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(fault(RedisFault::Config, None));
        }
        let fallback = match self.faults {
            FaultPolicy::Fallback { share } => Some(Fallback {
                share,
                store: MemoryStore::new(),
            }),
            FaultPolicy::FailClosed => None,
        };
        Ok(RedisStore {
            conn,
            prefix: self.prefix,
            secret: self.secret,
            timeout: self.timeout,
            retry_interval: self.retry_interval,
            time: self.time,
            faults: self.faults,
            fallback,
            epoch: Instant::now(),
            down_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

struct Fallback {
    share: f64,
    store: MemoryStore,
}

/// A [`Store`] in Redis (standalone, or Cluster), shared by every process that uses the same
/// server, prefix and [`KeySecret`]. See the [module docs](self).
///
/// A [`Limiter`](crate::limit::Limiter) (or layer) given this store hashes request keys with
/// its secret. Its `Debug` output shows the configuration, never the URL (which may hold a
/// password) nor the secret.
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    secret: KeySecret,
    timeout: Duration,
    retry_interval: Duration,
    time: TimeSource,
    faults: FaultPolicy,
    fallback: Option<Fallback>,
    /// Redis is not asked before this (nanoseconds after `epoch`).
    epoch: Instant,
    down_until: AtomicU64,
    /// Whether the last operation failed (to log transitions once).
    down: AtomicBool,
}

impl RedisStore {
    /// A store on one Redis server at `url` with every default: keys hashed with `secret`,
    /// decisions on Redis's clock, 200 ms per operation, falling back to this process's
    /// memory when Redis fails. See [`RedisStoreBuilder::open`].
    pub fn open(url: &str, secret: KeySecret) -> Result<RedisStore, StoreError> {
        RedisStore::builder(secret).open(url)
    }

    /// A builder; the secret is required (every process sharing the store must use the same).
    pub fn builder(secret: KeySecret) -> RedisStoreBuilder {
        RedisStoreBuilder {
            secret,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            time: TimeSource::Redis,
            faults: FaultPolicy::default(),
        }
    }

    /// The fault policy.
    pub fn fault_policy(&self) -> FaultPolicy {
        self.faults
    }

    /// Whether Redis is being left alone after a failure (the fault policy answers).
    pub fn is_degraded(&self) -> bool {
        self.elapsed() < self.down_until.load(Ordering::Relaxed)
    }

    /// The Redis key holding `key`'s state (its quotas' logs are this plus `:<quota id>`):
    /// for inspection with `redis-cli`.
    pub fn redis_key(&self, key: Key) -> String {
        format!("{}{{{:016x}}}", self.prefix, key.as_u64())
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn keys<'s>(&self, key: Key, quotas: &[QuotaSpec], inv: &mut ScriptInvocation<'s>) {
        let base = self.redis_key(key);
        inv.key(&base);
        for q in quotas {
            inv.key(format!("{base}:{:016x}", q.id));
        }
    }

    /// The first five arguments and the quotas (with their costs, for an admission).
    fn args(
        &self,
        inv: &mut ScriptInvocation<'_>,
        now: u64,
        wall: u64,
        margin: u64,
        quotas: &[QuotaSpec],
        costs: Option<&[u64]>,
    ) {
        inv.arg(match self.time {
            TimeSource::Redis => 1,
            TimeSource::Caller => 0,
        })
        .arg(micros(now))
        .arg(micros(wall))
        .arg(micros(margin))
        .arg(quotas.len());
        for (i, q) in quotas.iter().enumerate() {
            inv.arg(format!("{:016x}", q.id))
                .arg(q.limit.min(MAX_EXACT))
                .arg(micros(q.window_ns).max(1))
                .arg(u8::from(q.calendar))
                .arg(micros(q.granularity_ns));
            if let Some(costs) = costs {
                inv.arg(costs.get(i).copied().unwrap_or(0).min(MAX_EXACT));
            }
        }
    }

    /// Runs a script under the timeout, keeping track of Redis's health.
    async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Vec<i64>, StoreError> {
        if self.is_degraded() {
            return Err(fault(RedisFault::Unavailable, None));
        }
        let call = async {
            match &self.conn {
                Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
                Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
            }
        };
        let out = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((RedisFault::Redis, Some(e))),
            Err(_) => Err((RedisFault::Timeout, None)),
        };
        match out {
            Ok(v) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limit: redis store answering again");
                }
                Ok(v)
            }
            Err((kind, e)) => {
                let until = self.elapsed().saturating_add(
                    u64::try_from(self.retry_interval.as_nanos()).unwrap_or(u64::MAX),
                );
                self.down_until.fetch_max(until, Ordering::Relaxed);
                let err = RedisStoreError::new(kind, e);
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, policy = ?self.faults, "rate limit: redis store failed");
                }
                Err(StoreError::new(err))
            }
        }
    }

    /// The result of a failed operation under the fault policy.
    fn on_fault<T>(
        &self,
        e: StoreError,
        fallback: impl FnOnce(&Fallback) -> T,
    ) -> Result<T, StoreError> {
        match &self.fallback {
            Some(f) => Ok(fallback(f)),
            None => Err(e),
        }
    }

    async fn acquire_redis(&self, req: &AcquireRequest<'_>) -> Result<Decision, StoreError> {
        let mut inv = ACQUIRE.prepare_invoke();
        self.keys(req.key, req.quotas, &mut inv);
        self.args(
            &mut inv,
            req.now,
            req.wall,
            req.margin,
            req.quotas,
            Some(req.costs),
        );
        let reply = self.run(&inv).await?;
        match reply.as_slice() {
            [0] => Ok(Decision::Admitted),
            [1, delay] if *delay > 0 => Ok(Decision::NotBefore(shift(req.now, *delay))),
            [2, quota, limit] => Ok(Decision::Exceeds {
                quota: usize::try_from(*quota).map_err(|_| bad_reply())?,
                limit: u64::try_from(*limit).map_err(|_| bad_reply())?,
            }),
            _ => Err(bad_reply()),
        }
    }

    async fn update_redis(&self, req: &UpdateRequest<'_>) -> Result<(), StoreError> {
        let mut inv = UPDATE.prepare_invoke();
        self.keys(req.key, req.quotas, &mut inv);
        self.args(&mut inv, req.now, req.wall, req.margin, req.quotas, None);
        inv.arg(req.updates.len());
        for u in req.updates {
            match *u {
                Update::BlockUntil(t) => {
                    // In nanoseconds from `now`, rounded up to microseconds.
                    let delta = (i128::from(t) - i128::from(req.now) + 999).div_euclid(1000);
                    inv.arg("b").arg(clamp_i64(delta)).arg(0).arg(0);
                }
                Update::Remaining {
                    quota,
                    remaining,
                    reset,
                } => {
                    let reset = reset.map_or(-1, |r| clamp_i64(i128::from(micros(r))));
                    inv.arg("r")
                        .arg(quota)
                        .arg(remaining.min(MAX_EXACT))
                        .arg(reset);
                }
                Update::Limit { quota, limit } => {
                    inv.arg("l").arg(quota).arg(limit.min(MAX_EXACT)).arg(0);
                }
                Update::Adjust { quota, at, delta } => {
                    // When, in microseconds from `now` (rounded down: the admission's own
                    // entry, not a later one).
                    let offset = (i128::from(at) - i128::from(req.now)).div_euclid(1000);
                    let bound = MAX_EXACT as i64;
                    inv.arg("a")
                        .arg(quota)
                        .arg(delta.clamp(-bound, bound))
                        .arg(clamp_i64(offset));
                }
            }
        }
        match self.run(&inv).await?.as_slice() {
            [1] => Ok(()),
            _ => Err(bad_reply()),
        }
    }

    async fn snapshot_redis(
        &self,
        req: &SnapshotRequest<'_>,
    ) -> Result<Option<StoreSnapshot>, StoreError> {
        let mut inv = SNAPSHOT.prepare_invoke();
        self.keys(req.key, req.quotas, &mut inv);
        self.args(&mut inv, req.now, req.wall, req.margin, req.quotas, None);
        let reply = self.run(&inv).await?;
        let (base, blocked, rest) = match reply.as_slice() {
            [0] => return Ok(None),
            [1, base, blocked, n, rest @ ..]
                if usize::try_from(*n).ok() == Some(rest.len() / 3) =>
            {
                (*base, *blocked, rest)
            }
            _ => return Err(bad_reply()),
        };
        let at = |t: i64| match t {
            -1 => u64::MAX,
            0 => 0,
            t => shift(req.now, t - base),
        };
        let windows = rest
            .chunks_exact(3)
            .map(|w| {
                StoreWindow::new(
                    u64::try_from(w[0]).unwrap_or(0),
                    u64::try_from(w[1]).unwrap_or(0),
                    at(w[2]),
                )
            })
            .collect();
        Ok(Some(StoreSnapshot::new(windows, at(blocked))))
    }
}

/// `ns` in whole microseconds, rounded up.
fn micros(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

fn clamp_i64(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// `now` (nanoseconds) moved by `delta_us` microseconds.
fn shift(now: u64, delta_us: i64) -> u64 {
    let t = i128::from(now) + i128::from(delta_us) * 1000;
    u64::try_from(t.max(0)).unwrap_or(u64::MAX)
}

fn bad_reply() -> StoreError {
    fault(RedisFault::Reply, None)
}

// === impl Fallback ===

impl Fallback {
    fn specs(&self, quotas: &[QuotaSpec]) -> Vec<QuotaSpec> {
        quotas
            .iter()
            .map(|q| QuotaSpec {
                limit: self.scale(q.limit),
                ..*q
            })
            .collect()
    }

    fn scale(&self, limit: u64) -> u64 {
        if limit == 0 {
            return 0;
        }
        ((limit as f64 * self.share) as u64).clamp(1, limit)
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Decision {
        // A cost the whole limit admits is never refused for good: it is clamped to the share.
        for (i, (q, &c)) in req.quotas.iter().zip(req.costs).enumerate() {
            if c > q.limit {
                return Decision::Exceeds {
                    quota: i,
                    limit: q.limit,
                };
            }
        }
        let specs = self.specs(req.quotas);
        let costs: Vec<u64> = specs
            .iter()
            .zip(req.costs)
            .map(|(q, &c)| c.min(q.limit))
            .collect();
        let local = AcquireRequest::new(req.key, &specs, &costs, req.now)
            .with_wall(req.wall)
            .with_margin(req.margin);
        match self.store.acquire_now(&local) {
            Some(Ok(d)) => d,
            // The memory store always answers at once, and never fails.
            _ => Decision::NotBefore(req.now.saturating_add(1_000_000)),
        }
    }

    fn update(&self, req: &UpdateRequest<'_>) {
        let specs = self.specs(req.quotas);
        let updates: Vec<Update> = req
            .updates
            .iter()
            .map(|u| match *u {
                Update::Limit { quota, limit } => Update::Limit {
                    quota,
                    limit: self.scale(limit),
                },
                u => u,
            })
            .collect();
        let local = UpdateRequest::new(req.key, &specs, &updates, req.now)
            .with_wall(req.wall)
            .with_margin(req.margin);
        self.store.update_now(&local);
    }

    async fn snapshot(&self, req: &SnapshotRequest<'_>) -> Option<StoreSnapshot> {
        let specs = self.specs(req.quotas);
        let local = SnapshotRequest::new(req.key, &specs, req.now)
            .with_wall(req.wall)
            .with_margin(req.margin);
        self.store.snapshot(local).await.ok().flatten()
    }
}

// === impl RedisStore ===

impl Store for RedisStore {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            match self.acquire_redis(&req).await {
                Ok(d) => Ok(d),
                Err(e) => self.on_fault(e, |f| f.acquire(&req)),
            }
        })
    }

    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match self.update_redis(&req).await {
                Ok(()) => Ok(()),
                Err(e) => self.on_fault(e, |f| f.update(&req)),
            }
        })
    }

    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        Box::pin(async move {
            match self.snapshot_redis(&req).await {
                Ok(s) => Ok(s),
                Err(e) => match &self.fallback {
                    Some(f) => Ok(f.snapshot(&req).await),
                    None => Err(e),
                },
            }
        })
    }

    fn key_secret(&self) -> Option<&KeySecret> {
        Some(&self.secret)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "conn",
                &match self.conn {
                    Conn::Single(_) => "single",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("time", &self.time)
            .field("timeout", &self.timeout)
            .field("faults", &self.faults)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_up_to_microseconds_and_shift_back() {
        assert_eq!(micros(0), 0);
        assert_eq!(micros(1), 1);
        assert_eq!(micros(1000), 1);
        assert_eq!(micros(1001), 2);
        assert_eq!(shift(5_000, 2), 7_000);
        assert_eq!(shift(5_000, -10), 0);
        assert_eq!(shift(u64::MAX - 10, 1), u64::MAX);
    }

    #[test]
    fn the_fallback_share_keeps_at_least_one_unit() {
        let f = Fallback {
            share: 0.25,
            store: MemoryStore::new(),
        };
        assert_eq!(f.scale(20), 5);
        assert_eq!(f.scale(3), 1);
        assert_eq!(f.scale(0), 0);
        assert_eq!(
            FaultPolicy::fallback(7.0),
            FaultPolicy::Fallback { share: 1.0 }
        );
        assert_eq!(
            FaultPolicy::fallback(f64::NAN),
            FaultPolicy::Fallback { share: 1.0 }
        );
    }

    #[test]
    fn scripts_hash_once() {
        // The three scripts are distinct (a shared SHA would run the wrong one).
        let h = [ACQUIRE.get_hash(), UPDATE.get_hash(), SNAPSHOT.get_hash()];
        assert!(h[0] != h[1] && h[1] != h[2] && h[0] != h[2]);
    }
}
