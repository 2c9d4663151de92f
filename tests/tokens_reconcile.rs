//! Token reservations corrected to the usage the server reports, through the whole stack:
//! the request body is read once for its estimate, the response body is read for its usage as
//! it streams to the caller, and the limiter's window ends up counting what the server said.
#![cfg(feature = "reqwest-middleware")]

#[path = "support/answering.rs"]
mod answering;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use reqwest_middleware::ClientBuilder;
use tower::{Layer, ServiceExt};
use tower_quota::headers::Dimension;
use tower_quota::limit::{Key, Limiter, Reconcile};
use tower_quota::reqwest::QuotaMiddleware;
use tower_quota::retry::ReplayBody;
use tower_quota::{Quota, QuotaLayer, Tier};

use answering::Answering;

/// 700 bytes of prompt: ⌈700 / 3.5⌉ + 3 for the message + 3 to prime the reply = 206 tokens.
fn request_body() -> String {
    let prompt = "x".repeat(700);
    format!(
        r#"{{"model":"m","max_tokens":4000,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    )
}
const RESERVED: u64 = 206 + 4000;

const JSON_OK: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":300,"total_tokens":550}}"#;

const JSON_SMALL_PROMPT: &str = r#"{"id":"c2","object":"chat.completion","choices":[],"usage":{"prompt_tokens":150,"completion_tokens":30,"total_tokens":180}}"#;

const SSE_OK: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":250,\"completion_tokens\":120,\"total_tokens\":370}}\n\n\
data: [DONE]\n\n";

const BAD_REQUEST: &str =
    r#"{"error":{"message":"Invalid model","type":"invalid_request_error","code":400}}"#;

fn tpm() -> Tier {
    Tier::new("tpm").with_quota(Quota::per_minute(100_000).with_dimension(Dimension::Tokens))
}

fn answer(status: u16, content_type: &str, body: &'static str) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

async fn used(limiter: &Limiter) -> u64 {
    limiter.snapshot(Key::GLOBAL).await.unwrap().windows[0].used
}

/// Sends one request through the tower stack answering `response`; returns the response's
/// body collected (or not) and the limiter.
async fn through_tower(
    layer: QuotaLayer,
    response: http::Response<Bytes>,
    read_body: bool,
) -> (Limiter, Option<Bytes>, u64) {
    through_tower_with(layer, request_body(), response, read_body, Duration::ZERO).await
}

/// As [`through_tower`], sending `request_body`, the server answering `latency` after it
/// has the request.
async fn through_tower_with(
    layer: QuotaLayer,
    request_body: String,
    response: http::Response<Bytes>,
    read_body: bool,
    latency: Duration,
) -> (Limiter, Option<Bytes>, u64) {
    let limiter = layer.limiter().clone();
    let server = tower::service_fn(move |_req: http::Request<ReplayBody<Full<Bytes>>>| {
        let response = response.clone().map(Full::new);
        async move {
            tokio::time::sleep(latency).await;
            Ok::<_, Infallible>(response)
        }
    });
    let client = layer.layer(server);
    let request = http::Request::post("http://router.test/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(request_body)))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    let before = used(&limiter).await;
    let body = if read_body {
        Some(response.into_body().collect().await.unwrap().to_bytes())
    } else {
        drop(response);
        None
    };
    (limiter, body, before)
}

#[tokio::test(start_paused = true)]
async fn a_json_answer_corrects_the_reservation_to_its_usage() {
    let (limiter, body, before) = through_tower(
        QuotaLayer::new(tpm()),
        answer(200, "application/json", JSON_OK),
        true,
    )
    .await;
    assert_eq!(
        before, RESERVED,
        "reserved on admission: the prompt's estimate and max_tokens"
    );
    assert_eq!(
        body.unwrap(),
        JSON_OK.as_bytes(),
        "the caller's body, unchanged"
    );
    assert_eq!(
        used(&limiter).await,
        550,
        "corrected to the usage once the body was read"
    );
}

/// Gemini's own API: the request's `contents` and `generationConfig.maxOutputTokens` make the
/// reservation (the same 700 bytes of prompt and 4 000 tokens out as [`request_body`]), the
/// answer's `usageMetadata` corrects it — thinking tokens counted as output — whether it
/// comes as one JSON object or as a stream (`alt=sse`).
#[tokio::test(start_paused = true)]
async fn gemini_usage_metadata_corrects_the_reservation() {
    let prompt = "x".repeat(700);
    let request = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"{prompt}"}}]}}],"generationConfig":{{"maxOutputTokens":4000}}}}"#
    );
    const JSON: &str = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":240,"candidatesTokenCount":100,"thoughtsTokenCount":60,"totalTokenCount":400},"modelVersion":"gemini-2.5-flash"}"#;
    let (limiter, body, before) = through_tower_with(
        QuotaLayer::new(tpm()),
        request.clone(),
        answer(200, "application/json", JSON),
        true,
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        before, RESERVED,
        "the same estimate as the OpenAI-shaped request"
    );
    assert_eq!(body.unwrap(), JSON.as_bytes());
    assert_eq!(used(&limiter).await, 400);

    const SSE: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"h\"}]}}],\"usageMetadata\":{\"promptTokenCount\":240,\"totalTokenCount\":240}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"i\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":240,\"candidatesTokenCount\":35,\"totalTokenCount\":275}}\r\n\r\n";
    let (limiter, body, before) = through_tower_with(
        QuotaLayer::new(tpm()),
        request,
        answer(200, "text/event-stream", SSE),
        true,
        Duration::ZERO,
    )
    .await;
    assert_eq!(before, RESERVED);
    assert_eq!(body.unwrap(), SSE.as_bytes());
    assert_eq!(used(&limiter).await, 275);
}

