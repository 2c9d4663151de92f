//! [`QuotaClass`], [`Scope`] and the [`Classification`] attached to responses.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::headers::{RateLimitInfo, MAX_DELAY};

/// What kind of outcome a response is, as far as quotas and retries are concerned.
///
/// The class says *what happened*; whether to retry is decided from it (see
/// [`QuotaClass::is_retryable`]) unless the server gave an explicit verdict
/// ([`Classification::retryable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaClass {
    /// The request succeeded (1xx, 2xx, 3xx; gRPC `OK`).
    Success,
    /// A rate limit was hit: waiting lets the next request through (429 `rate_limit_exceeded`,
    /// OpenRouter `free-models-per-min`, an upstream provider's 429, gRPC `RESOURCE_EXHAUSTED`
    /// with a pushback).
    RateLimited,
    /// A quota, budget or credit balance is used up: waiting a little does not help
    /// (402 insufficient credits, OpenAI `insufficient_quota`, OpenRouter `free-models-per-day`,
    /// LiteLLM `budget_exceeded`, Anthropic spend limit). [`Classification::reset_after`] says
    /// when it comes back, if the server said.
    QuotaExhausted,
    /// The provider is overloaded (Anthropic 529, OpenRouter `provider_overloaded`).
    Overloaded,
    /// No provider or upstream is available right now (502, 503, gRPC `UNAVAILABLE`).
    Unavailable,
    /// The request timed out on the server side (408, 504, gRPC `DEADLINE_EXCEEDED`).
    Timeout,
    /// The credentials were missing or rejected (401, gRPC `UNAUTHENTICATED`).
    Auth,
    /// The request is not allowed: permissions, moderation, region (403, gRPC `PERMISSION_DENIED`).
    Forbidden,
    /// The request itself is wrong and will fail again as it is (400, 413, 422, context length
    /// exceeded, gRPC `INVALID_ARGUMENT`).
    InvalidRequest,
    /// The server failed (500 and other 5xx, gRPC `INTERNAL`, `UNKNOWN`).
    ServerError,
    /// Another client error (404, 405, 409, …).
    ClientError,
}

impl QuotaClass {
    /// Every class, in declaration order.
    pub const ALL: [QuotaClass; 11] = [
        QuotaClass::Success,
        QuotaClass::RateLimited,
        QuotaClass::QuotaExhausted,
        QuotaClass::Overloaded,
        QuotaClass::Unavailable,
        QuotaClass::Timeout,
        QuotaClass::Auth,
        QuotaClass::Forbidden,
        QuotaClass::InvalidRequest,
        QuotaClass::ServerError,
        QuotaClass::ClientError,
    ];

    /// The class a plain HTTP status falls in, before any header or body is read.
    ///
    /// ```
    /// use tower_quota::classify::QuotaClass;
    /// use http::StatusCode;
    ///
    /// assert_eq!(QuotaClass::from_status(StatusCode::TOO_MANY_REQUESTS), QuotaClass::RateLimited);
    /// assert_eq!(QuotaClass::from_status(StatusCode::PAYMENT_REQUIRED), QuotaClass::QuotaExhausted);
    /// assert_eq!(QuotaClass::from_status(StatusCode::from_u16(529).unwrap()), QuotaClass::Overloaded);
    /// ```
    pub fn from_status(status: http::StatusCode) -> QuotaClass {
        match status.as_u16() {
            100..=399 => QuotaClass::Success,
            400 | 413 | 414 | 415 | 422 | 431 => QuotaClass::InvalidRequest,
            401 | 407 => QuotaClass::Auth,
            402 => QuotaClass::QuotaExhausted,
            403 | 451 => QuotaClass::Forbidden,
            408 => QuotaClass::Timeout,
            429 => QuotaClass::RateLimited,
            400..=499 => QuotaClass::ClientError,
            502 | 503 | 520..=523 => QuotaClass::Unavailable,
            504 | 524 => QuotaClass::Timeout,
            529 => QuotaClass::Overloaded,
            _ => QuotaClass::ServerError,
        }
    }

