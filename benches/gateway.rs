//! Multi-core: a gateway in reject mode over 10 000 keys beside `tower_governor` (the
//! server-side peer) and governor's keyed limiter, and the wait mode with 16 concurrent
//! callers on one key beside governor's `until_ready` — on a 2-worker multi-thread tokio
//! runtime, every peer in the same run.
//!
//! The gateway: one tier keyed by a header (`RateLimitLayer` with `KeyBy::Header`, reject
//! mode; `tower_governor`'s `GovernorLayer` with a key extractor reading the same header, the
//! `HeaderValue` itself as the key: no allocation) over a `service_fn` answering 200. Each
//! iteration sends a batch of 10 000 requests over the 10 000 keys, in a fixed random order,
//! from 4 tasks; a rejection becomes a 429 response in both (`tower_governor` builds its own;
//! ours is the typed `RateLimited` error turned into a response by
//! `RateLimited::to_response`, as a gateway's error handler does). Beside them: the bare
//! service (what building and driving the requests costs), and the two limiters called
//! directly on the same keys (`Limiter::try_acquire`, governor's `check_key`), no request.
//!
//! The quota: 10 000 requests a day per key. tower-quota holds it as a strict rolling window
//! (no 24-hour interval ever holds more than 10 000); governor as a GCRA with a burst of
//! 10 000 and one request back every 8.64 s, whatever happened in the last 24 hours. Two
//! mixes:
//!
//! - `admit`: nothing is over quota, every request is admitted;
//! - `half`: the even keys used their whole quota before the run, so half the requests are
//!   rejected;
//! - `attack`: every other request comes from one key over its quota (a client hammering
//!   its limit), the others from 5 000 keys under theirs: half the requests are rejected,
//!   all of one key.
//!
//! Every key gets one request per batch; the admitted share of one batch is checked before
//! and after each benchmark. The three tower-quota rows of a mix share one limiter: a run of
//! them sends a few thousand batches with the short runs of the README, well under the
//! 10 000 that would fill the other keys. Short runs:
//! `cargo bench --bench gateway -- --warm-up-time 1 --measurement-time 3`.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use governor::{DefaultKeyedRateLimiter, Quota as GQuota, RateLimiter};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tower_quota::limit::{Key, KeyBy, Limiter, Mode, RateLimited};
use tower_quota::{Quota, RateLimitLayer, Tier};

/// Distinct keys.
const KEYS: usize = 10_000;
/// Requests per iteration: one per key.
const BATCH: usize = KEYS;
/// Concurrent tasks sending the batch.
const TASKS: usize = 4;
/// Every key's quota: this many requests a day.
const PER_DAY: u32 = 10_000;
const DAY: Duration = Duration::from_secs(86_400);
/// The header requests are keyed by.
const KEY_HEADER: &str = "x-client-key";

/// The runtime every benchmark runs on: two workers, both cores.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// The 10 000 keys, as header values and as strings, and the order of one batch.
struct Work {
    values: Vec<HeaderValue>,
    strings: Vec<String>,
    order: Vec<u32>,
}

impl Work {
    fn new() -> Arc<Work> {
        let strings: Vec<String> = (0..KEYS).map(|i| format!("sk-client-{i:05}")).collect();
        let values = strings
            .iter()
            .map(|s| HeaderValue::from_str(s).unwrap())
            .collect();
        // One request per key, in an order shuffled with xorshift64 (fixed seed): every key
        // gets exactly one request per batch, and each task's share spreads over all keys.
        let mut order: Vec<u32> = (0..KEYS as u32).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        Arc::new(Work {
            values,
            strings,
            order,
        })
    }

    /// The same keys under attack: every other request of a batch comes from key 0, over
    /// its quota (a client hammering its limit), the others from 5 000 other keys.
    fn attacked(&self) -> Arc<Work> {
        let others = self.order.iter().copied().filter(|&k| k != 0);
        let order = others
            .take(KEYS / 2)
            .flat_map(|k| [0, k])
            .collect::<Vec<u32>>();
        Arc::new(Work {
            values: self.values.clone(),
            strings: self.strings.clone(),
            order,
        })
    }

