//! The LiteLLM proxy's error shape.

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

use super::json::{self, contains_ci, str_at};
use super::{auto, Classification, Classify, QuotaClass, Scope};
use crate::headers::{Dimension, RateLimitInfo, RateLimitWindow};

/// Classifies LiteLLM proxy responses: `{"error": {"message", "type", "param", "code": "429"}}`
/// (`code` is a string) on `/v1/chat/completions`, and Anthropic's shape
/// (`{"type": "error", "error": {"type", "message"}}`) with LiteLLM's message on `/v1/messages`.
///
/// What the proxy says about its own limits:
///
/// - a budget (`budget_exceeded`, "Budget has been exceeded", a deployment's "crossed budget",
///   a key's budget for one model), whatever the status (400, 422 or 429 by version and
///   setting), is [`QuotaClass::QuotaExhausted`] and not retryable: [`Scope::Model`] when the
///   budget is a model's or a deployment's, else [`Scope::Account`];
/// - the key limiter's 429s ("Rate limit exceeded for api_key: …", the legacy "Crossed TPM /
///   RPM / Max Parallel Request Limit") are [`QuotaClass::RateLimited`] for the
///   [`Scope::Account`] ([`Scope::Model`] for a per-model descriptor); a refusal of its
///   `max_parallel_requests` is [`Scope::InFlight`], with no delay (its `retry-after` is the
///   limiter's window, while a slot frees when a request ends): retried after a backoff,
///   and the limiter's windows are left alone;
/// - a router with no deployment left ("No deployments available for selected model",
///   deployment `rpm` reached, or all in cooldown: "Try again in 7 seconds") is
///   [`QuotaClass::RateLimited`] for the [`Scope::Model`].
///
/// What it relays from an upstream provider (`litellm.RateLimitError: RateLimitError:
/// OpenAIException - …`): the proxy maps the provider's error onto its own exception and status
/// and keeps the provider's words in the message, sometimes its JSON body. That body is
/// classified as the provider's (an Anthropic `overloaded_error` that arrives as a 500 is
/// [`QuotaClass::Overloaded`]); without one, the words are (an OpenAI `insufficient_quota`
/// that arrives as a 429 saying only "You exceeded your current quota" is
/// [`QuotaClass::QuotaExhausted`], not retryable; "Your credit balance is too low" too). A
/// relayed limit is the upstream's: [`Scope::Upstream`], with the provider's name in
/// [`Classification::provider`].
///
/// The delay: the proxy's `Retry-After`, else the upstream's relayed as
/// `llm_provider-retry-after(-ms)`, else one in the message ("Try again in 7 seconds", "Please
/// try again in 7s", the key limiter's "Limit resets at: 2026-11-28 19:05:29 UTC"). On
/// `/v1/messages` the proxy drops every header but its own `x-litellm-*`: the message is all
/// there is.
///
/// ```
/// use tower_quota::classify::{Classify, LiteLlm, QuotaClass};
///
/// let (parts, ()) = http::Response::builder().status(422).body(()).unwrap().into_parts();
/// let body = br#"{"error":{"message":"Budget has been exceeded! Current cost: 1.2, Max budget: 1.0",
///   "type":"budget_exceeded","param":null,"code":"422"}}"#;
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

/// Whether a response looks like the LiteLLM proxy's: a string status `code` beside `type`
/// and `param`, a `budget_exceeded` type, a message that names LiteLLM, or `x-litellm-*`
/// headers.
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

/// Markers of the proxy's own budgets: a key's, user's, team's (`BudgetExceededError`), a
/// deployment's (the router's budget limiter), a key's for one model.
const BUDGET_MARKERS: &[&str] = &[
    "budget_exceeded",
    "budget has been exceeded",
    "exceededbudget",
    "exceeded budget",
    "crossed budget",
];

/// Markers of the key limiter's own 429s: the current one ("Rate limit exceeded for
/// api_key: …") and the legacy one.
const KEY_LIMIT_MARKERS: &[&str] = &[
    "rate limit exceeded for ",
    "crossed tpm",
    "crossed rpm",
    "max parallel request limit",
    "parallel request limit reached",
];

