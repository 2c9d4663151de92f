//! The simulated provider (`tower_quota::sim`): limits, answers, faults, stats, loopback.
//!
//! Paused tokio time throughout, except for the one loopback test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_quota::sim::{
    Account, Delay, Faults, Limit, Models, Network, Outcome, Period, Record, Simulator, Stats, Tier,
};

const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o-mini";

/// 2026-11-22 10:00:00 UTC.
fn ten_am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn completion(key: &str, model: &str) -> Request<Full<Bytes>> {
    Request::post("/api/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )))
        .unwrap()
}

fn key_info(key: &str) -> Request<Full<Bytes>> {
    Request::get("/api/v1/key")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::default())
        .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(sim: &Simulator, req: Request<Full<Bytes>>) -> Answer {
    let response = sim.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers.get(name).map(|v| v.to_str().unwrap())
}

fn free_sim() -> Simulator {
    Simulator::builder()
        .key("sk-test", Tier::openrouter_free())
        .start_wall_time(ten_am())
        .build()
}

#[tokio::test(start_paused = true)]
async fn twenty_first_request_in_a_minute_gets_429_with_headers_and_body() {
    let sim = free_sim();
    for _ in 0..20 {
        let ok = send(&sim, completion("sk-test", FREE)).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body["object"], "chat.completion");
        assert_eq!(ok.body["model"], FREE);
        assert!(ok.headers.get("x-ratelimit-limit").is_none());
    }
    sleep(Duration::from_millis(250)).await;
    let refused = send(&sim, completion("sk-test", FREE)).await;
    assert_eq!(refused.status, 429);
    let reset = epoch_ms(ten_am() + Duration::from_secs(60)).to_string();
    assert_eq!(header(&refused, "x-ratelimit-limit"), Some("20"));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&refused, "x-ratelimit-reset"), Some(reset.as_str()));
    assert_eq!(header(&refused, "retry-after"), Some("60")); // 59.75 s, rounded up
    let user_id = refused.body["user_id"].as_str().unwrap().to_string();
    assert!(user_id.starts_with("user_"));
    assert_eq!(
        refused.body,
        json!({
            "error": {
                "message": "Rate limit exceeded: free-models-per-min. ",
                "code": 429,
                "metadata": {
                    "headers": {
                        "X-RateLimit-Limit": "20",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": reset,
                    },
                    "provider_name": null,
                },
            },
            "user_id": user_id,
        })
    );
    let stats = sim.stats();
    assert_eq!(stats.requests, 21);
    assert_eq!(stats.succeeded, 20);
    assert_eq!(
        (stats.rate_limited, stats.wasted, stats.count(429)),
        (1, 1, 1)
    );
    assert_eq!(stats.admissions.len(), 20);
    assert_eq!(
        stats.records[20].outcome,
        Outcome::RateLimited {
            limit: "free-models-per-min".into()
        }
    );
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_admitting_exactly_when_the_oldest_is_w_old() {
    let sim = free_sim();
    let t0 = Instant::now();
    for i in 0..20 {
        if i > 0 {
            sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
    }
    // Admissions at 0, 1, …, 19 s. At 59.999 s the one at 0 s is still inside.
    sleep(Duration::from_millis(59_999) - (Instant::now() - t0)).await;
    let early = send(&sim, completion("sk-test", FREE)).await;
    assert_eq!(early.status, 429);
    assert_eq!(header(&early, "retry-after"), Some("1"));
    let reset = epoch_ms(ten_am() + Duration::from_secs(60)).to_string();
    assert_eq!(header(&early, "x-ratelimit-reset"), Some(reset.as_str()));

    sleep(Duration::from_millis(1)).await; // exactly 60 s
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
    // Full again: the next slot is the admission at 1 s leaving.
    let again = send(&sim, completion("sk-test", FREE)).await;
    assert_eq!(again.status, 429);
    let reset = epoch_ms(ten_am() + Duration::from_secs(61)).to_string();
    assert_eq!(header(&again, "x-ratelimit-reset"), Some(reset.as_str()));
    assert_eq!(header(&again, "retry-after"), Some("1"));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);

    let stats = sim.stats();
    assert_eq!(stats.admissions.len(), 22);
    assert_eq!(
        stats.max_admissions_in(Models::Free, Duration::from_secs(60)),
        20
    );
    assert_eq!(
        stats.max_admissions_in(Models::Free, Duration::from_secs(61)),
        21
    );
    assert_eq!(stats.admission_span(), Duration::from_secs(61));
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn daily_cap_at_50_then_reset_after_utc_midnight() {
    let midnight = UNIX_EPOCH + Duration::from_secs(1_795_392_000); // 2026-11-23 00:00 UTC
    let sim = Simulator::builder()
        .key("sk-test", Tier::openrouter_free())
        .start_wall_time(midnight - Duration::from_secs(30))
        .minute(Duration::from_millis(600)) // 20 per 0.6 s: not the binding limit here
        .build();
    for _ in 0..50 {
        assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
        sleep(Duration::from_millis(50)).await;
    }
    let capped = send(&sim, completion("sk-test", FREE)).await;
    assert_eq!(capped.status, 429);
    let reset = epoch_ms(midnight).to_string();
    assert_eq!(header(&capped, "x-ratelimit-limit"), Some("50"));
    assert_eq!(header(&capped, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&capped, "x-ratelimit-reset"), Some(reset.as_str()));
    assert_eq!(header(&capped, "retry-after"), None);
    assert_eq!(
        capped.body["error"]["message"],
        "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
    );
    assert_eq!(
        capped.body["error"]["metadata"]["headers"]["X-RateLimit-Reset"],
        reset
    );
    assert_eq!(
        sim.stats().records[50].outcome,
        Outcome::DailyCapReached {
            limit: "free-models-per-day".into()
        }
    );
    // Paid models are not capped; the key report shows the cap used up.
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 200);
    let info = send(&sim, key_info("sk-test")).await.body;
    assert_eq!(
        info["data"]["free_model_daily_requests"],
        json!({"limit": 50, "remaining": 0, "used": 50})
    );

    // Still capped one millisecond before midnight, admitted at midnight.
    let until = sim.now_wall();
    assert!(until < midnight);
    sleep(midnight.duration_since(until).unwrap() - Duration::from_millis(1)).await;
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 429);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(sim.now_wall(), midnight);
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
    let info = send(&sim, key_info("sk-test")).await.body;
    assert_eq!(info["data"]["free_model_daily_requests"]["used"], 1);
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn credits_run_out_with_a_402() {
    let sim = Simulator::builder()
        .account(
            Account::new("sk-paid")
                .with_tier(Tier::openrouter_credited())
                .with_credits(0.003),
        )
        .price_per_request(0.001)
        .build();
    for _ in 0..3 {
        assert_eq!(send(&sim, completion("sk-paid", PAID)).await.status, 200);
    }
    let broke = send(&sim, completion("sk-paid", PAID)).await;
    assert_eq!(broke.status, 402);
    assert_eq!(broke.body["error"]["code"], 402);
    assert!(broke.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Insufficient credits"));
    assert_eq!(header(&broke, "retry-after"), None);
    // Free models cost nothing.
    assert_eq!(send(&sim, completion("sk-paid", FREE)).await.status, 200);
    let info = send(&sim, key_info("sk-paid")).await.body["data"].clone();
    assert_eq!(info["limit"], 0.003);
    assert_eq!(info["limit_remaining"], 0.0);
    assert_eq!(info["usage"], 0.003);
    assert_eq!(info["is_free_tier"], false);
    assert_eq!(sim.stats().records[3].outcome, Outcome::InsufficientCredits);
}

#[tokio::test(start_paused = true)]
async fn key_endpoint_reflects_usage() {
    let sim = Simulator::builder()
        .account(Account::new("sk-or-v1-0123456789abcdef").with_credits(1.0))
        .build();
    let key = "sk-or-v1-0123456789abcdef";
    for _ in 0..3 {
        send(&sim, completion(key, FREE)).await;
    }
    for _ in 0..2 {
        send(&sim, completion(key, PAID)).await;
    }
    let info = send(&sim, key_info(key)).await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.body,
        json!({"data": {
            "label": "sk-or-v1-0...def",
            "limit": 1.0,
            "limit_remaining": 0.998,
            "limit_reset": null,
            "usage": 0.002,
            "is_free_tier": true,
            "free_model_daily_requests": {"limit": 50, "remaining": 47, "used": 3},
            "rate_limit": {"requests": 20, "interval": "60s"},
        }})
    );
    // The older path answers the same.
    let old = Request::get("/api/v1/auth/key")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&sim, old).await.body, info.body);
}

