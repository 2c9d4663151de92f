//! A key's cap on requests in flight at once (LiteLLM's `max_parallel_requests`), configured
//! or learned from a refusal: a request takes a place before the windows admit it and holds
//! it until its response body ends or is dropped — through the tower layers (the
//! classification layer below keeps it in the body) and through the reqwest middleware.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass, Scope};
use tower_quota::headers::{Dimension, RateLimitInfo, RateLimitWindow, IN_FLIGHT};
use tower_quota::limit::{
    Key, KeyBy, LearnOptions, Limiter, Mode, RateLimit, RateLimited, Reason, RequestHead,
};
use tower_quota::{Quota, QuotaClassifyLayer, RateLimitLayer, Tier};

const SEC: Duration = Duration::from_secs(1);

fn tier() -> Tier {
    Tier::new("litellm-key").with_quota(Quota::per_minute(1000))
}

/// The inner service: answers "ok" after `delay`, noting when each call came (from `start`).
fn upstream(
    delay: Duration,
    start: Instant,
    calls: Arc<Mutex<Vec<Duration>>>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| {
        calls.lock().unwrap().push(start.elapsed());
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
}

/// `limit` over the classification layer over `inner`: the stack whose response bodies
/// hold their places.
fn classified<S>(
    limit: RateLimitLayer,
    inner: S,
) -> RateLimit<tower_quota::classify::QuotaClassify<S, tower_quota::classify::Auto>> {
    ServiceBuilder::new()
        .layer(limit)
        .layer(QuotaClassifyLayer::default())
        .service(inner)
}

/// Reject mode, every key capped at `max` in flight.
fn rejecting(max: u32) -> RateLimitLayer {
    RateLimitLayer::new(tier())
        .with_mode(Mode::Reject)
        .with_max_in_flight(max)
}

fn request() -> Request<Full<Bytes>> {
    Request::new(Full::new(Bytes::new()))
}

fn reason(e: &BoxError) -> Reason {
    e.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not a RateLimited: {e}"))
        .reason()
}

#[tokio::test(start_paused = true)]
async fn each_place_is_held_until_the_response_body_ends() {
    let calls = Arc::default();
    let svc = classified(
        rejecting(2),
        upstream(Duration::ZERO, Instant::now(), calls),
    );
    let first = svc.clone().oneshot(request()).await.unwrap();
    let second = svc.clone().oneshot(request()).await.unwrap();
    // Both heads are here, neither body has ended: the key has no place left.
    let third = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(reason(&third), Reason::InFlight);
    assert!(third.to_string().contains("in flight"), "{third}");
    // One body read to its end frees its place.
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    let fourth = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(
        reason(&svc.clone().oneshot(request()).await.unwrap_err()),
        Reason::InFlight
    );
    // A body dropped unread frees its place too.
    drop(second);
    drop(fourth);
    let again: Vec<_> = futures_all(&svc, 2).await;
    assert!(again.iter().all(Result::is_ok));
}

/// Sends `n` requests at once and returns their outcomes, bodies unread (places held).
async fn futures_all<S>(svc: &S, n: usize) -> Vec<Result<S::Response, S::Error>>
where
    S: Service<Request<Full<Bytes>>> + Clone,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(svc.clone().oneshot(request()).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn without_a_classification_layer_a_place_frees_with_the_head() {
    let calls = Arc::default();
    let svc = rejecting(1).layer(upstream(Duration::ZERO, Instant::now(), calls));
    let first = svc.clone().oneshot(request()).await.unwrap();
    // The body is unread, but nothing below could hold the place: it freed with the head.
    let second = svc.clone().oneshot(request()).await.unwrap();
    drop((first, second));
}

/// In wait mode a request waits for a place, in order: with 2 places and answers a second
/// long, 5 requests go out 2, 2 and 1 a second apart, and all succeed.
#[tokio::test(start_paused = true)]
async fn waiting_requests_go_out_as_places_free() {
    let start = Instant::now();
    let calls: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let svc = classified(
        RateLimitLayer::new(tier()).with_max_in_flight(2),
        upstream(SEC, start, Arc::clone(&calls)),
    );
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let resp = svc.oneshot(request()).await?;
                resp.into_body().collect().await?;
                Ok::<_, BoxError>(Instant::now())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let calls = calls.lock().unwrap().clone();
    let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 0, 1, 1, 2], "{calls:?}");
    assert_eq!(start.elapsed(), 3 * SEC);
}