pub(crate) fn refine(c: &mut Classification, parts: &Parts, v: &Value) -> bool {
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

    // The proxy's own budgets, first: they come with any status and wording.
    if kind == "budget_exceeded" || BUDGET_MARKERS.iter().any(|m| contains_ci(message, m)) {
        c.set_code("budget_exceeded");
        c.set_class(QuotaClass::QuotaExhausted);
        c.set_scope(if names_a_model(message) {
            Scope::Model
        } else {
            Scope::Account
        });
        c.set_retryable(Some(false));
        return true;
    }

    let provider = upstream_provider(message);
    let mut router_refusal = false;
    if let Some(name) = provider {
        c.set_provider(name);
        relayed(c, parts, message);
    } else if contains_ci(message, "no deployments available") {
        // The router: deployment `rpm`/`tpm` reached, or every deployment cooling down.
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(Scope::Model);
        router_refusal = true;
    } else if KEY_LIMIT_MARKERS.iter().any(|m| contains_ci(message, m)) {
        c.set_class(QuotaClass::RateLimited);
        c.set_scope(if in_flight(parts, message) {
            Scope::InFlight
        } else if contains_ci(message, "for model_per_") {
            Scope::Model
        } else {
            Scope::Account
        });
    }
    if c.scope() == Scope::InFlight {
        // A slot frees when one of the key's requests ends. The `retry-after` beside it is
        // the limiter's window (v3: a constant; legacy: the clock minute's end), not when.
        c.set_retry_after(None);
        c.set_reset_after(None);
        // How many may be in flight, when the message says: v3 "Limit type:
        // max_parallel_requests. Current limit: 1", legacy ", max_parallel_requests: 1".
        let limit = if contains_ci(message, "limit type: max_parallel_requests") {
            after(message, "Current limit: ")
        } else {
            after(message, ", max_parallel_requests: ")
        };
        if let Some(limit) = limit.flatten().filter(|&l| l > 0) {
            let mut w = RateLimitWindow::new(Dimension::Named(crate::headers::IN_FLIGHT.into()));
            w.limit = Some(limit);
            w.remaining = Some(0);
            c.rate_limit_mut()
                .merge(RateLimitInfo::from_windows(vec![w]));
        }
        return true;
    }
    if c.retry_after().is_none() && c.class() == QuotaClass::RateLimited {
        let now = c.server_now();
        c.set_retry_after(json::delay_in_message(message).or_else(|| resets_at(message, now)));
        // A router refusal that names no delay is a deployment's `rpm`/`tpm` (its cooldowns
        // say "Try again in N seconds"), which counts per UTC clock minute: nothing is
        // admitted before the next one.
        if router_refusal && c.retry_after().is_none() {
            c.set_retry_after(Some(json::until_next_utc_boundary(now, 60)));
        }
    }
    // The proxy's request count when it refused, below its configured `rpm`: what it really
    // admits per window (its router admits N − 1 for `rpm: N`). The limiter adopts it.
    if c.class() == QuotaClass::RateLimited {
        if let Some(admits) = admitted_rpm(message) {
            let mut w = RateLimitWindow::new(Dimension::Requests);
            w.limit = Some(admits);
            w.remaining = Some(0);
            w.reset = c.retry_after();
            c.rate_limit_mut()
                .merge(RateLimitInfo::from_windows(vec![w]));
        }
    }
    true
}

/// The requests per window the proxy really admits, from a refusal on `rpm` that names its
/// count: the legacy key limiter's "current rpm: X, rpm limit: Y, current tpm: …, tpm limit:
/// None…", the router's "Deployments={'…': {'current_tpm': …, 'tpm_limit': inf,
/// 'current_rpm': X, 'rpm_limit': Y}}". `Some(X)` when X < Y and nothing else refused it: no
/// token limit (`None`, `inf`, or the limiter's "no limit" `i64::MAX`), no parallel request
/// at its limit, one deployment.
fn admitted_rpm(message: &str) -> Option<u64> {
    let (current, limit, tpm_limit) = if message.contains("'current_rpm': ") {
        if message.matches("'current_rpm': ").count() != 1 {
            return None;
        }
        (
            after(message, "'current_rpm': ")?,
            after(message, "'rpm_limit': ")?,
            after(message, "'tpm_limit': ")?,
        )
    } else {
        let parallel = after(message, "current max_parallel_requests: ")
            .zip(after(message, ", max_parallel_requests: "));
        if let Some((Some(now), Some(max))) = parallel {
            if now >= max {
                return None;
            }
        }
        (
            after(message, "current rpm: ")?,
            after(message, "rpm limit: ")?,
            after(message, "tpm limit: ").unwrap_or(None),
        )
    };
    match (current, limit, tpm_limit) {
        (Some(current), Some(limit), None) if current >= 1 && current < limit => Some(current),
        _ => None,
    }
}