#[tokio::test(start_paused = true)]
async fn a_stream_corrects_the_reservation_at_its_end() {
    let (limiter, body, before) = through_tower(
        QuotaLayer::new(tpm()),
        answer(200, "text/event-stream", SSE_OK),
        true,
    )
    .await;
    assert_eq!(before, RESERVED);
    assert_eq!(body.unwrap(), SSE_OK.as_bytes());
    assert_eq!(used(&limiter).await, 370);
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_its_reservation_back() {
    let (limiter, _, before) = through_tower(
        QuotaLayer::new(tpm()),
        answer(400, "application/json", BAD_REQUEST),
        true,
    )
    .await;
    assert_eq!(
        before, 0,
        "a 400 counted nothing on the server: nothing is held"
    );
    assert_eq!(used(&limiter).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_unread_keeps_the_reservation() {
    let (limiter, _, before) = through_tower(
        QuotaLayer::new(tpm()),
        answer(200, "application/json", JSON_OK),
        false,
    )
    .await;
    assert_eq!(before, RESERVED);
    assert_eq!(
        used(&limiter).await,
        RESERVED,
        "no usage seen: the reservation stands"
    );
}

#[tokio::test(start_paused = true)]
async fn keep_max_tokens_corrects_the_input_only_and_off_keeps_the_reservation() {
    let layer = QuotaLayer::new(tpm()).with_reconcile(Reconcile::KeepMaxTokens);
    let (limiter, _, _) =
        through_tower(layer, answer(200, "application/json", JSON_OK), true).await;
    // The input was underestimated (250 > 206): charged; the output (300 < 4000) is not
    // given back, as OpenAI counts max_tokens.
    assert_eq!(used(&limiter).await, 250 + 4000);
    // An overestimated input (150 < 206) is given back; the output still is not.
    let layer = QuotaLayer::new(tpm()).with_reconcile(Reconcile::KeepMaxTokens);
    let (limiter, _, _) = through_tower(
        layer,
        answer(200, "application/json", JSON_SMALL_PROMPT),
        true,
    )
    .await;
    assert_eq!(used(&limiter).await, 150 + 4000);

    let layer = QuotaLayer::new(tpm()).with_reconcile(Reconcile::Off);
    let (limiter, _, _) =
        through_tower(layer, answer(200, "application/json", JSON_OK), true).await;
    assert_eq!(used(&limiter).await, RESERVED);
}

/// Input and output quotas apart (Anthropic): each counts its own side, and each is corrected.
#[tokio::test(start_paused = true)]
async fn input_and_output_quotas_are_corrected_apart() {
    let tier = Tier::new("anthropic")
        .with_quota(Quota::per_minute(50))
        .with_quota(Quota::per_minute(40_000).with_dimension(Dimension::InputTokens))
        .with_quota(Quota::per_minute(8_000).with_dimension(Dimension::OutputTokens));
    let (limiter, _, _) = through_tower(
        QuotaLayer::new(tier),
        answer(200, "application/json", JSON_OK),
        true,
    )
    .await;
    let snap = limiter.snapshot(Key::GLOBAL).await.unwrap();
    let used: Vec<u64> = snap.windows.iter().map(|w| w.used).collect();
    assert_eq!(used, [1, 250, 300]);
}

// === the reqwest middleware does the same ===

#[tokio::test(start_paused = true)]
async fn the_reqwest_middleware_corrects_the_same_way() {
    let layer = QuotaLayer::new(tpm());
    let limiter = layer.limiter().clone();
    let server = Answering::new(|_| Ok(answer(200, "text/event-stream", SSE_OK)));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(layer))
        .with(server.clone())
        .build();
    let response = client
        .post("http://router.test/v1/chat/completions")
        .header("content-type", "application/json")
        .body(request_body())
        .send()
        .await
        .unwrap();
    assert_eq!(used(&limiter).await, RESERVED);
    assert_eq!(response.bytes().await.unwrap(), SSE_OK.as_bytes());
    assert_eq!(used(&limiter).await, 370);
    assert_eq!(server.calls(), 1);
}

/// A refund makes room at once: the request waiting at the head of the key's queue, asleep
/// until a time named while the window was full of reservations, is admitted when the room
/// is given back, not when the reservations would have left the window.
#[tokio::test(start_paused = true)]
async fn a_refund_wakes_the_waiting_request() {
    use tower_quota::limit::Cost;
    use Duration;

    let tier = Tier::new("tpm")
        .with_quota(Quota::per_minute(500))
        .with_quota(Quota::per_minute(30_000).with_dimension(Dimension::Tokens));
    let limiter = Limiter::new(tier.clone());
    let start = tokio::time::Instant::now();
    let reserved = Cost::tokens(2_000, 800);
    let mut admitted = Vec::new();
    for _ in 0..10 {
        limiter.acquire(Key::GLOBAL, reserved).await.unwrap();
        admitted.push(tokio::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // 28 000 reserved: one more of 2 800 must wait.
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter.acquire(Key::GLOBAL, reserved).await.unwrap();
            tokio::time::Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(limiter.waiting(), 1);
    // The answers come in: 100 tokens out each, not 800.
    for at in admitted {
        assert!(limiter
            .reconcile(Key::GLOBAL, &tier, at, reserved, Cost::tokens(2_000, 100))
            .is_none());
    }
    let at = waiter.await.unwrap();
    assert_eq!(at.duration_since(start), Duration::from_secs(11));
}

/// The limiter after one request answered `JSON_OK` 2 s after the server had it, its body
/// read.
async fn answered_after_two_seconds(layer: QuotaLayer) -> Limiter {
    let response = answer(200, "application/json", JSON_OK);
    let two = Duration::from_secs(2);
    through_tower_with(layer, request_body(), response, true, two)
        .await
        .0
}

/// `Usage` counts the usage a window from the answer's end, as a server that counts it when
/// the answer is done (LiteLLM's `tpm`) holds it; `KeepMaxTokens` corrects as of the
/// admission, as OpenAI counts on arrival.
#[tokio::test(start_paused = true)]
async fn usage_is_counted_from_the_answers_end() {
    let minute = Duration::from_secs(60);
    let limiter = answered_after_two_seconds(QuotaLayer::new(tpm())).await;
    assert_eq!(used(&limiter).await, 550);
    // 61 s after the admission, 59 s after the answer: still counted.
    tokio::time::advance(minute - Duration::from_secs(1)).await;
    assert_eq!(used(&limiter).await, 550);
    // 61 s after the answer: gone.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(used(&limiter).await, 0);

    let limiter =
        answered_after_two_seconds(QuotaLayer::new(tpm()).with_reconcile(Reconcile::KeepMaxTokens))
            .await;
    assert_eq!(used(&limiter).await, 250 + 4000);
    // 61 s after the admission: gone with it.
    tokio::time::advance(minute - Duration::from_secs(1)).await;
    assert_eq!(used(&limiter).await, 0);
}
