//! OpenRouter's newest shapes (2025–26), each row citing where the shape comes from, through
//! the `OpenRouter` classifier and `Auto`; and what the limiter learns from a model's own limit.
//!
//! Sources: the project's `PROVIDERS.md` (§ OpenRouter), which records OpenRouter's
//! documentation (errors and debugging, limits, `GET /api/v1/key`), its SDK's error types, and
//! shapes observed in public reports (marked *observed* there).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_quota::classify::{Auto, Classification, Classify, OpenRouter, QuotaClass, Scope};
use tower_quota::limit::{Key, LearnOptions, Limiter};
use tower_quota::{tiers, Quota, Tier};

/// 2026-03-10T22:00:00Z: two hours before a UTC midnight.
const NOW: u64 = 1_773_180_000;
const MIDNIGHT_MS: &str = "1773187200000";
const IN_40_S_MS: &str = "1773180040000";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

struct Row {
    name: &'static str,
    source: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    class: QuotaClass,
    scope: Scope,
    delay: Option<f64>,
    reset: Option<u64>,
    retry: bool,
    code: Option<&'static str>,
    /// The request window the classification carries: limit, remaining, window length (s).
    window: Option<(Option<u64>, Option<u64>, Option<u64>)>,
}

const fn row(name: &'static str, source: &'static str, status: u16, class: QuotaClass) -> Row {
    Row {
        name,
        source,
        status,
        headers: &[],
        body: "",
        class,
        scope: Scope::Unknown,
        delay: None,
        reset: None,
        retry: false,
        code: None,
        window: None,
    }
}