#[tokio::test(start_paused = true)]
async fn unknown_or_missing_key_gets_401() {
    let sim = free_sim();
    let unknown = send(&sim, completion("sk-nobody", FREE)).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.body,
        json!({"error": {"message": "User not found.", "code": 401}})
    );
    let anonymous = Request::post("/api/v1/chat/completions")
        .body(Full::new(Bytes::from(r#"{"model":"x"}"#)))
        .unwrap();
    let missing = send(&sim, anonymous).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.body["error"]["message"],
        "No auth credentials found"
    );
    assert_eq!(send(&sim, key_info("sk-nobody")).await.status, 401);
    let stats = sim.stats();
    assert_eq!((stats.count(401), stats.wasted), (3, 3));
    assert!(stats.admissions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn bad_requests_and_unknown_paths() {
    let sim = free_sim();
    let no_model = Request::post("/api/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::from(r#"{"messages":[]}"#)))
        .unwrap();
    assert_eq!(send(&sim, no_model).await.status, 400);
    let elsewhere = Request::get("/api/v1/models")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&sim, elsewhere).await.status, 404);
    assert!(sim.stats().admissions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn keys_of_one_account_share_its_limits() {
    let sim = Simulator::builder()
        .account(Account::new("sk-a").with_key("sk-b"))
        .build();
    for i in 0..20 {
        let key = if i % 2 == 0 { "sk-a" } else { "sk-b" };
        assert_eq!(send(&sim, completion(key, FREE)).await.status, 200);
    }
    assert_eq!(send(&sim, completion("sk-b", FREE)).await.status, 429);
    // Paid models have no platform cap.
    assert_eq!(send(&sim, completion("sk-b", PAID)).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn scaled_minutes_for_demos() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::openrouter_free())
        .minute(Duration::from_secs(2))
        .build();
    assert_eq!(
        sim.accounts()[0].tier().limits()[0].period(),
        Period::Rolling(Duration::from_secs(2))
    );
    for _ in 0..20 {
        assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
    }
    let refused = send(&sim, completion("sk-test", FREE)).await;
    assert_eq!(header(&refused, "retry-after"), Some("2"));
    let info = send(&sim, key_info("sk-test")).await.body;
    assert_eq!(
        info["data"]["rate_limit"],
        json!({"requests": 20, "interval": "2s"})
    );
    sleep(Duration::from_secs(2)).await;
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn custom_tiers_enforce_every_limit() {
    let tier = Tier::new("tight")
        .with_limit(Limit::rolling(Models::All, 3, Duration::from_secs(1)))
        .with_limit(Limit::rolling(Models::All, 5, Duration::from_secs(10)));
    let sim = Simulator::builder().key("k", tier).build();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(send(&sim, completion("k", PAID)).await.status.as_u16());
        sleep(Duration::from_millis(250)).await;
    }
    // 3 per second, then 5 per 10 s: admitted at 0, 0.25, 0.5, 1.0, 1.25.
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 200, 200, 429, 429, 429, 429, 429, 429]
    );
    let refused = send(&sim, completion("k", PAID)).await;
    assert_eq!(
        refused.body["error"]["message"],
        "Rate limit exceeded: requests-per-10s. "
    );
    sim.check_invariants().unwrap();
}

/// Anthropic's request limit: a bucket of 60 that refills one a second. A burst of 60 is
/// admitted, the 61st refused with Anthropic's error, `retry-after: 1` and the bucket's
/// state (`remaining` 0, full again in 60 s); a token is back a second later, and half a
/// minute refills 30.
#[tokio::test(start_paused = true)]
async fn an_anthropic_request_bucket_refills_continuously() {
    let sim = Simulator::builder()
        .key("k", Tier::anthropic(60, 100_000_000, 100_000_000))
        .start_wall_time(ten_am())
        .build();
    for _ in 0..60 {
        assert_eq!(send(&sim, completion("k", PAID)).await.status, 200);
    }
    let refused = send(&sim, completion("k", PAID)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    assert_eq!(
        header(&refused, "anthropic-ratelimit-requests-limit"),
        Some("60")
    );
    assert_eq!(
        header(&refused, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(
        header(&refused, "anthropic-ratelimit-requests-reset"),
        Some("2026-11-22T10:01:00Z")
    );
    sleep(Duration::from_secs(1)).await;
    let back = send(&sim, completion("k", PAID)).await;
    assert_eq!(back.status, 200);
    assert_eq!(send(&sim, completion("k", PAID)).await.status, 429);
    sleep(Duration::from_secs(30)).await;
    let mut admitted = 0;
    while send(&sim, completion("k", PAID)).await.status == 200 {
        admitted += 1;
    }
    assert_eq!(admitted, 30);
    sim.check_invariants().unwrap();
}

/// A bucket that holds 2 of its 60 a minute refuses the third of a burst, however much of
/// the minute's figure is left.
#[tokio::test(start_paused = true)]
async fn a_bucket_with_a_small_burst_refuses_bursts() {
    let tier = Tier::new("burst")
        .with_limit(Limit::bucket(Models::All, 60, Duration::from_secs(60)).with_burst(2));
    let sim = Simulator::builder().key("k", tier).build();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&sim, completion("k", PAID)).await.status.as_u16());
    }
    sleep(Duration::from_millis(1_500)).await;
    statuses.push(send(&sim, completion("k", PAID)).await.status.as_u16());
    statuses.push(send(&sim, completion("k", PAID)).await.status.as_u16());
    assert_eq!(statuses, [200, 200, 429, 429, 200, 429]);
    sim.check_invariants().unwrap();
}

/// A run with every fault and latency, one request every 100 ms: (status, latency in ms).
async fn faulty_run(seed: u64) -> Vec<(u16, u128)> {
    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .faults(
            Faults::none()
                .with_upstream_429(0.2, 1, 30)
                .with_unavailable_bursts(0.05, Duration::from_millis(500))
                .with_bad_gateway(0.1),
        )
        .latency(Duration::from_millis(10), Duration::from_millis(90))
        .seed(seed)
        .build();
    let mut run = Vec::new();
    for i in 0..60 {
        let model = format!("vendor/model-{}", i % 7);
        let start = Instant::now();
        let a = send(&sim, completion("sk-test", &model)).await;
        run.push((a.status.as_u16(), start.elapsed().as_millis()));
        sleep(Duration::from_millis(100)).await;
    }
    run
}

#[tokio::test(start_paused = true)]
async fn fault_injection_is_reproducible_by_seed() {
    let a = faulty_run(7).await;
    assert_eq!(a, faulty_run(7).await);
    assert_ne!(a, faulty_run(8).await);
    for status in [200, 429, 502, 503] {
        assert!(a.iter().any(|&(s, _)| s == status), "{status} in {a:?}");
    }
    assert!(a.iter().all(|&(s, ms)| s == 503 || (10..=90).contains(&ms)));
    // Bursts end.
    assert!(a.windows(2).any(|w| w[0].0 == 503 && w[1].0 != 503));
}

#[tokio::test(start_paused = true)]
async fn upstream_429_carries_its_delay_in_the_body_and_enforces_it() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .faults(Faults::none().with_upstream_429(1.0, 5, 5))
        .provider_name("Chutes")
        .build();
    let first = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(first.status, 429);
    assert_eq!(header(&first, "retry-after"), None);
    assert_eq!(header(&first, "x-ratelimit-reset"), None);
    let raw = first.body["error"]["metadata"]["raw"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(raw.starts_with(&format!(
        "{PAID} is temporarily rate-limited upstream. Please retry shortly"
    )));
    assert_eq!(
        first.body,
        json!({"error": {
            "message": "Provider returned error",
            "code": 429,
            "metadata": {
                "raw": raw,
                "provider_name": "Chutes",
                "is_byok": false,
                "retry_after_seconds": 5,
                "headers": {"Retry-After": "5"},
            },
        }})
    );
    // Too early: the same 429 with the time left.
    sleep(Duration::from_millis(3_500)).await;
    let early = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(early.body["error"]["metadata"]["retry_after_seconds"], 2);
    let outcomes: Vec<Outcome> = sim.stats().records.into_iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::UpstreamRateLimited {
                retry_after_secs: 5,
                early: false
            },
            Outcome::UpstreamRateLimited {
                retry_after_secs: 2,
                early: true
            },
        ]
    );
    let stats = sim.stats();
    assert!(stats.admissions.is_empty());
    assert_eq!(stats.early_retries(), 1);
}

