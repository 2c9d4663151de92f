//! [`Quota`] (one window) and [`Tier`] (every window a key must respect at once).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::headers::Dimension;

use super::store::QuotaSpec;

/// Above this limit a rolling window is kept as a bucketed log (bounded memory) rather than
/// an exact log of every admission.
pub(crate) const EXACT_MAX: u64 = 1024;
/// Sub-buckets per window for the bucketed log: at most `1 / BUCKETS` of throughput is lost.
pub(crate) const BUCKETS: u64 = 256;

/// How a [`Quota`]'s window moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// A rolling (sliding) window: never more than the limit in *any* interval of this length.
    Rolling(Duration),
    /// A calendar window: the count resets at every multiple of this length since the Unix
    /// epoch, in UTC (one hour: the top of every hour; one day: UTC midnight).
    Calendar(Duration),
}

impl Window {
    /// The length of the window.
    pub fn length(&self) -> Duration {
        match *self {
            Window::Rolling(d) | Window::Calendar(d) => d,
        }
    }

    /// Whether the window resets at calendar boundaries.
    pub fn is_calendar(&self) -> bool {
        matches!(self, Window::Calendar(_))
    }
}

/// One limit: at most `limit` units per window.
///
/// A quota counts requests by default (each admission costs 1). A quota of another
/// [`Dimension`] (e.g. [`Dimension::Tokens`]) counts the weight of each request, as given
/// to [`Limiter::acquire`](super::Limiter::acquire) or computed by the layer's
/// [`with_cost`](super::RateLimitLayer::with_cost) function.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::Quota;
/// use tower_quota::headers::Dimension;
///
/// let rpm = Quota::per_minute(20);                 // rolling 60 s window
/// let daily = Quota::per_utc_day(50);              // resets at UTC midnight
/// let tpm = Quota::per_minute(100_000).with_dimension(Dimension::Tokens);
/// assert_eq!(rpm.limit(), 20);
/// assert_eq!(daily.window().length(), Duration::from_secs(86_400));
/// assert!(tpm.is_weighted());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    window: Window,
    dimension: Dimension,
}

impl Quota {
    /// At most `limit` requests in any interval of length `window` (a rolling window).
    ///
    /// # Panics
    ///
    /// If `window` is zero.
    pub fn new(limit: u64, window: Duration) -> Quota {
        assert!(!window.is_zero(), "a quota window must not be zero");
        Quota {
            limit,
            window: Window::Rolling(window),
            dimension: Dimension::Requests,
        }
    }

    /// At most `limit` per rolling second.
    pub fn per_second(limit: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(1))
    }

    /// At most `limit` per rolling minute.
    pub fn per_minute(limit: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(60))
    }

    /// At most `limit` per rolling hour.
    pub fn per_hour(limit: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(3_600))
    }

    /// At most `limit` per rolling 24 hours.
    pub fn per_day(limit: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(86_400))
    }

    /// At most `limit` per calendar period of length `period`, periods starting at every
    /// multiple of `period` since the Unix epoch (UTC).
    ///
    /// # Panics
    ///
    /// If `period` is zero.
    pub fn calendar(limit: u64, period: Duration) -> Quota {
        assert!(!period.is_zero(), "a quota window must not be zero");
        Quota {
            limit,
            window: Window::Calendar(period),
            dimension: Dimension::Requests,
        }
    }

    /// At most `limit` per UTC hour, reset at the top of every hour.
    pub fn per_utc_hour(limit: u64) -> Quota {
        Quota::calendar(limit, Duration::from_secs(3_600))
    }

    /// At most `limit` per UTC day, reset at UTC midnight (OpenRouter's daily free-model cap).
    pub fn per_utc_day(limit: u64) -> Quota {
        Quota::calendar(limit, Duration::from_secs(86_400))
    }

    /// Sets what the quota counts. [`Dimension::Requests`] (the default) costs 1 per
    /// admission; any other dimension counts the request's weight.
    pub fn with_dimension(mut self, dimension: Dimension) -> Quota {
        self.dimension = dimension;
        self
    }

    /// The most units admitted per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// What the quota counts.
    pub fn dimension(&self) -> &Dimension {
        &self.dimension
    }

    /// Whether the quota counts the request's weight rather than 1 per request.
    pub fn is_weighted(&self) -> bool {
        self.dimension != Dimension::Requests
    }

    pub(crate) fn spec(&self) -> QuotaSpec {
        let window_ns = dur_ns(self.window.length());
        let granularity_ns = match self.window {
            Window::Rolling(_) if self.limit > EXACT_MAX => window_ns / BUCKETS,
            _ => 0,
        };
        QuotaSpec {
            limit: self.limit,
            window_ns,
            calendar: self.window.is_calendar(),
            granularity_ns,
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.window.is_calendar() {
            "calendar"
        } else {
            "rolling"
        };
        write!(f, "{}/{:?} {kind}", self.limit, self.window.length(),)?;
        if self.is_weighted() {
            write!(f, " ({:?})", self.dimension)?;
        }
        Ok(())
    }
}

