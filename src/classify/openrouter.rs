//! OpenRouter's error shape.

use std::time::SystemTime;

use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{Classification, Classify, QuotaClass, Scope};
use crate::headers;

/// Classifies OpenRouter responses: `{"error": {"code": <int>, "message", "metadata": {…}}}`.
///
/// Reads `metadata.error_type`, `metadata.limit_source`, `metadata.provider_name`,
/// `metadata.raw`, `metadata.retry_after_seconds`, `metadata.headers`, `error.availability`
/// (`retryable`, `retry_after`, `code`) and the message (`free-models-per-day`,
/// `free-models-per-min`). An upstream provider's 429 is [`Scope::Upstream`], never the
/// account's limit; the daily free-model cap is [`QuotaClass::QuotaExhausted`] with its reset
/// (the `X-RateLimit-Reset` header, else the next UTC midnight); a 402 is an exhausted credit
/// balance unless it carries a delay (`openrouter_in_flight_budget`).
///
/// ```
/// use tower_quota::classify::{Classify, OpenRouter, QuotaClass, Scope};
///
/// let (parts, ()) = http::Response::builder().status(429).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"message":"Provider returned error","code":429,
///   "metadata":{"raw":"x is temporarily rate-limited upstream","provider_name":"Chutes",
///   "retry_after_seconds":29}}}"#;
/// let c = OpenRouter::default().classify(&parts, body);
/// assert_eq!(c.class(), QuotaClass::RateLimited);
/// assert_eq!(c.scope(), Scope::Upstream);
/// assert_eq!(c.retry_after(), Some(std::time::Duration::from_secs(29)));
/// assert_eq!(c.provider(), Some("Chutes"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenRouter;

impl Classify for OpenRouter {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        super::classify_with(parts, body, now, refine)
    }
}

/// Whether a parsed body has OpenRouter's shape: an `error` object with a numeric `code`, or
/// with `metadata` / `availability`.
pub(crate) fn matches(v: &Value) -> bool {
    let Some(e) = v.get("error").filter(|e| e.is_object()) else {
        return false;
    };
    e.get("code").is_some_and(Value::is_number)
        || e.get("metadata").is_some_and(Value::is_object)
        || e.get("availability").is_some_and(Value::is_object)
}

