//! The limiter's own failures, returned as [`tower::BoxError`]s that callers downcast.
//!
//! [`tower::BoxError`]: https://docs.rs/tower/latest/tower/type.BoxError.html

use std::error::Error;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::key::Key;
use super::quota::Tier;
use super::store::StoreError;

/// Why a request was not admitted in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Reject mode, and the request was not admissible at once.
    Rejected,
    /// The wait would have exceeded `max_wait`: the store named a later time, or the
    /// request's place in the queue put it past its bound.
    MaxWait,
    /// The key's queue in this process already held `max_queue` waiters.
    QueueFull,
    /// Reject mode, and every place among the key's requests in flight at once was taken
    /// ([`Limiter::with_max_in_flight`](super::Limiter::with_max_in_flight), or a cap learned
    /// from the server).
    InFlight,
}

/// A request was not admitted: in reject mode because it was not admissible at once, in wait
/// mode because its wait would have exceeded `max_wait` (a daily cap never leaves a caller
/// hanging for hours). Says when it could be admitted, when that is known.
///
/// ```
/// # async fn demo(err: tower::BoxError) {
/// use tower_quota::limit::RateLimited;
/// if let Some(limited) = err.downcast_ref::<RateLimited>() {
///     println!("try again in {:?}", limited.retry_after());
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub(crate) key: Key,
    pub(crate) tier: Tier,
    pub(crate) reason: Reason,
    pub(crate) available_at: Option<Instant>,
    pub(crate) retry_after: Option<Duration>,
}

impl RateLimited {
    /// The (hashed) key that was limited.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The name of the tier whose quotas were full.
    pub fn tier(&self) -> &str {
        self.tier.name()
    }

    /// Why the request was not admitted.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// When the request could have been admitted (as far as known when it failed), or `None`
    /// when unknown (it was still queued behind other waiters).
    pub fn available_at(&self) -> Option<Instant> {
        self.available_at
    }

    /// How long after the failure the request could have been admitted, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl Reason {
    /// A short, stable, lower-case name for logs and metrics: `"rejected"`, `"max_wait"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::MaxWait => "max_wait",
            Reason::QueueFull => "queue_full",
            Reason::InFlight => "in_flight",
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited by tier {:?} (key {})",
            self.tier.name(),
            self.key
        )?;
        match self.reason {
            Reason::Rejected => f.write_str(": not admissible now")?,
            Reason::MaxWait => f.write_str(": the wait would exceed max_wait")?,
            Reason::QueueFull => f.write_str(": too many requests already wait on this key")?,
            Reason::InFlight => {
                f.write_str(": as many requests of this key as it may have are in flight")?
            }
        }
        if let Some(d) = self.retry_after {
            write!(f, "; admissible in {:.3}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Error for RateLimited {}

/// A request costs more than a quota's whole limit: it can never be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostExceedsLimit {
    pub(crate) tier: Tier,
    pub(crate) quota: usize,
    pub(crate) cost: u64,
    pub(crate) limit: u64,
}

impl CostExceedsLimit {
    /// The name of the tier.
    pub fn tier(&self) -> &str {
        self.tier.name()
    }

    /// The index of the quota in its tier.
    pub fn quota(&self) -> usize {
        self.quota
    }

    /// The request's cost in that quota.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The quota's limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl fmt::Display for CostExceedsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a request costing {} can never fit quota #{} of tier {:?} (limit {})",
            self.cost,
            self.quota,
            self.tier.name(),
            self.limit
        )
    }
}

impl Error for CostExceedsLimit {}

/// Why [`Limiter::acquire`](super::Limiter::acquire) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcquireError {
    /// Not admitted in time (reject mode or `max_wait`).
    RateLimited(RateLimited),
    /// The cost exceeds a quota's limit.
    CostExceedsLimit(CostExceedsLimit),
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::RateLimited(e) => e.fmt(f),
            AcquireError::CostExceedsLimit(e) => e.fmt(f),
            AcquireError::Store(e) => e.fmt(f),
        }
    }
}

impl Error for AcquireError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AcquireError::RateLimited(e) => Some(e),
            AcquireError::CostExceedsLimit(e) => Some(e),
            AcquireError::Store(e) => Some(e),
        }
    }
}

impl AcquireError {
    /// The typed error alone, boxed, as the service returns it (a [`RateLimited`], a
    /// [`CostExceedsLimit`] or a [`StoreError`]), so callers downcast to it directly.
    pub fn into_box(self) -> Box<dyn Error + Send + Sync> {
        match self {
            AcquireError::RateLimited(e) => Box::new(e),
            AcquireError::CostExceedsLimit(e) => Box::new(e),
            AcquireError::Store(e) => Box::new(e),
        }
    }

    /// The [`RateLimited`] error, if that is what this is.
    pub fn as_rate_limited(&self) -> Option<&RateLimited> {
        match self {
            AcquireError::RateLimited(e) => Some(e),
            _ => None,
        }
    }
}