/// The number (or "no limit": `None`) after `marker` in `message`; `None` without one.
fn after(message: &str, marker: &str) -> Option<Option<u64>> {
    let at = message.find(marker)? + marker.len();
    let rest = &message[at..];
    let end = rest
        .find(|ch: char| !ch.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(match &rest[..end] {
        "None" | "inf" => None,
        n => n.parse::<u64>().ok().filter(|&n| n < 1 << 53),
    })
}

/// Whether a key limiter's refusal is of its `max_parallel_requests`: the v3 limiter's
/// `rate_limit_type` header or "Limit type: max_parallel_requests", the older "parallel
/// request limit reached", or the legacy limiter's counts with the parallel requests at
/// their limit and the rpm and tpm below theirs.
fn in_flight(parts: &Parts, message: &str) -> bool {
    let header = parts
        .headers
        .get("rate_limit_type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("max_parallel_requests"));
    if header
        || contains_ci(message, "limit type: max_parallel_requests")
        || contains_ci(message, "parallel request limit reached")
    {
        return true;
    }
    let below = |current: &str, limit: &str| match (after(message, current), after(message, limit))
    {
        (Some(Some(current)), Some(Some(limit))) => current < limit,
        (Some(_), Some(None)) => true,
        _ => false,
    };
    matches!(
        (
            after(message, "current max_parallel_requests: "),
            after(message, ", max_parallel_requests: "),
        ),
        (Some(Some(now)), Some(Some(max))) if now >= max
    ) && below("current rpm: ", "rpm limit: ")
        && below("current tpm: ", "tpm limit: ")
}

/// The key limiter's "Limit resets at: 2026-11-28 19:05:29 UTC", as a delay from `now`: on
/// `/v1/messages` the proxy drops the `retry-after` header of its own 429 and this is all
/// that is left of it.
fn resets_at(message: &str, now: SystemTime) -> Option<std::time::Duration> {
    let marker = "resets at: ";
    let lower = message.to_ascii_lowercase();
    let at = lower.find(marker)? + marker.len();
    let stamp = message.get(at..at + 23)?;
    let (date, zone) = stamp.split_at(19);
    if !zone.eq_ignore_ascii_case(" utc") {
        return None;
    }
    let rfc3339 = format!("{}Z", date.replacen(' ', "T", 1));
    let reset = crate::headers::parse_rfc3339(&rfc3339)?;
    Some(reset.duration_since(now).unwrap_or_default())
}

/// An upstream provider's error, relayed in the message: its JSON body when the message
/// carries one, else its words.
fn relayed(c: &mut Classification, parts: &Parts, message: &str) {
    let before = c.class();
    match relayed_body(message) {
        Some(body) => {
            let mut inner = c.clone();
            if auto::refine_provider(&mut inner, parts, &body) {
                c.set_class(inner.class());
                if let Some(code) = inner.code() {
                    c.set_code(code);
                }
                if c.retry_after().is_none() {
                    c.set_retry_after(inner.retry_after());
                }
                c.set_reset_after(inner.reset_after());
                c.set_retryable(inner.retryable());
            }
        }
        None => auto::refine_text(c, message.as_bytes()),
    }
    if matches!(c.class(), QuotaClass::ServerError | QuotaClass::Unavailable)
        && contains_ci(message, "overloaded")
    {
        c.set_class(QuotaClass::Overloaded);
    }
    if c.class() == QuotaClass::QuotaExhausted && before != QuotaClass::QuotaExhausted {
        // Money or quota gone upstream: waiting does not bring it back.
        c.set_retryable(Some(false));
    }
    if matches!(
        c.class(),
        QuotaClass::RateLimited | QuotaClass::QuotaExhausted | QuotaClass::Overloaded
    ) {
        c.set_scope(Scope::Upstream);
    }
}

/// The upstream's JSON body inside a LiteLLM message (`… AnthropicException - {"type":
/// "error", …}\n\nLiteLLM: model group 'x' failed …`), when it is one.
fn relayed_body(message: &str) -> Option<Value> {
    let start = message.find('{')?;
    let end = message.rfind('}')?;
    (start < end)
        .then(|| json::parse(&message.as_bytes()[start..=end]))
        .flatten()
        .filter(|v| v.get("error").is_some())
}

/// The provider LiteLLM names as the source of an error: `OpenAIException - …`,
/// `AnthropicError - …`, `VertexAIException - …` give `OpenAI`, `Anthropic`, `VertexAI`.
fn upstream_provider(message: &str) -> Option<&str> {
    let mut rest = message;
    while let Some(at) = rest.find(" - ") {
        let word = rest[..at]
            .rsplit(|ch: char| ch.is_whitespace() || ch == ':' || ch == '.')
            .next()
            .unwrap_or("");
        let name = word
            .strip_suffix("Exception")
            .or_else(|| word.strip_suffix("Error"))
            .unwrap_or("");
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric())
            && !name.eq_ignore_ascii_case("litellm")
        {
            return Some(name);
        }
        rest = &rest[at + 3..];
    }
    None
}

/// A budget of one model or deployment rather than of the caller ("exceeded budget for
/// model=gpt-4o", "Exceeded budget for deployment …").
fn names_a_model(message: &str) -> bool {
    contains_ci(message, "for model")
        || contains_ci(message, "deployment")
        || contains_ci(message, "model_max_budget")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        let table = [
            (
                "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit",
                Some("OpenAI"),
            ),
            (
                "litellm.InternalServerError: AnthropicError - {\"type\": \"error\"}",
                Some("Anthropic"),
            ),
            (
                "litellm.RateLimitError: VertexAIException - {}",
                Some("VertexAI"),
            ),
            (
                "No deployments available - crossed budget: Exceeded budget",
                None,
            ),
            (
                "Rate limit exceeded for api_key: abc. Limit type: requests.",
                None,
            ),
            (
                "litellm.APIError: APIError: OpenAIException - Overloaded",
                Some("OpenAI"),
            ),
            ("a - b - c", None),
            ("", None),
        ];
        for (message, want) in table {
            assert_eq!(upstream_provider(message), want, "{message}");
        }
    }

    #[test]
    fn what_the_proxy_really_admits() {
        let table = [
            // The router under usage-based-routing-v2, `rpm: 3` (LiteLLM 1.108.7).
            ("litellm.RateLimitError: No deployments available for selected model. Passed model=rpm-cap. Deployments={'c7ba': {'current_tpm': 12, 'tpm_limit': inf, 'current_rpm': 2, 'rpm_limit': 3}}", Some(2)),
            // Refused on its tpm: says nothing of the requests.
            ("No deployments available for selected model. Passed model=tpm-cap. Deployments={'35': {'current_tpm': 6, 'tpm_limit': 10, 'current_rpm': 1, 'rpm_limit': inf}}", None),
            // Two deployments: whose count?
            ("Deployments={'a': {'current_tpm': 0, 'tpm_limit': inf, 'current_rpm': 1, 'rpm_limit': 3}, 'b': {'current_tpm': 0, 'tpm_limit': inf, 'current_rpm': 2, 'rpm_limit': 3}}", None),
            // The legacy key limiter at its limit: nothing new.
            ("LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 2, rpm limit: 2, current tpm: 12, tpm limit: 9223372036854775807, current max_parallel_requests: 0, max_parallel_requests: 9223372036854775807", None),
            // Refused on parallel requests, or on tokens.
            ("Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 1, rpm limit: 5, current tpm: 0, tpm limit: 9223372036854775807, current max_parallel_requests: 1, max_parallel_requests: 1", None),
            ("Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 2, rpm limit: 5, current tpm: 12, tpm limit: 10, current max_parallel_requests: 0, max_parallel_requests: 9223372036854775807", None),
            // Below its limit, nothing else in the way: the proxy admits 19.
            ("LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM, RPM Limit. current rpm: 19, rpm limit: 20, current tpm: 0, tpm limit: None", Some(19)),
            ("current rpm: 0, rpm limit: 20, current tpm: 0, tpm limit: None", None),
            ("Rate limit exceeded for api_key: ab. Limit type: requests. Current limit: 2, Remaining: 0.", None),
        ];
        for (message, want) in table {
            assert_eq!(admitted_rpm(message), want, "{message}");
        }
    }

    #[test]
    fn reset_times_in_messages() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(1_795_892_669); // 2026-11-28T19:04:29Z
        let m = "Rate limit exceeded for api_key: ab. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2026-11-28 19:05:29 UTC";
        assert_eq!(resets_at(m, now), Some(Duration::from_secs(60)));
        assert_eq!(
            resets_at("Limit resets at: 2026-11-28 19:03:29 UTC", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            resets_at("Limit resets at: 2026-11-28 19:05:29 CET", now),
            None
        );
        assert_eq!(resets_at("Limit resets at: 2026-11-28", now), None);
        assert_eq!(
            resets_at("Limit resets at: 2026-13-28 19:05:29 UTC", now),
            None
        );
    }

    #[test]
    fn relayed_bodies() {
        let m = "litellm.RateLimitError: AnthropicException - {\"type\": \"error\", \"error\": {\"type\": \"rate_limit_error\", \"message\": \"x\"}}\n\nLiteLLM: model group 'a' failed with the error above.";
        assert!(relayed_body(m).is_some());
        assert!(relayed_body("Deployments={'a': {'rpm': 3}}").is_none());
        assert!(relayed_body("} {").is_none());
        assert!(relayed_body("{\"id\": 1}").is_none());
    }
}
