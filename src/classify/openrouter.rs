//! OpenRouter's error shape.

use std::time::{Duration, SystemTime};

use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{Classification, Classify, QuotaClass, Scope};
use crate::headers::{self, Dimension, RateLimitInfo, RateLimitWindow};

/// Classifies OpenRouter responses: `{"error": {"code": <int>, "message", "metadata": {…}}}`.
///
/// Reads `metadata.error_type`, `metadata.limit_source`, `metadata.provider_name`,
/// `metadata.raw`, `metadata.retry_after_seconds` (and the exact `retry_after_seconds_raw`:
/// the larger wins), `metadata.headers` (a delay, and the `X-RateLimit-*` state the response's
/// own headers lack), `error.availability` (`retryable`, `retry_after`, `code`) and the message
/// (`free-models-per-day`, `free-models-per-day-high-balance`, `free-models-per-min`,
/// `limit_rpm/<model>/…`, `limit_rpd/<model>/…`). An upstream provider's 429 is
/// [`Scope::Upstream`], never the account's limit; the daily free-model cap is
/// [`QuotaClass::QuotaExhausted`] with its reset (the `X-RateLimit-Reset` header, else the next
/// UTC midnight); a 402 is an exhausted credit balance unless it carries a delay
/// (`openrouter_in_flight_budget`, [`Scope::InFlight`]: too many requests in flight).
///
/// One model's limits (`High demand for <model>:free on OpenRouter - limited to 8 requests
/// per minute`, and the per-day `limit_rpd` form) are [`Scope::Model`]: rate-limited per
/// minute, exhausted until the reset per day. The classification's
/// [`rate_limit`](Classification::rate_limit) carries that model's limit as a request window
/// of a minute or a day with nothing remaining, so that a limiter keyed by model learns the
/// model's quota (see [`RateLimitLayer::learn_limits`](crate::RateLimitLayer::learn_limits))
/// and the key's other models are left alone.
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
    let now = c.server_now();
    let empty = Value::Null;
    let meta = err.get("metadata").unwrap_or(&empty);
    let raw = match meta.get("raw") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => String::new(),
    };

    // The rate-limit headers forwarded in the body fill in what the response's own lack.
    let forwarded = meta.get("headers").and_then(header_object);
    if let Some(h) = &forwarded {
        c.rate_limit_mut()
            .merge(RateLimitInfo::from_headers(h, now));
    }

    // A delay in the body, used when the headers gave none: the larger of the rounded and
    // the exact (`retry_after_seconds_raw`) seconds, never earlier than asked.
    if c.retry_after().is_none() {
        let seconds = ["retry_after_seconds", "retry_after_seconds_raw"]
            .iter()
            .filter_map(|k| meta.get(*k).and_then(json::seconds))
            .max();
        let body_delay = seconds
            .or_else(|| {
                forwarded
                    .as_ref()
                    .and_then(|h| headers::retry_after(h, now))
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
                c.set_scope(Scope::InFlight);
                c.set_class(if c.retry_after().is_some() {
                    QuotaClass::RateLimited
                } else {
                    QuotaClass::QuotaExhausted
                });
            }
            _ => {}
        }
    }

    if contains_ci(message, "matching your data policy") {
        // The account's privacy settings leave no provider (`privacy_restricted`, whatever
        // the status): no retry changes that.
        c.set_code("privacy_restricted");
        c.set_class(QuotaClass::Forbidden);
        c.set_retryable(Some(false));
    } else if contains_ci(message, "free-models-per-day") {
        c.set_code(
            if contains_ci(message, "free-models-per-day-high-balance") {
                "free-models-per-day-high-balance"
            } else {
                "free-models-per-day"
            },
        );
        daily_cap(c);
    } else if contains_ci(message, "limit_rpm/") {
        // One model's shared capacity, per minute: that model waits, the key does not.
        c.set_code("limit_rpm");
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Model);
        per_model_limit(c, message, MINUTE);
    } else if contains_ci(message, "limit_rpd/") {
        // One model's requests per day: gone until the reset (the next UTC midnight).
        c.set_code("limit_rpd");
        per_model_limit(c, message, DAY);
        exhausted_for_the_day(c, Scope::Model);
    } else if contains_ci(message, "free-models-per-min") {
        c.set_code("free-models-per-min");
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Account);
    }

    // A 200 with an error body stands for the error's code.
    let status = super::generic::error_status_in_success(parts, v)
        .unwrap_or(parts.status)
        .as_u16();
    // OpenRouter's own refusals carry `"provider_name": null`: only a name is an upstream.
    let upstream = str_at(meta, "provider_name").is_some() || contains_ci(&raw, "upstream");
    if c.class() == QuotaClass::RateLimited && c.scope() == Scope::Unknown {
        c.set_scope(if upstream {
            Scope::Upstream
        } else {
            Scope::Account
        });
    } else if c.class() == QuotaClass::Overloaded && upstream {
        c.set_scope(Scope::Upstream);
    }
    if status == 402 {
        // Credits: a 402 is transient only when the server gave a delay. The in-flight
        // budget is the account's too, but a concurrency limit.
        if c.scope() != Scope::InFlight {
            c.set_scope(Scope::Account);
        }
        c.set_class(if c.retry_after().is_some() {
            QuotaClass::RateLimited
        } else {
            QuotaClass::QuotaExhausted
        });
    }
    true
}

/// The daily free-model cap: exhausted for the day, the whole account.
pub(crate) fn daily_cap(c: &mut Classification) {
    exhausted_for_the_day(c, Scope::Account);
}

/// A per-day quota of `scope` used up: exhausted until the reset the server sent, else the
/// next UTC midnight — not worth a retry whatever `Retry-After` says (OpenRouter may send one
/// on any 429): the limiter pauses until the reset.
fn exhausted_for_the_day(c: &mut Classification, scope: Scope) {
    c.set_class(QuotaClass::QuotaExhausted);
    c.set_scope(scope);
    c.set_retryable(Some(false));
    let reset = c
        .rate_limit()
        .requests()
        .and_then(|w| w.reset)
        .unwrap_or_else(|| json::until_next_utc_midnight(c.server_now()));
    c.set_reset_after(Some(reset));
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// A limit of one model ("… limited to 8 requests per minute", `X-RateLimit-Limit` in
/// `metadata.headers`), as a request window of `length` with nothing remaining: what a
/// limiter keyed by model needs to learn that model's quota.
fn per_model_limit(c: &mut Classification, message: &str, length: Duration) {
    let limit = limited_to(message).or_else(|| c.rate_limit().requests().and_then(|w| w.limit));
    let window = RateLimitWindow {
        dimension: Dimension::Requests,
        limit,
        remaining: Some(0),
        reset: None,
        window: Some(length),
    };
    c.rate_limit_mut()
        .merge(RateLimitInfo::from_windows(vec![window]));
}

/// N in "… limited to N requests per minute."
fn limited_to(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("limited to ")? + "limited to ".len()..];
    let end = rest.find(|ch: char| !ch.is_ascii_digit())?;
    rest[end..]
        .trim_start()
        .starts_with("request")
        .then(|| rest[..end].parse().ok())
        .flatten()
}

/// OpenRouter forwards headers as a JSON object in `metadata.headers` (the upstream's, or its
/// own rate-limit state).
fn header_object(h: &Value) -> Option<HeaderMap> {
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
    Some(map)
}
