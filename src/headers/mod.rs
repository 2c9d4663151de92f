//! Pure parsers for the headers servers use to say "wait": `Retry-After` in every form,
//! `retry-after-ms`, `grpc-retry-pushback-ms`, `x-should-retry`, and the rate-limit state
//! headers of every provider ([`RateLimitInfo`]).
//!
//! Every function takes the current wall-clock time as an argument, does no I/O and never
//! panics: garbage gives `None` (or is skipped), absurdly large values saturate at
//! [`MAX_DELAY`].
//!
//! The value parsers are public too, for delays found elsewhere (a JSON error body, a
//! vendor header): [`parse_delay_seconds`], [`parse_go_duration`], [`parse_rfc3339`].
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tower_quota::headers::{self, Dimension, RateLimitInfo};
//!
//! let mut h = HeaderMap::new();
//! h.insert("retry-after", "29".parse().unwrap());
//! h.insert("x-ratelimit-limit-tokens", "40000".parse().unwrap());
//! h.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
//! h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
//!
//! let now = SystemTime::now();
//! assert_eq!(headers::retry_after(&h, now), Some(Duration::from_secs(29)));
//!
//! let info = RateLimitInfo::from_headers(&h, now);
//! let tokens = info.get(&Dimension::Tokens).unwrap();
//! assert_eq!(tokens.limit, Some(40_000));
//! assert_eq!(tokens.remaining, Some(0));
//! assert_eq!(info.exhausted_reset(), Some(Duration::from_secs(360)));
//! ```

mod go_duration;
mod ietf;
mod number;
mod ratelimit;
pub(crate) mod rfc3339;

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, RETRY_AFTER};
use http::HeaderMap;

pub use go_duration::parse_go_duration;
pub use number::parse_delay_seconds;
pub use rfc3339::parse_rfc3339;

use number::{decimal_duration, parse_u64, trim_ows, until, NANOS_PER_MILLI, NANOS_PER_SEC};

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// The largest delay any parser here returns; larger values saturate to it.
/// One year: far beyond any sensible wait, small enough to add to any `Instant`.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The delay the server asked for before the next request, from (in order of preference)
/// `retry-after-ms`, `Retry-After` (delay-seconds, fractional tolerated, or an HTTP-date in
/// any of the three RFC 9110 forms; a past date is zero) and `grpc-retry-pushback-ms`.
///
/// A header whose value is unusable (negative, empty, not a number or date, not UTF-8) is
/// skipped and the next source is tried. When a header appears several times, the largest
/// usable value wins: never earlier than the server asked. Values saturate at
/// [`MAX_DELAY`].
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderMap;
/// use tower_quota::headers::{retry_after, MAX_DELAY};
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// let with = |name: &'static str, value: &'static str| {
///     let mut h = HeaderMap::new();
///     h.append(name, value.parse().unwrap());
///     h
/// };
///
/// assert_eq!(retry_after(&with("retry-after", "120"), now), Some(Duration::from_secs(120)));
/// assert_eq!(retry_after(&with("retry-after-ms", "1500.5"), now),
///            Some(Duration::from_micros(1_500_500)));
/// assert_eq!(retry_after(&with("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT"), now),
///            Some(Duration::from_secs(30)));
/// assert_eq!(retry_after(&with("retry-after", "99999999999999999999"), now), Some(MAX_DELAY));
/// assert_eq!(retry_after(&with("grpc-retry-pushback-ms", "250"), now),
///            Some(Duration::from_millis(250)));
/// assert_eq!(retry_after(&with("retry-after", "-1"), now), None);
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    largest(headers, &RETRY_AFTER_MS, |v| {
        decimal_duration(v, NANOS_PER_MILLI)
    })
    .or_else(|| largest(headers, &RETRY_AFTER, |v| retry_after_value(v, now)))
    .or_else(|| largest(headers, &GRPC_RETRY_PUSHBACK_MS, pushback_millis))
}

