//! Four OS processes share one API key through one Redis (and through a three-master
//! Cluster), against the bundled simulator served over loopback with a rolling limit of 20
//! per (scaled) minute: the simulator — the ground truth — never sees more than 20 arrivals
//! in any window, answers no 429, and the four together use at least 95 % of the limit.
//!
//! The processes are this test binary run again (the `worker` test does the work when
//! `TQ_REDIS_WORKER` is set, and nothing otherwise). Skipped with a printed reason when
//! `redis-server` is not installed, unless `TOWER_QUOTA_REDIS=1`.

mod redis_common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis_common::{available, RedisCluster, RedisServer};
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::limit::store::redis::FaultPolicy;
use tower_quota::limit::store::RedisStore;
use tower_quota::limit::{KeyBy, KeySecret};
use tower_quota::sim::{Limit, Models, Simulator, Tier as SimTier};
use tower_quota::{Quota, RateLimitLayer, Tier};

/// The scaled minute.
const WINDOW: Duration = Duration::from_secs(2);
const LIMIT: u32 = 20;
const PROCESSES: usize = 4;
/// Requests in flight per process.
const CONCURRENCY: usize = 4;
/// How long the processes send: five whole windows and some.
const RUN: Duration = Duration::from_millis(11_000);
const WINDOWS: u32 = 5;
/// Absorbs the spread of the delay from admission (on Redis) to arrival (at the simulator)
/// on a loaded two-core machine: 5 % of the window.
const MARGIN: Duration = Duration::from_millis(100);
const API_KEY: &str = "sk-or-v1-shared-by-four";
const SECRET: &str = "tower-quota tests: four processes, one secret";

/// One run at a time: the two runs would share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn four_processes_on_one_redis() {
    if !available("four_processes_on_one_redis") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = RedisServer::start();
    run("one redis", &[server.url()], false);
}

#[test]
fn four_processes_on_a_cluster() {
    if !available("four_processes_on_a_cluster") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = RedisCluster::start();
    run("a three-node cluster", &cluster.urls(), true);
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn run(what: &str, urls: &[String], cluster: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::builder()
            .key(
                API_KEY,
                SimTier::new("rolling").with_limit(Limit::rolling(Models::All, LIMIT, WINDOW)),
            )
            .build();
        let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
        // Every process starts sending at the same moment, and stops at the same moment.
        let start = SystemTime::now() + Duration::from_millis(1_500);
        let end = start + RUN;
        let mut children = Vec::new();
        for i in 0..PROCESSES {
            // Each process is given another node of the cluster to find it from.
            let url = &urls[i % urls.len()];
            let spec = format!(
                "{url}|{}|{addr}|{}|{}|{i}",
                u8::from(cluster),
                epoch_ms(start),
                epoch_ms(end)
            );
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["worker", "--exact", "--nocapture", "--test-threads", "1"])
                .env("TQ_REDIS_WORKER", spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a worker process");
            children.push(child);
        }
        let mut reports = Vec::new();
        for mut child in children {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut out = String::new();
                    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
                    assert!(status.success(), "a worker failed: {out}");
                    // libtest may print `test worker ... ` on the same line first.
                    reports.extend(
                        out.lines()
                            .filter_map(|l| l.find("WORKER ").map(|i| l[i..].to_owned())),
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        server.shutdown().await;

        let stats = sim.stats();
        let admissions = &stats.admissions;
        let first = admissions.first().expect("admissions").at;
        let measured = WINDOW * WINDOWS;
        let within = admissions.iter().filter(|a| a.at - first < measured).count();
        let utilisation = within as f64 / f64::from(LIMIT * WINDOWS);
        let max = stats.max_admissions_in(Models::All, WINDOW);
        println!(
            "{PROCESSES} processes on {what}: {within} admissions in {WINDOWS} windows of {WINDOW:?} \
             (utilisation {:.1} %), at most {max} in any window, {} 429s, {} requests in all",
            utilisation * 100.0,
            stats.count(429),
            stats.requests,
        );
        for r in &reports {
            println!("  {r}");
        }
        assert_eq!(reports.len(), PROCESSES, "every worker reported");
        assert!(
            reports.iter().all(|r| r.contains(" errors=0")),
            "no request failed: {reports:?}"
        );
        assert!(
            reports.iter().all(|r| !r.contains(" ok=0 ")),
            "every process was admitted: {reports:?}"
        );
        assert_eq!(stats.count(429), 0, "no 429s");
        assert!(max <= LIMIT as usize, "{max} arrivals in one window");
        assert!(utilisation >= 0.95, "utilisation {utilisation}");
    });
}

/// A worker process: four requests in flight through the rate limiter on Redis, until the
/// end time; prints its counts.
#[test]
fn worker() {
    let Ok(spec) = std::env::var("TQ_REDIS_WORKER") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [url, cluster, addr, start, end, id] = parts[..] else {
        panic!("bad worker spec");
    };
    let ms = |s: &str| UNIX_EPOCH + Duration::from_millis(s.parse().unwrap());
    let (start, end) = (ms(start), ms(end));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let builder = RedisStore::builder(KeySecret::new(SECRET).unwrap())
            .prefix("tq-processes:")
            .timeout(Duration::from_secs(2))
            .on_fault(FaultPolicy::FailClosed);
        let store = if cluster == "1" {
            builder.open_cluster([url]).await.unwrap()
        } else {
            builder.open(url).unwrap()
        };
        let tier = Tier::new("rolling").with_quota(Quota::new(u64::from(LIMIT), WINDOW));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let svc = ServiceBuilder::new()
            .layer(
                RateLimitLayer::new(tier)
                    .key_by(KeyBy::ApiKey)
                    .with_store(store)
                    .with_margin(MARGIN)
                    .with_max_wait(None),
            )
            .service(client);
        let uri = format!("http://{addr}/api/v1/chat/completions");
        let wait = |t: SystemTime| t.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait(start)).await;
        let mut tasks = JoinSet::new();
        for _ in 0..CONCURRENCY {
            let svc = svc.clone();
            let uri = uri.clone();
            tasks.spawn(async move {
                let (mut ok, mut limited, mut errors) = (0u32, 0u32, 0u32);
                let work = async {
                    loop {
                        let req = Request::post(uri.as_str())
                            .header("authorization", format!("Bearer {API_KEY}"))
                            .body(Full::new(Bytes::from_static(br#"{"model":"m:free"}"#)))
                            .unwrap();
                        match svc.clone().oneshot(req).await {
                            Ok(resp) => {
                                let status = resp.status();
                                let _ = resp.into_body().collect().await;
                                match status.as_u16() {
                                    200 => ok += 1,
                                    429 => limited += 1,
                                    _ => errors += 1,
                                }
                            }
                            Err(e) => {
                                eprintln!("worker: {e}");
                                errors += 1;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(wait(end), work).await;
                (ok, limited, errors)
            });
        }
        let (mut ok, mut limited, mut errors) = (0, 0, 0);
        while let Some(r) = tasks.join_next().await {
            let (o, l, e) = r.unwrap();
            ok += o;
            limited += l;
            errors += e;
        }
        println!("WORKER {id} ok={ok} 429={limited} errors={errors}");
    });
}
