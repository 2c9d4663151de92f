//! A hyper-util legacy client behind the three layers, against the bundled OpenRouter
//! simulator on loopback.
//!
//! What it shows:
//!
//! - **pacing**: 45 concurrent completions for a `:free` model on a tier of 20 requests per
//!   (scaled) minute go out in three waves; the caller never sees a 429 and the simulator
//!   never had to send one;
//! - **non-retryable quota errors arrive at once**: a paid model on an account without
//!   credits gets OpenRouter's 402, classified `quota_exhausted`, after one attempt.
//!
//! The simulator's minute lasts one second here, so the run takes about two seconds. The
//! client-side tier says the same (20 per second); in production it is
//! `tiers::openrouter::free()`.
//!
//! Run it with `cargo run --example hyper_client`; it exits non-zero if any of this fails.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_quota::classify::{self, Classification, QuotaClass};
use tower_quota::limit::{KeyBy, Model};
use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
use tower_quota::sim::{Account, Models, Simulator, Stats};
use tower_quota::{sim, Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o-mini";
/// How long a minute lasts, for the demo.
const MINUTE: Duration = Duration::from_secs(1);
const REQUESTS: usize = 45;

fn completion(uri: &str, key: &str, model: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        // The limiter picks the tier from the model (see the tier selector below).
        .extension(Model::new(model))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The provider: OpenRouter's free tier (20 per minute, 50 per UTC day on `:free`
    // models), a minute of one second; a second account without credits for paid models.
    let sim = Simulator::builder()
        .key("sk-or-v1-demo", sim::Tier::openrouter_free())
        .account(
            Account::new("sk-or-v1-broke")
                .with_tier(sim::Tier::unlimited())
                .with_credits(0.0),
        )
        .minute(MINUTE)
        .latency(Duration::from_millis(5), Duration::from_millis(20))
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await?;
    let uri = format!("http://{addr}/api/v1/chat/completions");

    // The client: hyper-util's legacy client, built for the body the retry layer hands it.
    let hyper_client: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();

    // OpenRouter's free tier with a one-second minute; paid models have no platform cap.
    let free = Tier::new("openrouter-free (1 s minute)")
        .with_quota(Quota::new(20, MINUTE))
        .with_quota(Quota::per_utc_day(50));
    let client = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(
            RateLimitLayer::new(free.clone())
                .key_by(KeyBy::ApiKey)
                .with_tier_selector(move |head| {
                    head.model()
                        .is_some_and(|m| m.is_free_variant())
                        .then(|| free.clone())
                })
                // Room for the time between our admission and the simulator's arrival (a
                // new connection, a busy thread): the window is kept on the server's side.
                .with_margin(Duration::from_millis(250)),
        )
        .layer(QuotaClassifyLayer::new(classify::OpenRouter))
        .service(hyper_client);

    // 1. Pacing: 45 concurrent requests, 20 per window.
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..REQUESTS {
        let req = completion(&uri, "sk-or-v1-demo", FREE);
        let client = client.clone();
        tasks.spawn(async move {
            let resp = client.oneshot(req).await?;
            let status = resp.status();
            let attempts = RetryInfo::get(resp.extensions()).attempts;
            resp.into_body().collect().await?;
            Ok::<_, BoxError>((status, attempts, start.elapsed()))
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done??);
    }
    let elapsed = start.elapsed();
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let retried = results.iter().filter(|r| r.1 > 1).count();
    let mut waves = [0usize; 3];
    for (_, _, at) in &results {
        let wave = (at.as_secs_f64() / MINUTE.as_secs_f64()) as usize;
        waves[wave.min(2)] += 1;
    }

    let stats: Stats = sim.stats();
    println!("pacing: {REQUESTS} concurrent requests, tier 20 per {MINUTE:?}");
    println!("  caller saw           {ok} x 200, {} other", REQUESTS - ok);
    println!("  done per window      {waves:?}");
    println!("  retried              {retried}");
    println!("  simulator's 429s     {}", stats.rate_limited);
    println!(
        "  most in any window   {} (limit 20)",
        stats.max_admissions_in(Models::Free, MINUTE)
    );
    println!("  elapsed              {:.2}s", elapsed.as_secs_f64());
    assert_eq!(ok, REQUESTS, "every request succeeds");
    // Real time on loopback: 0 on a quiet machine. The server counts arrivals, so a stall
    // longer than the margin between an admission and its arrival (a loaded CI machine) can
    // shift one arrival into the previous window; the retry layer then recovers it.
    assert!(stats.rate_limited <= 1, "at most one 429, from a stall");
    assert!(retried <= 1, "pacing alone did it");
    assert!(stats.max_admissions_in(Models::Free, MINUTE) <= 20);
    assert!(elapsed >= 2 * MINUTE, "three waves take two windows");
    sim.check_invariants()?;

    // 2. A paid model on an account without credits: a 402, not worth sending again.
    let start = Instant::now();
    let resp: Response<_> = client
        .clone()
        .oneshot(completion(&uri, "sk-or-v1-broke", PAID))
        .await?;
    let took = start.elapsed();
    let status = resp.status();
    let class = resp.extensions().get::<Classification>().cloned().unwrap();
    let info = RetryInfo::get(resp.extensions());
    let body = resp.into_body().collect().await?.to_bytes();
    println!("credits gone:");
    println!(
        "  status {}, class {}, attempts {}, stopped {:?}, after {:.0}ms",
        status.as_u16(),
        class.class().as_str(),
        info.attempts,
        info.stopped,
        took.as_secs_f64() * 1000.0
    );
    println!("  body   {}", String::from_utf8_lossy(&body));
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(class.class(), QuotaClass::QuotaExhausted);
    assert_eq!((info.attempts, info.stopped), (1, StopReason::NotRetryable));
    assert_eq!(sim.stats().count(402), 1);

    server.shutdown().await;
    println!("ok");
    Ok(())
}