/// The delay an upstream provider asked for, as a proxy relayed it: the LiteLLM proxy passes
/// the provider's headers on under an `llm_provider-` prefix (`llm_provider-retry-after`,
/// `llm_provider-retry-after-ms`) and, for an upstream's 429, often sends no `Retry-After` of
/// its own. Read like [`retry_after`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tower_quota::headers::relayed_retry_after;
///
/// let mut h = HeaderMap::new();
/// h.insert("llm_provider-retry-after", "7".parse().unwrap());
/// h.insert("llm_provider-retry-after-ms", "6500".parse().unwrap());
/// assert_eq!(relayed_retry_after(&h, SystemTime::now()), Some(Duration::from_millis(6500)));
/// ```
pub fn relayed_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut relayed = HeaderMap::new();
    for (name, value) in headers {
        let Some(name) = name.as_str().strip_prefix(ratelimit::RELAYED_PREFIX) else {
            continue;
        };
        let name = match name {
            "retry-after" => RETRY_AFTER,
            "retry-after-ms" => RETRY_AFTER_MS,
            _ => continue,
        };
        relayed.append(name, value.clone());
    }
    if relayed.is_empty() {
        return None;
    }
    retry_after(&relayed, now)
}

/// How far the server's clock may seem from ours before its `Date` is believed: its one-second
/// resolution and the answer's way back.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// How far a `Date` may be from our clock and still be a clock (a day): past it, the
/// header is wrong, not the clocks.
const CLOCK_SKEW_MAX: Duration = Duration::from_secs(86_400);

/// The time to measure the response's absolute times from (an HTTP-date `Retry-After`,
/// epoch and RFC 3339 resets): the server's clock as its `Date` header gives it, when that
/// is more than 2 s from `now` (our clock, which may run ahead or behind: a container or
/// a WSL clock drifts by minutes); else `now`. A reset the server named 30 s ahead of its own
/// clock is 30 s away whatever our clock says. `Date` is the time the answer was made,
/// truncated to the second, so the delays measured from it are never shorter than the
/// server meant. A `Date` a day or more away, or unparseable, is ignored.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tower_quota::headers::{retry_after, server_now};
///
/// let ours = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_090); // 90 s ahead
/// let mut h = HeaderMap::new();
/// h.insert("date", "Tue, 14 Nov 2023 22:13:20 GMT".parse().unwrap());
/// h.insert("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT".parse().unwrap());
/// let theirs = server_now(&h, ours);
/// assert_eq!(theirs, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// assert_eq!(retry_after(&h, theirs), Some(Duration::from_secs(30)));
/// ```
pub fn server_now(headers: &HeaderMap, now: SystemTime) -> SystemTime {
    let Some(date) = headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return now;
    };
    let skew = match date.duration_since(now) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > CLOCK_TOLERANCE && skew < CLOCK_SKEW_MAX {
        date
    } else {
        now
    }
}

/// The largest value of a header that `parse` accepts.
fn largest(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: impl Fn(&[u8]) -> Option<Duration>,
) -> Option<Duration> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| parse(v.as_bytes()))
        .max()
}

/// One `Retry-After` value: delay-seconds (fractional tolerated) or an HTTP-date.
fn retry_after_value(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim_ows(value);
    match value.first()? {
        b'0'..=b'9' | b'.' => decimal_duration(value, NANOS_PER_SEC),
        _ => {
            let date = httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()?;
            Some(until(now, date))
        }
    }
}

/// A `grpc-retry-pushback-ms` value: a non-negative int32 of milliseconds (gRPC A6; a
/// larger number is no int32, so unparseable, as grpc-go's and grpc-java's parsers find).
fn pushback_millis(value: &[u8]) -> Option<Duration> {
    parse_u64(value)
        .filter(|&ms| ms <= i32::MAX as u64)
        .map(|ms| Duration::from_millis(ms).min(MAX_DELAY))
}

/// What a `grpc-retry-pushback-ms` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this delay.
    After(Duration),
    /// Do not retry (a negative or unparseable value).
    DoNotRetry,
}

