//! Classifies recorded provider responses through `QuotaClassifyLayer` and prints each
//! verdict: the class, who the limit applies to, the server's delay, when an exhausted quota
//! resets, and whether the request is worth sending again.
//!
//! Runs offline: `cargo run --example classify_responses`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_quota::classify::Classification;
use tower_quota::QuotaClassifyLayer;

/// A recorded response: what it is, status, headers, body.
type Recorded = (
    &'static str,
    u16,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// What the providers really send (PROVIDERS.md).
const RECORDED: &[Recorded] = &[
    (
        "OpenRouter :free, per-minute cap",
        429,
        &[
            ("x-ratelimit-limit", "20"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "{in_30s_ms}"),
        ],
        r#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429}}"#,
    ),
    (
        "OpenRouter :free, daily cap",
        429,
        &[
            ("x-ratelimit-limit", "50"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "{midnight_ms}"),
        ],
        r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429}}"#,
    ),
    (
        "OpenRouter, upstream provider 429",
        429,
        &[],
        r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"deepseek/deepseek-chat-v3-0324:free is temporarily rate-limited upstream. Please retry shortly.","provider_name":"Chutes","is_byok":false,"retry_after_seconds":29}}}"#,
    ),
    (
        "OpenRouter, credits gone",
        402,
        &[],
        r#"{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}"#,
    ),
    (
        "OpenRouter, no provider",
        503,
        &[],
        r#"{"error":{"message":"No endpoints found that support the requested parameters","code":503}}"#,
    ),
    (
        "OpenAI, insufficient_quota",
        429,
        &[],
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
    ),
    (
        "OpenAI, tokens per minute",
        429,
        &[("retry-after-ms", "1500")],
        r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM). Please try again in 1.5s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
    ),
    (
        "Anthropic, overloaded",
        529,
        &[],
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ),
    (
        "Anthropic, spend limit",
        429,
        &[],
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
    ),
    (
        "LiteLLM, budget exceeded",
        400,
        &[],
        r#"{"error":{"message":"Budget has been exceeded! Current cost: 10.2, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}"#,
    ),
    (
        "LiteLLM, key RPM",
        429,
        &[("retry-after", "60")],
        r#"{"error":{"message":"Crossed TPM / RPM / Max Parallel Request Limit","type":"None","param":"None","code":"429"}}"#,
    ),
    (
        "HTTP-date Retry-After",
        503,
        &[("retry-after", "{date_in_90s}")],
        "Service Unavailable",
    ),
    (
        "success",
        200,
        &[
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
        ],
        r#"{"choices":[{"message":{"content":"hi"}}]}"#,
    ),
];

fn fill(value: &str) -> String {
    let now = std::time::SystemTime::now();
    let epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap();
    let midnight = (epoch.as_secs() / 86_400 + 1) * 86_400;
    value
        .replace("{in_30s_ms}", &(epoch.as_millis() + 30_000).to_string())
        .replace("{midnight_ms}", &(u128::from(midnight) * 1000).to_string())
        .replace(
            "{date_in_90s}",
            &httpdate::fmt_http_date(now + Duration::from_secs(90)),
        )
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A stand-in for an HTTP client: it answers with the recorded response named in the path.
    let recorded = service_fn(|req: Request<()>| async move {
        let i: usize = req.uri().path().trim_start_matches('/').parse().unwrap();
        let (_, status, headers, body) = RECORDED[i];
        let mut resp = Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(*k, fill(v));
        }
        Ok::<_, Infallible>(
            resp.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
    });
    let client = ServiceBuilder::new()
        .layer(QuotaClassifyLayer::default())
        .service(recorded);

    println!(
        "{:<36} {:>6}  {:<16} {:<9} {:>7} {:>9}  retry?",
        "response", "status", "class", "scope", "delay", "resets in"
    );
    for (i, (name, ..)) in RECORDED.iter().enumerate() {
        let req = Request::get(format!("/{i}")).body(())?;
        let resp = client.clone().oneshot(req).await?;
        let c = resp.extensions().get::<Classification>().cloned().unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        assert_eq!(
            body,
            RECORDED[i].3.as_bytes(),
            "the body is handed on intact"
        );
        println!(
            "{:<36} {:>6}  {:<16} {:<9} {:>7} {:>9}  {}",
            name,
            status,
            c.class().as_str(),
            c.scope().as_str(),
            secs(c.retry_after()),
            secs(c.reset_after()),
            if c.should_retry() { "yes" } else { "no" },
        );
    }
    Ok(())
}
