//! The simulator counts tokens (issue 15): token quotas refused on arrival, the three
//! counting styles, `usage` in JSON and SSE answers, the providers' token headers, and the
//! oracle's token windows under random traffic.
//!
//! Paused tokio time throughout, except for the one loopback test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_quota::headers::parse_go_duration;
use tower_quota::sim::{
    Completions, Counting, Delay, Limit, Models, Network, Outcome, Record, Simulator, Style, Tier,
    TokenKind, TokenLimit,
};

const MODEL: &str = "openai/gpt-4o-mini";

/// 2026-11-22 10:00:00 UTC.
fn ten_am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

/// A completion whose prompt is `bytes` bytes of text, asking for `max_tokens`.
fn body(bytes: usize, max_tokens: u64, stream: bool) -> String {
    let text: String = "abcd ".chars().cycle().take(bytes).collect();
    let mut b = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b.to_string()
}

fn request(body: &str) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    record: Record,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name).parse().unwrap()
    }
}

async fn send(sim: &Simulator, body: &str) -> Answer {
    let response = sim.clone().oneshot(request(body)).await.unwrap();
    let (parts, b) = response.into_parts();
    Answer {
        status: parts.status,
        record: parts.extensions.get::<Record>().unwrap().clone(),
        headers: parts.headers,
        text: String::from_utf8(b.collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    }
}

fn seeded(tier: Tier) -> Simulator {
    Simulator::builder()
        .key("sk-test", tier)
        .start_wall_time(ten_am())
        .seed(5)
        .build()
}

/// The `data:` payloads of an SSE body, in order.
fn sse(text: &str) -> Vec<&str> {
    assert!(text.ends_with("\n\n"), "a stream ends with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is a data line")
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_token_quota_refuses_on_arrival_with_openai_body_and_delays() {
    // 10 000 TPM; each request ~1 000 prompt tokens + 800 reserved: five fit, the sixth not.
    let sim = Simulator::builder()
        .key("sk-test", Tier::openai(500, 10_000))
        .start_wall_time(ten_am())
        .network(Network::symmetric(Delay::fixed(Duration::from_millis(100))))
        .seed(5)
        .build();
    let mut charged = 0;
    let mut n = 0;
    let refused = loop {
        let b = body(4_000, 800, false);
        let a = send(&sim, &b).await;
        if a.status != StatusCode::OK {
            break a;
        }
        charged += sim.prompt_tokens(b.as_bytes()).unwrap() + 800;
        n += 1;
        assert!(n < 20);
    };
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!((4..=6).contains(&n), "{n} admitted");
    let err = &refused.json()["error"];
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(err["type"], "tokens");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("on tokens per min (TPM): Limit 10000, Used"),
        "{message}"
    );
    assert_eq!(refused.number("x-ratelimit-limit-tokens"), 10_000);
    assert_eq!(
        refused.number("x-ratelimit-remaining-tokens"),
        10_000 - charged
    );
    assert!(
        matches!(refused.record.outcome, Outcome::RateLimited { ref limit } if limit == "tokens-per-min")
    );
    // Decided on arrival, after the inbound delay.
    assert_eq!(refused.record.inbound, Duration::from_millis(100));

    // retry-after-ms is exact: sent so as to arrive then, it is admitted; a millisecond
    // earlier it is not.
    let wait = Duration::from_millis(refused.number("retry-after-ms"));
    let secs = refused.number("retry-after");
    assert_eq!(secs, wait.as_millis().div_ceil(1_000) as u64);
    let decided = refused.record.at;
    let early = decided + wait - Duration::from_millis(2);
    tokio::time::sleep_until(early - Duration::from_millis(100)).await;
    assert_eq!(send(&sim, &body(4_000, 800, false)).await.status, 429);
    tokio::time::sleep_until(decided + wait - Duration::from_millis(100)).await;
    assert_eq!(send(&sim, &body(4_000, 800, false)).await.status, 200);
    sim.check_invariants().unwrap();

    // Larger than the whole limit: refused with no delay to wait.
    let huge = send(&sim, &body(4_000, 20_000, false)).await;
    assert_eq!(huge.status, 429);
    assert!(huge.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large"));
    assert!(huge.headers.get("retry-after").is_none());
}

#[tokio::test(start_paused = true)]
async fn reserve_holds_max_tokens_whatever_the_completion() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::openai(500, 30_000))
        .start_wall_time(ten_am())
        .latency(Duration::from_secs(1), Duration::from_secs(1))
        .completions(Completions::uniform(50))
        .build();
    let b = body(2_000, 800, false);
    let a = send(&sim, &b).await;
    let prompt = sim.prompt_tokens(b.as_bytes()).unwrap();
    let usage = &a.json()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 800);
    // After the answer is done, the window still holds prompt + max_tokens.
    assert_eq!(
        a.number("x-ratelimit-remaining-tokens"),
        30_000 - prompt - 800
    );
    let next = send(&sim, &body(8, 10, false)).await;
    let prompt2 = sim.prompt_tokens(body(8, 10, false).as_bytes()).unwrap();
    assert_eq!(
        next.number("x-ratelimit-remaining-tokens"),
        30_000 - prompt - 800 - prompt2 - 10
    );
    let limit = &sim.accounts()[0].tier().token_limits()[0];
    assert_eq!(
        sim.stats().tokens_counted(limit, 0),
        prompt + 800 + prompt2 + 10
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_counts_input_on_arrival_and_adjusts_output_at_the_end() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::anthropic(50, 30_000, 8_000))
        .start_wall_time(ten_am())
        .latency(Duration::from_secs(2), Duration::from_secs(2))
        .completions(Completions::fraction(0.25, 0.25))
        .build();
    // Two requests in flight at once: the second sees the first's full reservation.
    let first = body(4_000, 4_000, false);
    let (a, b) = tokio::join!(send(&sim, &first), async {
        sleep(Duration::from_secs(1)).await;
        send(&sim, &body(4_000, 1_000, false)).await
    });
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a.json()["usage"]["completion_tokens"], 1_000);
    // When the first was decided: 8 000 − 4 000 reserved.
    assert_eq!(
        a.number("anthropic-ratelimit-output-tokens-remaining"),
        4_000
    );
    // The second, decided at 1 s: both reservations (4 000 + 1 000).
    assert_eq!(
        b.number("anthropic-ratelimit-output-tokens-remaining"),
        3_000
    );
    // A third at 3 s finds them adjusted to what was generated (1 000 + 250).
    let c = send(&sim, &body(8, 100, false)).await;
    assert_eq!(
        c.number("anthropic-ratelimit-output-tokens-remaining"),
        8_000 - 1_250 - 100
    );
    let input = sim.prompt_tokens(body(4_000, 0, false).as_bytes()).unwrap();
    let input_small = sim.prompt_tokens(body(8, 0, false).as_bytes()).unwrap();
    assert_eq!(
        c.number("anthropic-ratelimit-input-tokens-remaining"),
        30_000 - 2 * input - input_small
    );
    assert_eq!(c.number("anthropic-ratelimit-input-tokens-limit"), 30_000);
    assert_eq!(c.number("anthropic-ratelimit-requests-limit"), 50);
    // The request bucket (50 a minute, one back every 1.2 s) is full again by 3 s: 50 − 1.
    assert_eq!(c.number("anthropic-ratelimit-requests-remaining"), 49);
    // Resets are RFC 3339 times, a minute after the newest charge (decided at 3 s).
    assert_eq!(
        c.header("anthropic-ratelimit-output-tokens-reset"),
        "2026-11-22T10:01:03Z"
    );
    // An output reservation that does not fit is refused with Anthropic's error.
    let d = send(&sim, &body(8, 7_000, false)).await;
    assert_eq!(d.status, 429);
    assert_eq!(d.json()["type"], "error");
    assert_eq!(d.json()["error"]["type"], "rate_limit_error");
    assert!(d.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("8000 output tokens per minute"));
    assert!(d.number("retry-after") > 0);
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn litellm_counts_usage_after_the_response_and_refuses_once_the_minute_is_full() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::litellm_tpm(2_000))
        .start_wall_time(ten_am())
        .latency(Duration::from_secs(1), Duration::from_secs(1))
        .completions(Completions::full())
        .build();
    // Nothing counted on arrival: two requests of 1 000 + 800 each are both admitted while
    // the first is still running, and carry the minute past its limit.
    let first = body(4_000, 800, false);
    let (a, b) = tokio::join!(send(&sim, &first), async {
        sleep(Duration::from_millis(500)).await;
        send(&sim, &body(4_000, 800, false)).await
    });
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    let c = send(&sim, &body(8, 10, false)).await;
    assert_eq!(c.status, 429);
    assert_eq!(c.json()["error"]["code"], "429");
    let message = c.json()["error"]["message"].as_str().unwrap().to_string();
    let counted = a.json()["usage"]["total_tokens"].as_u64().unwrap()
        + b.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert!(
        message.contains(&format!("current tpm: {counted}, tpm limit: 2000")),
        "{message}"
    );
    // retry-after: the seconds to the next clock minute (10:00:01.5 now).
    assert_eq!(c.header("retry-after"), "58.500000");
    sleep(Duration::from_millis(58_500)).await;
    assert_eq!(send(&sim, &body(8, 10, false)).await.status, 200);
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn usage_in_json_matches_what_the_server_counted() {
    let sim = seeded(Tier::openai(500, 1_000_000));
    for (bytes, max) in [(10, 60), (4_000, 800), (12_000, 50), (100, 1)] {
        let b = body(bytes, max, false);
        let a = send(&sim, &b).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), "application/json");
        let v = a.json();
        assert_eq!(v["object"], "chat.completion");
        let usage = &v["usage"];
        let (p, c, t) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
            usage["total_tokens"].as_u64().unwrap(),
        );
        assert_eq!(p, sim.prompt_tokens(b.as_bytes()).unwrap());
        assert_eq!(t, p + c);
        assert!(c <= max && c >= 50.min(max));
        // The content is as long as the completion: four bytes a token.
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.len() as u64, 4 * c);
        let finish = if c == max { "length" } else { "stop" };
        assert_eq!(v["choices"][0]["finish_reason"], finish);
        let admission = sim.stats().admissions.last().unwrap().clone();
        assert_eq!(
            (
                admission.tokens.input,
                admission.tokens.output,
                admission.tokens.max_output
            ),
            (p, c, max)
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.tokens.total, stats.tokens.input + stats.tokens.output);
    // A client estimating bytes / 4 is close to the server's count, not equal to it.
    let b = body(12_000, 1, false);
    let n = sim.prompt_tokens(b.as_bytes()).unwrap();
    assert!((2_550 + 4..=3_450 + 4).contains(&n), "{n}");
}

