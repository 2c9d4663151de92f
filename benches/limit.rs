//! The limiter against governor: one key, 10 000 keys, a two-quota tier, the tower service
//! versus the bare service; and 10 000 waiters on one key (CPU while waiting, wake-ups per
//! admission, memory per key).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use governor::{Quota as GQuota, RateLimiter};
use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use tower_quota::limit::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreFuture, StoreSnapshot,
    UpdateRequest,
};
use tower_quota::limit::{Key, Limiter};
use tower_quota::{Quota, RateLimitLayer, Tier};

/// The in-memory store without its synchronous path: every call goes through a boxed
/// future, as a network store's would.
#[derive(Debug, Default)]
struct BoxedOnly(MemoryStore);

impl Store for BoxedOnly {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        self.0.acquire(req)
    }
    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        self.0.update(req)
    }
    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        self.0.snapshot(req)
    }
}

/// Polls a future once; the benchmarks only admit, so it is always ready.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmark expected an immediate admission"),
    }
}

/// The least any limiter that keeps an exact log on tokio's clock does for one admission:
/// a clock read, an uncontended `std` mutex, a map lookup with a one-multiply hash, and one
/// ring of timestamps checked and written. No tier, cost, margin, learned state, eviction or
/// second quota: the floor under `try_acquire_exact_log`, measured in the same run.
struct Floor {
    epoch: tokio::time::Instant,
    window_ns: u64,
    logs: std::sync::Mutex<HashMap<u64, FloorLog, BuildHasherDefault<MulHasher>>>,
}

struct FloorLog {
    ring: Vec<u64>,
    head: usize,
}

impl Floor {
    fn new(limit: usize, window_ns: u64) -> Floor {
        let mut logs = HashMap::default();
        logs.insert(
            42,
            FloorLog {
                ring: vec![0; limit],
                head: 0,
            },
        );
        Floor {
            epoch: tokio::time::Instant::now(),
            window_ns,
            logs: std::sync::Mutex::new(logs),
        }
    }

    fn admit(&self, key: u64) -> bool {
        let now = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        let now = now.as_secs() * 1_000_000_000 + u64::from(now.subsec_nanos()) + self.window_ns;
        let mut logs = self.logs.lock().unwrap();
        let Some(log) = logs.get_mut(&key) else {
            return false;
        };
        let oldest = log.ring[log.head];
        if oldest + self.window_ns > now {
            return false;
        }
        log.ring[log.head] = now;
        log.head = if log.head + 1 == log.ring.len() {
            0
        } else {
            log.head + 1
        };
        true
    }
}

/// A hasher of one `u64`: one multiply (the store's own is as cheap).
#[derive(Default)]
struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// An exact (small-N) rolling window that a benchmark loop never fills: 1000 per µs.
fn exact() -> Quota {
    Quota::new(1000, Duration::from_micros(1))
}

/// A bucketed (large-N) rolling window that never fills.
fn bucketed() -> Quota {
    Quota::per_second(u64::MAX / 4)
}

fn one_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_key");
    let gov = RateLimiter::direct(GQuota::per_second(NonZeroU32::MAX));
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(gov.check()).is_ok())
    });
    // The same check on std's monotonic clock (what a limiter that must follow
    // `tokio::time::Instant` pays for its clock), instead of governor's TSC-based default.
    let gov_std = RateLimiter::direct_with_clock(
        GQuota::per_second(NonZeroU32::MAX),
        governor::clock::MonotonicClock,
    );
    g.bench_function("governor_check_std_clock", |b| {
        b.iter(|| black_box(gov_std.check()).is_ok())
    });
    let key = Key::of("alice");
    let exact = Limiter::new(Tier::new("exact").with_quota(exact()));
    g.bench_function("acquire_exact_log", |b| {
        b.iter(|| now(exact.acquire(black_box(key), 1)).unwrap())
    });
    g.bench_function("try_acquire_exact_log", |b| {
        b.iter(|| exact.try_acquire(black_box(key), 1).unwrap())
    });
    let strict = Limiter::new(Tier::new("strict").with_quota(Quota::per_minute(20)));
    g.bench_function("try_acquire_20_per_minute_full", |b| {
        b.iter(|| black_box(strict.try_acquire(black_box(key), 1)).is_ok())
    });
    let floor = Floor::new(1000, 1_000);
    g.bench_function("floor_clock_lock_map_log", |b| {
        b.iter(|| floor.admit(black_box(42)))
    });
    g.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    g.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    let boxed =
        Limiter::new(Tier::new("exact").with_quota(self::exact())).with_store(BoxedOnly::default());
    g.bench_function("acquire_exact_log_boxed_store_future", |b| {
        b.iter(|| now(boxed.acquire(black_box(key), 1)).unwrap())
    });
    let bucketed = Limiter::new(Tier::new("bucketed").with_quota(bucketed()));
    g.bench_function("acquire_bucketed_log", |b| {
        b.iter(|| now(bucketed.acquire(black_box(key), 1)).unwrap())
    });
    g.finish();
}

