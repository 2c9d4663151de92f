//! The generic classifier: status and headers only.

use std::time::SystemTime;

use http::response::Parts;

use super::{Classification, Classify, QuotaClass};
use crate::headers::{self, RateLimitInfo};

/// Classifies from status and headers only; never reads a body.
///
/// The class comes from the status ([`QuotaClass::from_status`]; a 402 that carries a delay is
/// a transient [`QuotaClass::RateLimited`], not an exhausted quota), the delay from
/// [`headers::retry_after`], else the upstream's as a proxy relayed it
/// ([`headers::relayed_retry_after`]), else, for a rate-limited response, the reset of the
/// exhausted window; the verdict from `x-should-retry` and a negative gRPC pushback, and the
/// rate-limit state from [`RateLimitInfo::from_headers`].
///
/// ```
/// use tower_quota::classify::{Classify, Generic, QuotaClass};
/// use std::time::Duration;
///
/// let (parts, ()) = http::Response::builder()
///     .status(429)
///     .header("retry-after", "7")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let c = Generic.classify(&parts, b"");
/// assert_eq!(c.class(), QuotaClass::RateLimited);
/// assert_eq!(c.retry_after(), Some(Duration::from_secs(7)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Generic;

impl Classify for Generic {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, _body: &[u8], now: SystemTime) -> Classification {
        finish(base(parts, now))
    }

    fn wants_body(&self, _parts: &Parts) -> bool {
        false
    }

    fn is_plain_success(&self, parts: &Parts) -> bool {
        plain_head(parts)
    }
}

/// `grpc-status`, parsed once.
pub(crate) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Whether `parts` is a plain success to [`base`]: a 1xx–3xx, not gRPC (whose errors arrive
/// as HTTP 200), without a rate-limit header. One pass over the headers, no lookup.
pub(crate) fn plain_head(parts: &Parts) -> bool {
    parts.status.as_u16() < 400
        && parts.headers.iter().all(|(name, value)| {
            !(is_rate_limit_name(name)
                || name == GRPC_STATUS
                || (name == http::header::CONTENT_TYPE
                    && value.as_bytes().starts_with(b"application/grpc")))
        })
}

/// Whether a header is a rate-limit header: every one has `ratelimit` in its name
/// (`x-ratelimit-*`, `ratelimit`, `ratelimit-policy`, `anthropic-ratelimit-*`, …).
pub(crate) fn is_rate_limit_name(name: &http::HeaderName) -> bool {
    const NEEDLE: &[u8] = b"ratelimit";
    let name = name.as_str().as_bytes();
    name.len() >= NEEDLE.len() && name.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Whether any header of `headers` is a rate-limit header.
pub(crate) fn has_rate_limit_header(headers: &http::HeaderMap) -> bool {
    headers.keys().any(is_rate_limit_name)
}

/// The classification every provider classifier starts from and refines: class from the
/// status, explicit delay and verdict from the headers, rate-limit state.
pub(crate) fn base(parts: &Parts, now: SystemTime) -> Classification {
    base_as(parts, parts.status, now)
}

/// [`base`], as if the response's status were `status`: an error body in a 2xx stands for
/// the status it names (see [`error_status_in_success`]).
pub(crate) fn base_as(parts: &Parts, status: http::StatusCode, now: SystemTime) -> Classification {
    let h = &parts.headers;
    let mut c = Classification::new_at(QuotaClass::from_status(status), now);
    // A success says nothing about retrying — unless it is gRPC, whose errors arrive as
    // HTTP 200. Only the rate-limit state is read (the limiter learns from successes).
    if c.class().is_success() && !h.contains_key(GRPC_STATUS) {
        // Every rate-limit header has `ratelimit` in its name: a plain success (most of
        // them) skips the parsers' passes over its headers.
        if !has_rate_limit_header(h) {
            return c;
        }
        let theirs = headers::server_now(h, now);
        c.set_server_now(theirs);
        return c.with_rate_limit(RateLimitInfo::from_headers(h, theirs));
    }
    // Absolute times (HTTP-dates, epoch and RFC 3339 resets) from the server's clock.
    let now = headers::server_now(h, now);
    c.set_server_now(now);
    // The proxy's own delay, else the upstream's as the proxy relayed it.
    let delay = headers::retry_after(h, now).or_else(|| headers::relayed_retry_after(h, now));
    c.set_retry_after(delay);
    c.set_retryable(headers::should_retry(h));
    if headers::grpc_pushback(h) == Some(headers::Pushback::DoNotRetry) {
        c.set_retryable(Some(false));
    }
    if c.class() == QuotaClass::QuotaExhausted && delay.is_some() {
        // A 402 with a delay (OpenRouter's in-flight budget) passes: wait and retry.
        c.set_class(QuotaClass::RateLimited);
    }
    c.with_rate_limit(RateLimitInfo::from_headers(h, now))
}

/// The error status a 2xx's body names: OpenRouter answers HTTP 200 once generation has
/// started, with `{"error": {"code": 502, …}}` in the body when it fails after all. `None`
/// for an error status (the status says it), or a body without an error `code` of 400–599.
pub(crate) fn error_status_in_success(
    parts: &Parts,
    v: &serde_json::Value,
) -> Option<http::StatusCode> {
    if !parts.status.is_success() {
        return None;
    }
    let code = v.get("error")?.get("code")?;
    let code = code
        .as_u64()
        .or_else(|| code.as_str().and_then(|s| s.trim().parse().ok()))?;
    let status = http::StatusCode::from_u16(u16::try_from(code).ok()?).ok()?;
    (status.is_client_error() || status.is_server_error()).then_some(status)
}

/// Restarts `c` from the status a 2xx's body `v` names as its error, if it names one
/// ([`error_status_in_success`]): what every body-reading classifier does before refining.
pub(crate) fn rebase_on_body_status(
    c: &mut Classification,
    parts: &Parts,
    v: &serde_json::Value,
    now: SystemTime,
) {
    if let Some(status) = error_status_in_success(parts, v) {
        *c = base_as(parts, status, now);
    }
}

/// Derives what follows from the final class: a rate-limited response without an explicit
/// delay waits for the reset of its exhausted window; an exhausted quota resets when its
/// window does.
pub(crate) fn finish(mut c: Classification) -> Classification {
    let limited = matches!(
        c.class(),
        QuotaClass::RateLimited | QuotaClass::QuotaExhausted
    );
    if !limited {
        return c;
    }
    let reset = c.rate_limit().exhausted_reset();
    if c.reset_after().is_none() {
        c.set_reset_after(reset);
    }
    if c.retry_after().is_none() && c.class() == QuotaClass::RateLimited {
        c.set_retry_after(reset);
    }
    c
}
