//! OpenAI's error shape.

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{Classification, Classify, QuotaClass, Scope};

/// Classifies OpenAI (and OpenAI-compatible) responses:
/// `{"error": {"message", "type", "param", "code"}}`.
///
/// A 429 with `insufficient_quota` (or a billing code such as `credit_balance_exhausted`) is
/// [`QuotaClass::QuotaExhausted`] and not retryable; `rate_limit_exceeded` is
/// [`QuotaClass::RateLimited`], scoped to the model when the message names one
/// ("Rate limit reached for gpt-4o in organization …"). `x-should-retry` and the
/// `x-ratelimit-*` headers are read by the generic part. An answer of the LiteLLM proxy (which
/// speaks OpenAI's shape but rewrites what upstreams said) is read as [`LiteLlm`] reads it.
///
/// [`LiteLlm`]: super::LiteLlm
///
/// ```
/// use tower_quota::classify::{Classify, OpenAi, QuotaClass};
///
/// let (parts, ()) = http::Response::builder().status(429).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota",
///   "param":null,"code":"insufficient_quota"}}"#;
/// let c = OpenAi::default().classify(&parts, body);
/// assert_eq!(c.class(), QuotaClass::QuotaExhausted);
/// assert!(!c.should_retry());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

impl Classify for OpenAi {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        super::classify_with(parts, body, now, refine)
    }
}

/// Codes that mean the account's money or quota is gone, not that it is going too fast.
pub(crate) const QUOTA_CODES: &[&str] = &[
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "billing_hard_limit_reached",
    "billing_not_active",
    "spend_limit_exceeded",
    "quota_exceeded",
];

/// The body's own shape, unless the LiteLLM proxy sent it (its message and headers say so):
/// then LiteLLM's reading, which knows what the proxy rewrites.
pub(crate) fn refine(c: &mut Classification, parts: &Parts, v: &Value) -> bool {
    if super::litellm::matches(parts, v) {
        return super::litellm::refine(c, parts, v);
    }
    refine_body(c, parts, v)
}

pub(crate) fn refine_body(c: &mut Classification, _parts: &Parts, v: &Value) -> bool {
    let Some((err, message)) = json::error_object(c, v, "openai") else {
        return false;
    };
    let kind = str_at(err, "type").unwrap_or("");
    let code = str_at(err, "code").unwrap_or("");
    if let Some(most_specific) = [code, kind].into_iter().find(|s| !s.is_empty()) {
        c.set_code(most_specific);
    }
    let is = |wanted: &[&str]| wanted.contains(&code) || wanted.contains(&kind);

    if is(QUOTA_CODES) {
        c.set_code(if QUOTA_CODES.contains(&code) {
            code
        } else {
            kind
        });
        c.set_class(QuotaClass::QuotaExhausted);
        c.set_scope(Scope::Account);
        c.set_retryable(Some(false));
    } else if is(&[
        "rate_limit_exceeded",
        "requests",
        "tokens",
        "rate_limit_error",
    ]) || (c.class() == QuotaClass::RateLimited && contains_ci(message, "rate limit"))
    {
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(if names_a_model(message) {
            Scope::Model
        } else {
            Scope::Account
        });
    } else if is(&[
        "engine_overloaded",
        "overloaded",
        "slow_down",
        "server_overloaded",
    ]) || (c.class() == QuotaClass::Unavailable && contains_ci(message, "overloaded"))
    {
        c.set_class(QuotaClass::Overloaded);
    } else if is(&[
        "invalid_api_key",
        "authentication_error",
        "invalid_authentication",
    ]) {
        c.set_class(QuotaClass::Auth);
    } else if is(&["context_length_exceeded", "string_above_max_length"]) {
        c.set_class(QuotaClass::InvalidRequest);
    } else if is(&["unsupported_country_region_territory", "permission_error"]) {
        c.set_class(QuotaClass::Forbidden);
    }
    if c.retry_after().is_none() && c.class() == QuotaClass::RateLimited {
        // Azure: "Please retry after 6 seconds."; OpenAI: "Please try again in 7m12s."
        c.set_retry_after(json::delay_in_message(message));
    }
    true
}

/// "Rate limit reached for gpt-4o in organization org-… on tokens per min": OpenAI's limits
/// are per model.
fn names_a_model(message: &str) -> bool {
    contains_ci(message, "rate limit reached for ") && contains_ci(message, " in organization")
}
