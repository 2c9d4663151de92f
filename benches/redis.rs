//! RedisStore's admission beside a plain `INCR` round trip on the same Redis, and beside the
//! in-memory store: latency per operation (p50, p99) and throughput, on one key and on
//! 10 000 keys, one caller at a time and four concurrent callers on one connection.
//!
//! `cargo bench --features redis --bench redis` starts its own `redis-server` on a free
//! loopback port (skipped, with a message, when none is installed) and prints a table.
//! The tier is two quotas — an exact rolling log and a calendar day — that always admit, so
//! every admission runs the whole script: read the state, purge, check both, record, expire.

#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tower_quota::limit::store::{
    AcquireRequest, Decision, MemoryStore, QuotaSpec, RedisStore, Store,
};
use tower_quota::limit::KeySecret;

const OPS: usize = 20_000;
const WARMUP: usize = 2_000;
const NS_PER_S: u64 = 1_000_000_000;

fn specs() -> [QuotaSpec; 2] {
    [
        // An exact log over a millisecond that never fills: at 10 000 admissions per second
        // about ten entries live in it, and each admission purges about one.
        QuotaSpec::rolling(1, 1 << 40, NS_PER_S / 1_000),
        QuotaSpec::calendar(2, 1 << 40, 86_400 * NS_PER_S),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Incr,
    Redis,
    Memory,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Incr => "INCR round trip",
            Op::Redis => "RedisStore::acquire",
            Op::Memory => "MemoryStore::acquire",
        }
    }
}

struct Row {
    op: Op,
    keys: usize,
    tasks: usize,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

async fn one(op: Op, i: usize, keys: usize, conn: &mut ConnectionManager, store: &dyn Store) {
    let k = i % keys;
    match op {
        Op::Incr => {
            let _: i64 = redis::cmd("INCR")
                .arg(format!("bench-incr:{{{k}}}"))
                .query_async(conn)
                .await
                .expect("INCR");
        }
        Op::Redis | Op::Memory => {
            let specs = specs();
            let key = KeySecret::per_process().key(&k.to_le_bytes());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            let d = store
                .acquire(AcquireRequest::new(key, &specs, &[1, 1], now))
                .await
                .expect("acquire");
            assert_eq!(d, Decision::Admitted);
        }
    }
}

async fn measure(
    op: Op,
    keys: usize,
    tasks: usize,
    conn: &ConnectionManager,
    store: Arc<dyn Store>,
) -> Row {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut conn = conn.clone();
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(OPS / tasks);
            for i in 0..(WARMUP / tasks) {
                one(op, i * tasks + t, keys, &mut conn, &*store).await;
            }
            for i in 0..(OPS / tasks) {
                let t0 = Instant::now();
                one(op, i * tasks + t, keys, &mut conn, &*store).await;
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    Row {
        op,
        keys,
        tasks,
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        per_sec: (OPS + WARMUP) as f64 / elapsed.as_secs_f64(),
    }
}

fn main() {
    if !redis_common::available("the redis benchmark") {
        return;
    }
    let server = redis_common::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let secret = KeySecret::new("benchmark secret, sixteen bytes+").unwrap();
        let redis_store: Arc<dyn Store> =
            Arc::new(RedisStore::builder(secret).timeout(Duration::from_secs(5)).open(&server.url()).unwrap());
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut rows = Vec::new();
        for keys in [1, 10_000] {
            for tasks in [1, 4] {
                for op in [Op::Incr, Op::Redis, Op::Memory] {
                    let store = if op == Op::Memory { memory.clone() } else { redis_store.clone() };
                    rows.push(measure(op, keys, tasks, &conn, store).await);
                }
            }
        }
        println!("redis-server {} on loopback, {OPS} operations per row (after {WARMUP}), one connection", version(server.port()));
        println!();
        println!("| operation | keys | concurrent callers | p50 | p99 | operations/s | p50 vs INCR |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let stats = redis_common::command(server.port(), "INFO commandstats");
        for cmd in ["incr", "evalsha"] {
            if let Some(l) = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{cmd}:"))) {
                let per_call = l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")).unwrap_or("?");
                println!("Redis's own time per {}: {per_call} µs", cmd.to_uppercase());
            }
        }
        println!();
        for r in &rows {
            let incr = rows
                .iter()
                .find(|x| x.op == Op::Incr && x.keys == r.keys && x.tasks == r.tasks)
                .unwrap();
            println!(
                "| {} | {} | {} | {:.1} µs | {:.1} µs | {:.0} | {:.2}× |",
                r.op.name(),
                r.keys,
                r.tasks,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.per_sec,
                r.p50.as_secs_f64() / incr.p50.as_secs_f64(),
            );
        }
    });
}

fn version(port: u16) -> String {
    let info = redis_common::command(port, "INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}
