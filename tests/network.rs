//! The default stack over real TCP, through a network whose one-way delays vary.
//!
//! The simulator is served on loopback behind a small delaying TCP proxy of this file's own:
//! each direction of each connection is a task that reads chunks and forwards each after a
//! base delay plus a random jitter (in order: a chunk never overtakes the one before it), so a
//! request's arrival at the simulator really differs from its send by a varying amount. The
//! client is hyper-util's legacy client behind `QuotaLayer::new(tier)` — the defaults, no
//! margin, no tuning — and the minute is scaled down to 2 s.
//!
//! Real time on a shared machine: the assertions are counts that hold under load (every
//! request succeeds; at most a few 429s; the simulator's windows, counted on arrival, hold),
//! never upper bounds on wall time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::sim::{self, Simulator};
use tower_quota::{Quota, QuotaLayer, Tier};

const KEY: &str = "sk-or-v1-network";
const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

/// How long a minute lasts in these worlds.
const MINUTE: Duration = Duration::from_secs(2);

// === the delaying proxy ===

/// Each direction of each connection: `base` plus a uniform jitter in `[0, jitter]`.
#[derive(Clone, Copy, Debug)]
struct Leg {
    base: Duration,
    jitter: Duration,
}

/// A TCP proxy on loopback in front of `target`; the address it listens on. Its tasks end
/// with the runtime.
async fn delaying_proxy(target: SocketAddr, leg: Leg, seed: u64) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let streams = Arc::new(AtomicU64::new(seed));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let next = |s: &AtomicU64| s.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            tokio::spawn(delayed_copy(client_read, server_write, leg, next(&streams)));
            tokio::spawn(delayed_copy(server_read, client_write, leg, next(&streams)));
        }
    });
    Ok(addr)
}

/// Copies `from` to `to`, each chunk after its own delay, in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    leg: Leg,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut rng = seed;
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let jitter = leg.jitter.mul_f64(unit(&mut rng));
        // Never before the chunk ahead of it: a stream keeps its order.
        let due = (Instant::now() + leg.base + jitter).max(last_due);
        last_due = due;
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// SplitMix64, as a uniform number in `[0, 1)`.
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

// === the runs ===

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    succeeded: usize,
    rate_limited: u64,
    elapsed: Duration,
}

/// `requests` completions, `concurrency` at a time, through the default stack for `tier`,
/// against `sim` behind a proxy delaying each direction by `leg`.
async fn drive(
    sim: &Simulator,
    tier: Tier,
    leg: Leg,
    requests: usize,
    concurrency: usize,
) -> Outcome {
    let (sim_addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let proxy = delaying_proxy(sim_addr, leg, 17).await.unwrap();
    let hyper = Client::builder(TokioExecutor::new()).build_http();
    let client = ServiceBuilder::new()
        .layer(QuotaLayer::new(tier))
        .service(hyper);
    let url = format!("http://{proxy}/api/v1/chat/completions");
    let next = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, succeeded) =
            (client.clone(), url.clone(), next.clone(), succeeded.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let body = format!(r#"{{"model":"{MODEL}","messages":[]}}"#);
                let req = Request::post(url.as_str())
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let resp = client.clone().oneshot(req).await.expect("a response");
                let ok = resp.status().is_success();
                resp.into_body().collect().await.expect("the body");
                if ok {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed();
    server.shutdown().await;
    let stats = sim.stats();
    Outcome {
        succeeded: succeeded.load(Ordering::Relaxed),
        rate_limited: stats.rate_limited,
        elapsed,
    }
}

/// The tier known (20 per scaled minute), each direction 10 ms + 0–20 ms — 1 % of the window,
/// as 0–200 ms is of a minute — and real scheduling noise on top: every request succeeds,
/// at most a few 429s, and the simulator's rolling window, counted on arrival, held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_known_over_jittery_tcp() {
    let sim = Simulator::builder()
        .key(KEY, sim::Tier::openrouter_credited())
        .minute(MINUTE)
        .build();
    let tier = Tier::new("scaled-free").with_quota(Quota::new(20, MINUTE));
    let leg = Leg {
        base: Duration::from_millis(10),
        jitter: Duration::from_millis(20),
    };
    let out = drive(&sim, tier, leg, 100, 16).await;
    eprintln!("{out:?}");
    assert_eq!(out.succeeded, 100);
    assert!(out.rate_limited <= 3, "{} 429s", out.rate_limited);
    sim.check_invariants().unwrap();
    // The optimum is four windows after the first arrival: the run cannot be faster.
    assert!(out.elapsed >= MINUTE * 4, "{:?}", out.elapsed);
}

/// LiteLLM's current key limiter (a window anchored at the first request, `retry-after` =
/// the whole window) at 20 per scaled minute, the tier configured as 20 per minute: every
/// request succeeds, at most a few 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchored_window_server_over_jittery_tcp() {
    let sim = Simulator::builder()
        .key(KEY, sim::Tier::litellm_anchored(20))
        .minute(MINUTE)
        .build();
    let tier = Tier::new("scaled-rpm-20").with_quota(Quota::new(20, MINUTE));
    let leg = Leg {
        base: Duration::from_millis(10),
        jitter: Duration::from_millis(20),
    };
    let out = drive(&sim, tier, leg, 100, 16).await;
    eprintln!("{out:?}");
    assert_eq!(out.succeeded, 100);
    assert!(out.rate_limited <= 3, "{} 429s", out.rate_limited);
    sim.check_invariants().unwrap();
}