    /// Whether the request succeeded.
    pub fn is_success(self) -> bool {
        self == QuotaClass::Success
    }

    /// Whether a request of this class is worth sending again, absent any explicit verdict
    /// from the server: `RateLimited`, `Overloaded`, `Unavailable`, `Timeout` and
    /// `ServerError` are; `QuotaExhausted` (which only a server-given delay makes worth
    /// waiting for), `Auth`, `Forbidden`, `InvalidRequest` and `ClientError` are not.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            QuotaClass::RateLimited
                | QuotaClass::Overloaded
                | QuotaClass::Unavailable
                | QuotaClass::Timeout
                | QuotaClass::ServerError
        )
    }

    /// A short, stable, lower-case name for logs and metrics (`"rate_limited"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaClass::Success => "success",
            QuotaClass::RateLimited => "rate_limited",
            QuotaClass::QuotaExhausted => "quota_exhausted",
            QuotaClass::Overloaded => "overloaded",
            QuotaClass::Unavailable => "unavailable",
            QuotaClass::Timeout => "timeout",
            QuotaClass::Auth => "auth",
            QuotaClass::Forbidden => "forbidden",
            QuotaClass::InvalidRequest => "invalid_request",
            QuotaClass::ServerError => "server_error",
            QuotaClass::ClientError => "client_error",
        }
    }
}

impl fmt::Display for QuotaClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a limit applies to. A rate limiter uses it to decide what to cool down: an upstream
/// provider's 429 must not pause the whole account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Scope {
    /// The response does not say.
    #[default]
    Unknown,
    /// The account, organisation or API key as a whole (OpenRouter's free-tier limits,
    /// a LiteLLM key's RPM/TPM, credits).
    Account,
    /// One model (OpenAI's per-model limits, OpenRouter's shared capacity of a model,
    /// a LiteLLM deployment group in cooldown).
    Model,
    /// One upstream provider behind a router (OpenRouter's "temporarily rate-limited upstream").
    Upstream,
    /// The requests in flight at once: a concurrency limit (LiteLLM's
    /// `max_parallel_requests`, OpenRouter's in-flight budget). A slot frees when a request
    /// ends, not at a time, so the refusal says nothing of the windows: a limiter neither
    /// widens its margin for it nor blocks the key but for a delay the server gave; it
    /// caps the key at that many requests in flight for a while, each holding its place
    /// until its response ends (see [`Limiter::learn`](crate::limit::Limiter::learn) and
    /// [`Limiter::with_max_in_flight`](crate::limit::Limiter::with_max_in_flight)).
    InFlight,
}

impl Scope {
    /// A short, stable, lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Unknown => "unknown",
            Scope::Account => "account",
            Scope::Model => "model",
            Scope::Upstream => "upstream",
            Scope::InFlight => "in_flight",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one response: its [`QuotaClass`], the delay the server asked for, when an
/// exhausted quota comes back, who the limit applies to, and the rate-limit state the server
/// reported.
///
/// [`QuotaClassifyLayer`](crate::QuotaClassifyLayer) inserts one into every response's
/// extensions (with a [`Sparse`](super::Sparse) classifier, every response but a plain
/// 1xx–3xx success: see [`is_plain_success`](Self::is_plain_success)); the retry and
/// rate-limit layers read it from there, and take a 1xx–3xx response without one for a plain
/// success.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::classify::{Classification, QuotaClass, Scope};
///
/// let c = Classification::new(QuotaClass::RateLimited)
///     .with_retry_after(Duration::from_secs(29))
///     .with_scope(Scope::Upstream);
/// assert_eq!(c.class(), QuotaClass::RateLimited);
/// assert_eq!(c.retry_after(), Some(Duration::from_secs(29)));
/// assert!(c.should_retry());
/// ```
#[derive(Clone, PartialEq)]
pub struct Classification {
    class: QuotaClass,
    retry_after: Option<Duration>,
    reset_after: Option<Duration>,
    at: SystemTime,
    /// How far the server's clock runs ahead of `at` (behind: negative), in whole
    /// milliseconds rounded down, as its `Date` says (see `headers::server_now`): absolute
    /// times in the response are measured from `at` plus this. Within a day.
    skew_ms: i32,
    scope: Scope,
    retryable: Option<bool>,
    rate_limit: RateLimitInfo,
    api: Option<&'static str>,
    provider: Option<Box<str>>,
    code: Option<Box<str>>,
    message: Option<Box<str>>,
}

/// Longest message kept, in bytes; longer ones are cut at a character boundary.
const MAX_MESSAGE: usize = 256;
/// Longest provider name or code kept, in bytes.
const MAX_NAME: usize = 64;

impl Classification {
    /// A classification of the given class, with nothing else known, made now.
    pub fn new(class: QuotaClass) -> Self {
        Self::new_at(class, SystemTime::now())
    }

