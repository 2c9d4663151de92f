//! Where the limiter keeps its windows: the async [`Store`] trait and the in-memory
//! [`MemoryStore`].
//!
//! The trait has one admission operation, [`Store::acquire`], which must *atomically* check
//! every quota of a key and record the admission. Everything that crosses the trait is plain
//! data — times are nanoseconds since the Unix epoch on the limiter's clock, quotas are
//! [`QuotaSpec`]s — so a store shared by several processes (Redis with a Lua script) fits
//! behind it.
//!
//! A store shared by several processes must mean the same thing in each: keys hashed with a
//! configured secret (not a per-process seed), a tier's store key derived from its name *and*
//! its quotas, each quota's state addressed by [`QuotaSpec::id`], time from one clock (the
//! store's own), and a response's updates applied as one batch ([`UpdateRequest`]).
//!
//! The trait returns boxed futures. The limiter first tries the synchronous
//! [`Store::acquire_now`] and [`Store::update_now`], which the in-memory store implements,
//! so the hot path allocates no future; a network store pays one box per call, small next
//! to a round trip.

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use memory::{MemoryStore, DEFAULT_MAX_KEYS};

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::key::{Key, KeySecret};

/// The setters every store request has beside its constructor: the wall clock's reading and
/// the margin (both default to the constructor's `now` and zero).
macro_rules! clock_setters {
    () => {
        /// Sets the wall clock's reading.
        pub fn with_wall(mut self, wall: u64) -> Self {
            self.wall = wall;
            self
        }

        /// Sets the margin.
        pub fn with_margin(mut self, margin: u64) -> Self {
            self.margin = margin;
            self
        }
    };
}

/// The future a [`Store`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One quota as the store sees it: plain numbers, all times in nanoseconds.
///
/// Made by the crate from a [`Quota`](crate::Quota); a store only reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct QuotaSpec {
    /// Where this quota's state lives within its key: a hash of what the quota counts, its
    /// window length and kind (not its limit, nor its position in the tier), the same in
    /// every process. A store addresses each quota's state by it, so reordering a tier's
    /// quotas, or changing a limit, never hands one quota's counts to another.
    pub id: u64,
    /// The most units per window (the store may hold a learned limit that replaces it).
    pub limit: u64,
    /// The window length (the calendar period for calendar windows).
    pub window_ns: u64,
    /// Whether the window resets at multiples of `window_ns` since the Unix epoch (on the
    /// wall clock).
    pub calendar: bool,
    /// For rolling windows: admissions closer than this to a bucket's first entry join that
    /// bucket (0: an exact log).
    pub granularity_ns: u64,
}

impl QuotaSpec {
    /// A rolling window of `limit` units per `window_ns`, with an exact log, addressed by `id`
    /// (for stores' own tests; the crate makes specs from [`Quota`](crate::Quota)s).
    pub fn rolling(id: u64, limit: u64, window_ns: u64) -> QuotaSpec {
        QuotaSpec {
            id,
            limit,
            window_ns,
            calendar: false,
            granularity_ns: 0,
        }
    }

    /// A calendar window of `limit` units per period `period_ns`, addressed by `id`.
    pub fn calendar(id: u64, limit: u64, period_ns: u64) -> QuotaSpec {
        QuotaSpec {
            id,
            limit,
            window_ns: period_ns,
            calendar: true,
            granularity_ns: 0,
        }
    }

    /// The same spec with admissions bucketed at `granularity_ns` (rolling windows).
    pub fn with_granularity(mut self, granularity_ns: u64) -> QuotaSpec {
        self.granularity_ns = granularity_ns;
        self
    }
}

/// One admission attempt.
///
/// Times are nanoseconds since the Unix epoch. `now` is the limiter's monotonic clock (it
/// never steps); `wall` is the wall clock read at the same moment, for calendar periods
/// only. Every time a store returns is in `now`'s timeline. A store with a clock of its own
/// (Redis's `TIME`) may decide on that clock, and answers `now + (its time - its now)`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AcquireRequest<'a> {
    /// The key (already hashed: a store never sees a raw API key).
    pub key: Key,
    /// The key's quotas.
    pub quotas: &'a [QuotaSpec],
    /// The units the admission costs in each quota (same length as `quotas`).
    pub costs: &'a [u64],
    /// The limiter's clock now.
    pub now: u64,
    /// The wall clock now.
    pub wall: u64,
    /// Extra time added to every window, in nanoseconds.
    pub margin: u64,
}

impl<'a> AcquireRequest<'a> {
    /// An admission of `costs` under `quotas` for `key` at `now` (both clocks), no margin.
    pub fn new(key: Key, quotas: &'a [QuotaSpec], costs: &'a [u64], now: u64) -> Self {
        AcquireRequest {
            key,
            quotas,
            costs,
            now,
            wall: now,
            margin: 0,
        }
    }

    clock_setters!();
}

