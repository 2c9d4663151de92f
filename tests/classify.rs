//! Fixture table: every case of PROVIDERS.md, per provider → class, delay, scope, reset.
//! Each case runs through its provider's classifier and through `Auto`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_quota::classify::{self as tc, Auto, Classification, Classify, QuotaClass, Scope};

/// 2024-11-21T22:00:00Z: two hours before a UTC midnight.
const NOW: u64 = 1_732_226_400;
const MIDNIGHT_MS: &str = "1732233600000";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

#[derive(Clone, Copy, Debug)]
enum P {
    Goo,
    Or,
    Oai,
    Ant,
    Lite,
    Rpc,
    Gen,
}

struct Case {
    name: &'static str,
    provider: P,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    class: QuotaClass,
    delay: Option<f64>,
    scope: Scope,
    reset: Option<u64>,
    retry: bool,
}

const fn case(name: &'static str, provider: P, status: u16, class: QuotaClass) -> Case {
    Case {
        name,
        provider,
        status,
        headers: &[],
        body: "",
        class,
        delay: None,
        scope: Scope::Unknown,
        reset: None,
        retry: false,
    }
}

impl Case {
    const fn h(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
    const fn b(mut self, body: &'static str) -> Self {
        self.body = body;
        self
    }
    const fn delay(mut self, secs: f64) -> Self {
        self.delay = Some(secs);
        self
    }
    const fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
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
}

use QuotaClass::*;
use P::*;

const CASES: &[Case] = &[
    // === OpenRouter ===
    case("or per-minute 429", Or, 429, RateLimited)
        .h(&[("X-RateLimit-Limit", "20"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "1732226430000")])
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1732226430000"},"provider_name":null}},"user_id":"user_2x"}"#)
        .delay(30.0).scope(Scope::Account).reset(30).retry(),
    case("or daily cap 429", Or, 429, QuotaExhausted)
        .h(&[("X-RateLimit-Limit", "50"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", MIDNIGHT_MS)])
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1732233600000"},"provider_name":null}},"user_id":"user_2x"}"#)
        .scope(Scope::Account).reset(7200),
    case("or daily cap without headers resets at UTC midnight", Or, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-day","code":429}}"#)
        .scope(Scope::Account).reset(7200),
    case("or daily cap by limit_source", Or, 429, QuotaExhausted)
        .h(&[("X-RateLimit-Reset", MIDNIGHT_MS)])
        .b(r#"{"error":{"message":"Daily limit reached","code":429,"metadata":{"limit_source":"openrouter_free_tier_daily"}}}"#)
        .scope(Scope::Account).reset(7200),
    case("or 402 insufficient credits", Or, 402, QuotaExhausted)
        .b(r#"{"error":{"message":"Insufficient credits. This account never purchased credits. Make sure your key is on the correct account or org, and if so, purchase more at https://openrouter.ai/settings/credits","code":402}}"#)
        .scope(Scope::Account),
    case("or 402 negative balance on a free model", Or, 402, QuotaExhausted)
        .b(r#"{"error":{"message":"Your account has a negative credit balance. Add credits to continue using free models.","code":402,"metadata":{"error_type":"payment_required","limit_source":"openrouter_credits"}}}"#)
        .scope(Scope::Account),
    case("or 402 in-flight budget with Retry-After is transient", Or, 402, RateLimited)
        .h(&[("Retry-After", "3")])
        .b(r#"{"error":{"message":"Too many requests in flight for your credit balance","code":402,"metadata":{"limit_source":"openrouter_in_flight_budget"}}}"#)
        .delay(3.0).scope(Scope::InFlight).retry(),
    case("or upstream 429 with body delay", Or, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"deepseek/deepseek-chat-v3-0324:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Chutes","is_byok":false,"retry_after_seconds":29,"headers":{"Retry-After":"29"}}}}"#)
        .delay(29.0).scope(Scope::Upstream).retry(),
    case("or upstream 429 with forwarded Retry-After only", Or, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"rate limited","provider_name":"Targon","headers":{"retry-after":"12"}}}}"#)
        .delay(12.0).scope(Scope::Upstream).retry(),
    case("or upstream shared pool", Or, 429, RateLimited)
        .b(r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"limit_source":"upstream_provider_shared_pool"}}}"#)
        .scope(Scope::Upstream).retry(),
    case("or shared capacity", Or, 429, RateLimited)
        .b(r#"{"error":{"message":"Model is at capacity","code":429,"metadata":{"limit_source":"openrouter_shared_capacity"}}}"#)
        .scope(Scope::Model).retry(),
    case("or availability capacity_exhausted", Or, 429, RateLimited)
        .b(r#"{"error":{"message":"No capacity","code":429,"availability":{"code":"capacity_exhausted","retryable":true,"retry_after":5,"fallback_models":["a/b"],"affected_providers":["x"]}}}"#)
        .delay(5.0).scope(Scope::Model).retry(),
    case("or availability temporarily_unavailable", Or, 503, Unavailable)
        .b(r#"{"error":{"message":"Temporarily unavailable","code":503,"availability":{"code":"temporarily_unavailable","retryable":true,"retry_after":10}}}"#)
        .delay(10.0).retry(),
    case("or availability model_not_found is final", Or, 404, InvalidRequest)
        .b(r#"{"error":{"message":"Model not found","code":404,"availability":{"code":"model_not_found","retryable":false}}}"#),
    case("or availability free_variant_ended is final", Or, 400, InvalidRequest)
        .b(r#"{"error":{"message":"The free variant has ended","code":400,"availability":{"code":"free_variant_ended","retryable":false}}}"#),
    case("or 503 no provider", Or, 503, Unavailable)
        .b(r#"{"error":{"message":"No endpoints available that match your routing requirements","code":503}}"#)
        .retry(),
    // The account's privacy settings exclude every provider: no retry changes that.
    case("or 503 no provider for the data policy is final", Or, 503, Forbidden)
        .b(r#"{"error":{"message":"No endpoints found matching your data policy (Free model training). Configure: https://openrouter.ai/settings/privacy","code":503}}"#),
    case("or 503 provider_overloaded", Or, 503, Overloaded)
        .b(r#"{"error":{"message":"Provider overloaded","code":503,"metadata":{"error_type":"provider_overloaded","provider_name":"Together"}}}"#)
        .scope(Scope::Upstream).retry(),
    case("or 502 model down", Or, 502, Unavailable)
        .b(r#"{"error":{"message":"Provider returned error","code":502,"metadata":{"error_type":"provider_unavailable","provider_name":"Novita","raw":"upstream connect error"}}}"#)
        .retry(),
    case("or 400 bad request", Or, 400, InvalidRequest)
        .b(r#"{"error":{"message":"This endpoint's maximum context length is 8192 tokens","code":400,"metadata":{"error_type":"context_length_exceeded"}}}"#),
    case("or 401 bad key", Or, 401, Auth)
        .b(r#"{"error":{"message":"No auth credentials found","code":401}}"#),
    case("or 403 moderation", Or, 403, Forbidden)
        .b(r#"{"error":{"message":"meta-llama/llama-guard requires moderation: input flagged","code":403,"metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"x"}}}"#),
    case("or 408 timeout", Or, 408, Timeout)
        .b(r#"{"error":{"message":"Request timed out","code":408}}"#).retry(),
    case("or 504 timeout type", Or, 504, Timeout)
        .b(r#"{"error":{"message":"Gateway timeout","code":504,"metadata":{"error_type":"timeout"}}}"#).retry(),
    case("or key limit", Or, 403, QuotaExhausted)
        .b(r#"{"error":{"message":"Key limit exceeded","code":403,"metadata":{"limit_source":"openrouter_key_limit"}}}"#)
        .scope(Scope::Account),
    // === OpenAI ===
    case("openai insufficient_quota", Oai, 429, QuotaExhausted)
        .h(&[("x-should-retry", "false")])
        .b(r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#)
        .scope(Scope::Account),
    case("openai spend limit", Oai, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Organization spend limit exceeded","type":"insufficient_quota","param":null,"code":"organization_spend_limit_exceeded"}}"#)
        .scope(Scope::Account),
    case("openai rate limit with retry-after-ms", Oai, 429, RateLimited)
        .h(&[("retry-after-ms", "1500"), ("retry-after", "2"), ("x-ratelimit-limit-tokens", "30000"), ("x-ratelimit-remaining-tokens", "0"), ("x-ratelimit-reset-tokens", "1.5s")])
        .b(r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 1.5s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#)
        .delay(1.5).scope(Scope::Model).reset(1).retry(),
    case("openai rate limit from reset header", Oai, 429, RateLimited)
        .h(&[("x-ratelimit-limit-requests", "500"), ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "6m0s")])
        .b(r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
        .delay(360.0).scope(Scope::Account).reset(360).retry(),
    // Retry-After wins over a reset header that says otherwise (PROVIDERS.md: the server's
    // delay first); the reset still says when the window frees.
    case("openai retry-after over a different reset", Oai, 429, RateLimited)
        .h(&[("retry-after", "20"), ("x-ratelimit-limit-requests", "500"), ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "6m0s")])
        .b(r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
        .delay(20.0).scope(Scope::Account).reset(360).retry(),
    case("openai x-should-retry false on 503", Oai, 503, Unavailable)
        .h(&[("x-should-retry", "false")])
        .b(r#"{"error":{"message":"Service unavailable","type":"server_error","param":null,"code":null}}"#),
    case("openai x-should-retry true on 400", Oai, 400, InvalidRequest)
        .h(&[("x-should-retry", "true")])
        .b(r#"{"error":{"message":"Bad request","type":"invalid_request_error","param":null,"code":null}}"#)
        .retry(),
    case("openai engine overloaded", Oai, 503, Overloaded)
        .b(r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#)
        .retry(),
    case("openai 500", Oai, 500, ServerError)
        .b(r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#)
        .retry(),
    case("openai 401", Oai, 401, Auth)
        .b(r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#),
    case("openai context length", Oai, 400, InvalidRequest)
        .b(r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#),
    case("openai 403 region", Oai, 403, Forbidden)
        .b(r#"{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","param":null,"code":"unsupported_country_region_territory"}}"#),
    case("azure rate limit (string code, message delay)", Oai, 429, RateLimited)
        .b(r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-02-01 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds."}}"#)
        .delay(6.0).scope(Scope::Account).retry(),
    case("openai requests per day, delay only in the message", Oai, 429, RateLimited)
        .b(r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
        .delay(432.0).scope(Scope::Model).retry(),
    case("openai credit balance exhausted", Oai, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"You have run out of credits.","type":"insufficient_quota","param":null,"code":"credit_balance_exhausted"}}"#)
        .scope(Scope::Account),
    case("openai fractional retry-after-ms", Oai, 429, RateLimited)
        .h(&[("retry-after-ms", "1500.5"), ("retry-after", "2")])
        .b(r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
        .delay(1.5005).scope(Scope::Account).retry(),
    case("fractional Retry-After seconds", Gen, 429, RateLimited)
        .h(&[("retry-after", "1.5")])
        .delay(1.5).retry(),
    case("xai credits gone (error as a string)", Oai, 429, QuotaExhausted)
        .b(r#"{"code":"Some resource has been exhausted","error":"Your team 0f1e has either used all available credits or reached its monthly spending limit. To continue making API requests, please purchase more credits or raise your spending limit."}"#)
        .scope(Scope::Account),
    case("deepseek insufficient balance", Oai, 402, QuotaExhausted)
        .b(r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#),
    case("mistral rate limit (no error object)", Oai, 429, RateLimited)
        .h(&[("retry-after", "1")])
        .b(r#"{"message":"Requests rate limit exceeded"}"#)
        .delay(1.0).retry(),
    // === Google (Gemini) ===
    case("gemini per-minute quota with RetryInfo", Goo, 429, RateLimited)
        .b(r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.0-flash"},"quotaValue":"15"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#)
        .delay(34.0).scope(Scope::Model).retry(),
    case("gemini per-day quota is final despite its delay", Goo, 429, QuotaExhausted)
        .b(r#"[{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"200"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}]"#)
        .delay(12.0).scope(Scope::Model),
    case("gemini overloaded", Goo, 503, Unavailable)
        .b(r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#)
        .retry(),
    case("gemini bad key", Goo, 400, InvalidRequest)
        .b(r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#),
    // === the server's clock: absolute times measured from its `Date` when ours is off ===
    case("epoch reset from the server's Date (our clock 90 s ahead)", Or, 429, RateLimited)
        .h(&[("date", "Thu, 21 Nov 2024 21:58:30 GMT"), ("x-ratelimit-limit", "20"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1732226340000")])
        .b(r#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1732226340000"},"provider_name":null}}}"#)
        .delay(30.0).scope(Scope::Account).reset(30).retry(),
    case("RFC 3339 reset from the server's Date (our clock 60 s behind)", Ant, 429, RateLimited)
        .h(&[("date", "Thu, 21 Nov 2024 22:01:00 GMT"), ("anthropic-ratelimit-requests-remaining", "0"), ("anthropic-ratelimit-requests-reset", "2024-11-21T22:01:15Z")])
        .b(r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#)
        .delay(15.0).scope(Scope::Account).reset(15).retry(),
    case("HTTP-date Retry-After from the server's Date", Gen, 503, Unavailable)
        .h(&[("date", "Thu, 21 Nov 2024 21:58:30 GMT"), ("retry-after", "Thu, 21 Nov 2024 21:58:40 GMT")])
        .delay(10.0).retry(),
    case("a Date within 2 s is our clock", Gen, 503, Unavailable)
        .h(&[("date", "Thu, 21 Nov 2024 21:59:59 GMT"), ("retry-after", "Thu, 21 Nov 2024 22:00:10 GMT")])
        .delay(10.0).retry(),
    case("a Date that is no date is ignored", Gen, 503, Unavailable)
        .h(&[("date", "yesterday"), ("retry-after", "Thu, 21 Nov 2024 22:00:10 GMT")])
        .delay(10.0).retry(),
    case("a Date days away is ignored", Gen, 503, Unavailable)
        .h(&[("date", "Mon, 18 Nov 2024 22:00:00 GMT"), ("retry-after", "Thu, 21 Nov 2024 22:00:10 GMT")])
        .delay(10.0).retry(),
    // === Anthropic ===
    case("anthropic rate limit", Ant, 429, RateLimited)
        .h(&[("retry-after", "20"), ("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "0"), ("anthropic-ratelimit-requests-reset", "2024-11-21T22:00:20Z")])
        .b(r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_1"}"#)
        .delay(20.0).scope(Scope::Account).reset(20).retry(),
    case("anthropic rate limit from reset header", Ant, 429, RateLimited)
        .h(&[("anthropic-ratelimit-tokens-remaining", "0"), ("anthropic-ratelimit-tokens-reset", "2024-11-21T22:00:45.000Z")])
        .b(r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#)
        .delay(45.0).scope(Scope::Account).reset(45).retry(),
    case("anthropic input tokens exhausted, no retry-after", Ant, 429, RateLimited)
        .h(&[("anthropic-ratelimit-input-tokens-remaining", "0"), ("anthropic-ratelimit-input-tokens-reset", "2024-11-21T22:00:15Z")])
        .b(r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#)
        .delay(15.0).scope(Scope::Account).reset(15).retry(),
    case("anthropic overloaded 529 with x-should-retry: false", Ant, 529, Overloaded)
        .h(&[("x-should-retry", "false")])
        .b(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":null}"#),
    case("anthropic overloaded 529", Ant, 529, Overloaded)
        .b(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":null}"#)
        .retry(),
    case("anthropic spend limit", Ant, 429, QuotaExhausted)
        .b(r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#)
        .scope(Scope::Account),
    case("anthropic credit balance", Ant, 400, QuotaExhausted)
        .b(r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#)
        .scope(Scope::Account),
    case("anthropic 400", Ant, 400, InvalidRequest)
        .b(r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: field required"}}"#),
    case("anthropic 401", Ant, 401, Auth)
        .b(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
    case("anthropic 403", Ant, 403, Forbidden)
        .b(r#"{"type":"error","error":{"type":"permission_error","message":"no access"}}"#),
    case("anthropic 404", Ant, 404, ClientError)
        .b(r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#),
    case("anthropic 413", Ant, 413, InvalidRequest)
        .b(r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#),
    case("anthropic 500", Ant, 500, ServerError)
        .b(r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#)
        .retry(),
    // === LiteLLM ===
    case("litellm budget 429", Lite, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"Budget has been exceeded! Current cost: 10.2, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"429"}}"#)
        .scope(Scope::Account),
    case("litellm budget 400 (older)", Lite, 400, QuotaExhausted)
        .b(r#"{"error":{"message":"Budget has been exceeded! Current cost: 10.2, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}"#)
        .scope(Scope::Account),
    case("litellm key rpm limit", Lite, 429, RateLimited)
        .h(&[("retry-after", "60")])
        .b(r#"{"error":{"message":"LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 11, rpm limit: 10","type":"None","param":"None","code":"429"}}"#)
        .delay(60.0).scope(Scope::Account).retry(),
    case("litellm v3 per-model descriptor", Lite, 429, RateLimited)
        .h(&[("retry-after", "60"), ("rate_limit_type", "requests")])
        .b(r#"{"error":{"message":"Rate limit exceeded for model_per_key: k:gpt-4o. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2024-11-21 22:01:00 UTC","type":"throttling_error","param":null,"code":"429"}}"#)
        .delay(60.0).scope(Scope::Model).retry(),
    case("litellm v3 team limit", Lite, 429, RateLimited)
        .h(&[("retry-after", "60"), ("rate_limit_type", "requests")])
        .b(r#"{"error":{"message":"Rate limit exceeded for team: t1. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2024-11-21 22:01:00 UTC","type":"throttling_error","param":null,"code":"429"}}"#)
        .delay(60.0).scope(Scope::Account).retry(),
    // A slot frees when a request ends: the window's constant `retry-after` is no delay.
    case("litellm v3 max parallel requests", Lite, 429, RateLimited)
        .h(&[("retry-after", "60"), ("rate_limit_type", "max_parallel_requests")])
        .b(r#"{"error":{"message":"Rate limit exceeded for api_key: 6770. Limit type: max_parallel_requests. Current limit: 1, Remaining: 0. Limit resets at: 2024-11-21 22:01:00 UTC","type":"throttling_error","param":null,"code":"429"}}"#)
        .scope(Scope::InFlight).retry(),
    case("litellm older parallel request limit reached", Lite, 429, RateLimited)
        .b(r#"{"error":{"message":"Max parallel request limit reached. Hit limit for api_key: 6770. Current max_parallel_requests: 1","type":"None","param":"None","code":"429"}}"#)
        .scope(Scope::InFlight).retry(),
    case("litellm legacy limit with both rpm and parallel full is the rpm", Lite, 429, RateLimited)
        .h(&[("retry-after", "18")])
        .b(r#"{"error":{"message":"LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 2, rpm limit: 2, current tpm: 0, tpm limit: 9223372036854775807, current max_parallel_requests: 1, max_parallel_requests: 1","type":"throttling_error","param":null,"code":"429"}}"#)
        .delay(18.0).scope(Scope::Account).retry(),
    case("litellm permission denied", Lite, 403, Forbidden)
        .b(r#"{"error":{"message":"litellm.PermissionDeniedError: no access","type":null,"param":null,"code":"403"}}"#),
    case("litellm upstream rate limit", Lite, 429, RateLimited)
        .h(&[("retry-after", "7"), ("x-litellm-attempted-retries", "2")])
        .b(r#"{"error":{"message":"litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for gpt-4o in organization org-x on requests per min (RPM).","type":"throttling_error","param":null,"code":"429"}}"#)
        .delay(7.0).scope(Scope::Upstream).retry(),
    case("litellm upstream insufficient quota", Lite, 429, QuotaExhausted)
        .b(r#"{"error":{"message":"litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current quota. insufficient_quota","type":"throttling_error","param":null,"code":"429"}}"#)
        .scope(Scope::Upstream),
    case("litellm no deployments", Lite, 429, RateLimited)
        .b(r#"{"error":{"message":"No deployments available for selected model, Try again in 60 seconds. Passed model=gpt-4. pre-call-checks=False, allowed_model_region=n/a","type":"None","param":"None","code":"429"}}"#)
        .delay(60.0).scope(Scope::Model).retry(),
    case("litellm context window", Lite, 400, InvalidRequest)
        .b(r#"{"error":{"message":"litellm.ContextWindowExceededError: litellm.BadRequestError: prompt is too long","type":null,"param":null,"code":"400"}}"#),
    case("litellm content policy", Lite, 400, InvalidRequest)
        .b(r#"{"error":{"message":"litellm.ContentPolicyViolationError: content filtered","type":null,"param":null,"code":"400"}}"#),
    case("litellm auth", Lite, 401, Auth)
        .b(r#"{"error":{"message":"Authentication Error, Invalid proxy server token passed. litellm.AuthenticationError","type":"auth_error","param":"None","code":"401"}}"#),
    case("litellm not found", Lite, 404, ClientError)
        .b(r#"{"error":{"message":"litellm.NotFoundError: model not found","type":null,"param":null,"code":"404"}}"#),
    case("litellm unprocessable", Lite, 422, InvalidRequest)
        .b(r#"{"error":{"message":"litellm.UnprocessableEntityError: bad","type":null,"param":null,"code":"422"}}"#),
    case("litellm timeout", Lite, 408, Timeout)
        .b(r#"{"error":{"message":"litellm.Timeout: Connection timed out after 600.0 seconds.","type":null,"param":null,"code":"408"}}"#)
        .retry(),
    case("litellm service unavailable", Lite, 503, Unavailable)
        .b(r#"{"error":{"message":"litellm.ServiceUnavailableError: upstream down","type":null,"param":null,"code":"503"}}"#)
        .retry(),
    case("litellm api connection", Lite, 500, Unavailable)
        .b(r#"{"error":{"message":"litellm.APIConnectionError: connection refused","type":null,"param":null,"code":"500"}}"#)
        .retry(),
    // === gRPC ===
    case("grpc resource exhausted with pushback", Rpc, 200, RateLimited)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "8"), ("grpc-message", "quota%20exceeded"), ("grpc-retry-pushback-ms", "1500")])
        .delay(1.5).scope(Scope::Account).retry(),
    case("grpc resource exhausted without pushback", Rpc, 200, QuotaExhausted)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "8")])
        .scope(Scope::Account),
    case("grpc negative pushback", Rpc, 200, Unavailable)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]),
    // Past int32, a pushback is unparseable (gRPC A6): do not retry, and no delay.
    case("grpc resource exhausted, pushback past int32", Rpc, 200, QuotaExhausted)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "8"), ("grpc-retry-pushback-ms", "99999999999999999999")])
        .scope(Scope::Account),
    case("grpc unavailable", Rpc, 200, Unavailable)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "14")]).retry(),
    case("grpc ok", Rpc, 200, Success)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "0")]),
    case("grpc unauthenticated", Rpc, 200, Auth)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "16")]),
    case("grpc deadline", Rpc, 200, Timeout)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "4")]).retry(),
    case("grpc invalid argument", Rpc, 200, InvalidRequest)
        .h(&[("content-type", "application/grpc"), ("grpc-status", "3")]),
    // === Generic (status and headers) ===
    case("generic 200", Gen, 200, Success),
    case("generic 429 imf-fixdate", Gen, 429, RateLimited)
        .h(&[("retry-after", "Thu, 21 Nov 2024 22:02:00 GMT")]).delay(120.0).retry(),
    case("generic 429 rfc850 date", Gen, 429, RateLimited)
        .h(&[("retry-after", "Thursday, 21-Nov-24 22:01:00 GMT")]).delay(60.0).retry(),
    case("generic 429 asctime date", Gen, 429, RateLimited)
        .h(&[("retry-after", "Thu Nov 21 22:00:30 2024")]).delay(30.0).retry(),
    case("generic 429 past date is now", Gen, 429, RateLimited)
        .h(&[("retry-after", "Thu, 21 Nov 2024 21:00:00 GMT")]).delay(0.0).retry(),
    case("generic 503 retry-after", Gen, 503, Unavailable)
        .h(&[("retry-after", "5")]).delay(5.0).retry(),
    case("generic 429 ietf ratelimit", Gen, 429, RateLimited)
        .h(&[("ratelimit-policy", "\"burst\";q=100;w=60"), ("ratelimit", "\"burst\";r=0;t=30")])
        .delay(30.0).reset(30).retry(),
    case("generic 429 retry-after over the ietf t", Gen, 429, RateLimited)
        .h(&[("retry-after", "3"), ("ratelimit-policy", "\"burst\";q=100;w=60"), ("ratelimit", "\"burst\";r=0;t=30")])
        .delay(3.0).reset(30).retry(),
    case("generic 429 envoy epoch seconds", Gen, 429, RateLimited)
        .h(&[("x-ratelimit-limit", "10"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1732226410")])
        .delay(10.0).reset(10).retry(),
    case("generic 429 older draft", Gen, 429, RateLimited)
        .h(&[("ratelimit-limit", "10"), ("ratelimit-remaining", "0"), ("ratelimit-reset", "15")])
        .delay(15.0).reset(15).retry(),
    case("generic 402", Gen, 402, QuotaExhausted),
    case("generic 402 with delay", Gen, 402, RateLimited)
        .h(&[("retry-after", "2")]).delay(2.0).retry(),
    case("generic 529", Gen, 529, Overloaded).retry(),
    case("generic 404", Gen, 404, ClientError),
    case("generic 502 html", Gen, 502, Unavailable)
        .b("<html><body><h1>502 Bad Gateway</h1></body></html>").retry(),
];

fn classify(provider: P, parts: &http::response::Parts, body: &[u8]) -> Classification {
    match provider {
        Goo => tc::Google.classify_at(parts, body, now()),
        Or => tc::OpenRouter.classify_at(parts, body, now()),
        Oai => tc::OpenAi.classify_at(parts, body, now()),
        Ant => tc::Anthropic.classify_at(parts, body, now()),
        Lite => tc::LiteLlm.classify_at(parts, body, now()),
        Rpc => tc::Grpc.classify_at(parts, body, now()),
        Gen => tc::Generic.classify_at(parts, body, now()),
    }
}

fn parts(case: &Case) -> http::response::Parts {
    let mut b = http::Response::builder().status(case.status);
    for (k, v) in case.headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn check(case: &Case, who: &str, c: &Classification) -> Vec<String> {
    let mut errors = Vec::new();
    let mut expect = |what: &str, ok: bool, got: String| {
        if !ok {
            errors.push(format!("[{}] via {who}: {what} was {got}", case.name));
        }
    };
    expect("class", c.class() == case.class, format!("{:?}", c.class()));
    let delay_ok = match (case.delay, c.retry_after()) {
        (None, None) => true,
        (Some(want), Some(got)) => (got.as_secs_f64() - want).abs() < 1e-3,
        _ => false,
    };
    expect("delay", delay_ok, format!("{:?}", c.retry_after()));
    expect("scope", c.scope() == case.scope, format!("{:?}", c.scope()));
    let reset_ok = match (case.reset, c.reset_after()) {
        (None, None) => true,
        (Some(want), Some(got)) => got.as_secs() == want,
        _ => false,
    };
    expect("reset", reset_ok, format!("{:?}", c.reset_after()));
    expect(
        "should_retry",
        c.should_retry() == case.retry,
        format!("{}", c.should_retry()),
    );
    errors
}

#[test]
fn fixture_table() {
    let mut errors = Vec::new();
    for case in CASES {
        let p = parts(case);
        let specific = classify(case.provider, &p, case.body.as_bytes());
        errors.extend(check(case, &format!("{:?}", case.provider), &specific));
        let auto = Auto.classify_at(&p, case.body.as_bytes(), now());
        errors.extend(check(case, "Auto", &auto));
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn auto_names_the_api() {
    let want = [
        (Goo, "google"),
        (Or, "openrouter"),
        (Oai, "openai"),
        (Ant, "anthropic"),
        (Lite, "litellm"),
        (Rpc, "grpc"),
    ];
    // Every case with an `{"error": {…}}` object (or gRPC headers) names its API; bodies of
    // another shape are classified from the status and text markers, naming none.
    let shaped = |c: &&Case| {
        matches!(c.provider, Rpc)
            || c.body.trim_start_matches('[').contains(r#"{"error":{"#)
            || c.body.starts_with(r#"{"type":"error""#)
    };
    assert!(
        CASES.iter().filter(shaped).count() >= 70,
        "the filter keeps the shaped cases"
    );
    for case in CASES.iter().filter(shaped) {
        let Some((_, api)) = want
            .iter()
            .find(|(p, _)| std::mem::discriminant(p) == std::mem::discriminant(&case.provider))
        else {
            continue;
        };
        let c = Auto.classify_at(&parts(case), case.body.as_bytes(), now());
        assert_eq!(c.api(), Some(*api), "{}", case.name);
    }
}

#[test]
fn upstream_provider_and_message_are_kept() {
    let case = CASES
        .iter()
        .find(|c| c.name == "or upstream 429 with body delay")
        .unwrap();
    let c = Auto.classify_at(&parts(case), case.body.as_bytes(), now());
    assert_eq!(c.provider(), Some("Chutes"));
    assert_eq!(c.message(), Some("Provider returned error"));
}

#[test]
fn daily_cap_reset_at_is_the_next_utc_midnight() {
    let case = CASES.iter().find(|c| c.name == "or daily cap 429").unwrap();
    let c = tc::OpenRouter.classify_at(&parts(case), case.body.as_bytes(), now());
    assert_eq!(
        c.reset_at(),
        Some(UNIX_EPOCH + Duration::from_secs(1_732_233_600))
    );
    assert_eq!(c.rate_limit().requests().and_then(|w| w.limit), Some(50));
}

#[test]
fn success_bodies_are_never_wanted() {
    let (ok, ()) = http::Response::builder()
        .status(200)
        .body(())
        .unwrap()
        .into_parts();
    let (err, ()) = http::Response::builder()
        .status(429)
        .body(())
        .unwrap()
        .into_parts();
    let all: [&dyn Classify; 7] = [
        &Auto,
        &tc::OpenRouter,
        &tc::OpenAi,
        &tc::Anthropic,
        &tc::LiteLlm,
        &tc::Grpc,
        &tc::Generic,
    ];
    for c in all {
        assert!(!c.wants_body(&ok));
    }
    assert!(Auto.wants_body(&err));
    assert!(!tc::Generic.wants_body(&err));
}

mod bad_input {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use tower_quota::headers::MAX_DELAY;

    fn parts_with(status: u16, headers: Vec<(&'static str, HeaderValue)>) -> http::response::Parts {
        let mut p = http::Response::builder()
            .status(status)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        for (k, v) in headers {
            p.headers.append(k, v);
        }
        p
    }

    #[test]
    fn absurd_delays_saturate_and_never_wrap() {
        for (value, want) in [
            ("99999999999999999999", Some(MAX_DELAY)),
            ("18446744073709551616", Some(MAX_DELAY)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(MAX_DELAY)),
            // Exponent notation is not delay-seconds: ignored, not read as a number.
            ("1e309", None),
        ] {
            let p = parts_with(429, vec![("retry-after", HeaderValue::from_static(value))]);
            let c = Auto.classify_at(&p, b"", now());
            assert_eq!(c.retry_after(), want, "{value}");
            assert_eq!(c.class(), QuotaClass::RateLimited);
        }
        let p = parts_with(429, vec![("retry-after", HeaderValue::from_static("-5"))]);
        assert_eq!(Auto.classify_at(&p, b"", now()).retry_after(), None);
        let body =
            br#"{"error":{"code":429,"message":"x","metadata":{"retry_after_seconds":1e300}}}"#;
        let c = Auto.classify_at(&parts_with(429, vec![]), body, now());
        assert_eq!(c.retry_after(), Some(MAX_DELAY));
        let body = br#"{"error":{"code":429,"message":"x","metadata":{"retry_after_seconds":-3}}}"#;
        assert_eq!(
            Auto.classify_at(&parts_with(429, vec![]), body, now())
                .retry_after(),
            None
        );
    }

    /// Found by the `classify` fuzz target: LiteLLM's key limiter names its reset in the
    /// message ("Limit resets at: …"), and a date centuries away was a delay past
    /// `MAX_DELAY`. Every delay a classifier sets is capped in one place now.
    #[test]
    fn a_reset_date_centuries_away_in_a_message_saturates() {
        for body in [
            r#"{"error":{"message":"Rate limit exceeded for api_key: ab. Limit type: requests. Current limit: 1, Remaining: 0. Limit resets at: 4048-11-21 23:01:00 UTC","type":"None","param":"None","code":"429"}}"#,
            r#"{"error":{"message":"x. Limit resets at: 9999-12-31 23:59:59 UTC","type":"None","param":"None","code":"910"}}"#,
        ] {
            let p = parts_with(429, vec![]);
            for (who, c) in [
                ("Auto", Auto.classify_at(&p, body.as_bytes(), now())),
                (
                    "LiteLlm",
                    tc::LiteLlm.classify_at(&p, body.as_bytes(), now()),
                ),
            ] {
                assert_eq!(c.class(), QuotaClass::RateLimited, "{who}: {body}");
                assert_eq!(c.retry_after(), Some(MAX_DELAY), "{who}: {body}");
            }
        }
        let c = Classification::new(QuotaClass::RateLimited)
            .with_retry_after(Duration::MAX)
            .with_reset_after(Duration::MAX);
        assert_eq!(
            (c.retry_after(), c.reset_after()),
            (Some(MAX_DELAY), Some(MAX_DELAY))
        );
    }

    #[test]
    fn non_utf8_and_duplicated_headers() {
        let garbage = HeaderValue::from_bytes(b"\xff\xfe12").unwrap();
        let p = parts_with(
            429,
            vec![
                ("retry-after", garbage.clone()),
                ("retry-after", HeaderValue::from_static("3")),
                ("retry-after", HeaderValue::from_static("7")),
                ("x-ratelimit-remaining", garbage.clone()),
                ("grpc-message", garbage),
            ],
        );
        let c = Auto.classify_at(&p, b"", now());
        // Never earlier than the server asked: the larger of the two usable values.
        assert_eq!(c.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflow() {
        let mut body = "[".repeat(100_000);
        body.push_str(&"]".repeat(100_000));
        let c = Auto.classify_at(&parts_with(500, vec![]), body.as_bytes(), now());
        assert_eq!(c.class(), QuotaClass::ServerError);
    }

    #[test]
    fn json_of_the_wrong_types_is_ignored() {
        for body in [
            r#"{"error":"just a string"}"#,
            r#"{"error":{"code":{"nested":true},"message":42,"metadata":[1,2]}}"#,
            r#"{"type":"error","error":{"type":7}}"#,
            r#"{"error":{"availability":{"retryable":"yes","retry_after":"soon"}}}"#,
            r#"{"error":{"metadata":{"headers":{"retry-after":{"x":1},"bad name":"1"}}}}"#,
        ] {
            let c = Auto.classify_at(&parts_with(429, vec![]), body.as_bytes(), now());
            assert_eq!(c.class(), QuotaClass::RateLimited, "{body}");
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let body = format!(
            r#"{{"error":{{"code":400,"message":"{}"}}}}"#,
            "é".repeat(10_000)
        );
        let c = Auto.classify_at(&parts_with(400, vec![]), body.as_bytes(), now());
        assert!(c.message().unwrap().len() <= 256);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_status_headers_and_body_classify_without_panic(
            status in 100u16..1000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 6),
        ) {
            let names = ["retry-after", "retry-after-ms", "x-ratelimit-reset", "grpc-status",
                "grpc-retry-pushback-ms", "anthropic-ratelimit-requests-reset"];
            let mut headers = Vec::new();
            for (name, value) in names.iter().zip(values) {
                if let Ok(v) = HeaderValue::from_bytes(&value) {
                    headers.push((*name, v));
                }
            }
            let p = parts_with(status, headers);
            let all: [&dyn Classify; 7] = [&Auto, &tc::OpenRouter, &tc::OpenAi, &tc::Anthropic,
                &tc::LiteLlm, &tc::Grpc, &tc::Generic];
            for classifier in all {
                let c = classifier.classify_at(&p, &body, now());
                prop_assert!(c.retry_after().is_none_or(|d| d <= MAX_DELAY));
                prop_assert!(c.reset_after().is_none_or(|d| d <= MAX_DELAY));
            }
        }

        #[test]
        fn provider_shaped_bodies_classify_without_panic(
            status in 400u16..600,
            code in prop_oneof![Just("429".to_string()), any::<i64>().prop_map(|n| n.to_string()), "[a-z_]{0,20}".prop_map(|s| format!("\"{s}\""))],
            message in "[ -~]{0,80}",
            delay in prop_oneof![any::<f64>().prop_map(|f| f.to_string()), "[0-9a-z\\-]{0,12}".prop_map(|s| format!("\"{s}\""))],
        ) {
            let message = message.replace(['"', '\\'], "");
            let body = format!(
                r#"{{"error":{{"code":{code},"message":"{message}","type":"budget_exceeded","metadata":{{"retry_after_seconds":{delay},"provider_name":"p"}},"availability":{{"retry_after":{delay}}}}}}}"#
            );
            let c = Auto.classify_at(&parts_with(status, vec![]), body.as_bytes(), now());
            prop_assert!(c.retry_after().is_none_or(|d| d <= MAX_DELAY));
        }
    }
}

proptest::proptest! {
    /// A head that `is_plain_success` passes unclassified is one the classifier itself calls
    /// a plain success — exactly the classification the layer attaches in its place (or, with
    /// `Sparse`, none) without classifying — for any status and any mix of rate-limit, retry,
    /// gRPC and other headers.
    #[test]
    fn a_head_passed_unclassified_is_a_plain_success(
        status in 100u16..600,
        names in proptest::collection::vec(0usize..9, 0..5),
        value in "[0-9a-z/+-]{0,12}",
    ) {
        const NAMES: [&str; 9] = [
            "x-ratelimit-remaining-requests",
            "ratelimit",
            "retry-after",
            "grpc-status",
            "content-type",
            "x-request-id",
            "x-should-retry",
            "anthropic-ratelimit-requests-remaining",
            "x-litellm-key-remaining-requests-rpm",
        ];
        let mut b = http::Response::builder().status(status);
        for &i in &names {
            let v = if NAMES[i] == "content-type" && value.len() % 2 == 0 { "application/grpc" } else { value.as_str() };
            b = b.header(NAMES[i], v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let classifiers: [&dyn Classify; 3] = [&Auto, &tc::Generic, &tc::Sparse(Auto)];
        for c in classifiers {
            if c.is_plain_success(&parts) {
                let verdict = c.classify_at(&parts, &[], now);
                proptest::prop_assert!(verdict.is_plain_success(), "{status} {names:?}: {verdict:?}");
                // What the layer attaches in its place, without classifying, is the same.
                proptest::prop_assert!(
                    verdict == Classification::new_at(QuotaClass::Success, now),
                    "{status} {names:?}: {verdict:?}"
                );
            }
        }
    }
}
