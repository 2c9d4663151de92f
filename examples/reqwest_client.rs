//! A `reqwest_middleware` client paced, classified and retried by `QuotaMiddleware`, against
//! the simulated OpenRouter served on loopback: the free tier (20 requests per rolling
//! "minute", scaled down to 2 s here) and upstream 429s that ask for a delay in the body only.
//!
//! Thirty requests go out at once; every one must come back 200, and the simulator must never
//! have answered a platform 429 (the pacing never trips a window). Requests are keyed by API
//! key *and* model, so that an upstream 429 for the model cools the key down for every
//! request, not only for the one that got it: requests already in flight may still meet the
//! upstream's cooldown ("sent early" below), later ones wait. Exits non-zero on failure.
//!
//! Runs offline: `cargo run --example reqwest_client`.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use tokio::time::Instant;
use tower_quota::classify::Classification;
use tower_quota::limit::{KeyBy, Model};
use tower_quota::reqwest::QuotaMiddleware;
use tower_quota::retry::RetryInfo;
use tower_quota::sim::{Faults, Simulator, Tier as SimTier};
use tower_quota::{Quota, QuotaLayer, Tier};

const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minute = Duration::from_secs(2);
    let simulator = Simulator::builder()
        .key("sk-or-v1-demo", SimTier::openrouter_free())
        .minute(minute)
        .faults(Faults::none().with_upstream_429(0.1, 1, 1))
        .seed(7)
        .build();
    let (addr, server) = simulator.serve(([127, 0, 0, 1], 0)).await?;

    // The simulator's 20 per minute, with the minute scaled down; a 100 ms margin absorbs the
    // latency differences of a real connection.
    let tier = Tier::new("openrouter-free (demo speed)").with_quota(Quota::new(20, minute));
    let layer = QuotaLayer::new(tier)
        .key_by(KeyBy::ApiKeyAndModel)
        .with_margin(Duration::from_millis(250));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(layer))
        .build();

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let request = client
            .post(format!("http://{addr}/api/v1/chat/completions"))
            .bearer_auth("sk-or-v1-demo")
            // What the limiter keys by: the layer never parses the body.
            .with_extension(Model::new(MODEL))
            .body(format!(r#"{{"model":"{MODEL}"}}"#));
        tasks.spawn(async move { (i, request.send().await) });
    }
    let mut rows = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, response) = done?;
        let response = response?;
        let class = response
            .extensions()
            .get::<Classification>()
            .map_or("-", |c| c.class().as_str());
        let info = RetryInfo::get(response.extensions());
        rows.push((i, response.status().as_u16(), class, info, start.elapsed()));
    }
    rows.sort_by_key(|r| r.0);

    println!("request  status  class    attempts  stopped       done after");
    for (i, status, class, info, at) in &rows {
        println!(
            "{i:>7}  {status:>6}  {class:<7}  {:>8}  {:<12}  {:>8.2}s",
            info.attempts,
            info.stopped.as_str(),
            at.as_secs_f64()
        );
    }

    let stats = simulator.stats();
    let upstream_429s = stats.rate_limited;
    println!(
        "\n{} requests reached the simulator: {} succeeded, {} upstream 429s ({} of them to requests sent before an earlier 429's delay had passed), each retried after the delay it was given; {:.2}s in all",
        stats.requests,
        stats.succeeded,
        upstream_429s,
        stats.early_retries(),
        start.elapsed().as_secs_f64()
    );
    server.shutdown().await;

    let failed = rows.iter().filter(|r| r.1 != 200).count();
    if failed > 0 {
        return Err(format!("{failed} requests did not succeed").into());
    }
    // The only 429s are the injected upstream ones: the platform's windows were never tripped.
    let platform_429s = stats
        .records
        .iter()
        .filter(|r| r.status == 429)
        .filter(|r| {
            !matches!(
                r.outcome,
                tower_quota::sim::Outcome::UpstreamRateLimited { .. }
            )
        })
        .count();
    // 0 on a quiet machine; one stall longer than the margin (a loaded machine) may cost one.
    if platform_429s > 1 {
        return Err(format!("{platform_429s} platform 429s: the pacing tripped a window").into());
    }
    simulator.check_invariants()?;
    Ok(())
}
