//! The main demonstration: the same workload against a simulated OpenRouter free tier, sent
//! twice over real HTTP on loopback — first by a plain hyper-util client, then by the same
//! client behind tower-quota's three layers — and a side-by-side table of what happened.
//!
//! The simulator enforces OpenRouter's rolling "20 requests per minute" with its exact 429s,
//! headers and error bodies; here a "minute" lasts two seconds so the run takes a few seconds.
//!
//! Runs offline: `cargo run --example quickstart`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_quota::limit::KeyBy;
use tower_quota::retry::ReplayBody;
use tower_quota::sim::{self, Simulator};
use tower_quota::{Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

/// A scaled minute: OpenRouter's free tier is 20 requests per (rolling) minute.
const MINUTE: Duration = Duration::from_secs(2);
const PER_MINUTE: usize = 20;
const REQUESTS: usize = 60;
const CONCURRENCY: usize = 8;
const LATENCY: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(25));
const API_KEY: &str = "sk-or-v1-quickstart-0000";
const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

/// What one run of the workload did.
struct Report {
    name: &'static str,
    succeeded: usize,
    failed: usize,
    server_429s: u64,
    wasted: u64,
    makespan: Duration,
    p50: Duration,
    p99: Duration,
}

fn completion() -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post("/api/v1/chat/completions")
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Sends the workload through `client` with `CONCURRENCY` workers, showing progress.
async fn run<S, B>(name: &'static str, client: S, base: &str, sim: &Simulator) -> Report
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    sim.reset();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let progress = tokio::spawn(progress_bar(name, done.clone(), start));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, done, base) =
            (client.clone(), next.clone(), done.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                let mut req = completion();
                *req.uri_mut() = format!("{base}/api/v1/chat/completions").parse().unwrap();
                let sent = Instant::now();
                let resp = client.clone().oneshot(req).await.map_err(Into::into);
                let ok = match resp {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        ok
                    }
                    Err(_) => false,
                };
                results.push((ok, sent.elapsed()));
                done.fetch_add(1, Ordering::SeqCst);
            }
            results
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.expect("worker"));
    }
    let makespan = start.elapsed();
    progress.abort();
    finish_bar(name, makespan);

    let stats = sim.stats();
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.1).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let succeeded = results.iter().filter(|r| r.0).count();
    Report {
        name,
        succeeded,
        failed: results.len() - succeeded,
        server_429s: stats.rate_limited,
        wasted: stats.wasted,
        makespan,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

async fn progress_bar(name: &str, done: Arc<AtomicUsize>, start: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown = usize::MAX;
    loop {
        let n = done.load(Ordering::SeqCst);
        if terminal || n / 20 != shown / 20 {
            shown = n;
            let filled = n * 30 / REQUESTS;
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(30 - filled));
            let line = format!(
                "{name:<24} [{bar}] {n:>3}/{REQUESTS}  {:>5.1}s",
                start.elapsed().as_secs_f64()
            );
            if terminal {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finish_bar(name: &str, makespan: Duration) {
    let line = format!(
        "{name:<24} [{}] {REQUESTS:>3}/{REQUESTS}  {:>5.1}s",
        "#".repeat(30),
        makespan.as_secs_f64()
    );
    if std::io::stderr().is_terminal() {
        eprintln!("\r{line}");
    } else {
        eprintln!("{line}");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let sim = Simulator::builder()
        .key(API_KEY, sim::Tier::openrouter_credited())
        .minute(MINUTE)
        .latency(LATENCY.0, LATENCY.1)
        .seed(7)
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await?;
    let base = format!("http://{addr}");
    println!(
        "Simulated OpenRouter on {addr}: {PER_MINUTE} requests per rolling \"minute\" of {:?}.",
        MINUTE
    );
    println!("Workload: {REQUESTS} chat completions on a :free model, {CONCURRENCY} at a time.\n");

    // 1. A plain client, as most code calls a router today.
    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let plain = run("plain hyper-util client", plain, &base, &sim).await;

    // 2. The same client behind the three layers: pace to the tier, classify every
    //    response, retry exactly as the server asks.
    let tier =
        Tier::new("openrouter-free (scaled)").with_quota(Quota::new(PER_MINUTE as u64, MINUTE));
    let inner = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let layered = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(
            RateLimitLayer::new(tier)
                .key_by(KeyBy::ApiKey)
                // Absorbs the jitter between our clock and the server's arrival times.
                .with_margin(Duration::from_millis(50)),
        )
        .layer(QuotaClassifyLayer::default())
        .service(inner);
    let layered = run("with tower-quota", layered, &base, &sim).await;
    server.shutdown().await;

    // The best any client can do: PER_MINUTE admissions per window, back to back.
    let windows = REQUESTS.div_ceil(PER_MINUTE) as u32 - 1;
    let optimum = MINUTE * windows + LATENCY.0;
    println!();
    println!(
        "{:<26} {:>9} {:>7} {:>11} {:>7} {:>9} {:>11} {:>8} {:>8}",
        "", "succeeded", "failed", "429s (srv)", "wasted", "makespan", "vs optimum", "p50", "p99"
    );
    for r in [&plain, &layered] {
        let ratio = if r.failed == 0 {
            format!("{:.2}x", r.makespan.as_secs_f64() / optimum.as_secs_f64())
        } else {
            "-".to_string()
        };
        println!(
            "{:<26} {:>9} {:>7} {:>11} {:>7} {:>8.2}s {:>11} {:>7.0}ms {:>7.0}ms",
            r.name,
            r.succeeded,
            r.failed,
            r.server_429s,
            r.wasted,
            r.makespan.as_secs_f64(),
            ratio,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
    }
    println!(
        "\ntheoretical optimum: {:.2}s ({windows} full windows of {:?}, then the last batch)",
        optimum.as_secs_f64(),
        MINUTE
    );

    if layered.succeeded != REQUESTS {
        return Err(format!("tower-quota: {} of {REQUESTS} succeeded", layered.succeeded).into());
    }
    // 0 on a quiet machine. Real time on loopback: a stall longer than the margin between an
    // admission and its arrival (a loaded CI machine) can shift one arrival into the previous
    // window, and the retry layer recovers it; more than one means the pacing is wrong.
    if layered.server_429s > 1 {
        return Err(format!("tower-quota: the server sent {} 429s", layered.server_429s).into());
    }
    Ok(())
}
