//! [`Quota`] (one window) and [`Tier`] (every window a key must respect at once).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;

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

    /// A quota of `limit` requests over this window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::limit::Window;
    /// use tower_quota::Quota;
    ///
    /// assert_eq!(Window::Rolling(Duration::from_secs(60)).quota(20), Quota::per_minute(20));
    /// ```
    pub fn quota(self, limit: u64) -> Quota {
        match self {
            Window::Rolling(d) => Quota::new(limit, d),
            Window::Calendar(p) => Quota::calendar(limit, p),
        }
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
///
/// With the `serde` feature, a quota reads and writes as a small map: `limit`, one of
/// `window` (a rolling window: `"60s"`, `"1m"`, `"1h"`, `"1d"`, `"500ms"`, `"1h30m"`), `per`
/// (`"second"`, `"minute"`, `"hour"`, `"day"` — rolling — or `"utc-hour"`, `"utc-day"` —
/// calendar) or `calendar` (a calendar period as a duration), and optionally `dimension`
/// (`"requests"`, the default, `"tokens"`, `"input-tokens"`, `"output-tokens"`, or any other
/// name). See [`Tier`] for an example.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(try_from = "serde_impl::QuotaRepr", into = "serde_impl::QuotaRepr")
)]
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

    /// At most `limit` tokens, input and output together, per rolling minute (OpenAI's TPM,
    /// LiteLLM's `tpm`): `Quota::per_minute(limit).with_dimension(Dimension::Tokens)`.
    ///
    /// ```
    /// use tower_quota::headers::Dimension;
    /// use tower_quota::Quota;
    ///
    /// assert_eq!(Quota::tokens_per_minute(30_000).dimension(), &Dimension::Tokens);
    /// assert_eq!(Quota::input_tokens_per_minute(450_000).dimension(), &Dimension::InputTokens);
    /// assert_eq!(Quota::output_tokens_per_minute(90_000).dimension(), &Dimension::OutputTokens);
    /// ```
    pub fn tokens_per_minute(limit: u64) -> Quota {
        Quota::per_minute(limit).with_dimension(Dimension::Tokens)
    }

    /// At most `limit` input tokens per rolling minute (Anthropic's ITPM, LiteLLM's `itpm`).
    pub fn input_tokens_per_minute(limit: u64) -> Quota {
        Quota::per_minute(limit).with_dimension(Dimension::InputTokens)
    }

    /// At most `limit` output tokens per rolling minute (Anthropic's OTPM, LiteLLM's `otpm`).
    pub fn output_tokens_per_minute(limit: u64) -> Quota {
        Quota::per_minute(limit).with_dimension(Dimension::OutputTokens)
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

    /// The store's view of this quota; `nth` tells apart quotas of one tier that count the
    /// same thing over the same window.
    pub(crate) fn spec(&self, nth: u64) -> QuotaSpec {
        let window_ns = dur_ns(self.window.length());
        let granularity_ns = match self.window {
            Window::Rolling(_) if self.limit > EXACT_MAX => window_ns / BUCKETS,
            _ => 0,
        };
        let calendar = self.window.is_calendar();
        let id = super::key::stable_hash(&(&self.dimension, window_ns, calendar, nth));
        let spec = if calendar {
            QuotaSpec::calendar(id, self.limit, window_ns)
        } else {
            QuotaSpec::rolling(id, self.limit, window_ns)
        };
        spec.with_granularity(granularity_ns)
    }

    /// What addresses this quota's state, apart from `nth`.
    fn slot(&self) -> (&Dimension, Duration, bool) {
        (
            &self.dimension,
            self.window.length(),
            self.window.is_calendar(),
        )
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
///
/// With the `serde` feature, tiers can live in a configuration file, one per model the way
/// LiteLLM users keep `rpm`/`tpm` per model (TOML here; JSON and YAML read the same):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use tower_quota::{Quota, Tier};
/// use tower_quota::headers::Dimension;
///
/// #[derive(serde::Deserialize)]
/// struct Config {
///     tiers: BTreeMap<String, Tier>,
/// }
///
/// let config: Config = toml::from_str(r#"
///     [tiers."meta-llama/llama-3.3-70b-instruct:free"]
///     name = "openrouter-free"
///     quotas = [{ limit = 20, window = "1m" }, { limit = 50, per = "utc-day" }]
///
///     [tiers."gpt-4o"]
///     name = "gpt-4o"
///     quotas = [
///         { limit = 500, per = "minute" },
///         { limit = 30000, window = "60s", dimension = "tokens" },
///     ]
/// "#).unwrap();
///
/// assert_eq!(config.tiers["meta-llama/llama-3.3-70b-instruct:free"], tower_quota::tiers::openrouter::free());
/// assert_eq!(
///     config.tiers["gpt-4o"],
///     Tier::new("gpt-4o")
///         .with_quota(Quota::per_minute(500))
///         .with_quota(Quota::new(30_000, Duration::from_secs(60)).with_dimension(Dimension::Tokens)),
/// );
/// # }
/// ```
///
/// A tier reads and writes as `name` and `quotas` (a list of [`Quota`]s, possibly empty).
#[derive(Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(try_from = "serde_impl::TierRepr", into = "serde_impl::TierRepr")
)]
pub struct Tier {
    inner: Arc<TierInner>,
}

