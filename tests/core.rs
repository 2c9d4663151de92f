//! Regression tests for the core under tower's contract and a hostile world (issue 9): each
//! test is a probe that failed before its fix.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::clock::WallClock;
use tower_quota::limit::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreError, StoreFuture,
    StoreSnapshot, UpdateRequest,
};
use tower_quota::limit::{Key, KeyBy, Limiter, Mode, RateLimited, Reason};
use tower_quota::retry::{Backoff, RetryInfo, StopReason, Verdict};
use tower_quota::{Quota, RateLimitLayer, RetryAfterLayer, Tier};

const SEC: Duration = Duration::from_secs(1);

fn per(n: u64, w: Duration) -> Tier {
    Tier::new("t").with_quota(Quota::new(n, w))
}

fn keyed(key: &str) -> Request<()> {
    Request::builder().header("x-key", key).body(()).unwrap()
}

/// A service with one request slot at a time behind a `Buffer` of 1: `poll_ready` reserves
/// the slot, as a tonic `Channel` does.
fn buffered() -> Buffer<Request<()>, <OkSvc as Service<Request<()>>>::Future> {
    Buffer::new(OkSvc, 1)
}

#[derive(Clone)]
struct OkSvc;

impl Service<Request<()>> for OkSvc {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

// === 1. A waiting request never holds the inner service's readiness ===

#[tokio::test(start_paused = true)]
async fn a_waiting_key_does_not_starve_another_key_behind_a_buffer() {
    let layer = RateLimitLayer::new(per(1, 60 * SEC))
        .key_by(KeyBy::Header(http::HeaderName::from_static("x-key")));
    let svc = layer.layer(buffered());
    svc.clone().oneshot(keyed("a")).await.unwrap();
    // More key-A requests wait than the buffer has slots.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(tokio::spawn(svc.clone().oneshot(keyed("a"))));
    }
    while layer.limiter().waiting() < 3 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    svc.clone().oneshot(keyed("b")).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "key B passed the waiting A requests"
    );
    assert_eq!(layer.limiter().waiting(), 3, "the backlog is visible");
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), 180 * SEC);
    assert_eq!(layer.limiter().waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_key_does_not_starve_another_key_on_four_threads() {
    let layer = RateLimitLayer::new(per(1, 3600 * SEC))
        .key_by(KeyBy::Header(http::HeaderName::from_static("x-key")))
        .with_max_wait(None);
    let svc = layer.layer(buffered());
    svc.clone().oneshot(keyed("a")).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(tokio::spawn(svc.clone().oneshot(keyed("a"))));
    }
    for _ in 0..10_000 {
        if layer.limiter().waiting() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(layer.limiter().waiting(), 4);
    // Each of 50 other keys gets through while the A requests wait for an hour.
    let mut others = Vec::new();
    for i in 0..50 {
        others.push(tokio::spawn(svc.clone().oneshot(keyed(&format!("b{i}")))));
    }
    for o in others {
        let done = tokio::time::timeout(30 * SEC, o).await;
        done.expect("another key was starved").unwrap().unwrap();
    }
    for w in waiting {
        w.abort();
    }
}

/// An admitted request whose clone of the inner service is not ready at once (a
/// `ConcurrencyLimit` of 1 held by another request) is driven ready by its response future:
/// woken when the slot frees, called then, answered.
#[tokio::test(start_paused = true)]
async fn an_admitted_request_waits_for_the_inner_service_to_be_ready() {
    let (release, gate) = tokio::sync::watch::channel(false);
    let inner = tower::limit::ConcurrencyLimit::new(
        service_fn(move |_req: Request<()>| {
            let mut gate = gate.clone();
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<_, Infallible>(Response::new(()))
            }
        }),
        1,
    );
    let svc = RateLimitLayer::new(per(10, SEC)).layer(inner);
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !first.is_finished() && !second.is_finished(),
        "the first holds the slot, the second waits for it"
    );
    release.send(true).unwrap();
    first.await.unwrap().unwrap();
    tokio::time::timeout(SEC, second)
        .await
        .expect("woken once the slot freed")
        .unwrap()
        .unwrap();
}