/// Reads `grpc-retry-pushback-ms`, if present (gRPC A6): a non-negative int32 is a delay
/// in milliseconds (at most [`MAX_DELAY`]); a negative or unparseable value — a number past
/// `i32::MAX` included — means do not retry. When the header appears several times, any do-not-retry wins, else the largest
/// delay.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_quota::headers::{grpc_pushback, Pushback};
///
/// let mut h = HeaderMap::new();
/// assert_eq!(grpc_pushback(&h), None);
/// h.insert("grpc-retry-pushback-ms", "250".parse().unwrap());
/// assert_eq!(grpc_pushback(&h), Some(Pushback::After(Duration::from_millis(250))));
/// h.insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
/// assert_eq!(grpc_pushback(&h), Some(Pushback::DoNotRetry));
/// ```
pub fn grpc_pushback(headers: &HeaderMap) -> Option<Pushback> {
    let mut found = None;
    for value in headers.get_all(&GRPC_RETRY_PUSHBACK_MS) {
        let Some(delay) = pushback_millis(value.as_bytes()) else {
            return Some(Pushback::DoNotRetry);
        };
        found = Some(match found {
            Some(Pushback::After(d)) => Pushback::After(delay.max(d)),
            _ => Pushback::After(delay),
        });
    }
    found
}

/// Reads `x-should-retry: true|false` (OpenAI, Anthropic), the server's explicit verdict,
/// case-insensitively; any other value is ignored. When the header appears several times,
/// any `false` wins.
///
/// ```
/// use http::HeaderMap;
/// use tower_quota::headers::should_retry;
///
/// let mut h = HeaderMap::new();
/// assert_eq!(should_retry(&h), None);
/// h.insert("x-should-retry", "TRUE".parse().unwrap());
/// assert_eq!(should_retry(&h), Some(true));
/// h.insert("x-should-retry", "false".parse().unwrap());
/// assert_eq!(should_retry(&h), Some(false));
/// h.insert("x-should-retry", "maybe".parse().unwrap());
/// assert_eq!(should_retry(&h), None);
/// ```
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let mut verdict = None;
    for value in headers.get_all(&X_SHOULD_RETRY) {
        let value = trim_ows(value.as_bytes());
        if value.eq_ignore_ascii_case(b"false") {
            return Some(false);
        }
        if value.eq_ignore_ascii_case(b"true") {
            verdict = Some(true);
        }
    }
    verdict
}

/// What a rate-limit window counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dimension {
    /// Requests (`x-ratelimit-*-requests`, OpenRouter's and Envoy's `X-RateLimit-*`, the older
    /// IETF `RateLimit-Limit` family).
    Requests,
    /// Tokens, input and output together.
    Tokens,
    /// Input tokens (Anthropic).
    InputTokens,
    /// Output tokens (Anthropic).
    OutputTokens,
    /// A named policy: an IETF `RateLimit-Policy` name, or another vendor suffix.
    Named(Box<str>),
}

/// The name of the window ([`Dimension::Named`]) in which a refusal of the requests in
/// flight at once ([`Scope::InFlight`](crate::classify::Scope::InFlight)) reports how many
/// may be, when the server says (LiteLLM's `max_parallel_requests`): its `limit`, with
/// nothing `remaining`.
pub const IN_FLIGHT: &str = "in-flight";

/// One rate-limit window as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitWindow {
    /// What the window counts.
    pub dimension: Dimension,
    /// The quota of the window.
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: Option<u64>,
    /// How long until the window resets (or, for OpenAI-style headers, is fully replenished).
    pub reset: Option<Duration>,
    /// The length of the window, when the server said (IETF `w`).
    pub window: Option<Duration>,
}

impl RateLimitWindow {
    /// A window of `dimension` that says nothing yet (every field `None`).
    pub fn new(dimension: Dimension) -> RateLimitWindow {
        RateLimitWindow {
            dimension,
            limit: None,
            remaining: None,
            reset: None,
            window: None,
        }
    }
}

/// The rate-limit state a response's headers reported, one [`RateLimitWindow`] per dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitInfo {
    windows: Vec<RateLimitWindow>,
}