impl Row {
    const fn h(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
    const fn b(mut self, body: &'static str) -> Self {
        self.body = body;
        self
    }
    const fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    const fn delay(mut self, secs: f64) -> Self {
        self.delay = Some(secs);
        self
    }
    const fn reset(mut self, secs: u64) -> Self {
        self.reset = Some(secs);
        self
    }
    const fn retry(mut self) -> Self {
        self.retry = true;
        self
    }
    const fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    const fn window(
        mut self,
        limit: Option<u64>,
        remaining: Option<u64>,
        len: Option<u64>,
    ) -> Self {
        self.window = Some((limit, remaining, len));
        self
    }
}

use QuotaClass::*;

const SHARED_CAPACITY: &str = "PROVIDERS.md § OpenRouter: per-model shared capacity, `limit_rpm/<model-id>/<uuid>` (observed 2025–26)";
const PER_MODEL_DAY: &str = "PROVIDERS.md § OpenRouter: per-model daily form `limit_rpd/<model-id>/<uuid>`, X-RateLimit-* in metadata.headers, UTC-midnight reset (observed 2025–26)";
const LIMIT_SOURCE: &str = "PROVIDERS.md § OpenRouter: `metadata.limit_source` values (observed)";
const DAILY_CAP: &str = "PROVIDERS.md § OpenRouter: daily cap `free-models-per-day`, with >= 10 credits `free-models-per-day-high-balance` (observed)";
const RAW_SECONDS: &str = "PROVIDERS.md § OpenRouter: upstream 429 bodies carry `retry_after_seconds_raw` (fractional) next to `retry_after_seconds` (observed)";
const SDK_529: &str = "PROVIDERS.md § OpenRouter: the SDK's 529 `ProviderOverloadedResponse`; `metadata.error_type: provider_overloaded`";
const SDK_502: &str = "PROVIDERS.md § OpenRouter: the SDK's 502 `Provider returned error`, the provider's JSON as a string in `raw`";
const MODERATION: &str = "PROVIDERS.md § OpenRouter: 403 moderation (docs, errors and debugging: moderation metadata `reasons`, `flagged_input`)";
const NEGATIVE: &str =
    "PROVIDERS.md § OpenRouter: 402 also on free models with a negative balance (docs)";
const IN_FLIGHT: &str = "PROVIDERS.md § OpenRouter: `openrouter_in_flight_budget`, a 402 with Retry-After: transient (observed)";
const ERROR_TYPE: &str =
    "PROVIDERS.md § OpenRouter: `metadata.error_type` values (docs, errors and debugging)";
const AVAILABILITY: &str =
    "PROVIDERS.md § OpenRouter: `error.availability` codes, `retryable` decides (docs)";
const AFTER_START: &str = "PROVIDERS.md § OpenRouter: status equals `error.code` only before generation starts; after, an HTTP 200 with the error in the body";
const RETRY_AFTER_DOC: &str =
    "PROVIDERS.md § OpenRouter: docs (2026), 429 and 503 may carry a standard Retry-After";

const ROWS: &[Row] = &[
    // === one model's limits ===
    row("limit_rpm: a model's shared capacity per minute", SHARED_CAPACITY, 429, RateLimited)
        .h(&[("x-ratelimit-limit", "8"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", IN_40_S_MS)])
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpm/google/gemma-3-27b-it/5b8d4c1e-7a2f-4b9e-9d3c-2f1e0a6b7c8d. High demand for google/gemma-3-27b-it:free on OpenRouter - limited to 8 requests per minute. Please retry shortly.","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"8","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1773180040000"},"provider_name":null,"limit_source":"openrouter_shared_capacity","remedy_hint":"Use the paid variant or retry later"}},"user_id":"user_2x"}"#)
        .scope(Scope::Model).delay(40.0).reset(40).retry().code("limit_rpm").window(Some(8), Some(0), Some(60)),
    row("limit_rpm: the limit only in the message, no headers", SHARED_CAPACITY, 429, RateLimited)
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpm/deepseek/deepseek-r1/0a1b2c3d. High demand for deepseek/deepseek-r1:free on OpenRouter - limited to 12 requests per minute.","code":429,"metadata":{"limit_source":"openrouter_shared_capacity"}}}"#)
        .scope(Scope::Model).retry().code("limit_rpm").window(Some(12), Some(0), Some(60)),
    row("limit_rpm with a standard Retry-After", RETRY_AFTER_DOC, 429, RateLimited)
        .h(&[("retry-after", "17")])
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpm/qwen/qwen3-coder/77aa. High demand for qwen/qwen3-coder:free on OpenRouter - limited to 8 requests per minute.","code":429}}"#)
        .scope(Scope::Model).delay(17.0).retry().code("limit_rpm").window(Some(8), Some(0), Some(60)),
    row("limit_rpd: a model's requests per day", PER_MODEL_DAY, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpd/google/gemini-2.0-flash-exp/9f8e7d6c. This model is limited to 200 requests per day on the free tier.","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"200","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1773187200000"},"provider_name":null}}}"#)
        .scope(Scope::Model).reset(7200).code("limit_rpd").window(Some(200), Some(0), Some(86_400)),
    row("limit_rpd without headers resets at UTC midnight", PER_MODEL_DAY, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpd/meta-llama/llama-4-maverick/1234","code":429}}"#)
        .scope(Scope::Model).reset(7200).code("limit_rpd").window(None, Some(0), Some(86_400)),
    // === limit_source ===
    row("limit_source openrouter_free_tier_daily", LIMIT_SOURCE, 429, QuotaExhausted)
        .h(&[("x-ratelimit-reset", MIDNIGHT_MS)])
        .b(r#"{"error":{"message":"Daily limit reached","code":429,"metadata":{"limit_source":"openrouter_free_tier_daily"}}}"#)
        .scope(Scope::Account).reset(7200).code("openrouter_free_tier_daily"),
    row("limit_source openrouter_shared_capacity", LIMIT_SOURCE, 429, RateLimited)
        .b(r#"{"error":{"message":"Model at capacity","code":429,"metadata":{"limit_source":"openrouter_shared_capacity"}}}"#)
        .scope(Scope::Model).retry().code("openrouter_shared_capacity"),
    row("limit_source upstream_provider_shared_pool", LIMIT_SOURCE, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"limit_source":"upstream_provider_shared_pool","provider_name":"Chutes","retry_after_seconds":9}}}"#)
        .scope(Scope::Upstream).delay(9.0).retry().code("upstream_provider_shared_pool"),
    row("limit_source openrouter_credits", LIMIT_SOURCE, 402, QuotaExhausted)
        .b(r#"{"error":{"message":"Insufficient credits","code":402,"metadata":{"limit_source":"openrouter_credits"}}}"#)
        .scope(Scope::Account).code("openrouter_credits"),
    row("limit_source openrouter_key_limit", LIMIT_SOURCE, 403, QuotaExhausted)
        .b(r#"{"error":{"message":"Key limit exceeded","code":403,"metadata":{"limit_source":"openrouter_key_limit"}}}"#)
        .scope(Scope::Account).code("openrouter_key_limit"),
    row("limit_source openrouter_in_flight_budget, 402 with Retry-After", IN_FLIGHT, 402, RateLimited)
        .h(&[("retry-after", "2")])
        .b(r#"{"error":{"message":"Too many requests in flight for your balance","code":402,"metadata":{"limit_source":"openrouter_in_flight_budget"}}}"#)
        .scope(Scope::InFlight).delay(2.0).retry().code("openrouter_in_flight_budget"),
    row("limit_source openrouter_in_flight_budget, the delay only in the body", IN_FLIGHT, 402, RateLimited)
        .b(r#"{"error":{"code":402,"message":"Too many requests in flight","metadata":{"limit_source":"openrouter_in_flight_budget","retry_after_seconds":2}}}"#)
        .scope(Scope::InFlight).delay(2.0).retry().code("openrouter_in_flight_budget"),
    row("limit_source openrouter_in_flight_budget without a delay is final", IN_FLIGHT, 402, QuotaExhausted)
        .b(r#"{"error":{"message":"Too many requests in flight for your balance","code":402,"metadata":{"limit_source":"openrouter_in_flight_budget"}}}"#)
        .scope(Scope::InFlight).code("openrouter_in_flight_budget"),
    // === the daily free-model cap ===
    row("free-models-per-day-high-balance", DAILY_CAP, 429, QuotaExhausted)
        .h(&[("x-ratelimit-limit", "1000"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", MIDNIGHT_MS)])
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-day-high-balance. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"1000","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1773187200000"},"provider_name":null}},"user_id":"user_2x"}"#)
        .scope(Scope::Account).reset(7200).code("free-models-per-day-high-balance").window(Some(1000), Some(0), None),
    row("free-models-per-day, state only in metadata.headers", DAILY_CAP, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1773187200000"},"provider_name":null}}}"#)
        .scope(Scope::Account).reset(7200).code("free-models-per-day").window(Some(50), Some(0), None),
    row("free-models-per-day with a standard Retry-After is still final", RETRY_AFTER_DOC, 429, QuotaExhausted)
        .h(&[("retry-after", "5"), ("x-ratelimit-reset", MIDNIGHT_MS)])
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"provider_name":null}}}"#)
        .scope(Scope::Account).delay(5.0).reset(7200).code("free-models-per-day"),
    row("limit_rpd with a standard Retry-After is still final", RETRY_AFTER_DOC, 429, QuotaExhausted)
        .h(&[("retry-after", "5")])
        .b(r#"{"error":{"message":"Rate limit exceeded: limit_rpd/meta-llama/llama-4-maverick/1234","code":429}}"#)
        .scope(Scope::Model).delay(5.0).reset(7200).code("limit_rpd").window(None, Some(0), Some(86_400)),
    row("OpenRouter's own 429, provider_name null, no marker: the account, not an upstream", RETRY_AFTER_DOC, 429, RateLimited)
        .h(&[("retry-after", "3")])
        .b(r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"provider_name":null}}}"#)
        .scope(Scope::Account).delay(3.0).retry(),
    // === delays in the body ===
    row("retry_after_seconds_raw above the rounded value", RAW_SECONDS, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x is temporarily rate-limited upstream. Please retry shortly","provider_name":"Chutes","is_byok":false,"retry_after_seconds":28,"retry_after_seconds_raw":28.4}}}"#)
        .scope(Scope::Upstream).delay(28.4).retry(),
    row("retry_after_seconds_raw alone", RAW_SECONDS, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"rate-limited upstream","provider_name":"Targon","retry_after_seconds_raw":12.5}}}"#)
        .scope(Scope::Upstream).delay(12.5).retry(),
    row("upstream 429 typed provider_overloaded", RAW_SECONDS, 429, Overloaded)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"overloaded","provider_name":"Chutes","error_type":"provider_overloaded","retry_after_seconds":5,"retry_after_seconds_raw":4.2}}}"#)
        .scope(Scope::Upstream).delay(5.0).retry().code("provider_overloaded"),
    // === provider errors ===
    row("529 provider_overloaded", SDK_529, 529, Overloaded)
        .b(r#"{"error":{"code":529,"message":"Provider returned error","metadata":{"error_type":"provider_overloaded","provider_name":"Anthropic","raw":"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}}}"#)
        .scope(Scope::Upstream).retry().code("provider_overloaded"),
    // Once generation has started, OpenRouter answers HTTP 200: an error then comes in the
    // body, its `code` the status it stands for (when the body is read).
    row("200 with an error body after generation started", AFTER_START, 200, Unavailable)
        .b(r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Novita","raw":"upstream connect error"}}}"#)
        .retry(),
    row("200 with a 402 error body", AFTER_START, 200, QuotaExhausted)
        .b(r#"{"error":{"code":402,"message":"Insufficient credits"}}"#)
        .scope(Scope::Account),
    row("200 with a rate-limit error body", AFTER_START, 200, RateLimited)
        .h(&[("retry-after", "3")])
        .b(r#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min."}}"#)
        .scope(Scope::Account).delay(3.0).retry().code("free-models-per-min"),
    row("502 provider returned error, JSON in raw", SDK_502, 502, Unavailable)
        .b(r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Novita","raw":"{\"error\":{\"message\":\"upstream connect error\",\"code\":502}}"}}}"#)
        .retry(),
    row("503 with a standard Retry-After", RETRY_AFTER_DOC, 503, Unavailable)
        .h(&[("retry-after", "4")])
        .b(r#"{"error":{"code":503,"message":"No endpoints available that match your routing requirements"}}"#)
        .delay(4.0).retry(),
    // === the typed errors and availability codes ===
    row("error_type rate_limit_exceeded", ERROR_TYPE, 429, RateLimited)
        .b(r#"{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"error_type":"rate_limit_exceeded"}}}"#)
        .scope(Scope::Account).retry().code("rate_limit_exceeded"),
    row("error_type authentication", ERROR_TYPE, 401, Auth)
        .b(r#"{"error":{"code":401,"message":"No auth credentials found","metadata":{"error_type":"authentication"}}}"#)
        .code("authentication"),
    row("error_type permission_denied", ERROR_TYPE, 403, Forbidden)
        .b(r#"{"error":{"code":403,"message":"Key not allowed to access this model","metadata":{"error_type":"permission_denied"}}}"#)
        .code("permission_denied"),
    row("error_type server", ERROR_TYPE, 500, ServerError)
        .b(r#"{"error":{"code":500,"message":"Internal server error","metadata":{"error_type":"server"}}}"#)
        .retry().code("server"),
    row("error_type unmapped keeps the status's class", ERROR_TYPE, 502, Unavailable)
        .b(r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"error_type":"unmapped","provider_name":"Novita"}}}"#)
        .retry().code("unmapped"),
    row("availability model_deprecated is final", AVAILABILITY, 404, InvalidRequest)
        .b(r#"{"error":{"code":404,"message":"This model has been deprecated","availability":{"code":"model_deprecated","retryable":false,"fallback_models":["openai/gpt-4o"]}}}"#)
        .code("model_deprecated"),
    row("availability privacy_restricted is final", AVAILABILITY, 404, Forbidden)
        .b(r#"{"error":{"code":404,"message":"No endpoints found matching your data policy","availability":{"code":"privacy_restricted","retryable":false}}}"#)
        .code("privacy_restricted"),
    // === moderation, money ===
    row("403 moderation", MODERATION, 403, Forbidden)
        .b(r#"{"error":{"code":403,"message":"Your input was flagged by moderation","metadata":{"reasons":["harassment"],"flagged_input":"you are…","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#),
    row("403 moderation typed content_policy_violation", MODERATION, 403, Forbidden)
        .b(r#"{"error":{"code":403,"message":"Flagged","metadata":{"error_type":"content_policy_violation","reasons":["violence"]}}}"#)
        .code("content_policy_violation"),
    row("402 negative balance on a free model", NEGATIVE, 402, QuotaExhausted)
        .b(r#"{"error":{"code":402,"message":"Your account has a negative credit balance. Add credits to continue using free models."}}"#)
        .scope(Scope::Account),
];

fn parts(r: &Row) -> http::response::Parts {
    let mut b = http::Response::builder().status(r.status);
    for (k, v) in r.headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn check(r: &Row, who: &str, c: &Classification) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = |what: &str, ok: bool, got: String| {
        if !ok {
            out.push(format!(
                "[{}] via {who}: {what} was {got} ({})",
                r.name, r.source
            ));
        }
    };
    want("class", c.class() == r.class, format!("{:?}", c.class()));
    want("scope", c.scope() == r.scope, format!("{:?}", c.scope()));
    let delay_ok = match (r.delay, c.retry_after()) {
        (None, None) => true,
        (Some(w), Some(g)) => (g.as_secs_f64() - w).abs() < 1e-3,
        _ => false,
    };
    want("delay", delay_ok, format!("{:?}", c.retry_after()));
    let reset_ok = match (r.reset, c.reset_after()) {
        (None, None) => true,
        (Some(w), Some(g)) => g.as_secs() == w,
        _ => false,
    };
    want("reset", reset_ok, format!("{:?}", c.reset_after()));
    want(
        "should_retry",
        c.should_retry() == r.retry,
        c.should_retry().to_string(),
    );
    if let Some(code) = r.code {
        want("code", c.code() == Some(code), format!("{:?}", c.code()));
    }
    if let Some((limit, remaining, len)) = r.window {
        let w = c.rate_limit().requests();
        let got = w.map(|w| (w.limit, w.remaining, w.window.map(|d| d.as_secs())));
        want(
            "request window",
            got == Some((limit, remaining, len)),
            format!("{got:?}"),
        );
    }
    out
}

#[test]
fn fixture_table() {
    let mut errors = Vec::new();
    for r in ROWS {
        let p = parts(r);
        let body = r.body.as_bytes();
        errors.extend(check(
            r,
            "OpenRouter",
            &OpenRouter.classify_at(&p, body, now()),
        ));
        errors.extend(check(r, "Auto", &Auto.classify_at(&p, body, now())));
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

fn classify(name: &str) -> Classification {
    let r = ROWS.iter().find(|r| r.name == name).unwrap();
    OpenRouter.classify_at(&parts(r), r.body.as_bytes(), now())
}

/// A model's shared capacity (8 per minute) teaches a limiter keyed by model that model's
/// quota; a limiter keyed by account alone learns nothing from it.
#[tokio::test(start_paused = true)]
async fn a_models_limit_is_learned_per_model() {
    let c = classify("limit_rpm: the limit only in the message, no headers");
    let tier = tiers::openrouter::free();
    let limiter = Limiter::new(tier.clone());
    let per_model = Key::of("sk-or-v1-a/deepseek/deepseek-r1:free");
    let options = LearnOptions::default()
        .with_learn_limits(true)
        .with_keys_model(true);
    if let Some(l) = limiter.learn(per_model, &tier, &c, options) {
        l.await;
    }
    let minute = &limiter.snapshot(per_model).await.unwrap().windows[0];
    assert_eq!(minute.limit, 12, "the model's 12 per minute replaces 20");
    assert_eq!(minute.remaining, 0, "and is used up");

    let account = Key::of("sk-or-v1-a");
    let options = LearnOptions::default()
        .with_learn_limits(true)
        .with_keys_model(false);
    assert!(limiter.learn(account, &tier, &c, options).is_none());
    let minute = &limiter.snapshot(account).await.unwrap().windows[0];
    assert_eq!((minute.limit, minute.remaining), (20, 20));
}

/// The per-day form: the model's daily quota, matched to the tier's daily window by its length.
#[tokio::test(start_paused = true)]
async fn a_models_daily_limit_matches_the_daily_window() {
    let c = classify("limit_rpd: a model's requests per day");
    let tier = Tier::new("per-model")
        .with_quota(Quota::per_minute(20))
        .with_quota(Quota::per_utc_day(1000));
    let limiter = Limiter::new(tier.clone());
    let key = Key::of("model");
    let options = LearnOptions::default()
        .with_learn_limits(true)
        .with_keys_model(true);
    if let Some(l) = limiter.learn(key, &tier, &c, options) {
        l.await;
    }
    let snap = limiter.snapshot(key).await.unwrap();
    assert_eq!(snap.windows[0].limit, 20);
    assert_eq!((snap.windows[1].limit, snap.windows[1].remaining), (200, 0));
    assert!(snap.blocked_until.is_some(), "blocked until the reset");
}