/// An inner service that fails its readiness fails the request with its error, whether
/// it fails at once or after a wait for admission.
#[tokio::test(start_paused = true)]
async fn the_inner_services_readiness_error_is_the_requests() {
    #[derive(Clone)]
    struct Broken;
    impl Service<Request<()>> for Broken {
        type Response = Response<()>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<()>, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("the connection pool is closed".into()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let svc = RateLimitLayer::new(per(1, SEC)).layer(Broken);
    for _ in 0..2 {
        // The first is admitted at once, the second after a one-second wait.
        let e = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(e.to_string(), "the connection pool is closed");
    }
}

// === 2. The queue is bounded and knows positions ===

#[tokio::test(start_paused = true)]
async fn a_queue_position_past_max_wait_fails_at_once_with_an_honest_retry_after() {
    let limiter = Limiter::new(per(20, 60 * SEC)).with_max_wait(Some(300 * SEC));
    let mut waiting = Vec::new();
    for _ in 0..20 {
        limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    }
    // The head goes at 60 s, and 20 more each minute after: positions 0..100 make the
    // 5-minute bound, the 101st cannot.
    for _ in 0..100 {
        let l = limiter.clone();
        waiting.push(tokio::spawn(async move { l.acquire(Key::GLOBAL, 1).await }));
    }
    while limiter.waiting() < 100 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let err = limiter.acquire(Key::GLOBAL, 1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once");
    let limited = err.as_rate_limited().unwrap();
    assert_eq!(limited.reason(), Reason::MaxWait);
    // 100 ahead and itself: the 101st admission from the head's needs 5 more windows after
    // it, so never before 360 s.
    assert_eq!(limited.retry_after(), Some(360 * SEC));
    for w in waiting {
        w.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_fast() {
    let limiter = Limiter::new(per(1, 60 * SEC))
        .with_max_queue(3)
        .with_max_wait(None);
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let l = limiter.clone();
        waiting.push(tokio::spawn(async move { l.acquire(Key::GLOBAL, 1).await }));
    }
    while limiter.waiting() < 3 {
        tokio::task::yield_now().await;
    }
    let err = limiter.acquire(Key::GLOBAL, 1).await.unwrap_err();
    let limited = err.as_rate_limited().unwrap();
    assert_eq!(limited.reason(), Reason::QueueFull);
    assert_eq!(limited.retry_after(), Some(240 * SEC));
    // Another key is not affected.
    limiter.acquire(Key::of("other"), 1).await.unwrap();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
}

// === 3. A tier is its name and its quotas ===

#[tokio::test(start_paused = true)]
async fn two_tiers_with_one_name_never_share_or_wipe_state() {
    let minute = Tier::new("x").with_quota(Quota::per_minute(1));
    let daily = Tier::new("x").with_quota(Quota::per_utc_day(100));
    let limiter = Limiter::new(minute.clone()).with_max_wait(None);
    let key = Key::of("k");
    let start = Instant::now();
    limiter.acquire_with(key, &minute, 1).await.unwrap();
    limiter.acquire_with(key, &daily, 1).await.unwrap();
    limiter.acquire_with(key, &minute, 1).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC, "1/min admitted 2 in a minute");
    assert_eq!(
        limiter.snapshot_with(key, &daily).await.unwrap().windows[0].used,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn quota_state_follows_the_quota_not_its_position() {
    let a = Tier::new("x")
        .with_quota(Quota::per_minute(2))
        .with_quota(Quota::per_hour(3));
    let b = Tier::new("x")
        .with_quota(Quota::per_hour(3))
        .with_quota(Quota::per_minute(2));
    let limiter = Limiter::new(a.clone()).with_mode(Mode::Reject);
    let key = Key::of("k");
    limiter.acquire_with(key, &a, 1).await.unwrap();
    limiter.acquire_with(key, &b, 1).await.unwrap();
    // Reordered, the same tier: the minute holds 2, so the third is refused.
    assert!(limiter.acquire_with(key, &b, 1).await.is_err());
    let snap = limiter.snapshot_with(key, &b).await.unwrap();
    assert_eq!(snap.windows[0].quota, Quota::per_hour(3));
    assert_eq!((snap.windows[0].used, snap.windows[1].used), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_named_tiers_on_four_threads_keep_their_own_counts() {
    let minute = Tier::new("x").with_quota(Quota::per_hour(10));
    let daily = Tier::new("x").with_quota(Quota::per_utc_day(1000));
    let limiter = Limiter::new(minute.clone()).with_mode(Mode::Reject);
    let key = Key::of("k");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (l, t) = (
            limiter.clone(),
            if i % 2 == 0 {
                minute.clone()
            } else {
                daily.clone()
            },
        );
        tasks.push(tokio::spawn(async move {
            l.acquire_with(key, &t, 1).await.is_ok()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(
        admitted,
        10 + 100,
        "10 under the hourly tier, all 100 under the daily one"
    );
}

// === 4. Reject mode with a network store decides each request on the store's answer ===

/// The in-memory store behind an await, as every network store is.
#[derive(Debug, Default)]
struct Remote {
    inner: MemoryStore,
    updates: AtomicUsize,
    fail_updates: bool,
    hang_updates: bool,
}

async fn yield_once() {
    tokio::task::yield_now().await
}

impl Store for Remote {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            yield_once().await;
            self.inner.acquire(req).await
        })
    }
    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.hang_updates {
                std::future::pending::<()>().await;
            }
            yield_once().await;
            if self.fail_updates {
                return Err(StoreError::new("connection lost"));
            }
            self.inner.update(req).await
        })
    }
    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        self.inner.snapshot(req)
    }
}

#[tokio::test(start_paused = true)]
async fn reject_mode_with_a_network_store_admits_what_fits() {
    let layer = RateLimitLayer::new(per(10, 60 * SEC))
        .with_store(Remote::default())
        .with_mode(Mode::Reject);
    let svc = layer.layer(OkSvc);
    let results = futures_join(
        (0..5)
            .map(|_| svc.clone().oneshot(Request::new(())))
            .collect(),
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    let more = futures_join(
        (0..7)
            .map(|_| svc.clone().oneshot(Request::new(())))
            .collect(),
    )
    .await;
    let refused: Vec<_> = more
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.downcast_ref::<RateLimited>().unwrap().retry_after())
        .collect();
    assert_eq!(
        refused,
        vec![Some(60 * SEC); 2],
        "5 more fit, 2 do not, each says when"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_network_store_is_not_serialised_on_four_threads() {
    for mode in [Mode::Reject, Mode::Wait] {
        let layer = RateLimitLayer::new(per(40, 3600 * SEC))
            .with_store(Remote::default())
            .with_mode(mode);
        let svc = layer.layer(OkSvc);
        let mut tasks = Vec::new();
        for _ in 0..40 {
            tasks.push(tokio::spawn(svc.clone().oneshot(Request::new(()))));
        }
        for t in tasks {
            t.await.unwrap().expect("every request fits the quota");
        }
        let refused = svc.clone().oneshot(Request::new(())).await;
        if mode == Mode::Reject {
            assert!(refused.is_err());
        }
    }
}

/// Polls every future to completion, concurrently, on this task.
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

// === 5. Absurd delays saturate, never panic ===

fn status(code: u16, headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(code);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::new())).unwrap()
}

fn counting(
    calls: Arc<AtomicUsize>,
    answer: impl Fn(usize) -> Result<Response<Full<Bytes>>, BoxError> + Clone + Send + 'static,
) -> impl Service<
    Request<tower_quota::retry::ReplayBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |_req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let out = answer(n);
        async move { out }
    })
}