/// A waiter dropped while it waits for a place takes none, and a place held by a request
/// whose response future is dropped mid-call frees.
#[tokio::test(start_paused = true)]
async fn dropped_futures_leak_no_place() {
    let calls = Arc::default();
    let svc = classified(
        RateLimitLayer::new(tier()).with_max_in_flight(1),
        upstream(10 * SEC, Instant::now(), calls),
    );
    // The first is in flight (10 s); the second waits for its place; both are dropped.
    let mut first = Box::pin(svc.clone().oneshot(request()));
    assert!(
        tokio::time::timeout(SEC, &mut first).await.is_err(),
        "in flight"
    );
    let mut second = Box::pin(svc.clone().oneshot(request()));
    assert!(tokio::time::timeout(SEC, &mut second).await.is_err());
    drop(second);
    drop(first);
    // The place is free at once.
    let at = Instant::now();
    let resp = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(at.elapsed(), 10 * SEC, "only the upstream's own delay");
    drop(resp);
}

/// A waiter waits for a place no longer than the limiter's `max_wait`.
#[tokio::test(start_paused = true)]
async fn a_place_is_waited_for_no_longer_than_max_wait() {
    let calls = Arc::default();
    let svc = classified(
        RateLimitLayer::new(tier())
            .with_max_in_flight(1)
            .with_max_wait(2 * SEC),
        upstream(SEC, Instant::now(), calls),
    );
    let held = svc.clone().oneshot(request()).await.unwrap();
    let at = Instant::now();
    let e = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(reason(&e), Reason::MaxWait);
    assert_eq!(at.elapsed(), 2 * SEC);
    drop(held);
    svc.clone().oneshot(request()).await.unwrap();
}

/// A streamed body (server-sent events) holds its place until its last frame, not its head.
#[tokio::test(start_paused = true)]
async fn a_streamed_body_holds_its_place_until_its_last_frame() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let inner = service_fn(move |_req: Request<Full<Bytes>>| {
        let rx = rx.lock().unwrap().take();
        async move {
            let body = match rx {
                Some(rx) => {
                    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync()
                }
                None => Full::new(Bytes::from_static(b"data: [DONE]\n\n"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            };
            Ok::<_, Infallible>(Response::new(body))
        }
    });
    let svc = classified(rejecting(1), inner);
    let stream = svc.clone().oneshot(request()).await.unwrap();
    let mut body = stream.into_body();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(
        b"data: 1\n\n",
    ))))
    .await
    .unwrap();
    assert!(body.frame().await.is_some());
    assert_eq!(
        reason(&svc.clone().oneshot(request()).await.unwrap_err()),
        Reason::InFlight,
        "the stream is still going"
    );
    drop(tx);
    assert!(body.frame().await.is_none(), "the stream ended");
    let next = svc.clone().oneshot(request()).await.unwrap();
    drop((next, body));
}

/// The refusal LiteLLM gives when a key's `max_parallel_requests` is reached, saying `limit`
/// (or nothing).
fn in_flight_refusal(limit: Option<u64>) -> Classification {
    let c = Classification::new(QuotaClass::RateLimited).with_scope(Scope::InFlight);
    match limit {
        Some(n) => {
            let mut w = RateLimitWindow::new(Dimension::Named(IN_FLIGHT.into()));
            w.limit = Some(n);
            w.remaining = Some(0);
            c.with_rate_limit(RateLimitInfo::from_windows(vec![w]))
        }
        None => c,
    }
}

/// A refusal of the requests in flight caps the key, for a minute from the last, at the
/// number it names (one when it names none or 0), through the layers; other keys are free.
#[tokio::test(start_paused = true)]
async fn a_refusal_of_the_requests_in_flight_caps_the_key_at_its_limit() {
    for (said, cap) in [(None, 1), (Some(0), 1), (Some(2), 2), (Some(3), 3)] {
        let limiter = Limiter::new(tier()).with_mode(Mode::Reject);
        let layer = RateLimitLayer::with_limiter(limiter.clone())
            .key_by(KeyBy::Header(http::HeaderName::from_static("x-key")));
        let svc = classified(
            layer,
            upstream(Duration::ZERO, Instant::now(), Arc::default()),
        );
        let req = |key: &str| {
            let mut r = request();
            r.headers_mut().insert("x-key", key.parse().unwrap());
            r
        };
        // The key as the layer hashes it: learn through a response of its own.
        let learn_key = layer_key(&limiter, "sk-parallel");
        assert!(limiter
            .learn(
                learn_key,
                limiter.tier(),
                &in_flight_refusal(said),
                LearnOptions::default()
            )
            .is_none());
        // The refusal said the server's places were all taken, by requests that hold none
        // of ours; none of them is answered here: their places are given back after 30 s.
        let e = svc.clone().oneshot(req("sk-parallel")).await.unwrap_err();
        assert_eq!(reason(&e), Reason::InFlight, "{said:?}: in debt");
        tokio::time::sleep(30 * SEC).await;
        let mut held = Vec::new();
        for i in 0..cap {
            held.push(
                svc.clone()
                    .oneshot(req("sk-parallel"))
                    .await
                    .unwrap_or_else(|e| panic!("{said:?}: {i}: {e}")),
            );
        }
        let e = svc.clone().oneshot(req("sk-parallel")).await.unwrap_err();
        assert_eq!(reason(&e), Reason::InFlight, "{said:?}: capped at {cap}");
        assert!(svc.clone().oneshot(req("sk-other")).await.is_ok());
        held.pop();
        held.push(svc.clone().oneshot(req("sk-parallel")).await.unwrap());
        // A minute on, the cap has ended: no bound but the windows'.
        tokio::time::sleep(31 * SEC).await;
        for _ in 0..5 {
            held.push(svc.clone().oneshot(req("sk-parallel")).await.unwrap());
        }
    }
}