impl RateLimitInfo {
    /// Parses every header family: OpenRouter / Envoy `X-RateLimit-*` (reset as epoch
    /// milliseconds, epoch seconds or delay-seconds, told apart by magnitude), OpenAI /
    /// LiteLLM `x-ratelimit-*-{requests,tokens}` (Go durations), Anthropic
    /// `anthropic-ratelimit-*` (RFC 3339), IETF `RateLimit-Policy` / `RateLimit` (Structured
    /// Fields) and the older `RateLimit-Limit` / `-Remaining` / `-Reset`.
    ///
    /// Each dimension gets one window, merged across families: a field a family reports is
    /// filled in only when no earlier header (in the order they arrived) reported it.
    ///
    /// Behind a LiteLLM proxy, two more sources: the key limiter's per-descriptor headers
    /// (`x-ratelimit-api_key-remaining-requests`, `x-ratelimit-team-limit-tokens`, …: the
    /// proxy's own limits on this caller, the descriptor with the least remaining binding) come
    /// first; the upstream's headers relayed under `llm_provider-` come last. A later source
    /// adds the dimensions the earlier ones did not report, and fills in a known window only
    /// where it agrees with it (same limit and remaining): the upstream's reset is never taken
    /// for the proxy's. A count
    /// that is not a non-negative integer is skipped (a negative `remaining` reads as zero);
    /// a malformed IETF field is ignored as a whole. Durations saturate at [`MAX_DELAY`].
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use http::HeaderMap;
    /// use tower_quota::headers::{Dimension, RateLimitInfo};
    ///
    /// let now = UNIX_EPOCH + Duration::from_secs(1_732_230_000);
    /// let mut h = HeaderMap::new();
    /// // OpenRouter's daily free-model cap, resetting at the next UTC midnight (epoch ms).
    /// h.insert("x-ratelimit-limit", "50".parse().unwrap());
    /// h.insert("x-ratelimit-remaining", "0".parse().unwrap());
    /// h.insert("x-ratelimit-reset", "1732233600000".parse().unwrap());
    /// // An IETF policy.
    /// h.insert("ratelimit-policy", r#""burst";q=100;w=60"#.parse().unwrap());
    /// h.insert("ratelimit", r#""burst";r=50;t=30"#.parse().unwrap());
    ///
    /// let info = RateLimitInfo::from_headers(&h, now);
    /// let requests = info.requests().unwrap();
    /// assert_eq!((requests.limit, requests.remaining), (Some(50), Some(0)));
    /// assert_eq!(requests.reset, Some(Duration::from_secs(3_600)));
    ///
    /// let burst = info.get(&Dimension::Named("burst".into())).unwrap();
    /// assert_eq!((burst.limit, burst.remaining), (Some(100), Some(50)));
    /// assert_eq!(burst.window, Some(Duration::from_secs(60)));
    /// assert_eq!(burst.reset, Some(Duration::from_secs(30)));
    /// ```
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        ratelimit::parse(headers, now)
    }

    /// Whether no window was reported.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows, in the order they were found.
    pub fn windows(&self) -> &[RateLimitWindow] {
        &self.windows
    }

    /// The window of a dimension.
    pub fn get(&self, dimension: &Dimension) -> Option<&RateLimitWindow> {
        self.windows.iter().find(|w| &w.dimension == dimension)
    }

    /// The request window.
    pub fn requests(&self) -> Option<&RateLimitWindow> {
        self.get(&Dimension::Requests)
    }

    /// The token window.
    pub fn tokens(&self) -> Option<&RateLimitWindow> {
        self.get(&Dimension::Tokens)
    }

    /// The longest reset among windows with nothing remaining: when the next request can
    /// go through, as far as these headers say.
    pub fn exhausted_reset(&self) -> Option<Duration> {
        self.windows
            .iter()
            .filter(|w| w.remaining == Some(0))
            .filter_map(|w| w.reset)
            .max()
    }

    /// Rate-limit state made of the given windows (for tests, and for callers that read
    /// limits from elsewhere, such as a response body).
    pub fn from_windows(windows: Vec<RateLimitWindow>) -> Self {
        RateLimitInfo { windows }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT.
    const NOW: u64 = 784_111_777;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// A header map of raw values (the tests of the submodules use it too).
    pub(super) fn map(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(name, value) in pairs {
            h.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    /// Header lines: name and value bytes.
    type Lines = &'static [(&'static str, &'static [u8])];

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn retry_after_table() {
        let ms = |m| Some(Duration::from_millis(m));
        let table: &[(Lines, Option<Duration>)] = &[
            (&[], None),
            (&[("retry-after", b"120")], secs(120)),
            (&[("Retry-After", b"0")], secs(0)),
            (&[("retry-after", b" 7 ")], secs(7)),
            (&[("retry-after", b"1.5")], ms(1_500)),
            // The three RFC 9110 date forms, 30 s after NOW.
            (
                &[("retry-after", b"Sun, 06 Nov 1994 08:50:07 GMT")],
                secs(30),
            ),
            (
                &[("retry-after", b"Sunday, 06-Nov-94 08:50:07 GMT")],
                secs(30),
            ),
            (&[("retry-after", b"Sun Nov  6 08:50:07 1994")], secs(30)),
            // A past date is now.
            (
                &[("retry-after", b"Sun, 06 Nov 1994 08:49:00 GMT")],
                secs(0),
            ),
            (
                &[("retry-after", b"Thu, 01 Jan 1970 00:00:00 GMT")],
                secs(0),
            ),
            // Absurd values saturate, never wrap.
            (&[("retry-after", b"99999999999999999999")], Some(MAX_DELAY)),
            (
                &[("retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT")],
                Some(MAX_DELAY),
            ),
            (
                &[("retry-after-ms", b"99999999999999999999999999")],
                Some(MAX_DELAY),
            ),
            // Past int32, a pushback is unparseable: no delay (and do not retry).
            (&[("grpc-retry-pushback-ms", b"99999999999999999999")], None),
            // retry-after-ms, fractional allowed, preferred.
            (
                &[("retry-after-ms", b"1500.5")],
                Some(Duration::from_micros(1_500_500)),
            ),
            (
                &[("retry-after", b"60"), ("retry-after-ms", b"250")],
                ms(250),
            ),
            (
                &[("grpc-retry-pushback-ms", b"9"), ("retry-after", b"2")],
                secs(2),
            ),
            (&[("grpc-retry-pushback-ms", b"250")], ms(250)),
            // Unusable values fall through to the next source.
            (&[("retry-after-ms", b"-1"), ("retry-after", b"3")], secs(3)),
            (&[("retry-after-ms", b""), ("retry-after", b"3")], secs(3)),
            (
                &[("retry-after-ms", b"\xff\xfe"), ("retry-after", b"3")],
                secs(3),
            ),
            (
                &[("retry-after", b"-0"), ("grpc-retry-pushback-ms", b"40")],
                ms(40),
            ),
            (&[("retry-after", b"-5")], None),
            (&[("retry-after", b"")], None),
            (&[("retry-after", b"   ")], None),
            (&[("retry-after", b"\xff\xfe")], None),
            (&[("retry-after", b"NaN")], None),
            (&[("retry-after", b"inf")], None),
            (&[("retry-after", b"1e3")], None),
            (&[("retry-after", b"+5")], None),
            (&[("retry-after", b"0x10")], None),
            (&[("retry-after", b"soon")], None),
            (&[("retry-after", b"Sun, 31 Nov 1994 08:50:07 GMT")], None),
            (&[("retry-after", b"Mon, 06 Nov 1994 08:50:07 GMT")], None),
            (&[("retry-after", b"2024-05-01T12:00:30Z")], None),
            (&[("retry-after-ms", b"1e3")], None),
            (&[("grpc-retry-pushback-ms", b"-1")], None),
            (&[("grpc-retry-pushback-ms", b"1.5")], None),
            // Duplicates: the largest usable value.
            (
                &[
                    ("retry-after", b"5"),
                    ("retry-after", b"30"),
                    ("retry-after", b"x"),
                ],
                secs(30),
            ),
            (
                &[
                    ("retry-after", b"Sun, 06 Nov 1994 08:50:07 GMT"),
                    ("retry-after", b"10"),
                ],
                secs(30),
            ),
            (
                &[("retry-after-ms", b"100"), ("retry-after-ms", b"2000")],
                ms(2_000),
            ),
        ];
        for &(pairs, want) in table {
            assert_eq!(retry_after(&map(pairs), now()), want, "{pairs:?}");
        }
    }

    #[test]
    fn grpc_pushback_table() {
        let after = |m| Some(Pushback::After(Duration::from_millis(m)));
        let table: &[(&[&[u8]], Option<Pushback>)] = &[
            (&[], None),
            (&[b"0"], after(0)),
            (&[b"250"], after(250)),
            (&[b" 250 "], after(250)),
            (&[b"2147483647"], after(2_147_483_647)),
            (&[b"2147483648"], Some(Pushback::DoNotRetry)),
            (&[b"99999999999999999999"], Some(Pushback::DoNotRetry)),
            (&[b"-1"], Some(Pushback::DoNotRetry)),
            (&[b"-0"], Some(Pushback::DoNotRetry)),
            (&[b""], Some(Pushback::DoNotRetry)),
            (&[b"abc"], Some(Pushback::DoNotRetry)),
            (&[b"1.5"], Some(Pushback::DoNotRetry)),
            (&[b"\xff"], Some(Pushback::DoNotRetry)),
            (&[b"10", b"30"], after(30)),
            (&[b"10", b"-1"], Some(Pushback::DoNotRetry)),
        ];
        for &(values, want) in table {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    "grpc-retry-pushback-ms",
                    HeaderValue::from_bytes(v).unwrap(),
                );
            }
            assert_eq!(grpc_pushback(&h), want, "{values:?}");
        }
    }

    #[test]
    fn should_retry_table() {
        let table: &[(&[&[u8]], Option<bool>)] = &[
            (&[], None),
            (&[b"true"], Some(true)),
            (&[b"True"], Some(true)),
            (&[b" TRUE "], Some(true)),
            (&[b"false"], Some(false)),
            (&[b"FALSE"], Some(false)),
            (&[b"1"], None),
            (&[b"yes"], None),
            (&[b""], None),
            (&[b"\xff"], None),
            (&[b"true", b"false"], Some(false)),
            (&[b"junk", b"true"], Some(true)),
        ];
        for &(values, want) in table {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-should-retry", HeaderValue::from_bytes(v).unwrap());
            }
            assert_eq!(should_retry(&h), want, "{values:?}");
        }
    }

    #[test]
    fn httpdate_accepts_all_three_forms() {
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(httpdate::parse_http_date(form).ok(), Some(now()), "{form}");
        }
    }

    /// Every header any parser here reads.
    const PARSED: &[&str] = &[
        "retry-after",
        "retry-after-ms",
        "grpc-retry-pushback-ms",
        "x-should-retry",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-remaining-input-tokens",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-requests-remaining",
        "ratelimit-policy",
        "ratelimit",
        "ratelimit-limit",
        "ratelimit-reset",
    ];

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            // Arbitrary bytes (those a HeaderValue can hold).
            proptest::collection::vec(any::<u8>(), 0..48),
            // Plausible-looking values.
            "[-+ 0-9.:,;=\"a-zA-Z]{0,40}".prop_map(String::into_bytes),
        ]
        .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok())
    }

    proptest! {
        #[test]
        fn never_panics_and_saturates(
            values in proptest::collection::vec(
                (proptest::sample::select(PARSED), header_value()), 0..6),
            now_secs in 0u64..4_000_000_000,
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(now_secs);
            let mut h = HeaderMap::new();
            for (name, value) in values {
                h.append(name, value);
            }
            if let Some(d) = retry_after(&h, now) {
                prop_assert!(d <= MAX_DELAY);
            }
            if let Some(Pushback::After(d)) = grpc_pushback(&h) {
                prop_assert!(d <= MAX_DELAY);
            }
            let _ = should_retry(&h);
            let info = RateLimitInfo::from_headers(&h, now);
            for w in info.windows() {
                prop_assert!(w.reset.is_none_or(|d| d <= MAX_DELAY));
                prop_assert!(w.window.is_none_or(|d| d <= MAX_DELAY));
                prop_assert_eq!(info.windows().iter().filter(|o| o.dimension == w.dimension).count(), 1);
            }
        }
    }
}