fn post() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn absurd_delays_wait_forever_rather_than_panic() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = counting(calls.clone(), |_| Ok(status(503, &[])));
    // A decision asking for Duration::MAX.
    let forever = RetryAfterLayer::new()
        .with_decide(|_: &tower_quota::retry::Attempt<'_, BoxError>| {
            Verdict::RetryAfter(Duration::MAX)
        })
        .layer(svc.clone());
    let pending = tokio::time::timeout(86_400 * 365 * SEC, forever.oneshot(post())).await;
    assert!(pending.is_err(), "still waiting after a year, and no panic");
    // A backoff of Duration::MAX, and a server delay of Duration::MAX with max_wait MAX.
    let backoff = RetryAfterLayer::new()
        .with_backoff(Backoff::new(Duration::MAX, Duration::MAX))
        .layer(svc.clone());
    assert!(tokio::time::timeout(3600 * SEC, backoff.oneshot(post()))
        .await
        .is_err());
    let server = counting(calls.clone(), |_| {
        let mut r = status(429, &[]);
        r.extensions_mut()
            .insert(Classification::new(QuotaClass::RateLimited).with_retry_after(Duration::MAX));
        Ok(r)
    });
    let max = RetryAfterLayer::new()
        .with_max_delay(Duration::MAX)
        .layer(server);
    assert!(tokio::time::timeout(3600 * SEC, max.oneshot(post()))
        .await
        .is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one attempt each, then a wait"
    );
}