    fn request(&self, key: usize) -> Request<()> {
        let mut req = Request::new(());
        *req.uri_mut() = http::Uri::from_static("/api/v1/chat/completions");
        req.headers_mut().insert(
            HeaderName::from_static(KEY_HEADER),
            self.values[key].clone(),
        );
        req
    }

    /// The share of task `t`.
    fn share(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        self.order[t..].iter().step_by(TASKS).map(|&k| k as usize)
    }
}

/// The upstream: answers 200 at once.
fn ok_service(
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(Body::empty())) })
}

/// The status a client sees: a `RateLimited` error becomes its 429 (what a gateway's error
/// handler does with it).
fn status<E: Into<BoxError>>(result: Result<Response<Body>, E>) -> StatusCode {
    match result {
        Ok(resp) => resp.status(),
        Err(e) => {
            let e = e.into();
            match e.downcast_ref::<RateLimited>() {
                Some(limited) => limited.to_response(None, Body::empty()).status(),
                None => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
    }
}

/// Sends one batch through `svc` from `TASKS` tasks; returns how many were admitted.
async fn batch<S>(svc: &S, work: &Arc<Work>) -> usize
where
    S: Service<Request<()>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let mut svc = svc.clone();
        let work = Arc::clone(work);
        set.spawn(async move {
            let mut admitted = 0;
            for k in work.share(t) {
                let req = work.request(k);
                let svc = match svc.ready().await {
                    Ok(svc) => svc,
                    Err(_) => panic!("the service failed"),
                };
                admitted += usize::from(status(svc.call(req).await) == StatusCode::OK);
            }
            admitted
        });
    }
    set.join_all().await.into_iter().sum()
}

/// governor's keyed limiter, directly: the same batch as `check_key` calls on `String` keys,
/// no request built.
async fn batch_governor(gov: &Arc<DefaultKeyedRateLimiter<String>>, work: &Arc<Work>) -> usize {
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let gov = Arc::clone(gov);
        let work = Arc::clone(work);
        set.spawn(async move {
            work.share(t)
                .filter(|&k| gov.check_key(&work.strings[k]).is_ok())
                .count()
        });
    }
    set.join_all().await.into_iter().sum()
}

/// tower_governor's key: the header's value, cloned (a reference count, no copy).
#[derive(Clone)]
struct HeaderKey;

impl KeyExtractor for HeaderKey {
    type Key = HeaderValue;