    /// A classification of the given class made at the wall-clock time `at` (what
    /// [`reset_at`](Self::reset_at) is measured from).
    pub fn new_at(class: QuotaClass, at: SystemTime) -> Self {
        Classification {
            class,
            retry_after: None,
            reset_after: None,
            at,
            skew_ms: 0,
            scope: Scope::Unknown,
            retryable: None,
            rate_limit: RateLimitInfo::default(),
            api: None,
            provider: None,
            code: None,
            message: None,
        }
    }

    // === accessors ===

    /// The class of the response.
    pub fn class(&self) -> QuotaClass {
        self.class
    }

    /// The delay the server asked for before the next request: `retry-after-ms`,
    /// `Retry-After`, `grpc-retry-pushback-ms`, a delay in the error body (OpenRouter's
    /// `retry_after_seconds`, LiteLLM's "Try again in N seconds"), or for a rate-limited
    /// response without one, the reset of the exhausted rate-limit window.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// For an exhausted quota or window: how long after the classification it resets
    /// (e.g. until the next UTC midnight for OpenRouter's daily free-model cap).
    pub fn reset_after(&self) -> Option<Duration> {
        self.reset_after
    }

    /// For an exhausted quota or window: the wall-clock time it resets.
    pub fn reset_at(&self) -> Option<SystemTime> {
        self.reset_after.and_then(|d| self.at.checked_add(d))
    }

    /// The wall-clock time the response was classified at.
    pub fn classified_at(&self) -> SystemTime {
        self.at
    }

    /// Who the limit applies to.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The server's explicit verdict on retrying, when it gave one (`x-should-retry`,
    /// OpenRouter's `availability.retryable`, a negative `grpc-retry-pushback-ms`). It
    /// overrides the class.
    pub fn retryable(&self) -> Option<bool> {
        self.retryable
    }

    /// Whether the request is worth sending again, ignoring any delay bound: the server's
    /// explicit verdict when it gave one; else `QuotaExhausted` only when the server gave a
    /// delay; else [`QuotaClass::is_retryable`].
    pub fn should_retry(&self) -> bool {
        match self.retryable {
            Some(verdict) => verdict,
            None if self.class == QuotaClass::QuotaExhausted => self.retry_after.is_some(),
            None => self.class.is_retryable(),
        }
    }

    /// The rate-limit state the response's headers reported.
    pub fn rate_limit(&self) -> &RateLimitInfo {
        &self.rate_limit
    }

    /// Which API's error shape was recognised: `"openrouter"`, `"openai"`, `"anthropic"`,
    /// `"litellm"`, `"grpc"`, or `None` when only status and headers were read.
    pub fn api(&self) -> Option<&'static str> {
        self.api
    }