// === 7. The server's answer survives the limiter's refusal of a retry ===

#[tokio::test(start_paused = true)]
async fn a_refused_retry_returns_the_servers_last_response() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = counting(calls.clone(), |_| {
        Ok(status(
            429,
            &[
                ("retry-after", "20"),
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "10m0s"),
            ],
        ))
    });
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(RateLimitLayer::new(per(100, 60 * SEC)).with_max_wait(60 * SEC))
        .service(server);
    let start = Instant::now();
    let resp = svc
        .oneshot(post())
        .await
        .expect("the 429, not the limiter's error");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "20");
    let info = RetryInfo::get(resp.extensions());
    assert_eq!(
        (info.attempts, info.stopped),
        (1, StopReason::LimiterRefused)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(start.elapsed() >= 20 * SEC && start.elapsed() < 25 * SEC);
}

// === 8. Retries never double-bill ===

#[tokio::test(start_paused = true)]
async fn only_errors_before_sending_are_retried() {
    type Case = (&'static str, fn() -> BoxError, usize);
    let cases: [Case; 4] = [
        (
            "reset after sending",
            || std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
            1,
        ),
        (
            "an opaque error",
            || "connection closed before message completed".into(),
            1,
        ),
        (
            "refused connection",
            || std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            5,
        ),
        (
            "marked not sent",
            || Box::new(tower_quota::retry::NotSent::new("pool closed")),
            5,
        ),
    ];
    for (what, error, expected) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RetryAfterLayer::new().layer(counting(calls.clone(), move |_| Err(error())));
        assert!(svc.oneshot(post()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), expected, "{what}");
    }
    for code in [501, 505] {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc =
            RetryAfterLayer::new().layer(counting(calls.clone(), move |_| Ok(status(code, &[]))));
        assert_eq!(svc.oneshot(post()).await.unwrap().status(), code);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{code} is not retried");
    }
}

