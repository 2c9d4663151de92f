//! The automatic classifier, and the text fallback for bodies that are not JSON.

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{self, contains_ci};
use super::{
    anthropic, generic, google, grpc, litellm, openai, openrouter, Classification, Classify,
    QuotaClass, Scope,
};

/// Recognises each provider's shape and classifies accordingly: gRPC by its headers, then
/// the LiteLLM proxy (string status codes, `litellm.` exceptions, `x-litellm-*` headers, in
/// its OpenAI or Anthropic shape), Anthropic (`"type": "error"`), Google (`error.status` a
/// gRPC code name), OpenRouter (numeric `code`, `metadata`, `availability`), and any other
/// `{"error": {…}}` as OpenAI. A body that is not JSON — an
/// HTML error page, or JSON cut short by the body cap — is searched for the markers of the
/// cases that must not be retried (`insufficient_quota`, `budget_exceeded`,
/// `free-models-per-day`, spend limits) and of upstream rate limits.
///
/// The default classifier of [`QuotaClassifyLayer`](crate::QuotaClassifyLayer).
///
/// ```
/// use tower_quota::classify::{Auto, Classify, QuotaClass};
///
/// let (parts, ()) = http::Response::builder().status(429).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429}}"#;
/// let c = Auto::default().classify(&parts, body);
/// assert_eq!(c.class(), QuotaClass::QuotaExhausted);
/// assert_eq!(c.api(), Some("openrouter"));
/// assert!(c.reset_after().is_some());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Auto;

impl Classify for Auto {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn is_plain_success(&self, parts: &Parts) -> bool {
        // A body is read for errors only, and what a 1xx–3xx says is in its head.
        generic::plain_head(parts) && !self.wants_body(parts)
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        let mut c = generic::base(parts, now);
        if grpc::matches(parts) {
            grpc::refine(&mut c, &parts.headers);
            return generic::finish(c);
        }
        let recognised = match json::parse(body) {
            Some(v) => {
                generic::rebase_on_body_status(&mut c, parts, &v, now);
                if litellm::matches(parts, &v) {
                    litellm::refine(&mut c, parts, &v)
                } else {
                    refine_provider(&mut c, parts, &v)
                }
            }
            None => false,
        };
        if !recognised {
            refine_text(&mut c, body);
        }
        generic::finish(c)
    }
}

/// The provider shapes other than LiteLLM's (which wraps them): Anthropic, Google,
/// OpenRouter, and any other `{"error": {…}}` as OpenAI.
pub(crate) fn refine_provider(c: &mut Classification, parts: &Parts, v: &Value) -> bool {
    if anthropic::matches(v) {
        anthropic::refine_body(c, parts, v)
    } else if google::matches(v) {
        google::refine(c, parts, v)
    } else if openrouter::matches(v) {
        openrouter::refine(c, parts, v)
    } else {
        openai::refine_body(c, parts, v)
    }
}

/// What OpenAI's `insufficient_quota` says.
const QUOTA_PHRASE: &str = "exceeded your current quota";

/// The markers looked for in an error body that is not JSON, and what each means.
pub(crate) fn refine_text(c: &mut Classification, body: &[u8]) {
    if body.is_empty() || c.class().is_success() {
        return;
    }
    let quota = openai::QUOTA_CODES
        .iter()
        .chain(&[
            "budget_exceeded",
            "budget has been exceeded",
            "enforced_spend_limit_reached",
            "credit balance is too low",
            "insufficient balance",
            "insufficient credits",
            "used all available credits",
            "monthly spending limit",
        ])
        .find(|m| contains_ci(body, m))
        .or_else(|| {
            // OpenAI's `insufficient_quota` message, when the code did not survive a proxy.
            // Google says the same of its per-minute quotas, with `RESOURCE_EXHAUSTED`.
            (contains_ci(body, QUOTA_PHRASE) && !contains_ci(body, "resource_exhausted"))
                .then_some(&"insufficient_quota")
        });
    if contains_ci(body, "free-models-per-day") {
        c.set_code("free-models-per-day");
        openrouter::daily_cap(c);
    } else if let Some(marker) = quota {
        c.set_code(marker);
        c.set_class(QuotaClass::QuotaExhausted);
        c.set_scope(Scope::Account);
        c.set_retryable(Some(false));
    } else if contains_ci(body, "rate-limited upstream") {
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Upstream);
    } else if contains_ci(body, "overloaded_error") {
        c.set_class(QuotaClass::Overloaded);
    }
}
