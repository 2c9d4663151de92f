//! Anthropic's error shape.

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{Classification, Classify, QuotaClass, Scope};

/// Classifies Anthropic responses:
/// `{"type": "error", "error": {"type", "message", "details"?}, "request_id"}`.
///
/// `rate_limit_error` is [`QuotaClass::RateLimited`] for the organisation; `overloaded_error`
/// (529) is [`QuotaClass::Overloaded`]; a spend cap (`error.details.error_code =
/// "enforced_spend_limit_reached"`), a `billing_error` or a "credit balance is too low"
/// message is [`QuotaClass::QuotaExhausted`] and not retryable. An answer of the LiteLLM
/// proxy's `/v1/messages` (Anthropic's shape, LiteLLM's message) is read as [`LiteLlm`] reads
/// it.
///
/// [`LiteLlm`]: super::LiteLlm
///
/// ```
/// use tower_quota::classify::{Anthropic, Classify, QuotaClass};
///
/// let (parts, ()) = http::Response::builder().status(529).body(()).unwrap().into_parts();
/// let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
/// assert_eq!(Anthropic::default().classify(&parts, body).class(), QuotaClass::Overloaded);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

impl Classify for Anthropic {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        super::classify_with(parts, body, now, refine)
    }
}

/// Whether a parsed body has Anthropic's shape.
pub(crate) fn matches(v: &Value) -> bool {
    str_at(v, "type") == Some("error") && v.get("error").and_then(|e| str_at(e, "type")).is_some()
}

/// The body's own shape, unless the LiteLLM proxy sent it (its message and headers say so):
/// then LiteLLM's reading, which knows what the proxy rewrites.
pub(crate) fn refine(c: &mut Classification, parts: &Parts, v: &Value) -> bool {
    if super::litellm::matches(parts, v) {
        return super::litellm::refine(c, parts, v);
    }
    refine_body(c, parts, v)
}

pub(crate) fn refine_body(c: &mut Classification, _parts: &Parts, v: &Value) -> bool {
    let Some((err, message)) = json::error_object(c, v, "anthropic") else {
        return false;
    };
    let kind = str_at(err, "type").unwrap_or("");
    if !kind.is_empty() {
        c.set_code(kind);
    }
    match kind {
        "invalid_request_error" | "request_too_large" => c.set_class(QuotaClass::InvalidRequest),
        "authentication_error" => c.set_class(QuotaClass::Auth),
        "permission_error" => c.set_class(QuotaClass::Forbidden),
        "not_found_error" => c.set_class(QuotaClass::ClientError),
        "rate_limit_error" => {
            c.set_class(QuotaClass::RateLimited);
            c.set_scope(Scope::Account);
        }
        "api_error" => c.set_class(QuotaClass::ServerError),
        "overloaded_error" => c.set_class(QuotaClass::Overloaded),
        "timeout_error" => c.set_class(QuotaClass::Timeout),
        "billing_error" => exhausted(c),
        _ => {}
    }
    let detail = err
        .get("details")
        .and_then(|d| str_at(d, "error_code"))
        .unwrap_or("");
    if detail == "enforced_spend_limit_reached" {
        c.set_code(detail);
        exhausted(c);
    } else if contains_ci(message, "credit balance is too low") {
        exhausted(c);
    }
    true
}

fn exhausted(c: &mut Classification) {
    c.set_class(QuotaClass::QuotaExhausted);
    c.set_scope(Scope::Account);
    c.set_retryable(Some(false));
}