#[tokio::test(start_paused = true)]
async fn streamed_answers_are_sse_chunks_with_usage_last_then_done() {
    let sim = seeded(Tier::openai(500, 1_000_000));
    let b = body(2_000, 300, true);
    let a = send(&sim, &b).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "text/event-stream");
    let events = sse(&a.text);
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 4, "role, deltas, finish, usage");
    let mut content = String::new();
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["usage"].is_null());
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
        content.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert!(finish == "stop" || finish == "length");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let usage = &last["usage"];
    let c = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(content.len() as u64, 4 * c);
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        sim.prompt_tokens(b.as_bytes()).unwrap()
    );
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + c
    );
    let admission = sim.stats().admissions[0].clone();
    assert_eq!(admission.tokens.output, c);

    // Without include_usage: no usage chunk, no usage fields.
    let mut plain: Value = serde_json::from_str(&body(40, 100, true)).unwrap();
    plain.as_object_mut().unwrap().remove("stream_options");
    let a = send(&sim, &plain.to_string()).await;
    let events = sse(&a.text);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("usage").is_none());
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn openai_headers_are_present_and_consistent() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::openai(500, 30_000))
        .start_wall_time(ten_am())
        .build();
    let mut remaining = 30_000;
    for i in 0..5u64 {
        let b = body(1_000, 200, i % 2 == 1);
        let a = send(&sim, &b).await;
        remaining -= sim.prompt_tokens(b.as_bytes()).unwrap() + 200;
        assert_eq!(a.number("x-ratelimit-limit-requests"), 500);
        assert_eq!(a.number("x-ratelimit-remaining-requests"), 499 - i);
        assert_eq!(a.number("x-ratelimit-limit-tokens"), 30_000);
        assert_eq!(a.number("x-ratelimit-remaining-tokens"), remaining);
        // Fully replenished a minute after the newest charge (now, in paused time).
        assert_eq!(
            parse_go_duration(a.header("x-ratelimit-reset-tokens")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(a.header("x-ratelimit-reset-requests"), "1m0s");
        sleep(Duration::from_secs(10)).await;
    }
    let a = send(&sim, &body(4, 1, false)).await;
    // The oldest charge left 10 s from now; the newest is now.
    assert_eq!(a.header("x-ratelimit-reset-tokens"), "1m0s");
    sleep(Duration::from_secs(55)).await;
    let a = send(&sim, &body(4, 1, false)).await;
    assert_eq!(a.number("x-ratelimit-remaining-requests"), 500 - 2);
}

#[tokio::test(start_paused = true)]
async fn request_limits_answer_in_the_tiers_style() {
    let tier = Tier::new("small")
        .with_limit(Limit::rolling(Models::All, 2, Duration::from_secs(60)))
        .with_style(Style::OpenAi);
    let sim = seeded(tier);
    for _ in 0..2 {
        assert_eq!(send(&sim, &body(4, 1, false)).await.status, 200);
    }
    let a = send(&sim, &body(4, 1, false)).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["type"], "requests");
    assert_eq!(a.header("retry-after"), "60");
    assert_eq!(a.header("retry-after-ms"), "60000");
    assert_eq!(a.number("x-ratelimit-remaining-requests"), 0);
    // An OpenRouter tier with a token limit answers in OpenRouter's shape.
    let tier = Tier::new("or").with_token_limit(TokenLimit::per_minute(TokenKind::Total, 100));
    let sim = seeded(tier);
    let a = send(&sim, &body(4_000, 1, false)).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["code"], 429);
    assert_eq!(a.header("X-RateLimit-Limit"), "100");
}

