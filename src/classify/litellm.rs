//! The LiteLLM proxy's error shape.

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{openai, Classification, Classify, QuotaClass, Scope};

/// Classifies LiteLLM proxy responses: `{"error": {"message", "type", "param", "code": "429"}}`
/// (`code` is a string).
///
/// `budget_exceeded` is [`QuotaClass::QuotaExhausted`] whatever the status (429 now, 400 in
/// older versions); the proxy's own key and team limits ("Crossed TPM / RPM / Max Parallel
/// Request Limit") are [`Scope::Account`]; a router with no deployment left ("No deployments
/// available … Try again in 60 seconds") is [`Scope::Model`] with that delay; an exception
/// raised by an upstream provider (`litellm.RateLimitError: … OpenAIException - …`) is
/// [`Scope::Upstream`], and an upstream `insufficient_quota` is an exhausted quota.
///
/// ```
/// use tower_quota::classify::{Classify, LiteLlm, QuotaClass};
///
/// let (parts, ()) = http::Response::builder().status(400).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"message":"Budget has been exceeded! Current cost: 1.2, Max budget: 1.0",
///   "type":"budget_exceeded","param":null,"code":"400"}}"#;
/// let c = LiteLlm::default().classify(&parts, body);
/// assert_eq!(c.class(), QuotaClass::QuotaExhausted);
/// assert!(!c.should_retry());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LiteLlm;

impl Classify for LiteLlm {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        super::classify_with(parts, body, now, refine)
    }
}

/// Whether a response looks like the LiteLLM proxy's: a string status `code`, a
/// `budget_exceeded` type, a `litellm.` exception name, or `x-litellm-*` headers.
pub(crate) fn matches(parts: &Parts, v: &Value) -> bool {
    let Some(err) = v.get("error").filter(|e| e.is_object()) else {
        return false;
    };
    // A string status code alone is Azure OpenAI's shape too: LiteLLM's always has `type`
    // and `param` beside it.
    let digits =
        str_at(err, "code").is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()));
    (digits && err.get("type").is_some() && err.get("param").is_some())
        || str_at(err, "type") == Some("budget_exceeded")
        || str_at(err, "message").is_some_and(|m| contains_ci(m, "litellm"))
        || parts
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("x-litellm-"))
}

/// LiteLLM exception names and the class each stands for.
const EXCEPTIONS: &[(&str, QuotaClass)] = &[
    ("ContextWindowExceededError", QuotaClass::InvalidRequest),
    ("ContentPolicyViolationError", QuotaClass::InvalidRequest),
    ("UnprocessableEntityError", QuotaClass::InvalidRequest),
    ("BadRequestError", QuotaClass::InvalidRequest),
    ("AuthenticationError", QuotaClass::Auth),
    ("PermissionDeniedError", QuotaClass::Forbidden),
    ("NotFoundError", QuotaClass::ClientError),
    ("RateLimitError", QuotaClass::RateLimited),
    ("ServiceUnavailableError", QuotaClass::Unavailable),
    ("APIConnectionError", QuotaClass::Unavailable),
    ("InternalServerError", QuotaClass::ServerError),
    ("Timeout", QuotaClass::Timeout),
];

/// Markers of the proxy's own budgets.
const BUDGET_MARKERS: &[&str] = &[
    "budget_exceeded",
    "budget has been exceeded",
    "exceededbudget",
    "max budget",
];

pub(crate) fn refine(c: &mut Classification, _parts: &Parts, v: &Value) -> bool {
    let Some((err, message)) = json::error_object(c, v, "litellm") else {
        return false;
    };
    let kind = str_at(err, "type").unwrap_or("");
    if !kind.is_empty() {
        c.set_code(kind);
    }
    // `code` is the status as a string; trust it when the HTTP status says no more than 500.
    let code_status = match err.get("code") {
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    if c.class() == QuotaClass::ServerError {
        if let Some(status) = code_status.and_then(|s| http::StatusCode::from_u16(s).ok()) {
            if status.is_client_error() || status.is_server_error() {
                c.set_class(QuotaClass::from_status(status));
            }
        }
    }

    if let Some((_, class)) = EXCEPTIONS.iter().find(|(name, _)| message.contains(name)) {
        c.set_class(*class);
    }

    if kind == "budget_exceeded" || BUDGET_MARKERS.iter().any(|m| contains_ci(message, m)) {
        c.set_code("budget_exceeded");
        c.set_class(QuotaClass::QuotaExhausted);
        c.set_scope(Scope::Account);
        c.set_retryable(Some(false));
        return true;
    }
    if let Some(q) = openai::QUOTA_CODES.iter().find(|q| contains_ci(message, q)) {
        // The upstream provider's account is out of quota.
        c.set_code(q);
        c.set_class(QuotaClass::QuotaExhausted);
        c.set_scope(Scope::Upstream);
        c.set_retryable(Some(false));
        return true;
    }
    if contains_ci(message, "no deployments available") {
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Model);
    } else if contains_ci(message, "crossed tpm")
        || contains_ci(message, "crossed rpm")
        || contains_ci(message, "max parallel request limit")
        || contains_ci(message, "parallel request limit reached")
    {
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Account);
    } else if c.class() == QuotaClass::RateLimited && contains_ci(message, "exception") {
        // `litellm.RateLimitError: RateLimitError: OpenAIException - …`: the upstream's limit.
        c.set_scope(Scope::Upstream);
    }
    if c.retry_after().is_none() && c.class() == QuotaClass::RateLimited {
        c.set_retry_after(json::delay_in_message(message));
    }
    true
}