    /// The upstream provider the error came from, when a router said (OpenRouter's
    /// `metadata.provider_name`).
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// The most specific machine-readable code the server gave (`insufficient_quota`,
    /// `rate_limit_error`, `budget_exceeded`, `openrouter_free_tier_daily`, …).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// A short human-readable message from the server (at most 256 bytes).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Whether this says nothing but "success": [`QuotaClass::Success`] with no delay, reset,
    /// scope, verdict, rate-limit state, API, provider, code or message. A 1xx–3xx response
    /// classified so is what every layer assumes of a response that carries no
    /// classification, so a [`Sparse`](super::Sparse) classifier attaches none to it.
    ///
    /// ```
    /// use tower_quota::classify::{Classification, QuotaClass, Scope};
    ///
    /// assert!(Classification::new(QuotaClass::Success).is_plain_success());
    /// assert!(!Classification::new(QuotaClass::Success).with_scope(Scope::Account).is_plain_success());
    /// assert!(!Classification::new(QuotaClass::ServerError).is_plain_success());
    /// ```
    pub fn is_plain_success(&self) -> bool {
        self.class == QuotaClass::Success
            && self.retry_after.is_none()
            && self.reset_after.is_none()
            && self.scope == Scope::Unknown
            && self.retryable.is_none()
            && self.rate_limit.is_empty()
            && self.api.is_none()
            && self.provider.is_none()
            && self.code.is_none()
            && self.message.is_none()
    }

    // === builders ===

    /// Sets the class.
    pub fn with_class(mut self, class: QuotaClass) -> Self {
        self.class = class;
        self
    }

    /// Sets the delay the server asked for (at most [`MAX_DELAY`]).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay.min(MAX_DELAY));
        self
    }

    /// Sets how long after the classification the exhausted quota resets (at most
    /// [`MAX_DELAY`]).
    pub fn with_reset_after(mut self, reset: Duration) -> Self {
        self.reset_after = Some(reset.min(MAX_DELAY));
        self
    }

    /// Sets the scope of the limit.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Sets the server's explicit retry verdict.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// Sets the rate-limit state.
    pub fn with_rate_limit(mut self, info: RateLimitInfo) -> Self {
        self.rate_limit = info;
        self
    }

    /// Sets the recognised API.
    pub fn with_api(mut self, api: &'static str) -> Self {
        self.api = Some(api);
        self
    }

    /// Sets the upstream provider's name (cut to 64 bytes).
    pub fn with_provider(mut self, provider: &str) -> Self {
        self.provider = Some(truncate(provider, MAX_NAME));
        self
    }

    /// Sets the machine-readable code (cut to 64 bytes).
    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(truncate(code, MAX_NAME));
        self
    }

    /// Sets the message (cut to 256 bytes at a character boundary).
    pub fn with_message(mut self, message: &str) -> Self {
        self.message = Some(truncate(message.trim(), MAX_MESSAGE));
        self
    }

    // === in-place setters for classifiers ===

    /// The server's clock when the response was classified: what its absolute times are
    /// measured from.
    pub(crate) fn server_now(&self) -> SystemTime {
        let d = Duration::from_millis(u64::from(self.skew_ms.unsigned_abs()));
        if self.skew_ms >= 0 {
            self.at.checked_add(d)
        } else {
            self.at.checked_sub(d)
        }
        .unwrap_or(self.at)
    }

    /// Records the server's clock at the classification (within a day of it: see
    /// `headers::server_now`), never later than `theirs`.
    pub(crate) fn set_server_now(&mut self, theirs: SystemTime) {
        let ms = match theirs.duration_since(self.at) {
            Ok(ahead) => i128::try_from(ahead.as_millis()).unwrap_or(i128::MAX),
            Err(behind) => {
                let d = behind.duration();
                // Rounded down: a part of a millisecond behind is a whole one.
                -i128::try_from(d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0))
                    .unwrap_or(i128::MAX)
            }
        };
        self.skew_ms =
            i32::try_from(ms.clamp(i128::from(i32::MIN), i128::from(i32::MAX))).unwrap_or(0);
    }

    pub(crate) fn set_class(&mut self, class: QuotaClass) {
        self.class = class;
    }
    /// Every delay a classifier sets passes here or through `with_retry_after`: none is
    /// longer than [`MAX_DELAY`], whatever the server wrote (a reset date centuries away).
    pub(crate) fn set_retry_after(&mut self, delay: Option<Duration>) {
        self.retry_after = delay.map(|d| d.min(MAX_DELAY));
    }
    pub(crate) fn set_reset_after(&mut self, reset: Option<Duration>) {
        self.reset_after = reset.map(|d| d.min(MAX_DELAY));
    }
    pub(crate) fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
    }
    pub(crate) fn set_retryable(&mut self, retryable: Option<bool>) {
        self.retryable = retryable;
    }
    pub(crate) fn set_api(&mut self, api: &'static str) {
        self.api = Some(api);
    }
    pub(crate) fn set_provider(&mut self, provider: &str) {
        self.provider = Some(truncate(provider, MAX_NAME));
    }
    pub(crate) fn set_code(&mut self, code: &str) {
        self.code = Some(truncate(code, MAX_NAME));
    }
    pub(crate) fn rate_limit_mut(&mut self) -> &mut RateLimitInfo {
        &mut self.rate_limit
    }
    pub(crate) fn set_message(&mut self, message: &str) {
        self.message = Some(truncate(message.trim(), MAX_MESSAGE));
    }
}

