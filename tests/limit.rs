//! RateLimitLayer and Limiter, in paused tokio time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tower_quota::limit::Mode;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass, Scope};
use tower_quota::clock::WallClock;
use tower_quota::headers::{Dimension, RateLimitInfo, RateLimitWindow};
use tower_quota::limit::store::MemoryStore;
use tower_quota::limit::{
    AcquireError, CostExceedsLimit, Key, KeyBy, Limiter, Model, RateLimited, Reason, RequestHead,
};
use tower_quota::{tiers, Quota, RateLimitLayer, Tier};

const SEC: Duration = Duration::from_secs(1);

fn tier(n: u64, w: Duration) -> Tier {
    Tier::new("test").with_quota(Quota::new(n, w))
}

fn ok_service(
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
}

fn req_with_key(key: &str) -> Request<()> {
    Request::builder()
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn rolling_window_is_not_a_token_bucket() {
    // 5 per 10 s: a burst of 5, then the 6th waits for the first to leave the window.
    let limiter = Limiter::new(tier(5, 10 * SEC));
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..11 {
        limiter.acquire(Key::GLOBAL, 1).await.unwrap();
        at.push(start.elapsed());
    }
    assert!(at[..5].iter().all(|d| *d == Duration::ZERO));
    assert_eq!(&at[5..10], &[10 * SEC; 5]);
    assert_eq!(at[10], 20 * SEC);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_fifo_order() {
    let limiter = Limiter::new(
        Tier::new("t").with_quota(Quota::per_second(10).with_dimension(Dimension::Tokens)),
    );
    limiter.acquire(Key::GLOBAL, 10).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    // A costly waiter first: the cheap ones behind it must not overtake it.
    for (i, cost) in [(0, 9), (1, 1), (2, 1), (3, 5)] {
        let l = limiter.clone();
        let order = order.clone();
        handles.push(tokio::spawn(async move {
            l.acquire(Key::GLOBAL, cost).await.unwrap();
            order.lock().unwrap().push((i, Instant::now()));
        }));
        tokio::task::yield_now().await;
    }
    for h in handles {
        h.await.unwrap();
    }
    let order = order.lock().unwrap();
    let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_place_back_and_records_nothing() {
    let limiter = Limiter::new(tier(1, 10 * SEC));
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    let start = Instant::now();
    let first = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire(Key::GLOBAL, 1).await }
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn({
        let l = limiter.clone();
        async move {
            l.acquire(Key::GLOBAL, 1).await.unwrap();
            Instant::now()
        }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.snapshot(Key::GLOBAL).await.unwrap().waiting, 2);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The second takes the first's place: admitted when the first window frees up.
    let at = second.await.unwrap();
    assert_eq!(at - start, 10 * SEC);
    let snap = limiter.snapshot(Key::GLOBAL).await.unwrap();
    assert_eq!(snap.windows[0].used, 1);
    assert_eq!(snap.waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn max_wait_fails_at_once_with_when() {
    let limiter = Limiter::new(tier(1, 60 * SEC)).with_max_wait(Some(10 * SEC));
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    let start = Instant::now();
    let err = limiter.acquire(Key::GLOBAL, 1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "fails at once");
    let limited = err.as_rate_limited().unwrap();
    assert_eq!(limited.reason(), Reason::MaxWait);
    assert_eq!(limited.retry_after(), Some(60 * SEC));
    assert_eq!(limited.available_at(), Some(start + 60 * SEC));
}

#[tokio::test(start_paused = true)]
async fn reject_mode_through_the_service() {
    let layer = RateLimitLayer::new(tier(2, 60 * SEC)).with_mode(Mode::Reject);
    let svc = layer.layer(ok_service());
    svc.clone().oneshot(Request::new(())).await.unwrap();
    svc.clone().oneshot(Request::new(())).await.unwrap();
    let err: BoxError = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
    assert_eq!(limited.reason(), Reason::Rejected);
    assert_eq!(limited.retry_after(), Some(60 * SEC));
    assert!(err.to_string().contains("rate limited"));
}

#[tokio::test(start_paused = true)]
async fn a_quota_of_zero_fails_at_once_and_a_zero_cost_passes() {
    let limiter = Limiter::new(Tier::new("closed").with_quota(Quota::per_minute(0)));
    let start = Instant::now();
    let err = limiter.acquire(Key::GLOBAL, 1).await.unwrap_err();
    let AcquireError::CostExceedsLimit(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!((e.cost(), e.limit()), (1, 0));
    assert_eq!(start.elapsed(), Duration::ZERO, "no hang");

    let tokens = Limiter::new(
        Tier::new("t").with_quota(Quota::per_minute(1).with_dimension(Dimension::Tokens)),
    );
    for _ in 0..3 {
        tokens.acquire(Key::GLOBAL, 0).await.unwrap(); // weighs nothing
    }
    tokens.acquire(Key::GLOBAL, 1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn cost_above_the_limit_is_an_error_not_a_hang() {
    let limiter = Limiter::new(
        Tier::new("t").with_quota(Quota::per_minute(100).with_dimension(Dimension::Tokens)),
    );
    let err = limiter.acquire(Key::GLOBAL, 101).await.unwrap_err();
    let AcquireError::CostExceedsLimit(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!((e.cost(), e.limit(), e.quota()), (101, 100, 0));

    let layer = RateLimitLayer::new(
        Tier::new("t").with_quota(Quota::per_minute(100).with_dimension(Dimension::Tokens)),
    )
    .with_cost(|_| 1_000);
    let err = layer
        .layer(ok_service())
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<CostExceedsLimit>().is_some());
}

/// A 429's verdict: rate limited for `delay`, for `scope`.
fn rate_limited(delay: Duration, scope: Scope) -> Classification {
    Classification::new(QuotaClass::RateLimited)
        .with_retry_after(delay)
        .with_scope(scope)
}

/// An inner service answering with the given classification on its first call.
fn answering(
    first: Classification,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send> + Clone
{
    let first = Arc::new(Mutex::new(Some(first)));
    service_fn(move |_req: Request<()>| {
        let c = first.lock().unwrap().take();
        async move {
            let mut resp = Response::new(());
            if let Some(c) = c {
                *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                resp.extensions_mut().insert(c);
            }
            Ok::<_, Infallible>(resp)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_cools_the_whole_key_down() {
    let c = rate_limited(30 * SEC, Scope::Account);
    let layer = RateLimitLayer::new(tier(100, 60 * SEC)).key_by(KeyBy::ApiKey);
    let svc = layer.layer(answering(c));
    let start = Instant::now();
    let r = svc.clone().oneshot(req_with_key("a")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A 429 the windows did not predict widens the learned margin (20 ms at first)...
    assert_eq!(layer.limiter().learned_margin(), Duration::from_millis(20));
    // ...and requests already waiting and new ones are held until the cooldown (and that
    // margin) ends.
    let waiting = tokio::spawn(svc.clone().oneshot(req_with_key("a")));
    svc.clone().oneshot(req_with_key("a")).await.unwrap();
    assert_eq!(start.elapsed(), 30 * SEC + Duration::from_millis(20));
    waiting.await.unwrap().unwrap();
    // Another key is not affected.
    let t = Instant::now();
    svc.clone().oneshot(req_with_key("b")).await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_tier_without_quotas_still_honours_what_it_learned() {
    // Limits unknown to the client: nothing to pace by, but a 429's delay must hold every
    // later request of the key, and `try_acquire` must see the cooldown too.
    let c = rate_limited(30 * SEC, Scope::Account);
    let layer = RateLimitLayer::new(Tier::new("unknown")).key_by(KeyBy::ApiKey);
    let svc = layer.layer(answering(c));
    let start = Instant::now();
    let r = svc.clone().oneshot(req_with_key("a")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let key = KeyBy::ApiKey.key(&RequestHead::of(&req_with_key("a")));
    assert!(layer.limiter().try_acquire(key, 1).is_err());
    svc.clone().oneshot(req_with_key("a")).await.unwrap();
    assert_eq!(start.elapsed(), 30 * SEC);
    // Before anything is learned, nothing waits.
    let t = Instant::now();
    svc.clone().oneshot(req_with_key("b")).await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_429_never_pauses_the_account() {
    let c = rate_limited(29 * SEC, Scope::Upstream);
    let svc = RateLimitLayer::new(tier(100, 60 * SEC))
        .key_by(KeyBy::ApiKey)
        .layer(answering(c.clone()));
    let start = Instant::now();
    svc.clone().oneshot(req_with_key("a")).await.unwrap();
    svc.clone().oneshot(req_with_key("a")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Keyed by model, the model's key cools down, other models do not.
    let svc = RateLimitLayer::new(tier(100, 60 * SEC))
        .key_by(KeyBy::Model)
        .layer(answering(c));
    let with_model = |m: &str| {
        let mut r = Request::new(());
        r.extensions_mut().insert(Model::new(m));
        r
    };
    svc.clone().oneshot(with_model("x")).await.unwrap();
    svc.clone().oneshot(with_model("y")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    svc.clone().oneshot(with_model("x")).await.unwrap();
    assert_eq!(start.elapsed(), 29 * SEC);
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_blocks_until_reset_and_fails_fast_beyond_max_wait() {
    let c = Classification::new(QuotaClass::QuotaExhausted).with_reset_after(3_600 * SEC);
    let svc = RateLimitLayer::new(tier(100, 60 * SEC))
        .with_max_wait(60 * SEC)
        .layer(answering(c));
    svc.clone().oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(limited.retry_after(), Some(3_600 * SEC));
}

fn window(limit: u64, remaining: u64, reset: Duration) -> RateLimitWindow {
    let mut w = RateLimitWindow::new(Dimension::Requests);
    w.limit = Some(limit);
    w.remaining = Some(remaining);
    w.reset = Some(reset);
    w
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_pauses_until_the_reset() {
    let info = RateLimitInfo::from_windows(vec![window(100, 0, 12 * SEC)]);
    let c = Classification::new(QuotaClass::Success).with_rate_limit(info);
    let inner = service_fn(move |_req: Request<()>| {
        let c = c.clone();
        async move {
            let mut r = Response::new(());
            r.extensions_mut().insert(c);
            Ok::<_, Infallible>(r)
        }
    });
    let svc = RateLimitLayer::new(tier(100, 60 * SEC)).layer(inner);
    let start = Instant::now();
    svc.clone().oneshot(Request::new(())).await.unwrap();
    svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), 12 * SEC);
}

#[tokio::test(start_paused = true)]
async fn remaining_below_the_local_count_tightens_and_limits_are_learned() {
    let info = RateLimitInfo::from_windows(vec![window(10, 3, 60 * SEC)]);
    let c = Classification::new(QuotaClass::Success).with_rate_limit(info);
    let layer = RateLimitLayer::new(tier(10, 60 * SEC)).learn_limits(true);
    let limiter = layer.limiter().clone();
    let inner = service_fn(move |_req: Request<()>| {
        let c = c.clone();
        async move {
            let mut r = Response::new(());
            r.extensions_mut().insert(c);
            Ok::<_, Infallible>(r)
        }
    });
    let svc = layer.layer(inner);
    svc.oneshot(Request::new(())).await.unwrap();
    let snap = limiter.snapshot(Key::GLOBAL).await.unwrap();
    // Locally 1 used, 9 left; the server says 3 left: count 7 used.
    assert_eq!(snap.windows[0].used, 7);
    assert_eq!(snap.windows[0].remaining, 3);
    assert_eq!(snap.windows[0].limit, 10);
}

#[tokio::test(start_paused = true)]
async fn learn_limits_adopts_the_servers_limit() {
    let mut four = RateLimitWindow::new(Dimension::Requests);
    four.limit = Some(4);
    four.window = Some(60 * SEC);
    let info = RateLimitInfo::from_windows(vec![four]);
    let c = Classification::new(QuotaClass::Success).with_rate_limit(info);
    let layer = RateLimitLayer::new(tier(10, 60 * SEC)).learn_limits(true);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let c = c.clone();
        async move {
            let mut r = Response::new(());
            r.extensions_mut().insert(c);
            Ok::<_, Infallible>(r)
        }
    }));
    let start = Instant::now();
    for _ in 0..5 {
        svc.clone().oneshot(Request::new(())).await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        60 * SEC,
        "the 5th waited under the learned limit of 4"
    );
    assert_eq!(
        limiter.snapshot(Key::GLOBAL).await.unwrap().windows[0].limit,
        4
    );
}

#[tokio::test(start_paused = true)]
async fn calendar_window_resets_at_utc_midnight() {
    // 2026-01-01T23:59:30Z
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_311_970);
    let limiter = Limiter::new(tiers::openrouter::free())
        .with_wall_clock(WallClock::starting_at(t))
        .with_max_wait(None);
    let start = Instant::now();
    // 50 per UTC day, 20 per rolling minute: 20 now, then the minute blocks past midnight.
    for _ in 0..20 {
        limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    let snap = limiter.snapshot(Key::GLOBAL).await.unwrap();
    assert_eq!(snap.windows[1].used, 20);
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC);
    let wall = limiter.wall_clock().now();
    assert_eq!(
        wall,
        t + 60 * SEC,
        "the limiter's wall clock follows paused time"
    );
    // Past midnight the daily count restarted: only today's request counts.
    let snap = limiter.snapshot(Key::GLOBAL).await.unwrap();
    assert_eq!(snap.windows[1].used, 1);
}

#[tokio::test(start_paused = true)]
async fn daily_cap_waits_for_midnight_or_fails_fast() {
    // 2026-01-01T23:59:00Z, a cap of 2 per UTC day.
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_311_940);
    let daily = Tier::new("daily").with_quota(Quota::per_utc_day(2));
    let limiter = Limiter::new(daily.clone())
        .with_wall_clock(WallClock::starting_at(t))
        .with_max_wait(Some(120 * SEC));
    let start = Instant::now();
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC, "admitted at midnight");
    // With 10 s of max_wait, the next day's cap fails at once.
    let limiter = Limiter::new(daily)
        .with_wall_clock(WallClock::starting_at(t))
        .with_max_wait(Some(10 * SEC));
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    limiter.acquire(Key::GLOBAL, 1).await.unwrap();
    let err = limiter.acquire(Key::GLOBAL, 1).await.unwrap_err();
    assert_eq!(err.as_rate_limited().unwrap().retry_after(), Some(60 * SEC));
}

#[tokio::test(start_paused = true)]
async fn per_key_tiers_free_models_limited_paid_models_not() {
    let layer = RateLimitLayer::new(tiers::openrouter::free())
        .key_by(KeyBy::ApiKey)
        .with_tier_selector(|head| match head.model() {
            Some(m) if m.is_free_variant() => Some(tiers::openrouter::free()),
            _ => None,
        });
    let svc = layer.layer(ok_service());
    let req = |model: &str| {
        let mut r = req_with_key("k");
        r.extensions_mut().insert(Model::new(model));
        r
    };
    let start = Instant::now();
    for _ in 0..20 {
        svc.clone().oneshot(req("m:free")).await.unwrap();
    }
    for _ in 0..100 {
        svc.clone().oneshot(req("paid")).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    svc.clone().oneshot(req("m:free")).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limiter() {
    let layer = RateLimitLayer::new(tier(3, 60 * SEC));
    let a = layer.layer(ok_service());
    let b = layer.layer(ok_service());
    let start = Instant::now();
    a.clone().oneshot(Request::new(())).await.unwrap();
    b.clone().oneshot(Request::new(())).await.unwrap();
    a.clone().oneshot(Request::new(())).await.unwrap();
    b.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), 60 * SEC);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let store = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(tier(5, 10 * SEC)).with_store(store.clone());
    for i in 0..100 {
        limiter.acquire(Key::of(&i), 1).await.unwrap();
    }
    assert_eq!(store.len(), 100);
    tokio::time::sleep(5 * SEC).await;
    limiter.acquire(Key::of("late"), 1).await.unwrap();
    assert_eq!(store.len(), 101, "nothing is idle yet");
    tokio::time::sleep(6 * SEC).await;
    // The next operation on each shard sweeps it; force a full sweep.
    store.evict_idle(limiter.now_ns());
    assert_eq!(store.len(), 1, "only the late key is still counting");
    tokio::time::sleep(10 * SEC).await;
    store.evict_idle(limiter.now_ns());
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn fetches_the_openrouter_tier_through_a_service() {
    let svc = service_fn(|req: Request<String>| async move {
        assert_eq!(req.headers()["authorization"], "Bearer sk-test");
        let body = r#"{"data":{"is_free_tier":false,"free_model_daily_requests":{"limit":1000,"remaining":990,"used":10}}}"#;
        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
    });
    let tier = tiers::openrouter::fetch_tier(svc, "sk-test").await.unwrap();
    assert_eq!(tier, tiers::openrouter::free_with_credits());
}

#[tokio::test(start_paused = true)]
async fn try_acquire_never_waits_and_respects_the_queue() {
    let limiter = Limiter::new(tier(2, 10 * SEC));
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
    let err = limiter.try_acquire(Key::GLOBAL, 1).unwrap_err();
    assert_eq!(err.as_rate_limited().unwrap().retry_after(), Some(10 * SEC));
    let waiter = tokio::spawn({
        let l = limiter.clone();
        async move { l.acquire(Key::GLOBAL, 1).await }
    });
    tokio::task::yield_now().await;
    tokio::time::sleep(10 * SEC).await;
    // The window has room again, but a waiter is ahead (it may be admitted first).
    if limiter.snapshot(Key::GLOBAL).await.unwrap().waiting > 0 {
        assert!(limiter.try_acquire(Key::GLOBAL, 1).is_err());
    }
    waiter.await.unwrap().unwrap();
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
}

/// A store that only answers through futures that yield once, like a network store would.
#[derive(Debug, Default)]
struct Remote(MemoryStore);

async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

impl tower_quota::limit::store::Store for Remote {
    fn acquire<'a>(
        &'a self,
        req: tower_quota::limit::store::AcquireRequest<'a>,
    ) -> tower_quota::limit::store::StoreFuture<'a, tower_quota::limit::store::Decision> {
        Box::pin(async move {
            yield_once().await;
            self.0.acquire(req).await
        })
    }

    fn update<'a>(
        &'a self,
        req: tower_quota::limit::store::UpdateRequest<'a>,
    ) -> tower_quota::limit::store::StoreFuture<'a, ()> {
        Box::pin(async move {
            yield_once().await;
            self.0.update(req).await
        })
    }

    fn snapshot<'a>(
        &'a self,
        req: tower_quota::limit::store::SnapshotRequest<'a>,
    ) -> tower_quota::limit::store::StoreFuture<'a, Option<tower_quota::limit::store::StoreSnapshot>>
    {
        self.0.snapshot(req)
    }
}

#[tokio::test(start_paused = true)]
async fn an_async_store_paces_and_learns_the_same() {
    let c = rate_limited(30 * SEC, Scope::Unknown);
    let layer = RateLimitLayer::new(tier(2, 10 * SEC))
        .with_store(Remote::default())
        .learn_margin(false);
    let svc = layer.layer(answering(c));
    let start = Instant::now();
    svc.clone().oneshot(Request::new(())).await.unwrap(); // a 429: 30 s cooldown
    let mut handles = Vec::new();
    for i in 0..4 {
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            svc.oneshot(Request::new(())).await.unwrap();
            (i, start.elapsed())
        }));
        tokio::task::yield_now().await;
    }
    let mut done = Vec::new();
    for h in handles {
        done.push(h.await.unwrap());
    }
    assert_eq!(
        done,
        vec![(0, 30 * SEC), (1, 30 * SEC), (2, 40 * SEC), (3, 40 * SEC)]
    );
}

#[tokio::test(start_paused = true)]
async fn inner_readiness_is_reserved_only_once_admitted() {
    use std::future::Future;
    use std::task::{Context, Poll};
    let (inner, handle) = tower_test_like::pair();
    let mut svc = RateLimitLayer::new(tier(1, SEC)).layer(inner);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    handle
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The limiter is ready whatever the inner service says: the wait comes first.
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = std::pin::pin!(svc.call(Request::new(())));
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "admitted, waiting for the inner service"
    );
    handle
        .ready
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
}

mod tower_test_like {
    use std::convert::Infallible;
    use std::future::Ready;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use http::{Request, Response};

    #[derive(Clone)]
    pub struct Gated(Arc<AtomicBool>);

    pub struct Handle {
        pub ready: Arc<AtomicBool>,
    }

    pub fn pair() -> (Gated, Handle) {
        let ready = Arc::new(AtomicBool::new(true));
        (Gated(ready.clone()), Handle { ready })
    }

    impl tower::Service<Request<()>> for Gated {
        type Response = Response<()>;
        type Error = Infallible;
        type Future = Ready<Result<Response<()>, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.0.load(Ordering::SeqCst) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(())))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn keys_by_header_and_by_closure() {
    let by_header = RateLimitLayer::new(tier(1, 60 * SEC))
        .key_by(KeyBy::Header(http::HeaderName::from_static("x-user")))
        .with_mode(Mode::Reject);
    let svc = by_header.layer(ok_service());
    let user = |u: &str| Request::builder().header("x-user", u).body(()).unwrap();
    svc.clone().oneshot(user("a")).await.unwrap();
    svc.clone().oneshot(user("b")).await.unwrap();
    assert!(svc.clone().oneshot(user("a")).await.is_err());

    let by_path = RateLimitLayer::new(tier(1, 60 * SEC))
        .key_by(KeyBy::custom(|head| Key::of(head.uri.path())))
        .with_mode(Mode::Reject);
    let svc = by_path.layer(ok_service());
    let path = |p: &str| Request::builder().uri(p).body(()).unwrap();
    svc.clone().oneshot(path("/a")).await.unwrap();
    svc.clone().oneshot(path("/b")).await.unwrap();
    assert!(svc.clone().oneshot(path("/a")).await.is_err());
}

#[test]
fn futures_and_services_are_send() {
    fn send<T: Send>() {}
    send::<tower_quota::limit::Acquire>();
    send::<Limiter>();
    send::<RateLimitLayer>();
}

#[test]
fn request_head_debug_shows_no_key() {
    let req = Request::post("https://generativelanguage.example/v1/models?key=AIzaSECRET1")
        .header("authorization", "Bearer sk-or-v1-SECRET2")
        .header("x-api-key", "sk-ant-SECRET3")
        .body(())
        .unwrap();
    let debug = format!("{:?}", RequestHead::of(&req));
    assert!(
        debug.contains("authorization") && debug.contains("/v1/models"),
        "{debug}"
    );
    assert!(!debug.contains("SECRET"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn an_empty_tier_learns_its_quota_from_openrouters_429() {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower_quota::sim::{Limit, Models, Simulator, Tier as SimTier};
    use tower_quota::QuotaLayer;

    // OpenRouter's free per-minute limit, as the server knows it; the client knows nothing.
    let sim = Simulator::builder()
        .key(
            "sk-a",
            SimTier::new("free").with_limit(Limit::rolling(Models::Free, 20, 60 * SEC)),
        )
        .build();
    let layer = QuotaLayer::new(Tier::new("unknown"))
        .key_by(KeyBy::ApiKey)
        .with_wall_clock(WallClock::from_fn(sim.wall_clock()));
    let limiter = layer.limiter().clone();
    let client = layer.layer(sim.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let req = Request::post("/api/v1/chat/completions")
            .header("authorization", "Bearer sk-a")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"meta-llama/llama-3.3-70b-instruct:free"}"#,
            )))
            .unwrap();
        tasks.push(tokio::spawn(client.clone().oneshot(req)));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{:?} {:?} at {:?}, {:?}",
            tower_quota::retry::RetryInfo::get(r.extensions()),
            r.headers(),
            start.elapsed(),
            sim.stats().rate_limited
        );
    }
    let stats = sim.stats();
    // The first 429 taught the limit (20) and its window (the reset fits in a minute).
    assert!(stats.rate_limited <= 2, "{} 429s", stats.rate_limited);
    let key = KeyBy::ApiKey.key(&RequestHead::of(&req_with_key("sk-a")));
    let snap = limiter.snapshot(key).await.unwrap();
    assert_eq!(snap.windows.len(), 1, "one learned quota");
    assert_eq!(snap.windows[0].quota, Quota::per_minute(20));
    // 60 requests at 20 per minute: 2 windows after the first (and one lost to the 429).
    assert!(start.elapsed() < 4 * 60 * SEC, "{:?}", start.elapsed());
    sim.check_invariants().unwrap();
}

/// A refusal holds one of the limiter's replicas of its tier (the calling thread's, so that
/// refusals on several cores count on different counters): on every thread, more threads
/// than replicas, it names the configured tier and its quotas, and a gateway's 429 says the
/// same policy.
#[test]
fn a_refusal_carries_the_configured_tier_on_every_thread() {
    let tier = Tier::new("clients")
        .with_quota(Quota::per_minute(1))
        .with_quota(Quota::per_utc_day(5));
    let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
    let policies = std::sync::Mutex::new(std::collections::BTreeSet::new());
    std::thread::scope(|s| {
        for t in 0..20u32 {
            let (limiter, tier, policies) = (&limiter, &tier, &policies);
            s.spawn(move || {
                for i in 0..8u32 {
                    let key = Key::of(&(t, i));
                    limiter.try_acquire(key, 1).unwrap();
                    let Err(AcquireError::RateLimited(e)) = limiter.try_acquire(key, 1) else {
                        panic!("the second request of key {t}/{i} is over the minute's quota");
                    };
                    assert_eq!(e.tier(), "clients");
                    assert_eq!(e.quotas(), tier.quotas());
                    let policy = e.headers(None)["ratelimit-policy"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    policies.lock().unwrap().insert(policy);
                }
            });
        }
    });
    assert_eq!(
        policies
            .into_inner()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [r#""minute";q=1;w=60, "utc-day";q=5;w=86400"#]
    );
}

/// When each of `n` acquisitions on `key` is admitted, from `start`.
async fn admissions(limiter: &Limiter, key: Key, n: usize, start: Instant) -> Vec<Duration> {
    let mut at = Vec::new();
    for _ in 0..n {
        limiter.acquire(key, 1).await.unwrap();
        at.push(start.elapsed());
    }
    at
}

/// A server that counts in a bucket far smaller than its window (Anthropic's "60 per
/// minute may be enforced as 1 per second") says so in every answer: nothing left of 50 a
/// minute, and full again in 1.2 s, is a bucket of one request. After three such answers in
/// a window the key is paced to one request per 1.2 s (plus the margin), for a window from
/// the last; then bursts come back. Two such answers alone pace nothing, nor do answers of a
/// window counted otherwise (45 left and full again in 50 s: 86 at most, more than the
/// limit), nor those of a full bucket (49 left, full in 1.2 s: 50).
#[tokio::test(start_paused = true)]
async fn a_bucket_smaller_than_its_window_paces_the_key() {
    use tower_quota::limit::LearnOptions;
    let answer = |remaining: u64, reset_ms: u64| {
        let mut w = RateLimitWindow::new(Dimension::Requests);
        w.limit = Some(50);
        w.remaining = Some(remaining);
        w.reset = Some(Duration::from_millis(reset_ms));
        Classification::new(QuotaClass::Success)
            .with_rate_limit(RateLimitInfo::from_windows(vec![w]))
    };
    let limiter = Limiter::new(Tier::new("anthropic").with_quota(Quota::per_minute(50)))
        .with_mode(Mode::Reject);
    let learn = |key: Key, c: &Classification| {
        assert!(limiter
            .learn(key, limiter.tier(), c, LearnOptions::default())
            .is_none());
    };
    // Whether three requests of `key` are admitted at once, after the pauses the answers
    // asked for (until the reset of a window with nothing left).
    let bursts = |key: Key| (0..3).all(|_| limiter.try_acquire(key, 1).is_ok());
    let settle = || tokio::time::sleep(Duration::from_secs(2));

    let small = Key::of("bucket of one");
    learn(small, &answer(0, 1200));
    learn(small, &answer(0, 1200));
    settle().await;
    assert!(bursts(small), "two answers alone pace nothing");
    learn(small, &answer(0, 1200));
    settle().await;
    assert!(limiter.try_acquire(small, 1).is_ok());
    assert!(
        limiter.try_acquire(small, 1).is_err(),
        "paced to the bucket"
    );
    let margin = limiter.learned_margin();
    tokio::time::sleep(Duration::from_millis(1200) + margin).await;
    assert!(limiter.try_acquire(small, 1).is_ok());
    assert!(limiter.try_acquire(small, 1).is_err());
    // A window after the last answer, bursts again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(bursts(small));

    let fixed = Key::of("a fixed window");
    learn(fixed, &answer(45, 50_000));
    for _ in 0..3 {
        learn(fixed, &answer(0, 1000));
    }
    settle().await;
    assert!(bursts(fixed), "a window counted otherwise paces nothing");

    let full = Key::of("a full bucket");
    for _ in 0..4 {
        learn(full, &answer(49, 1200));
    }
    settle().await;
    assert!(
        bursts(full),
        "a bucket as large as the window paces nothing"
    );
}

/// 429s the windows did not predict (60 a minute allow far more) and that teach no quota.
/// One alone paces nothing: after its cooldown the key bursts. A second within a window of
/// that cooldown paces the key after its own, one request a second (60 s ÷ 60), for a
/// window; then bursts come back; one more soon after paces it for two windows. A refusal
/// that teaches a quota paces nothing.
#[tokio::test(start_paused = true)]
async fn refusals_the_windows_did_not_predict_pace_the_key() {
    use tower_quota::limit::LearnOptions;
    let refusal = Classification::new(QuotaClass::RateLimited)
        .with_scope(Scope::Account)
        .with_retry_after(SEC);
    let limiter = Limiter::new(tier(60, Duration::from_secs(60)));
    let key = Key::of("k");
    let refuse = || {
        assert!(limiter
            .learn(key, limiter.tier(), &refusal, LearnOptions::default())
            .is_none());
    };
    // One refusal: the cooldown, then a burst.
    refuse();
    let start = Instant::now();
    let burst = admissions(&limiter, key, 3, start).await;
    let margin = limiter.learned_margin();
    assert!(margin < Duration::from_millis(100), "{margin:?}");
    assert_eq!(burst, [SEC + margin; 3]);
    // A second: its cooldown, then one a second, each plus the margin.
    refuse();
    let start = Instant::now();
    let paced = admissions(&limiter, key, 3, start).await;
    let margin = limiter.learned_margin();
    assert_eq!(
        paced,
        [SEC + margin, 2 * (SEC + margin), 3 * (SEC + margin)]
    );
    // A window after, bursts again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let now = Instant::now();
    let burst = admissions(&limiter, key, 3, now).await;
    assert_eq!(burst, [Duration::ZERO; 3]);
    // Refused again soon after the pace ended: paced for two windows this time, so still
    // paced 70 s after the cooldown.
    refuse();
    tokio::time::sleep(Duration::from_secs(71)).await;
    let now = Instant::now();
    let paced = admissions(&limiter, key, 2, now).await;
    let gap = paced[1] - paced[0];
    assert!(
        gap >= SEC && gap < SEC + Duration::from_millis(100),
        "{gap:?}"
    );

    // A refusal that teaches a quota (the server's 30 a minute, with `learn_limits`) is
    // explained by it: the learned window paces nothing, the key bursts.
    let mut window = RateLimitWindow::new(Dimension::Requests);
    window.limit = Some(30);
    window.remaining = Some(29);
    window.reset = Some(Duration::from_secs(60));
    let teaching = Classification::new(QuotaClass::RateLimited)
        .with_scope(Scope::Account)
        .with_rate_limit(RateLimitInfo::from_windows(vec![window]));
    let learning = Limiter::new(Tier::new("unknown").with_quota(Quota::per_minute(1000)));
    let key = Key::of("learning");
    assert!(learning
        .learn(
            key,
            learning.tier(),
            &teaching,
            LearnOptions::default().with_learn_limits(true)
        )
        .is_none());
    // The server's limit is adopted before what remains of it is counted: 1 used of 30
    // (not 971 of the configured 1 000, which would block the key for a window).
    let snap = learning.snapshot(key).await.unwrap();
    assert_eq!((snap.windows[0].limit, snap.windows[0].used), (30, 1));
    let now = Instant::now();
    let burst = admissions(&learning, key, 3, now).await;
    assert_eq!(burst, [Duration::ZERO; 3]);
}

/// With `learn_limits`, a 429 that repeats the limit the tier already has teaches nothing: two
/// of them pace the key as two bare ones do.
#[tokio::test(start_paused = true)]
async fn a_refusal_repeating_the_tiers_own_limit_still_paces() {
    use tower_quota::limit::LearnOptions;
    let mut window = RateLimitWindow::new(Dimension::Requests);
    window.limit = Some(60);
    let refusal = Classification::new(QuotaClass::RateLimited)
        .with_scope(Scope::Account)
        .with_retry_after(SEC)
        .with_rate_limit(RateLimitInfo::from_windows(vec![window]));
    let limiter = Limiter::new(tier(60, Duration::from_secs(60)));
    let key = Key::of("k");
    let options = LearnOptions::default().with_learn_limits(true);
    for _ in 0..2 {
        assert!(limiter
            .learn(key, limiter.tier(), &refusal, options)
            .is_none());
    }
    let start = Instant::now();
    let paced = admissions(&limiter, key, 2, start).await;
    let gap = paced[1] - paced[0];
    assert!(gap >= SEC, "{gap:?}");
}