/// What a response taught about a key: every [`Update`] of one response, applied together
/// (one round trip for a network store).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct UpdateRequest<'a> {
    /// The key.
    pub key: Key,
    /// The key's quotas (an [`Update`]'s `quota` indexes this slice).
    pub quotas: &'a [QuotaSpec],
    /// What to apply, in order.
    pub updates: &'a [Update],
    /// The limiter's clock now.
    pub now: u64,
    /// The wall clock now.
    pub wall: u64,
    /// The margin.
    pub margin: u64,
}

impl<'a> UpdateRequest<'a> {
    /// `updates` for `key` under `quotas` at `now` (both clocks), no margin.
    pub fn new(key: Key, quotas: &'a [QuotaSpec], updates: &'a [Update], now: u64) -> Self {
        UpdateRequest {
            key,
            quotas,
            updates,
            now,
            wall: now,
            margin: 0,
        }
    }

    clock_setters!();
}

/// A look at a key's state (nothing recorded).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SnapshotRequest<'a> {
    /// The key.
    pub key: Key,
    /// The key's quotas.
    pub quotas: &'a [QuotaSpec],
    /// The limiter's clock now.
    pub now: u64,
    /// The wall clock now.
    pub wall: u64,
    /// The margin.
    pub margin: u64,
}

impl<'a> SnapshotRequest<'a> {
    /// A look at `key` under `quotas` at `now` (both clocks), no margin.
    pub fn new(key: Key, quotas: &'a [QuotaSpec], now: u64) -> Self {
        SnapshotRequest {
            key,
            quotas,
            now,
            wall: now,
            margin: 0,
        }
    }

    clock_setters!();
}

/// What [`Store::acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Corrects what the admission made at `at` counts in quota `quota` by `delta` units: a
    /// refund (negative) when the request cost less than was reserved for it, a charge
    /// (positive) when it cost more. In a rolling window the units leave when that admission
    /// does (a refund takes them from the newest entry at or before `at`; a charge is
    /// counted as if admitted at `at`); in a calendar window they count in the admission's
    /// period, and only while it lasts. A correction to an admission no longer counted is
    /// dropped, and no count goes below zero.
    Adjust {
        /// The index of the quota.
        quota: usize,
        /// When the admission was made (the limiter's clock, nanoseconds since the Unix
        /// epoch).
        at: u64,
        /// The units to add (positive) or give back (negative).
        delta: i64,
    },
}

/// The state of one window, as a store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

impl StoreWindow {
    /// A window's state: its limit in force, the units used, when one more fits.
    pub fn new(limit: u64, used: u64, next_free: u64) -> StoreWindow {
        StoreWindow {
            limit,
            used,
            next_free,
        }
    }
}

impl StoreSnapshot {
    /// A key's state: one window per quota, and the time it is blocked until.
    pub fn new(windows: Vec<StoreWindow>, blocked_until: u64) -> StoreSnapshot {
        StoreSnapshot {
            windows,
            blocked_until,
        }
    }
}

/// Where the windows of every key live.
///
/// Implementations must make [`acquire`](Store::acquire) atomic per key: two concurrent
/// calls for one key must behave as if one ran after the other, and so must the updates of
/// one [`UpdateRequest`]. Keys are already hashed. Each quota's state is addressed by
/// [`QuotaSpec::id`]; state that does not match is never wiped to fit.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Atomically checks every quota of `req.key` and, when all admit, records the
    /// admission.
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision>;

    /// The same decision without a future, for stores that can answer at once (the
    /// in-memory store). The limiter uses it first, which spares the boxed future on the
    /// hot path. The default returns `None`.
    fn acquire_now(&self, req: &AcquireRequest<'_>) -> Option<Result<Decision, StoreError>> {
        let _ = req;
        None
    }

    /// Applies what a response taught about a key, every update of it at once.
    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()>;

    /// Applies the updates at once, for stores that can (see
    /// [`acquire_now`](Store::acquire_now)); returns `false` when the caller must use
    /// [`update`](Store::update). The default returns `false`.
    fn update_now(&self, req: &UpdateRequest<'_>) -> bool {
        let _ = req;
        false
    }

    /// The state of `req.key`, or `None` if the store holds nothing for it.
    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>>;

    /// The secret keys must be hashed with for this store, if it has one: a store shared by
    /// several processes holds the [`KeySecret`] they all use, and a
    /// [`Limiter`](crate::limit::Limiter) given the store adopts it, so that one API key
    /// gets one store key in every process. The default (`None`) leaves the limiter's own.
    fn key_secret(&self) -> Option<&KeySecret> {
        None
    }
}

/// A shared store is a store: `with_store(Arc::clone(&store))` gives several limiters one
/// state (in one process; Redis does it across processes).
impl<S: Store + ?Sized> Store for Arc<S> {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        (**self).acquire(req)
    }
    fn acquire_now(&self, req: &AcquireRequest<'_>) -> Option<Result<Decision, StoreError>> {
        (**self).acquire_now(req)
    }
    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        (**self).update(req)
    }
    fn update_now(&self, req: &UpdateRequest<'_>) -> bool {
        (**self).update_now(req)
    }
    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        (**self).snapshot(req)
    }
    fn key_secret(&self) -> Option<&KeySecret> {
        (**self).key_secret()
    }
}