fn many_keys(c: &mut Criterion) {
    const KEYS: u64 = 10_000;
    let mut g = c.benchmark_group("keys_10k");
    let gov = RateLimiter::keyed(GQuota::per_second(NonZeroU32::MAX));
    let mut i = 0u64;
    g.bench_function("governor_keyed_check", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(gov.check_key(&i)).is_ok()
        })
    });
    let limiter = Limiter::new(Tier::new("exact").with_quota(exact()));
    let keys: Vec<Key> = (0..KEYS).map(|i| Key::of(&i)).collect();
    let mut i = 0usize;
    g.bench_function("acquire_exact_log", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            now(limiter.acquire(keys[i], 1)).unwrap()
        })
    });
    let mut i = 0usize;
    g.bench_function("try_acquire_exact_log", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.try_acquire(keys[i], 1).unwrap()
        })
    });
    // The same keys admitted with logs as long as a refused key's: 1000 per 20 ms, each key
    // used every 10 000 admissions (every 1-2 ms), so each holds 10-20 entries, never full.
    let busy =
        Limiter::new(Tier::new("busy").with_quota(Quota::new(1000, Duration::from_millis(20))));
    let mut i = 0usize;
    g.bench_function("try_acquire_busy_log", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            busy.try_acquire(keys[i], 1).unwrap()
        })
    });
    // The same keys refused: each has used its 20 an hour (an exact log of 20 entries).
    let full = Limiter::new(Tier::new("full").with_quota(Quota::per_hour(20)));
    for &key in &keys {
        while full.try_acquire(key, 1).is_ok() {}
    }
    let mut i = 0usize;
    g.bench_function("try_acquire_refused", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            full.try_acquire(keys[i], 1).is_err()
        })
    });
    g.finish();
}

fn two_quotas(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_quota_tier");
    let limiter = Limiter::new(
        Tier::new("two")
            .with_quota(exact())
            .with_quota(Quota::per_utc_day(u64::MAX / 4)),
    );
    let key = Key::of("alice");
    g.bench_function("acquire_rolling_and_calendar", |b| {
        b.iter(|| now(limiter.acquire(black_box(key), 1)).unwrap())
    });
    g.bench_function("try_acquire_rolling_and_calendar", |b| {
        b.iter(|| limiter.try_acquire(black_box(key), 1).unwrap())
    });
    g.finish();
}

fn service(c: &mut Criterion) {
    let mut g = c.benchmark_group("service");
    let inner = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let mut bare = inner;
    g.bench_function("bare", |b| {
        b.iter(|| {
            now(std::future::poll_fn(|cx| bare.poll_ready(cx))).unwrap();
            now(bare.call(Request::new(()))).unwrap()
        })
    });
    let mut limited = RateLimitLayer::new(Tier::new("exact").with_quota(exact())).layer(inner);
    g.bench_function("rate_limited", |b| {
        b.iter(|| {
            now(std::future::poll_fn(|cx| limited.poll_ready(cx))).unwrap();
            now(limited.call(Request::new(()))).unwrap()
        })
    });
    let mut unlearned = RateLimitLayer::new(Tier::new("exact").with_quota(exact()))
        .learn(false)
        .layer(inner);
    g.bench_function("rate_limited_no_learning", |b| {
        b.iter(|| {
            now(std::future::poll_fn(|cx| unlearned.poll_ready(cx))).unwrap();
            now(unlearned.call(Request::new(()))).unwrap()
        })
    });
    g.finish();
}

/// CPU nanoseconds this thread has run (Linux), or 0.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A future that counts how often it is polled.
struct Counted<F> {
    inner: F,
    polls: Arc<AtomicU64>,
}

impl<F: Future + Unpin> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll(cx)
    }
}

/// 10 000 waiters on one key paced at 10 000 per second (real time, one thread): CPU spent,
/// polls per admission; then memory per key.
fn waiters(_c: &mut Criterion) {
    const N: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (cpu, wall, polls) = rt.block_on(async {
        // 1000 per 100 ms: the 10 000 waiters are admitted over about one second.
        let limiter =
            Limiter::new(Tier::new("t").with_quota(Quota::new(1000, Duration::from_millis(100))))
                .with_max_wait(None)
                .with_max_queue(N as usize);
        let polls = Arc::new(AtomicU64::new(0));
        let cpu0 = thread_cpu_ns();
        let t0 = std::time::Instant::now();
        let mut handles = Vec::new();
        for _ in 0..N {
            let fut = Counted {
                inner: limiter.acquire(Key::GLOBAL, 1),
                polls: polls.clone(),
            };
            handles.push(tokio::spawn(fut));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        (
            thread_cpu_ns() - cpu0,
            t0.elapsed(),
            polls.load(Ordering::Relaxed),
        )
    });
    println!(
        "waiters_10k: {N} admissions in {wall:?} wall, {:.1} ms CPU ({:.0} ns CPU per admission), \
         {polls} polls = {:.2} polls per admission",
        cpu as f64 / 1e6,
        cpu as f64 / N as f64,
        polls as f64 / N as f64
    );

    // Memory per key.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let free = tower_quota::tiers::openrouter::free();
        let store = Arc::new(MemoryStore::new());
        let limiter = Limiter::new(free).with_store(store.clone());
        let empty = store.bytes();
        for i in 0..N {
            limiter.acquire(Key::of(&i), 1).await.unwrap();
        }
        let one = store.bytes() - empty;
        // Distinct admission times, so that each is its own log entry.
        for _ in 0..19 {
            tokio::time::advance(Duration::from_millis(1)).await;
            for i in 0..N {
                limiter.acquire(Key::of(&i), 1).await.unwrap();
            }
        }
        let full = store.bytes() - empty;
        tokio::time::sleep(Duration::from_secs(86_400 + 61)).await;
        store.evict_idle(limiter.now_ns());
        println!(
            "memory: {} B per active key (1 admission, OpenRouter free tier), {} B per key at \
             20/20 per minute, {} keys and {} B left once idle and swept; Acquire future {} B",
            one / N as usize,
            full / N as usize,
            store.len(),
            store.bytes(),
            std::mem::size_of::<tower_quota::limit::Acquire>()
        );
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    targets = one_key, many_keys, two_quotas, service, waiters
}
criterion_main!(benches);