fn truncate(s: &str, max: usize) -> Box<str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

impl fmt::Debug for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Classification");
        d.field("class", &self.class);
        if let Some(v) = self.retry_after {
            d.field("retry_after", &v);
        }
        if let Some(v) = self.reset_after {
            d.field("reset_after", &v);
        }
        if self.scope != Scope::Unknown {
            d.field("scope", &self.scope);
        }
        if let Some(v) = self.retryable {
            d.field("retryable", &v);
        }
        if !self.rate_limit.is_empty() {
            d.field("rate_limit", &self.rate_limit);
        }
        if let Some(v) = self.api {
            d.field("api", &v);
        }
        if let Some(v) = &self.provider {
            d.field("provider", v);
        }
        if let Some(v) = &self.code {
            d.field("code", v);
        }
        if let Some(v) = &self.message {
            d.field("message", v);
        }
        d.finish()
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if self.scope != Scope::Unknown {
            write!(f, " ({})", self.scope)?;
        }
        if let Some(d) = self.retry_after {
            write!(f, ", retry after {:.3}s", d.as_secs_f64())?;
        }
        if let Some(d) = self.reset_after {
            write!(f, ", resets in {:.0}s", d.as_secs_f64())?;
        }
        if let Some(c) = &self.code {
            write!(f, ", code {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_char_boundary() {
        let s = "é".repeat(200); // 400 bytes
        let c = Classification::new(QuotaClass::ServerError).with_message(&s);
        let m = c.message().unwrap();
        assert!(m.len() <= MAX_MESSAGE);
        assert!(m.chars().all(|ch| ch == 'é'));
    }

    #[test]
    fn should_retry_follows_verdict_then_class() {
        let c = Classification::new(QuotaClass::Unavailable);
        assert!(c.should_retry());
        assert!(!c.clone().with_retryable(false).should_retry());
        let q = Classification::new(QuotaClass::QuotaExhausted);
        assert!(!q.should_retry());
        assert!(q.with_retry_after(Duration::from_secs(1)).should_retry());
        assert!(Classification::new(QuotaClass::InvalidRequest)
            .with_retryable(true)
            .should_retry());
    }

    #[test]
    fn every_status_has_a_class() {
        for s in 100..=999u16 {
            let status = http::StatusCode::from_u16(s).unwrap();
            let class = QuotaClass::from_status(status);
            assert_eq!(class.is_success(), s < 400, "{s}");
        }
    }

    #[test]
    fn reset_at_is_at_plus_reset() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Classification::new_at(QuotaClass::QuotaExhausted, at)
            .with_reset_after(Duration::from_secs(5));
        assert_eq!(c.reset_at(), Some(at + Duration::from_secs(5)));
    }
}
