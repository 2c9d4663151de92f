//! An `async_openai::Client` sending through `QuotaHttpService`: its requests are paced,
//! classified, retried as the server asks, and their token reservations corrected to the
//! usage the answers report — the crate's one core, behind async-openai's own API.
//!
//! The server is a reqwest middleware placed after ours that answers without a network, so
//! everything runs in paused tokio time.
#![cfg(feature = "async-openai")]

#[path = "support/answering.rs"]
mod answering;

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use reqwest_middleware::ClientBuilder;
use tokio::time::Instant;
use tower_quota::headers::Dimension;
use tower_quota::limit::{Key, Limiter, RateLimited};
use tower_quota::openai::QuotaHttpService;
use tower_quota::reqwest::QuotaMiddleware;
use tower_quota::{Quota, QuotaLayer, Tier};

use answering::{response, Answering};

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1764300000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52}}"#;
const LIMITED: &str = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
const NO_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}"#;

/// A status, headers and a body.
type Answer = (u16, &'static [(&'static str, &'static str)], &'static str);

fn openai(layer: QuotaLayer, answers: Vec<Answer>) -> (Client<OpenAIConfig>, Limiter, Answering) {
    let limiter = layer.limiter().clone();
    let server = Answering::new(move |n| {
        let (status, headers, body) = answers[n.min(answers.len() - 1)];
        let mut r = response(status, headers, body);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        Ok(r)
    });
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(layer))
        .with(server.clone())
        .build();
    let config = OpenAIConfig::new()
        .with_api_base("http://router.test/v1")
        .with_api_key("sk-test");
    let client = Client::with_config(config)
        .with_http_service(QuotaHttpService::from_client(http, limiter.clone()));
    (client, limiter, server)
}

fn request() -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("m")
        .max_completion_tokens(800u32)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Say hi.")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn requests_are_paced_to_the_tier() {
    let tier = Tier::new("t").with_quota(Quota::per_minute(2));
    let (client, _, calls) = openai(QuotaLayer::new(tier), vec![(200, &[], COMPLETION)]);
    let start = Instant::now();
    for _ in 0..3 {
        let answer = client.chat().create(request()).await.unwrap();
        assert_eq!(answer.choices[0].message.content.as_deref(), Some("Hi."));
    }
    assert_eq!(calls.calls(), 3);
    assert!(
        start.elapsed() >= Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_the_servers_delay() {
    let tier = Tier::new("t").with_quota(Quota::per_minute(100));
    let (client, _, calls) = openai(
        QuotaLayer::new(tier),
        vec![
            (429, &[("retry-after", "3")], LIMITED),
            (200, &[], COMPLETION),
        ],
    );
    let start = Instant::now();
    client.chat().create(request()).await.unwrap();
    assert_eq!(calls.calls(), 2);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(3) && elapsed <= Duration::from_millis(3_300));
}

#[tokio::test(start_paused = true)]
async fn insufficient_quota_is_not_retried() {
    let tier = Tier::new("t").with_quota(Quota::per_minute(100));
    let (client, _, calls) = openai(QuotaLayer::new(tier), vec![(429, &[], NO_QUOTA)]);
    let err = client.chat().create(request()).await.unwrap_err();
    assert!(matches!(err, OpenAIError::ApiError(_)), "{err:?}");
    assert_eq!(calls.calls(), 1, "a quota error never succeeds on a retry");
}

#[tokio::test(start_paused = true)]
async fn the_limiters_refusal_is_an_openai_error() {
    let tier = Tier::new("t").with_quota(Quota::per_minute(1));
    let layer = QuotaLayer::new(tier).with_max_wait(Duration::from_secs(5));
    let (client, _, calls) = openai(layer, vec![(200, &[], COMPLETION)]);
    client.chat().create(request()).await.unwrap();
    let err = client.chat().create(request()).await.unwrap_err();
    let OpenAIError::Boxed(boxed) = &err else {
        panic!("{err:?}")
    };
    let limited = boxed
        .downcast_ref::<RateLimited>()
        .expect("the limiter's error");
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(calls.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn token_reservations_follow_the_reported_usage() {
    let tier =
        Tier::new("tpm").with_quota(Quota::per_minute(30_000).with_dimension(Dimension::Tokens));
    let (client, limiter, _) = openai(QuotaLayer::new(tier), vec![(200, &[], COMPLETION)]);
    client.chat().create(request()).await.unwrap();
    let used = limiter.snapshot(Key::GLOBAL).await.unwrap().windows[0].used;
    assert_eq!(used, 52, "the answer's usage, not the 800 reserved for it");
}
