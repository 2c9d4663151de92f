//! Google's `google.rpc` JSON error shape (Gemini, Vertex AI).

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{contains_ci, str_at};
use super::{grpc, Classification, Classify, QuotaClass, Scope};

/// Classifies Google API responses (Gemini, Vertex AI):
/// `{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED", "details": [...]}}`,
/// also wrapped in a one-element array as Gemini's OpenAI-compatible endpoint sends it.
///
/// The class comes from `status` (a gRPC code name); the delay from a
/// `type.googleapis.com/google.rpc.RetryInfo` detail's `retryDelay` (`"34s"`). A
/// `QuotaFailure` whose quota is per day is [`QuotaClass::QuotaExhausted`] and not retryable
/// whatever delay came with it; `RESOURCE_EXHAUSTED` without a delay is exhausted too, with
/// one it is [`QuotaClass::RateLimited`]. Quotas counted per model are [`Scope::Model`].
///
/// ```
/// use std::time::Duration;
/// use tower_quota::classify::{Classify, Google, QuotaClass, Scope};
///
/// let (parts, ()) = http::Response::builder().status(429).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED",
///   "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
///              {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#;
/// let c = Google::default().classify(&parts, body);
/// assert_eq!(c.class(), QuotaClass::RateLimited);
/// assert_eq!(c.scope(), Scope::Model);
/// assert_eq!(c.retry_after(), Some(Duration::from_secs(34)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Google;

impl Classify for Google {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        super::classify_with(parts, body, now, refine)
    }
}

/// gRPC code names, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn code_of(status: &str) -> Option<u32> {
    CODE_NAMES
        .iter()
        .position(|n| *n == status)
        .map(|i| i as u32)
}

/// Whether a parsed body has Google's shape: an `error.status` that is a gRPC code name.
pub(crate) fn matches(v: &Value) -> bool {
    v.get("error")
        .and_then(|e| str_at(e, "status"))
        .and_then(code_of)
        .is_some()
}

pub(crate) fn refine(c: &mut Classification, _parts: &Parts, v: &Value) -> bool {
    let Some(err) = v.get("error").filter(|e| e.is_object()) else {
        return false;
    };
    let Some(code) = str_at(err, "status").and_then(code_of) else {
        return false;
    };
    c.set_api("google");
    c.set_class(grpc::class_of(code));
    c.set_code(CODE_NAMES[code as usize]);
    if let Some(m) = str_at(err, "message") {
        c.set_message(m);
    }
    let details = err.get("details").and_then(Value::as_array);
    let mut per_day = false;
    for d in details.into_iter().flatten().take(16) {
        let kind = str_at(d, "@type").unwrap_or("");
        if kind.ends_with("google.rpc.RetryInfo") && c.retry_after().is_none() {
            let delay = str_at(d, "retryDelay").and_then(crate::headers::parse_go_duration);
            c.set_retry_after(delay.map(|d| d.min(crate::headers::MAX_DELAY)));
        } else if kind.ends_with("google.rpc.QuotaFailure") {
            let violations = d.get("violations").and_then(Value::as_array);
            for q in violations.into_iter().flatten().take(16) {
                let id = str_at(q, "quotaId").unwrap_or("");
                per_day |= contains_ci(id, "perday");
                if contains_ci(id, "permodel") {
                    c.set_scope(Scope::Model);
                }
            }
        }
    }
    if code == 8 {
        if c.scope() == Scope::Unknown {
            c.set_scope(Scope::Account);
        }
        if per_day {
            c.set_class(QuotaClass::QuotaExhausted);
            c.set_retryable(Some(false));
        } else if c.retry_after().is_none() {
            c.set_class(QuotaClass::QuotaExhausted);
        } else {
            c.set_class(QuotaClass::RateLimited);
        }
    }
    true
}