#[tokio::test(start_paused = true)]
async fn unavailable_bursts_and_bad_gateways() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .faults(Faults::none().with_unavailable_bursts(1.0, Duration::from_secs(2)))
        .build();
    let down = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(down.status, 503);
    // Every request during the burst gets it.
    sleep(Duration::from_millis(1_999)).await;
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 503);
    assert_eq!(sim.stats().count(503), 2);
    assert_eq!(
        down.body,
        json!({"error": {"code": 503, "message": "No allowed providers are available for the selected model."}})
    );
    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .faults(Faults::none().with_bad_gateway(1.0))
        .build();
    let bad = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(bad.status, 502);
    assert_eq!(bad.body["error"]["code"], 502);
    assert_eq!(sim.stats().records[0].outcome, Outcome::BadGateway);
}

#[tokio::test(start_paused = true)]
async fn responses_carry_their_record_and_clocks_agree() {
    let sim = free_sim();
    let response = sim
        .clone()
        .oneshot(completion("sk-test", FREE))
        .await
        .unwrap();
    let record = response.extensions().get::<Record>().unwrap();
    assert_eq!(record.outcome, Outcome::Completed);
    assert_eq!(record.model.as_deref(), Some(FREE));
    assert_eq!(record.key.as_deref(), Some("sk-test"));
    assert_eq!(record.at, sim.started_at());
    assert_eq!(record.wall, ten_am());
    sleep(Duration::from_secs(90)).await;
    let now = sim.wall_clock();
    assert_eq!(now(), ten_am() + Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_everything_but_the_configuration() {
    let sim = free_sim();
    for _ in 0..21 {
        send(&sim, completion("sk-test", FREE)).await;
    }
    assert_eq!(sim.stats().rate_limited, 1);
    sim.reset();
    assert_eq!(sim.stats(), Stats::default());
    assert_eq!(send(&sim, completion("sk-test", FREE)).await.status, 200);
}

#[tokio::test]
async fn loopback_serves_end_to_end_and_shuts_down() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let sim = free_sim();
    assert_eq!(
        sim.serve(([0, 0, 0, 0], 0)).await.unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let mut req = completion("sk-test", FREE);
    *req.uri_mut() = format!("http://{addr}/api/v1/chat/completions")
        .parse()
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");

    let mut req = key_info("sk-test");
    *req.uri_mut() = format!("http://{addr}/api/v1/key").parse().unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["data"]["free_model_daily_requests"]["used"], 1);
    assert_eq!(sim.stats().requests, 2);

    // The client's pooled connection is idle: shutdown closes it at once.
    server.shutdown().await;
    let fresh = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = key_info("sk-test");
    *req.uri_mut() = format!("http://{addr}/api/v1/key").parse().unwrap();
    assert!(fresh.request(req).await.is_err());
}

#[tokio::test]
async fn loopback_shutdown_lets_a_request_in_flight_finish() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .latency(Duration::from_millis(50), Duration::from_millis(50))
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = completion("sk-test", PAID);
    *req.uri_mut() = format!("http://{addr}/api/v1/chat/completions")
        .parse()
        .unwrap();
    let in_flight = tokio::spawn(client.request(req));
    // The request is recorded when decided, before its latency.
    while sim.stats().requests == 0 {
        sleep(Duration::from_millis(1)).await;
    }
    drop(server); // dropping the handle shuts down too
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn concurrent_clients_that_honour_the_reset_are_never_refused_twice() {
    let sim = Simulator::builder()
        .key("sk-test", Tier::openrouter_credited()) // 1000 a day: only the minute binds
        .start_wall_time(ten_am())
        .build();
    let wall = sim.wall_clock();
    let wall = std::sync::Arc::new(wall);
    let mut workers = Vec::new();
    for w in 0..16 {
        let sim = sim.clone();
        let wall = wall.clone();
        workers.push(tokio::spawn(async move {
            let mut refused_in_a_row = 0;
            for _ in 0..(if w < 12 { 4 } else { 3 }) {
                loop {
                    let a = send(&sim, completion("sk-test", FREE)).await;
                    if a.status == 200 {
                        refused_in_a_row = 0;
                        break;
                    }
                    assert_eq!(a.status, 429);
                    refused_in_a_row += 1;
                    assert!(
                        refused_in_a_row < 3,
                        "refused again at {:?}: {:?}",
                        sim.now_wall(),
                        a.headers
                    );
                    let reset: u64 = header(&a, "x-ratelimit-reset").unwrap().parse().unwrap();
                    let until = UNIX_EPOCH + Duration::from_millis(reset);
                    sleep(until.duration_since(wall()).unwrap_or_default()).await;
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats.admissions.len(), 60);
    assert_eq!(
        stats.max_admissions_in(Models::Free, Duration::from_secs(60)),
        20
    );
    // 20 at once, 20 a minute later, 20 a minute after that.
    assert_eq!(stats.admission_span(), Duration::from_secs(120));
    sim.check_invariants().unwrap();
}

// === the network ===

#[tokio::test(start_paused = true)]
async fn requests_are_decided_on_arrival_after_the_inbound_delay() {
    let net = Network::new(
        Delay::fixed(Duration::from_millis(100)),
        Delay::fixed(Duration::from_millis(40)),
    );
    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .latency(Duration::from_millis(300), Duration::from_millis(300))
        .network(net)
        .build();
    assert_eq!(sim.network(), net);
    let sent = Instant::now();
    let response = sim
        .clone()
        .oneshot(completion("sk-test", PAID))
        .await
        .unwrap();
    // In, upstream, out.
    assert_eq!(sent.elapsed(), Duration::from_millis(440));
    let record = response.extensions().get::<Record>().unwrap();
    assert_eq!(record.at - sent, Duration::from_millis(100));
    assert_eq!(record.sent(), sent);
    assert_eq!(record.inbound, Duration::from_millis(100));
    assert_eq!(record.outbound, Duration::from_millis(40));
    assert_eq!(sim.stats().admissions[0].at, record.at);
    // The platform's own answers leave at once and still cross the network.
    let sent = Instant::now();
    let _ = sim.clone().oneshot(key_info("sk-nobody")).await.unwrap();
    assert_eq!(sent.elapsed(), Duration::from_millis(140));
}

/// Pairs of requests sent exactly a window apart on a jittery network: the second is
/// refused exactly when it arrives less than a window after the first — the server counts
/// arrivals, the client sees sends.
#[tokio::test(start_paused = true)]
async fn sends_a_window_apart_can_arrive_closer_and_are_refused() {
    let w = Duration::from_secs(10);
    let leg = Delay::new(Duration::from_millis(150), Duration::from_millis(200));
    let sim = Simulator::builder()
        .key(
            "sk-test",
            Tier::new("one").with_limit(Limit::rolling(Models::All, 1, w)),
        )
        .network(Network::symmetric(leg))
        .seed(3)
        .build();
    let mut refused = 0;
    for _ in 0..20 {
        let first = sim.clone().oneshot(completion("sk-test", PAID));
        let second = async {
            sleep(w).await;
            sim.clone().oneshot(completion("sk-test", PAID)).await
        };
        let (a, b) = tokio::join!(first, second);
        let (a, b) = (a.unwrap(), b.unwrap());
        let (ra, rb) = (
            a.extensions().get::<Record>().unwrap().clone(),
            b.extensions().get::<Record>().unwrap().clone(),
        );
        assert_eq!(rb.sent() - ra.sent(), w);
        assert_eq!(a.status(), 200);
        assert_eq!(b.status() == 200, rb.at - ra.at >= w, "{ra:?} {rb:?}");
        refused += usize::from(b.status() == 429);
        sleep(w * 2).await;
    }
    assert!(refused > 0 && refused < 20, "{refused} refused");
    sim.check_invariants().unwrap();
}

#[tokio::test]
async fn loopback_serves_through_the_network_model() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let sim = Simulator::builder()
        .key("sk-test", Tier::unlimited())
        .network(Network::symmetric(Delay::fixed(Duration::from_millis(30))))
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = completion("sk-test", PAID);
    *req.uri_mut() = format!("http://{addr}/api/v1/chat/completions")
        .parse()
        .unwrap();
    let sent = std::time::Instant::now();
    assert_eq!(client.request(req).await.unwrap().status(), 200);
    assert!(sent.elapsed() >= Duration::from_millis(60));
    assert!(sim.stats().records[0].inbound >= Duration::from_millis(30));
    server.shutdown().await;
}

// === servers that count differently ===

#[tokio::test(start_paused = true)]
async fn litellm_router_counts_per_clock_minute_and_admits_one_fewer() {
    // 10:00:50: ten seconds left in the first clock minute.
    let sim = Simulator::builder()
        .key("sk-test", Tier::litellm_router(3))
        .start_wall_time(ten_am() + Duration::from_secs(50))
        .build();
    let ok = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(header(&ok, "x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), Some("2"));
    sleep(Duration::from_secs(1)).await;
    let ok = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), Some("1"));
    sleep(Duration::from_millis(1_500)).await;
    // `rpm: 3` admits two.
    let refused = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(header(&refused, "retry-after"), Some("7.500000"));
    assert_eq!(
        refused.body,
        json!({"error": {
            "message": "LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM, RPM Limit. current rpm: 2, rpm limit: 3, current tpm: 0, tpm limit: None",
            "type": "None",
            "param": "None",
            "code": "429",
        }})
    );
    sleep(Duration::from_millis(7_499)).await;
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 429);
    sleep(Duration::from_millis(1)).await;
    // 10:01:00: a new clock minute.
    for _ in 0..2 {
        assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 200);
    }
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 429);
    let stats = sim.stats();
    assert_eq!((stats.succeeded, stats.rate_limited), (4, 3));
    assert_eq!(
        stats.records[2].outcome,
        Outcome::RateLimited {
            limit: "requests-per-clock-min".into()
        }
    );
    // Four in 4 s: no rolling minute of 2 holds, the clock minutes do.
    assert_eq!(
        stats.max_admissions_in(Models::All, Duration::from_secs(60)),
        4
    );
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn litellm_key_window_opens_at_the_first_request_and_answers_the_whole_window() {
    // The first request at 10:00:00.400 opens a window truncated to 10:00:00, to 10:01:00.
    let sim = Simulator::builder()
        .key("sk-test", Tier::litellm_anchored(2))
        .start_wall_time(ten_am() + Duration::from_millis(400))
        .build();
    let ok = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(header(&ok, "x-ratelimit-api_key-limit-requests"), Some("2"));
    assert_eq!(
        header(&ok, "x-ratelimit-api_key-remaining-requests"),
        Some("1")
    );
    sleep(Duration::from_secs(30)).await;
    let ok = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(
        header(&ok, "x-ratelimit-api_key-remaining-requests"),
        Some("0")
    );
    sleep(Duration::from_secs(20)).await;
    let refused = send(&sim, completion("sk-test", PAID)).await;
    assert_eq!(refused.status, 429);
    // The whole window, whatever is left of it (9.6 s here).
    assert_eq!(header(&refused, "retry-after"), Some("60"));
    assert_eq!(header(&refused, "rate_limit_type"), Some("requests"));
    assert_eq!(
        header(&refused, "reset_at"),
        Some("2026-11-22 10:01:50 UTC")
    );
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Rate limit exceeded for api_key: "));
    assert!(message.ends_with(
        "Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2026-11-22 10:01:50 UTC"
    ));
    assert_eq!(refused.body["error"]["code"], "429");
    // The window ends at 10:01:00; the next request opens another.
    sleep(Duration::from_millis(9_599)).await;
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 429);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(send(&sim, completion("sk-test", PAID)).await.status, 200);
    assert_eq!(sim.stats().succeeded, 3);
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn debug_output_leaves_keys_out() {
    const KEY: &str = "sk-or-v1-0123456789abcdefSECRET";
    let sim = Simulator::builder()
        .account(Account::new(KEY).with_tier(Tier::openrouter_free()))
        .build();
    let response = sim.clone().oneshot(completion(KEY, FREE)).await.unwrap();
    let record = response.extensions().get::<Record>().unwrap().clone();
    assert_eq!(
        record.key.as_deref(),
        Some(KEY),
        "the record keeps the key as data"
    );
    let debug = format!("{record:?} {:?} {:?} {sim:?}", sim.accounts(), sim.stats());
    assert!(!debug.contains("SECRET"), "{debug}");
}
