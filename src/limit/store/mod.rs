//! Where the limiter keeps its windows: the async [`Store`] trait and the in-memory
//! [`MemoryStore`].
//!
//! The trait has one admission operation, [`Store::acquire`], which must *atomically* check
//! every quota of a key and record the admission. Everything that crosses the trait is plain
//! data — times are nanoseconds since the Unix epoch on the limiter's clock, quotas are
//! [`QuotaSpec`]s — so a store shared by several processes (Redis with a Lua script) fits
//! behind it.
//!
//! A Redis store maps onto it directly: one hash per key (hash-tagged, `{<key>}`, for Redis
//! Cluster) holding each rolling window's log as a sorted set (or a list of
//! `first,last,cost` triples), each calendar window's `period,used`, the block time and any
//! learned limits; [`Store::acquire`] is one Lua script that purges, computes the earliest
//! admissible time exactly as the in-memory store's window algorithm does, and records on success, with a
//! `PEXPIRE` at the idle time in place of the in-memory sweep. Times are nanoseconds since
//! the Unix epoch on each process's limiter clock (the wall clock read once, then advanced
//! monotonically), so processes sharing a store need clocks in step to within the margin.
//!
//! The trait returns boxed futures. The limiter first tries the synchronous
//! [`Store::acquire_now`] and [`Store::update_now`], which the in-memory store implements,
//! so the hot path allocates no future; a network store pays one box per call, small next
//! to a round trip.

mod memory;

pub use memory::MemoryStore;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::key::Key;

/// The future a [`Store`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One quota as the store sees it: plain numbers, all times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    /// The most units per window (the store may hold a learned limit that replaces it).
    pub limit: u64,
    /// The window length (the calendar period for calendar windows).
    pub window_ns: u64,
    /// Whether the window resets at multiples of `window_ns` since the Unix epoch.
    pub calendar: bool,
    /// For rolling windows: admissions closer than this to a bucket's first entry join that
    /// bucket (0: an exact log).
    pub granularity_ns: u64,
}

/// One admission attempt.
#[derive(Debug, Clone, Copy)]
pub struct AcquireRequest<'a> {
    /// The key (already hashed: a store never sees a raw API key).
    pub key: Key,
    /// The key's quotas.
    pub quotas: &'a [QuotaSpec],
    /// The units the admission costs in each quota (same length as `quotas`).
    pub costs: &'a [u64],
    /// The current time, in nanoseconds since the Unix epoch on the limiter's clock.
    pub now: u64,
    /// Extra time added to every window, in nanoseconds.
    pub margin: u64,
}

/// What [`Store::acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every quota admitted the request, and the admission was recorded.
    Admitted,
    /// Not admissible before this time (nanoseconds since the Unix epoch); nothing recorded.
    NotBefore(u64),
    /// The cost exceeds quota `quota`'s limit: it can never be admitted.
    Exceeds {
        /// The index of the quota.
        quota: usize,
        /// Its limit.
        limit: u64,
    },
}

/// What a response taught about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// Admit nothing before this time (nanoseconds since the Unix epoch).
    BlockUntil(u64),
    /// The server says this many units are left in quota `quota`: when that is fewer than
    /// the local count says, count the difference as used.
    Remaining {
        /// The index of the quota.
        quota: usize,
        /// The units left.
        remaining: u64,
        /// When the server said the window resets (nanoseconds from `now`), if it did.
        reset: Option<u64>,
    },
    /// The server announced this limit for quota `quota`: it replaces the configured one.
    Limit {
        /// The index of the quota.
        quota: usize,
        /// The new limit.
        limit: u64,
    },
}

/// The state of one window, as a store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreWindow {
    /// The limit in force (configured or learned).
    pub limit: u64,
    /// The units counted now.
    pub used: u64,
    /// The earliest time one more unit fits (nanoseconds since the Unix epoch).
    pub next_free: u64,
}

/// The state of a key, as a store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// One entry per quota.
    pub windows: Vec<StoreWindow>,
    /// No admission before this time (nanoseconds since the Unix epoch).
    pub blocked_until: u64,
}

/// A store failed (a lost connection, a script error).
#[derive(Debug)]
pub struct StoreError {
    source: Box<dyn Error + Send + Sync>,
}

impl StoreError {
    /// Wraps the cause.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> StoreError {
        StoreError {
            source: source.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store failed: {}", self.source)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Where the windows of every key live.
///
/// Implementations must make [`acquire`](Store::acquire) atomic per key: two concurrent
/// calls for one key must behave as if one ran after the other. Keys are already hashed.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Atomically checks every quota of `req.key` at `req.now` and, when all admit, records
    /// the admission.
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision>;

    /// The same decision without a future, for stores that can answer at once (the
    /// in-memory store). The limiter uses it first, which spares the boxed future on the
    /// hot path. The default returns `None`.
    fn acquire_now(&self, req: &AcquireRequest<'_>) -> Option<Result<Decision, StoreError>> {
        let _ = req;
        None
    }

    /// Applies what a response taught about `key`.
    fn update(
        &self,
        key: Key,
        quotas: Arc<[QuotaSpec]>,
        update: Update,
        now: u64,
        margin: u64,
    ) -> StoreFuture<'_, ()>;

    /// Applies an update at once, for stores that can (see
    /// [`acquire_now`](Store::acquire_now)); returns `false` when the caller must use
    /// [`update`](Store::update). The default returns `false`.
    fn update_now(
        &self,
        key: Key,
        quotas: &[QuotaSpec],
        update: Update,
        now: u64,
        margin: u64,
    ) -> bool {
        let _ = (key, quotas, update, now, margin);
        false
    }

    /// The state of `key` at `now`, or `None` if the store holds nothing for it.
    fn snapshot<'a>(
        &'a self,
        key: Key,
        quotas: &'a [QuotaSpec],
        now: u64,
        margin: u64,
    ) -> StoreFuture<'a, Option<StoreSnapshot>>;
}