pub(crate) fn refine(c: &mut Classification, parts: &Parts, v: &Value) -> bool {
    let Some((err, message)) = json::error_object(c, v, "openrouter") else {
        return false;
    };
    let now = c.classified_at();
    let empty = Value::Null;
    let meta = err.get("metadata").unwrap_or(&empty);
    let raw = match meta.get("raw") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => String::new(),
    };

    // A delay in the body, used when the headers gave none.
    if c.retry_after().is_none() {
        let body_delay = meta
            .get("retry_after_seconds")
            .and_then(json::seconds)
            .or_else(|| {
                meta.get("headers")
                    .and_then(|h| delay_from_header_object(h, now))
            })
            .or_else(|| {
                err.get("availability")
                    .and_then(|a| a.get("retry_after"))
                    .and_then(json::seconds)
            });
        c.set_retry_after(body_delay);
    }

    if let Some(provider) = str_at(meta, "provider_name") {
        c.set_provider(provider);
    }

    // The machine-readable error type.
    if let Some(t) = str_at(meta, "error_type") {
        c.set_code(t);
        match t {
            "rate_limit_exceeded" => c.set_class(QuotaClass::RateLimited),
            "provider_overloaded" => c.set_class(QuotaClass::Overloaded),
            "provider_unavailable" => c.set_class(QuotaClass::Unavailable),
            "payment_required" => c.set_class(QuotaClass::QuotaExhausted),
            "authentication" => c.set_class(QuotaClass::Auth),
            "permission_denied" | "content_policy_violation" => c.set_class(QuotaClass::Forbidden),
            "context_length_exceeded" => c.set_class(QuotaClass::InvalidRequest),
            "timeout" => c.set_class(QuotaClass::Timeout),
            "server" => c.set_class(QuotaClass::ServerError),
            _ => {}
        }
    }

    // Availability: switch on `retryable`, not on the code.
    if let Some(a) = err.get("availability").filter(|a| a.is_object()) {
        if let Some(code) = str_at(a, "code") {
            c.set_code(code);
            match code {
                "capacity_exhausted" => {
                    c.set_class(QuotaClass::RateLimited);
                    c.set_scope(Scope::Model);
                }
                "temporarily_unavailable" => c.set_class(QuotaClass::Unavailable),
                "model_not_found" | "model_deprecated" | "free_variant_ended" => {
                    c.set_class(QuotaClass::InvalidRequest)
                }
                "privacy_restricted" => c.set_class(QuotaClass::Forbidden),
                _ => {}
            }
        }
        if let Some(r) = a.get("retryable").and_then(Value::as_bool) {
            c.set_retryable(Some(r));
        }
    }

    // Where the limit comes from (observed, not documented: one signal among several).
    if let Some(source) = str_at(meta, "limit_source") {
        c.set_code(source);
        match source {
            "openrouter_free_tier_daily" => daily_cap(c),
            "openrouter_shared_capacity" => {
                c.set_class(QuotaClass::RateLimited);
                c.set_scope(Scope::Model);
            }
            "upstream_provider_shared_pool" => {
                c.set_class(QuotaClass::RateLimited);
                c.set_scope(Scope::Upstream);
            }
            "openrouter_credits" | "openrouter_key_limit" => {
                c.set_class(QuotaClass::QuotaExhausted);
                c.set_scope(Scope::Account);
            }
            "openrouter_in_flight_budget" => {
                c.set_scope(Scope::Account);
                c.set_class(if c.retry_after().is_some() {
                    QuotaClass::RateLimited
                } else {
                    QuotaClass::QuotaExhausted
                });
            }
            _ => {}
        }
    }

    if contains_ci(message, "free-models-per-day") {
        c.set_code("free-models-per-day");
        daily_cap(c);
    } else if contains_ci(message, "free-models-per-min") {
        c.set_code("free-models-per-min");
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Account);
    }

    let status = parts.status.as_u16();
    let upstream = meta.get("provider_name").is_some() || contains_ci(&raw, "upstream");
    if c.class() == QuotaClass::RateLimited && c.scope() == Scope::Unknown {
        c.set_scope(if upstream {
            Scope::Upstream
        } else {
            Scope::Account
        });
    }
    if status == 402 {
        // Credits: a 402 is transient only when the server gave a delay.
        c.set_scope(Scope::Account);
        c.set_class(if c.retry_after().is_some() {
            QuotaClass::RateLimited
        } else {
            QuotaClass::QuotaExhausted
        });
    }
    true
}

/// The daily free-model cap: exhausted until the reset the server sent, else the next UTC
/// midnight.
pub(crate) fn daily_cap(c: &mut Classification) {
    c.set_class(QuotaClass::QuotaExhausted);
    c.set_scope(Scope::Account);
    let reset = c
        .rate_limit()
        .requests()
        .and_then(|w| w.reset)
        .unwrap_or_else(|| json::until_next_utc_midnight(c.classified_at()));
    c.set_reset_after(Some(reset));
}

/// OpenRouter forwards the upstream's headers as a JSON object in `metadata.headers`.
fn delay_from_header_object(h: &Value, now: SystemTime) -> Option<std::time::Duration> {
    let obj = h.as_object()?;
    let mut map = HeaderMap::new();
    for (name, value) in obj.iter().take(64) {
        let value = match value {
            Value::String(s) => HeaderValue::from_str(s).ok(),
            Value::Number(n) => HeaderValue::from_str(&n.to_string()).ok(),
            _ => None,
        };
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name.as_bytes()), value) {
            map.append(name, value);
        }
    }
    headers::retry_after(&map, now)
}