// Aligned to a cache line: an `Arc`'s counts sit just before it, and a clone (an error, a
// waiter) then never invalidates the line that every admission on another core reads.
#[repr(align(64))]
struct TierInner {
    name: Box<str>,
    id: u64,
    quotas: Vec<Quota>,
    specs: Arc<[QuotaSpec]>,
    /// The `RateLimit-Policy` field of the configured limits, made by the first refusal
    /// that answers with it (a refusal's `429` then clones it instead of formatting it).
    policy_field: OnceLock<Option<HeaderValue>>,
}

/// An empty tier named `"default"`: it admits everything until the server announces its
/// limits, which it then learns (see [`Limiter::learn`](super::Limiter::learn)). The tier
/// of a layer whose requests each get theirs from a tier selector
/// ([`RateLimitLayer::selecting`](super::RateLimitLayer::selecting)).
impl Default for Tier {
    fn default() -> Tier {
        Tier::new("default")
    }
}

impl Tier {
    /// A tier with no quota yet (it admits everything until one is added).
    pub fn new(name: impl Into<String>) -> Tier {
        let name: String = name.into();
        Tier::build(name.into_boxed_str(), Vec::new())
    }

    fn build(name: Box<str>, quotas: Vec<Quota>) -> Tier {
        let specs: Arc<[QuotaSpec]> = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let nth = quotas[..i].iter().filter(|p| p.slot() == q.slot()).count();
                q.spec(nth as u64)
            })
            .collect();
        // A tier is its name and its quotas, in any order: two tiers that share a name but
        // not their quotas never share state, and reordering quotas changes nothing.
        let mut quota_ids: Vec<(u64, u64)> = specs.iter().map(|s| (s.id, s.limit)).collect();
        quota_ids.sort_unstable();
        let id = super::key::stable_hash(&(&*name, quota_ids));
        Tier {
            inner: Arc::new(TierInner {
                name,
                id,
                quotas,
                specs,
                policy_field: OnceLock::new(),
            }),
        }
    }

    /// The even pace of the tier's requests: the widest spacing (window ÷ limit) among its
    /// rolling request quotas of an hour or less, and that quota's window; `None` without
    /// one.
    pub(crate) fn request_pace(&self) -> Option<(Duration, Duration)> {
        self.inner
            .quotas
            .iter()
            .filter(|q| q.dimension() == &Dimension::Requests && q.limit() > 0)
            .filter_map(|q| match q.window() {
                Window::Rolling(w) if w <= Duration::from_secs(3600) => {
                    Some((w / u32::try_from(q.limit()).unwrap_or(u32::MAX), w))
                }
                _ => None,
            })
            .filter(|(spacing, _)| !spacing.is_zero())
            .max()
    }

    /// This tier with one more quota, one request per `spacing`: the pace a limiter keeps
    /// for a while after a refusal its windows did not predict. Like every window, the
    /// spacing bounds the learned margin (a twentieth of it, at most), which is added to it.
    pub(crate) fn paced(&self, spacing: Duration) -> Tier {
        self.clone().with_quota(Quota::new(1, spacing))
    }

    /// Adds a quota; every quota of a tier is enforced at once.
    pub fn with_quota(self, quota: Quota) -> Tier {
        let mut quotas = self.inner.quotas.clone();
        quotas.push(quota);
        Tier::build(self.inner.name.clone(), quotas)
    }

    /// An equal tier in an allocation of its own: clones of a replica count on another
    /// counter than clones of this one.
    pub(crate) fn replica(&self) -> Tier {
        let i = &*self.inner;
        Tier {
            inner: Arc::new(TierInner {
                name: i.name.clone(),
                id: i.id,
                quotas: i.quotas.clone(),
                specs: Arc::clone(&i.specs),
                policy_field: i.policy_field.clone(),
            }),
        }
    }

    /// The tier's `RateLimit-Policy` field for its configured limits, made once by `make`.
    pub(crate) fn policy_field(
        &self,
        make: impl FnOnce(&[Quota]) -> Option<HeaderValue>,
    ) -> Option<HeaderValue> {
        let inner = &*self.inner;
        inner
            .policy_field
            .get_or_init(|| make(&inner.quotas))
            .clone()
    }

    /// Whether `a` and `b` are clones of one tier (the same allocation).
    pub(crate) fn ptr_eq(a: &Tier, b: &Tier) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// The tier's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The tier's quotas, in the order they were added.
    pub fn quotas(&self) -> &[Quota] {
        &self.inner.quotas
    }

    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    #[inline]
    pub(crate) fn specs(&self) -> &Arc<[QuotaSpec]> {
        &self.inner.specs
    }

    /// The length of the tier's shortest window in nanoseconds, 0 without quotas (bounds the
    /// learned margin).
    #[inline]
    pub(crate) fn shortest_window_ns(&self) -> u64 {
        self.inner
            .specs
            .iter()
            .map(|s| s.window_ns)
            .min()
            .unwrap_or(0)
    }

    /// Whether a quota of the tier is a calendar window (the only thing that reads the wall
    /// clock on an admission).
    #[inline]
    pub(crate) fn has_calendar(&self) -> bool {
        self.inner.specs.iter().any(|s| s.calendar)
    }

    /// The per-quota costs of a request that costs `cost`.
    #[inline]
    pub(crate) fn costs(&self, cost: &super::Cost) -> smallcosts::Costs {
        smallcosts::Costs::new(self.inner.quotas.iter().map(|q| cost.count(q.dimension())))
    }

    /// Whether a quota of the tier counts tokens.
    pub(crate) fn counts_tokens(&self) -> bool {
        self.inner
            .quotas
            .iter()
            .any(|q| counts_tokens(q.dimension()))
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
        #[inline]
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

/// Whether a quota of `dimension` counts tokens (in, out, or both).
pub(crate) fn counts_tokens(dimension: &Dimension) -> bool {
    matches!(
        dimension,
        Dimension::Tokens | Dimension::InputTokens | Dimension::OutputTokens
    )
}

pub(crate) fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// === serde ===

#[cfg(feature = "serde")]
pub(crate) mod serde_impl {
    //! The shapes `Quota` and `Tier` read and write as.

    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::{Quota, Tier, Window};
    use crate::headers::{parse_go_duration, Dimension};

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct QuotaRepr {
        limit: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calendar: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dimension: Option<String>,
    }

    impl TryFrom<QuotaRepr> for Quota {
        type Error = String;

        fn try_from(r: QuotaRepr) -> Result<Quota, String> {
            let window = match (r.window, r.per, r.calendar) {
                (Some(w), None, None) => Window::Rolling(duration(&w)?),
                (None, Some(p), None) => match p.as_str() {
                    "second" => Window::Rolling(Duration::from_secs(1)),
                    "minute" => Window::Rolling(Duration::from_secs(60)),
                    "hour" => Window::Rolling(Duration::from_secs(3_600)),
                    "day" => Window::Rolling(Duration::from_secs(86_400)),
                    "utc-hour" => Window::Calendar(Duration::from_secs(3_600)),
                    "utc-day" => Window::Calendar(Duration::from_secs(86_400)),
                    other => {
                        return Err(format!(
                            "unknown `per` {other:?}: expected second, minute, hour, day, \
                             utc-hour or utc-day"
                        ))
                    }
                },
                (None, None, Some(c)) => Window::Calendar(duration(&c)?),
                _ => {
                    return Err(
                        "a quota needs exactly one of `window`, `per` and `calendar`".to_string(),
                    )
                }
            };
            if window.length().is_zero() {
                return Err("a quota window must not be zero".to_string());
            }
            let quota = match window {
                Window::Rolling(d) => Quota::new(r.limit, d),
                Window::Calendar(d) => Quota::calendar(r.limit, d),
            };
            Ok(match r.dimension.as_deref() {
                None | Some("requests") => quota,
                Some("tokens") => quota.with_dimension(Dimension::Tokens),
                Some("input-tokens") => quota.with_dimension(Dimension::InputTokens),
                Some("output-tokens") => quota.with_dimension(Dimension::OutputTokens),
                Some(name) => quota.with_dimension(Dimension::Named(name.into())),
            })
        }
    }

    impl From<Quota> for QuotaRepr {
        fn from(q: Quota) -> QuotaRepr {
            let (mut window, mut per, mut calendar) = (None, None, None);
            match q.window {
                Window::Calendar(d) if d == Duration::from_secs(3_600) => {
                    per = Some("utc-hour".into())
                }
                Window::Calendar(d) if d == Duration::from_secs(86_400) => {
                    per = Some("utc-day".into())
                }
                Window::Calendar(d) => calendar = Some(humane(d)),
                Window::Rolling(d) => window = Some(humane(d)),
            }
            let dimension = match q.dimension {
                Dimension::Requests => None,
                Dimension::Tokens => Some("tokens".into()),
                Dimension::InputTokens => Some("input-tokens".into()),
                Dimension::OutputTokens => Some("output-tokens".into()),
                Dimension::Named(name) => Some(name.into()),
            };
            QuotaRepr {
                limit: q.limit,
                window,
                per,
                calendar,
                dimension,
            }
        }
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct TierRepr {
        name: String,
        #[serde(default)]
        quotas: Vec<Quota>,
    }

    impl From<TierRepr> for Tier {
        fn from(r: TierRepr) -> Tier {
            Tier::build(r.name.into_boxed_str(), r.quotas)
        }
    }

    impl From<Tier> for TierRepr {
        fn from(t: Tier) -> TierRepr {
            TierRepr {
                name: t.name().to_string(),
                quotas: t.quotas().to_vec(),
            }
        }
    }

    /// A duration as people write it in configuration: a Go duration (`"90s"`, `"1m"`,
    /// `"1h30m"`, `"500ms"`, a bare number of seconds) or a whole number of days (`"1d"`).
    pub(crate) fn duration(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let days = t
            .strip_suffix('d')
            .and_then(|n| n.trim().parse::<u64>().ok());
        match days {
            Some(n) => n
                .checked_mul(86_400)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("duration {s:?} is too long")),
            None => parse_go_duration(t).ok_or_else(|| {
                format!("invalid duration {s:?}: expected e.g. \"60s\", \"1m\", \"1h\", \"1d\"")
            }),
        }
    }

    /// The shortest exact way to write `d` in the form [`duration`] reads.
    pub(crate) fn humane(d: Duration) -> String {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        if nanos == 0 {
            match secs {
                0 => "0s".to_string(),
                s if s % 86_400 == 0 => format!("{}d", s / 86_400),
                s if s % 3_600 == 0 => format!("{}h", s / 3_600),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            }
        } else if nanos % 1_000_000 == 0 {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}ns", d.as_nanos())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::headers::Dimension;

        #[test]
        fn durations() {
            let table = [
                ("60s", 60_000),
                ("1m", 60_000),
                ("1h", 3_600_000),
                ("1d", 86_400_000),
                (" 2d ", 172_800_000),
                ("1h30m", 5_400_000),
                ("500ms", 500),
                ("20", 20_000),
            ];
            for (s, ms) in table {
                assert_eq!(duration(s), Ok(Duration::from_millis(ms)), "{s}");
            }
            for bad in ["", "1x", "-1m", "d", "1.5d", "1 minute"] {
                assert!(duration(bad).is_err(), "{bad}");
            }
            for ms in [
                1, 500, 1_000, 90_000, 60_000, 3_600_000, 86_400_000, 5_400_000,
            ] {
                let d = Duration::from_millis(ms);
                assert_eq!(duration(&humane(d)), Ok(d), "{}", humane(d));
            }
            assert_eq!(humane(Duration::from_secs(5_400)), "90m");
            assert_eq!(humane(Duration::from_nanos(1_500)), "1500ns");
        }

        #[test]
        fn quotas_from_json() {
            let q = |s: &str| serde_json::from_str::<Quota>(s);
            assert_eq!(
                q(r#"{"limit":20,"window":"1m"}"#).unwrap(),
                Quota::per_minute(20)
            );
            assert_eq!(
                q(r#"{"limit":20,"per":"minute"}"#).unwrap(),
                Quota::per_minute(20)
            );
            assert_eq!(
                q(r#"{"limit":5,"per":"second"}"#).unwrap(),
                Quota::per_second(5)
            );
            assert_eq!(q(r#"{"limit":9,"per":"day"}"#).unwrap(), Quota::per_day(9));
            assert_eq!(
                q(r#"{"limit":50,"per":"utc-day"}"#).unwrap(),
                Quota::per_utc_day(50)
            );
            assert_eq!(
                q(r#"{"limit":7,"per":"utc-hour"}"#).unwrap(),
                Quota::per_utc_hour(7)
            );
            assert_eq!(
                q(r#"{"limit":3,"calendar":"6h"}"#).unwrap(),
                Quota::calendar(3, Duration::from_secs(21_600))
            );
            assert_eq!(
                q(r#"{"limit":1000,"window":"1m","dimension":"input-tokens"}"#).unwrap(),
                Quota::per_minute(1000).with_dimension(Dimension::InputTokens)
            );
            assert_eq!(
                q(r#"{"limit":1,"window":"1m","dimension":"images"}"#).unwrap(),
                Quota::per_minute(1).with_dimension(Dimension::Named("images".into()))
            );
            for bad in [
                r#"{"limit":20}"#,
                r#"{"limit":20,"window":"1m","per":"minute"}"#,
                r#"{"limit":20,"window":"0s"}"#,
                r#"{"limit":20,"per":"fortnight"}"#,
                r#"{"limit":20,"window":"soon"}"#,
                r#"{"limit":-1,"window":"1m"}"#,
                r#"{"limit":20,"window":"1m","burst":3}"#,
                r#"{"window":"1m"}"#,
            ] {
                let err = q(bad).unwrap_err().to_string();
                assert!(!err.is_empty(), "{bad}");
            }
            let err = q(r#"{"limit":20,"per":"fortnight"}"#)
                .unwrap_err()
                .to_string();
            assert!(err.contains("fortnight"), "{err}");
        }

        #[test]
        fn round_trips() {
            let tier = Tier::new("mixed")
                .with_quota(Quota::per_minute(20))
                .with_quota(Quota::new(3, Duration::from_millis(1500)))
                .with_quota(Quota::per_utc_day(50))
                .with_quota(Quota::per_utc_hour(10))
                .with_quota(Quota::calendar(4, Duration::from_secs(600)))
                .with_quota(Quota::per_minute(90_000).with_dimension(Dimension::Tokens))
                .with_quota(Quota::per_minute(9).with_dimension(Dimension::Named("x".into())));
            let json = serde_json::to_string(&tier).unwrap();
            assert_eq!(
                json,
                concat!(
                    r#"{"name":"mixed","quotas":[{"limit":20,"window":"1m"},"#,
                    r#"{"limit":3,"window":"1500ms"},{"limit":50,"per":"utc-day"},"#,
                    r#"{"limit":10,"per":"utc-hour"},{"limit":4,"calendar":"10m"},"#,
                    r#"{"limit":90000,"window":"1m","dimension":"tokens"},"#,
                    r#"{"limit":9,"window":"1m","dimension":"x"}]}"#
                )
            );
            let back: Tier = serde_json::from_str(&json).unwrap();
            assert_eq!(back, tier);
            let empty: Tier = serde_json::from_str(r#"{"name":"open"}"#).unwrap();
            assert_eq!(empty, Tier::new("open"));
        }
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn a_tiers_pace_is_its_widest_request_spacing_of_an_hour_or_less() {
        let secs = Duration::from_secs;
        // 20 a minute and 50 a day: the minute's 3 s (a day is too long to pace by).
        let free = Tier::new("t")
            .with_quota(Quota::per_minute(20))
            .with_quota(Quota::per_utc_day(50));
        assert_eq!(free.request_pace(), Some((secs(3), secs(60))));
        // 1000 a second and 1 a minute: the minute's 60 s.
        let both = Tier::new("t")
            .with_quota(Quota::per_second(1000))
            .with_quota(Quota::per_minute(1));
        assert_eq!(both.request_pace(), Some((secs(60), secs(60))));
        // Nothing to pace by: tokens only, a limit of 0, a limit too large to space, none.
        let tokens = Tier::new("t").with_quota(Quota::tokens_per_minute(30_000));
        let zero = Tier::new("t").with_quota(Quota::per_minute(0));
        let huge = Tier::new("t").with_quota(Quota::per_second(u64::MAX / 4));
        for tier in [tokens, zero, huge, Tier::new("t")] {
            assert_eq!(tier.request_pace(), None, "{tier:?}");
        }
        // The pace is one more quota, one request per spacing.
        let paced = free.paced(secs(3));
        assert_eq!(paced.quotas().len(), 3);
        assert_eq!(paced.quotas()[2], Quota::new(1, secs(3)));
    }
}