/// The key `KeyBy::Header(http::HeaderName::from_static("x-key"))` gives a request carrying `value`, with `limiter`'s secret.
fn layer_key(limiter: &Limiter, value: &str) -> Key {
    let mut r = Request::new(());
    r.headers_mut().insert("x-key", value.parse().unwrap());
    KeyBy::Header(http::HeaderName::from_static("x-key"))
        .key_with(&RequestHead::of(&r), limiter.key_secret())
}

/// A server as LiteLLM's key limiter counts `max_parallel_requests`: a request holds a place
/// from its arrival until its response body ends (or is dropped); one that finds every place
/// taken is refused with the v3 limiter's 429 and holds none.
#[derive(Clone)]
struct ParallelLimited {
    max: usize,
    delay: Duration,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

/// The place a request holds at the server, given back when its body ends.
struct ServerPlace(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ServerPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A body that gives the server its place back when it is dropped (hyper drops a body
/// once it has sent it all).
struct Counted {
    inner: Full<Bytes>,
    place: Option<ServerPlace>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let out = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(out, std::task::Poll::Ready(None)) {
            self.place = None;
        }
        out
    }
}

impl Service<Request<tower_quota::retry::ReplayBody<Full<Bytes>>>> for ParallelLimited {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Counted>, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<tower_quota::retry::ReplayBody<Full<Bytes>>>) -> Self::Future {
        use std::sync::atomic::Ordering::SeqCst;
        let me = self.clone();
        Box::pin(async move {
            // The request arrives a little after it was sent.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = me.in_flight.fetch_add(1, SeqCst) + 1;
            if now > me.max {
                me.in_flight.fetch_sub(1, SeqCst);
                me.refused.fetch_add(1, SeqCst);
                let body = r#"{"error":{"message":"Rate limit exceeded for api_key: 9d33. Limit type: max_parallel_requests. Current limit: 1, Remaining: 0. Limit resets at: 2026-11-29 10:42:43 UTC","type":"None","param":"None","code":"429"}}"#;
                let resp = Response::builder()
                    .status(429)
                    .header("retry-after", "60")
                    .header("rate_limit_type", "max_parallel_requests")
                    .header("content-type", "application/json")
                    .body(Counted {
                        inner: Full::new(Bytes::from_static(body.as_bytes())),
                        place: None,
                    })
                    .unwrap();
                return Ok(resp);
            }
            me.most.fetch_max(now, SeqCst);
            let place = ServerPlace(Arc::clone(&me.in_flight));
            tokio::time::sleep(me.delay).await;
            Ok(Response::new(Counted {
                inner: Full::new(Bytes::from_static(b"{}")),
                place: Some(place),
            }))
        })
    }
}

/// Against a server that allows one request in flight: a burst of 6 through the whole stack
/// (wait mode, the default retries) all succeed; after the first burst's refusals the key is
/// capped at 1 and the requests go out one after another, each as the last one's body ends.
#[tokio::test(start_paused = true)]
async fn a_burst_against_a_parallel_limit_of_one_succeeds_after_the_first_refusals() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = ParallelLimited {
        max: 1,
        delay: Duration::from_millis(1500),
        in_flight: Arc::default(),
        most: Arc::default(),
        refused: Arc::default(),
    };
    let client = ServiceBuilder::new()
        .layer(
            tower_quota::QuotaLayer::new(tier())
                .with_max_attempts(8)
                .with_max_delay(Duration::from_secs(70)),
        )
        .service(server.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let resp = client.oneshot(request()).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let refused = server.refused.load(SeqCst);
    assert_eq!(server.most.load(SeqCst), 1);
    // The first burst: 5 refused at once; the request admitted before the cap was known
    // holds no place of ours, so one retry may still find it on the server.
    assert!(refused <= 7, "{refused} refusals");
    // 6 answers of 1.5 s one after another, and the backoff of the first refusals.
    assert!(
        start.elapsed() < Duration::from_secs(14),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.in_flight.load(SeqCst), 0);
}