#[tokio::test]
async fn a_real_refused_connection_is_retried_through_hyper() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::new().with_backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
        )))
        .map_err(BoxError::from)
        .service(client);
    let req = Request::get(format!("http://127.0.0.1:{port}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(tower_quota::retry::is_not_sent(&*err), "{err:?}");
}

// === 9. Calendar decisions read the wall clock as it is now ===

/// A wall clock that follows paused time and can be stepped.
fn steppable(start: SystemTime) -> (WallClock, Arc<AtomicU64>) {
    let step = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let s = step.clone();
    let clock = WallClock::from_fn(move || {
        start + base.elapsed() + Duration::from_secs(s.load(Ordering::SeqCst))
    });
    (clock, step)
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_step_moves_the_daily_reset() {
    // 2026-01-01T23:00:00Z, one request per UTC day.
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_308_400);
    let (clock, step) = steppable(t);
    let limiter = Limiter::new(Tier::new("d").with_quota(Quota::per_utc_day(1)))
        .with_wall_clock(clock)
        .with_mode(Mode::Reject);
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
    let refused = limiter.try_acquire(Key::GLOBAL, 1).unwrap_err();
    assert_eq!(
        refused.as_rate_limited().unwrap().retry_after(),
        Some(3600 * SEC)
    );
    // NTP steps the clock forward two hours: it is the next UTC day now.
    step.store(7200, Ordering::SeqCst);
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
}

// === 10. A calendar window rolls over only past the margin ===

#[tokio::test(start_paused = true)]
async fn a_calendar_window_rolls_over_with_the_margin() {
    // 2026-01-01T23:59:50Z; a 2 s margin.
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_311_990);
    let limiter = Limiter::new(Tier::new("d").with_quota(Quota::per_utc_day(1)))
        .with_wall_clock(WallClock::starting_at(t))
        .with_margin(2 * SEC)
        .with_mode(Mode::Reject);
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
    tokio::time::sleep(11 * SEC).await; // midnight + 1 s
    let refused = limiter.try_acquire(Key::GLOBAL, 1).unwrap_err();
    assert_eq!(refused.as_rate_limited().unwrap().retry_after(), Some(SEC));
    tokio::time::sleep(SEC).await; // midnight + 2 s
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
}

// === 11. Learning never holds a response on the store ===

fn teaching(
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(|_req: Request<()>| async {
        let mut r = Response::builder()
            .status(200)
            .header("x-ratelimit-limit-requests", "10")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "30s")
            .header("x-ratelimit-limit-tokens", "1000")
            .header("x-ratelimit-remaining-tokens", "10")
            .header("x-ratelimit-reset-tokens", "30s")
            .body(())
            .unwrap();
        r.extensions_mut().insert(());
        Ok::<_, Infallible>(r)
    })
}

#[tokio::test(start_paused = true)]
async fn learning_is_one_batch_bounded_and_never_the_callers_error() {
    let tier = Tier::new("t").with_quota(Quota::per_minute(10)).with_quota(
        Quota::per_minute(1000).with_dimension(tower_quota::headers::Dimension::Tokens),
    );
    // One round trip per response, whatever it taught.
    let store = Arc::new(Remote::default());
    let layer = RateLimitLayer::new(tier.clone()).with_store(SharedRemote(store.clone()));
    layer
        .layer(teaching())
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(store.updates.load(Ordering::SeqCst), 1);
    // A failing store: the response still arrives.
    let failing = Remote {
        fail_updates: true,
        ..Remote::default()
    };
    let layer = RateLimitLayer::new(tier.clone()).with_store(failing);
    assert_eq!(
        layer
            .layer(teaching())
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        200
    );
    // A hung store: the response arrives after the learn timeout, not never.
    let hung = Remote {
        hang_updates: true,
        ..Remote::default()
    };
    let limiter = Limiter::new(tier)
        .with_store(hung)
        .with_learn_timeout(Duration::from_millis(100));
    let layer = RateLimitLayer::with_limiter(limiter);
    let start = Instant::now();
    assert_eq!(
        layer
            .layer(teaching())
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[derive(Debug)]
struct SharedRemote(Arc<Remote>);

impl Store for SharedRemote {
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

#[tokio::test(start_paused = true)]
async fn a_body_round_trip_survives_the_stack() {
    // The request's bytes arrive whole through the limiter and the retry layer.
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(RateLimitLayer::new(per(1, SEC)))
        .service(service_fn(
            |req: Request<tower_quota::retry::ReplayBody<Full<Bytes>>>| async move {
                let bytes = req.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>(Response::new(Full::new(bytes)))
            },
        ));
    let resp = svc.oneshot(post()).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "{}");
}