/// A named set of [`Quota`]s, all enforced at once (e.g. 20 per rolling minute *and* 50 per
/// UTC day). Cheap to clone.
///
/// ```
/// use tower_quota::{Quota, Tier};
///
/// let free = Tier::new("openrouter-free")
///     .with_quota(Quota::per_minute(20))
///     .with_quota(Quota::per_utc_day(50));
/// assert_eq!(free.quotas().len(), 2);
/// assert_eq!(free.name(), "openrouter-free");
/// ```
#[derive(Clone)]
pub struct Tier {
    inner: Arc<TierInner>,
}

struct TierInner {
    name: Box<str>,
    id: u64,
    quotas: Vec<Quota>,
    specs: Arc<[QuotaSpec]>,
}

impl Tier {
    /// A tier with no quota yet (it admits everything until one is added).
    pub fn new(name: impl Into<String>) -> Tier {
        let name: String = name.into();
        Tier::build(name.into_boxed_str(), Vec::new())
    }

    fn build(name: Box<str>, quotas: Vec<Quota>) -> Tier {
        let id = super::key::stable_hash(&*name);
        let specs = quotas.iter().map(Quota::spec).collect();
        Tier {
            inner: Arc::new(TierInner {
                name,
                id,
                quotas,
                specs,
            }),
        }
    }

    /// Adds a quota; every quota of a tier is enforced at once.
    pub fn with_quota(self, quota: Quota) -> Tier {
        let mut quotas = self.inner.quotas.clone();
        quotas.push(quota);
        Tier::build(self.inner.name.clone(), quotas)
    }

    /// The tier's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The tier's quotas, in the order they were added.
    pub fn quotas(&self) -> &[Quota] {
        &self.inner.quotas
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn specs(&self) -> &Arc<[QuotaSpec]> {
        &self.inner.specs
    }

    /// The per-quota costs of a request of weight `weight`.
    pub(crate) fn costs(&self, weight: u64) -> smallcosts::Costs {
        smallcosts::Costs::new(self.inner.quotas.iter().map(|q| {
            if q.is_weighted() {
                weight
            } else {
                1
            }
        }))
    }
}

pub(crate) mod smallcosts {
    /// Per-quota costs without allocating for up to four quotas.
    #[derive(Debug, Clone)]
    pub(crate) enum Costs {
        Inline([u64; 4], usize),
        Heap(Vec<u64>),
    }

    impl Costs {
        pub(crate) fn new(it: impl ExactSizeIterator<Item = u64>) -> Costs {
            if it.len() <= 4 {
                let mut a = [0; 4];
                let mut n = 0;
                for (slot, c) in a.iter_mut().zip(it) {
                    *slot = c;
                    n += 1;
                }
                Costs::Inline(a, n)
            } else {
                Costs::Heap(it.collect())
            }
        }

        pub(crate) fn as_slice(&self) -> &[u64] {
            match self {
                Costs::Inline(a, n) => &a[..*n],
                Costs::Heap(v) => v,
            }
        }
    }
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("name", &self.name())
            .field("quotas", &self.quotas())
            .finish()
    }
}

impl PartialEq for Tier {
    fn eq(&self, other: &Tier) -> bool {
        self.inner.name == other.inner.name && self.inner.quotas == other.inner.quotas
    }
}

impl Eq for Tier {}

pub(crate) fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