    fn extract<T>(&self, req: &Request<T>) -> Result<HeaderValue, GovernorError> {
        req.headers()
            .get(KEY_HEADER)
            .cloned()
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

fn gquota() -> GQuota {
    GQuota::with_period(DAY / PER_DAY)
        .unwrap()
        .allow_burst(NonZeroU32::new(PER_DAY).unwrap())
}

/// The tier of the gateway's clients.
fn tier() -> Tier {
    Tier::new("clients").with_quota(Quota::new(u64::from(PER_DAY), DAY))
}

/// tower-quota's layer over `limiter`: keyed by the header, in reject mode.
fn quota_layer(limiter: &Limiter) -> RateLimitLayer {
    RateLimitLayer::with_limiter(limiter.clone())
        .key_by(KeyBy::Header(HeaderName::from_static(KEY_HEADER)))
        .with_mode(Mode::Reject)
}

/// tower-quota's limiter directly: the same batch as `try_acquire` calls, each key hashed from
/// its string as `KeyBy::Header` hashes the header, no request built.
async fn batch_limiter(limiter: &Limiter, work: &Arc<Work>) -> usize {
    let mut set = JoinSet::new();
    for t in 0..TASKS {
        let limiter = limiter.clone();
        let work = Arc::clone(work);
        set.spawn(async move {
            let secret = limiter.key_secret();
            work.share(t)
                .filter(|&k| {
                    let key = secret.key(work.strings[k].as_bytes());
                    limiter.try_acquire(key, 1).is_ok()
                })
                .count()
        });
    }
    set.join_all().await.into_iter().sum()
}

/// Uses up the whole quota of the even keys (`half`), one request at a time (a quota of
/// requests counts 1 per request whatever its cost), 2 500 keys on each worker.
fn exhaust_even_keys(rt: &Runtime, limiter: &Limiter, work: &Arc<Work>) {
    rt.block_on(async {
        let mut set = JoinSet::new();
        for t in 0..2 {
            let limiter = limiter.clone();
            let work = Arc::clone(work);
            set.spawn(async move {
                for k in (2 * t..KEYS).step_by(4) {
                    let key = limiter.key_secret().key(work.values[k].as_bytes());
                    for _ in 0..PER_DAY {
                        limiter.try_acquire(key, 1).unwrap();
                    }
                    assert!(limiter.try_acquire(key, 1).is_err());
                }
            });
        }
        set.join_all().await;
    })
}

/// Benchmarks `run` (one batch, returning how many were admitted), checking the admitted
/// share of one batch before and after.
fn bench_batch<F, Fut>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    name: &str,
    mix: &str,
    run: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    check(name, mix, "before", rt.block_on(run()));
    g.bench_function(BenchmarkId::new(name, mix), |b| {
        b.iter(|| rt.block_on(run()))
    });
    check(name, mix, "after", rt.block_on(run()));
}

/// Prints and checks the admitted share of one batch: all of it (`admit`, and with no
/// limiter), half (`half`).
fn check(peer: &str, mix: &str, when: &str, admitted: usize) {
    let share = admitted as f64 / BATCH as f64;
    eprintln!("{peer}/{mix}, {when}: {admitted} of {BATCH} admitted ({share:.3})");
    let expected = match mix {
        "half" | "attack" if peer != "bare_service" => BATCH / 2,
        _ => BATCH,
    };
    assert_eq!(admitted, expected, "{peer}/{mix}, {when}");
}

fn gateway(c: &mut Criterion) {
    let rt = runtime();
    let work = &Work::new();
    let mut g = c.benchmark_group("gateway_10k_keys");
    g.throughput(Throughput::Elements(BATCH as u64));
    // An iteration is 10 000 requests: a few milliseconds.
    g.sample_size(20);

    let attacked = &Work::attacked(work);
    for mix in ["admit", "half", "attack"] {
        let half = mix == "half";
        let attack = mix == "attack";
        let work = if attack { attacked } else { work };

        // No limiter: the cost of building requests and driving them.
        let bare = &ok_service();
        bench_batch(&mut g, &rt, "bare_service", mix, || batch(bare, work));

        // tower-quota: the strict rolling window. One limiter for the three rows (each key
        // gets a few thousand requests in all, under its 10 000).
        let limiter = &Limiter::new(tier());
        if half {
            exhaust_even_keys(&rt, limiter, work);
        }
        // Under attack, batches go fast: a limiter per row, so that the 5 000 keys stay
        // under their 10 000 a day.
        let attacked_limiter = || {
            let limiter = Limiter::new(tier());
            let key = limiter.key_secret().key(work.values[0].as_bytes());
            for _ in 0..PER_DAY {
                limiter.try_acquire(key, 1).unwrap();
            }
            limiter
        };
        let limiter = &if attack {
            attacked_limiter()
        } else {
            limiter.clone()
        };
        let svc = &quota_layer(limiter).layer(ok_service());
        bench_batch(&mut g, &rt, "tower_quota", mix, || batch(svc, work));
        // Without learning from responses: an inbound gateway's own handler sends no
        // rate-limit headers to learn from.
        let limiter = &if attack {
            attacked_limiter()
        } else {
            limiter.clone()
        };
        let svc = &quota_layer(limiter).learn(false).layer(ok_service());
        bench_batch(&mut g, &rt, "tower_quota_no_learn", mix, || {
            batch(svc, work)
        });

        // tower_governor: GCRA.
        let config = GovernorConfigBuilder::default()
            .key_extractor(HeaderKey)
            .period(DAY / PER_DAY)
            .burst_size(PER_DAY)
            .finish()
            .unwrap();
        let n = NonZeroU32::new(PER_DAY).unwrap();
        if half {
            for v in work.values.iter().step_by(2) {
                config.limiter().check_key_n(v, n).unwrap().unwrap();
            }
        }
        if attack {
            config
                .limiter()
                .check_key_n(&work.values[0], n)
                .unwrap()
                .unwrap();
        }
        let governed = &GovernorLayer::new(config).layer(ok_service());
        bench_batch(&mut g, &rt, "tower_governor", mix, || batch(governed, work));

        // The limiters directly, no request: tower-quota's `try_acquire`, governor's
        // `check_key`.
        let limiter = &if attack {
            attacked_limiter()
        } else {
            limiter.clone()
        };
        bench_batch(&mut g, &rt, "tower_quota_try_acquire", mix, || {
            batch_limiter(limiter, work)
        });
        let gov = &Arc::new(RateLimiter::keyed(gquota()));
        if half {
            for k in work.strings.iter().step_by(2) {
                gov.check_key_n(k, n).unwrap().unwrap();
            }
        }
        if attack {
            gov.check_key_n(&work.strings[0], n).unwrap().unwrap();
        }
        bench_batch(&mut g, &rt, "governor_keyed", mix, || {
            batch_governor(gov, work)
        });
    }
    g.finish();
}

/// Callers on one key, each acquiring this many times per iteration.
const CALLERS: usize = 16;
const PER_CALLER: usize = 1_000;

/// 16 tasks acquiring on one key, never held (the quota does not fill).
fn wait_one_key(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("wait_16_callers_one_key");
    g.throughput(Throughput::Elements((CALLERS * PER_CALLER) as u64));
    g.sample_size(20);

    // A bucketed rolling window that never fills.
    let tier = Tier::new("one key").with_quota(Quota::per_second(u64::MAX / 4));

    let limiter = Limiter::new(tier.clone());
    let key = Key::of("sk-team");
    g.bench_function("tower_quota_acquire", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = JoinSet::new();
                for _ in 0..CALLERS {
                    let limiter = limiter.clone();
                    set.spawn(async move {
                        for _ in 0..PER_CALLER {
                            limiter.acquire(key, 1).await.unwrap();
                        }
                    });
                }
                set.join_all().await;
            })
        })
    });

    // The layer in wait mode (the default), every request on one key.
    let svc = RateLimitLayer::new(tier).layer(ok_service());
    g.bench_function("tower_quota_layer_wait", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = JoinSet::new();
                for _ in 0..CALLERS {
                    let svc = svc.clone();
                    set.spawn(async move {
                        for _ in 0..PER_CALLER {
                            let resp = svc.clone().oneshot(Request::new(())).await.unwrap();
                            assert_eq!(resp.status(), StatusCode::OK);
                        }
                    });
                }
                set.join_all().await;
            })
        })
    });

    let gov = Arc::new(RateLimiter::direct(GQuota::per_second(NonZeroU32::MAX)));
    g.bench_function("governor_until_ready", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = JoinSet::new();
                for _ in 0..CALLERS {
                    let gov = Arc::clone(&gov);
                    set.spawn(async move {
                        for _ in 0..PER_CALLER {
                            gov.until_ready().await;
                        }
                    });
                }
                set.join_all().await;
            })
        })
    });
    g.finish();
}

criterion_group!(benches, gateway, wait_one_key);
criterion_main!(benches);