#[tokio::test]
async fn a_streamed_body_arrives_whole_over_loopback() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let sim = seeded(Tier::openai(500, 1_000_000));
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = request(&body(40_000, 4_000, true));
    *req.uri_mut() = format!("http://{addr}/v1/chat/completions")
        .parse()
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    let events = sse(text);
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    let c = last["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(c, sim.stats().admissions[0].tokens.output);
    let content: usize = events[..events.len() - 2]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map_or(0, str::len)
        })
        .sum();
    assert_eq!(content as u64, 4 * c);
    server.shutdown().await;
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]

    /// Random prompts, `max_tokens`, completions and arrivals against a total, an input and
    /// an output limit in every counting style: the server's token windows never pass their
    /// limits (as each style counts), by the oracle rebuilt from the admissions.
    #[test]
    fn the_servers_token_windows_never_exceed_their_limits(
        requests in proptest::collection::vec((1usize..8_000, 1u64..1_500, 0u64..3_000, proptest::bool::ANY), 1..60),
        style in 0usize..3,
        clock in proptest::bool::ANY,
        latency_ms in 0u64..3_000,
        seed in 0u64..1_000,
    ) {
        let counting = [Counting::Reserve, Counting::ReserveThenAdjust, Counting::AfterResponse][style];
        let limit = |kind, n| {
            let l = if clock {
                TokenLimit::fixed_clock(kind, n, Duration::from_secs(10))
            } else {
                TokenLimit::rolling(kind, n, Duration::from_secs(10))
            };
            l.counting_as(counting)
        };
        let tier = Tier::new("tokens")
            .with_token_limit(limit(TokenKind::Total, 6_000))
            .with_token_limit(limit(TokenKind::Input, 4_000))
            .with_token_limit(limit(TokenKind::Output, 2_500));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let result: Result<(), String> = rt.block_on(async move {
            let sim = Simulator::builder()
                .key("sk-test", tier)
                .start_wall_time(ten_am())
                .latency(Duration::ZERO, Duration::from_millis(latency_ms))
                .seed(seed)
                .build();
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            let mut at = Duration::ZERO;
            for (bytes, max, gap, stream) in requests {
                at += Duration::from_millis(gap);
                let (sim, b) = (sim.clone(), body(bytes, max, stream));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(t0 + at).await;
                    let a = send(&sim, &b).await;
                    a.status
                }));
            }
            for t in tasks {
                let status = t.await.unwrap();
                if status != 200 && status != 429 {
                    return Err(format!("status {status}"));
                }
            }
            sim.check_invariants().map_err(|e| e.to_string())?;
            let stats = sim.stats();
            for l in sim.accounts()[0].tier().token_limits() {
                let peak = stats.max_tokens_in(l);
                let ok = match l.counting() {
                    Counting::AfterResponse => stats.admissions.is_empty() || peak < l.tokens(),
                    _ => peak <= l.tokens(),
                };
                if !ok {
                    return Err(format!("{}: {peak} of {}", l.name(), l.tokens()));
                }
            }
            Ok(())
        });
        proptest::prop_assert!(result.is_ok(), "{:?}", result);
    }
}
