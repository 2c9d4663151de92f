//! hyper-util's legacy client behind the three layers, against the simulator, in paused
//! tokio time.
//!
//! The client is the real `hyper_util::client::legacy::Client` speaking HTTP/1.1; its
//! connector hands it an in-memory duplex stream served by the simulator with hyper (no
//! socket, so paused time stays deterministic: the clock moves only when every task waits on
//! a timer). The minute is a real minute and the tiers are the real presets.

use std::future::{ready, Ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::DuplexStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_quota::classify::{self, Classification, PeekBody, QuotaClass};
use tower_quota::clock::WallClock;
use tower_quota::limit::{KeyBy, Model, RateLimited};
use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
use tower_quota::sim::{Account, Limit, Models, Simulator, Tier as SimTier};
use tower_quota::{tiers, Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o-mini";

/// 2026-11-22 10:00:00 UTC: far from a UTC midnight.
fn ten_am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

// === an in-memory connector to the simulator ===

/// Connects the client to `sim` over a fresh duplex stream per connection.
#[derive(Clone)]
struct SimConnector(Simulator);

impl Service<Uri> for SimConnector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Ready<io::Result<Conn>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let sim = self.0.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| sim.clone().oneshot(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        ready(Ok(Conn(TokioIo::new(client))))
    }
}

/// The client's end of a duplex stream.
struct Conn(TokioIo<DuplexStream>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// === the stack ===

type Resp = Response<PeekBody<hyper::body::Incoming>>;

/// The three layers around a hyper-util client connected to `sim`, limiting `:free` models
/// on `tier` per API key, on the simulator's wall clock (calendar windows agree with it).
fn client(
    sim: &Simulator,
    tier: Tier,
) -> impl Service<Request<Full<Bytes>>, Response = Resp, Error = BoxError, Future: Send> + Clone {
    client_on(sim, tier, WallClock::from_fn(sim.wall_clock()))
}

/// [`client`], on the wall clock `clock`.
fn client_on(
    sim: &Simulator,
    tier: Tier,
    clock: WallClock,
) -> impl Service<Request<Full<Bytes>>, Response = Resp, Error = BoxError, Future: Send> + Clone {
    let hyper_client: Client<SimConnector, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build(SimConnector(sim.clone()));
    ServiceBuilder::new()
        .layer(RetryAfterLayer::new().with_clock(clock.clone()))
        .layer(
            RateLimitLayer::new(tier.clone())
                .key_by(KeyBy::ApiKey)
                .with_tier_selector(move |head| {
                    head.model()
                        .is_some_and(|m| m.is_free_variant())
                        .then(|| tier.clone())
                })
                .with_wall_clock(clock.clone()),
        )
        .layer(QuotaClassifyLayer::new(classify::OpenRouter).with_clock(clock))
        .service(hyper_client)
}

fn completion(key: &str, model: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post("http://sim.test/api/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .extension(Model::new(model))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Status, classification, retry record and when it came, of one call; the body is read.
struct Answer {
    status: StatusCode,
    class: QuotaClass,
    classification: Classification,
    info: RetryInfo,
    at: Duration,
}

async fn send<S>(client: S, req: Request<Full<Bytes>>, start: Instant) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = Resp, Error = BoxError>,
{
    let resp = client.oneshot(req).await.unwrap();
    let at = start.elapsed();
    let classification = resp.extensions().get::<Classification>().cloned().unwrap();
    let info = RetryInfo::get(resp.extensions());
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    Answer {
        status,
        class: classification.class(),
        classification,
        info,
        at,
    }
}

/// Sends `n` requests at once; the answers in the order they came.
async fn burst<S>(client: &S, n: usize, key: &str) -> Vec<Answer>
where
    S: Service<Request<Full<Bytes>>, Response = Resp, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static,
{
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (client, req) = (client.clone(), completion(key, FREE));
        set.spawn(send(client, req, start));
    }
    let mut answers = Vec::new();
    while let Some(a) = set.join_next().await {
        answers.push(a.unwrap());
    }
    answers
}

// === the tests ===

#[tokio::test(start_paused = true)]
async fn paced_free_tier_no_429_reaches_the_caller_nor_the_server() {
    let sim = Simulator::builder()
        .key("sk-or-v1-a", SimTier::openrouter_free())
        .start_wall_time(ten_am())
        .build();
    let client = client(&sim, tiers::openrouter::free());

    let answers = burst(&client, 45, "sk-or-v1-a").await;

    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.info.attempts == 1));
    // 20 at once, 20 a minute later, 5 a minute after that: as soon as the window allows.
    let at = |lo: u64, hi: u64| {
        answers
            .iter()
            .filter(|a| a.at >= Duration::from_secs(lo) && a.at < Duration::from_secs(hi))
            .count()
    };
    assert_eq!((at(0, 1), at(60, 61), at(120, 121)), (20, 20, 5));
    let stats = sim.stats();
    assert_eq!(
        (stats.succeeded, stats.rate_limited, stats.wasted),
        (45, 0, 0)
    );
    assert_eq!(
        stats.max_admissions_in(Models::Free, Duration::from_secs(60)),
        20
    );
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_servers_retry_after_is_honoured_when_the_tier_is_wrong() {
    // The client believes in 30 a minute; the server allows 20.
    let sim = Simulator::builder()
        .key("sk-or-v1-a", SimTier::openrouter_free())
        .start_wall_time(ten_am())
        .build();
    let client = client(
        &sim,
        Tier::new("too generous").with_quota(Quota::per_minute(30)),
    );

    let answers = burst(&client, 25, "sk-or-v1-a").await;

    // The caller sees no 429: five were refused once, and retried after the server's delay.
    assert!(answers.iter().all(|a| a.status == 200));
    let retried: Vec<&Answer> = answers.iter().filter(|a| a.info.attempts > 1).collect();
    assert_eq!(retried.len(), 5);
    for a in &retried {
        assert_eq!(a.info, RetryInfo::new(2, StopReason::Success));
        // Retry-After: 60, waited out (plus at most 1 s of jitter), never earlier.
        assert!(a.at >= Duration::from_secs(60), "{:?}", a.at);
        assert!(a.at <= Duration::from_secs(61), "{:?}", a.at);
    }
    let stats = sim.stats();
    assert_eq!((stats.succeeded, stats.rate_limited), (25, 5));
    let refused: Vec<_> = stats.records.iter().filter(|r| r.status == 429).collect();
    assert!(
        refused.iter().all(|r| r.at == refused[0].at),
        "one burst of 429s"
    );
    // Every retry came after the delay: no 429 was answered twice.
    assert!(stats
        .records
        .iter()
        .filter(|r| r.at > refused[0].at)
        .all(|r| r.status == 200));
    sim.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn credits_gone_402_arrives_at_once_classified() {
    let sim = Simulator::builder()
        .account(
            Account::new("sk-or-v1-broke")
                .with_tier(SimTier::unlimited())
                .with_credits(0.0),
        )
        .start_wall_time(ten_am())
        .build();
    let client = client(&sim, tiers::openrouter::free());

    let a = send(client, completion("sk-or-v1-broke", PAID), Instant::now()).await;

    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(a.class, QuotaClass::QuotaExhausted);
    assert!(!a.classification.should_retry());
    assert_eq!(a.info, RetryInfo::new(1, StopReason::NotRetryable));
    assert_eq!(a.at, Duration::ZERO, "no wait, no backoff");
    assert_eq!(sim.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn the_daily_cap_arrives_at_once_and_the_next_request_fails_fast() {
    // The server's daily cap is 5 (the key was already used today); the client's tier says 50.
    let sim = Simulator::builder()
        .key(
            "sk-or-v1-a",
            SimTier::new("nearly used up")
                .with_limit(Limit::rolling(Models::Free, 20, Duration::from_secs(60)))
                .with_limit(Limit::daily(Models::Free, 5).with_message(
                    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
                )),
        )
        .start_wall_time(ten_am())
        .build();
    let client = client(&sim, tiers::openrouter::free());
    let start = Instant::now();

    for _ in 0..5 {
        let a = send(client.clone(), completion("sk-or-v1-a", FREE), start).await;
        assert_eq!(a.status, 200);
    }
    let a = send(client.clone(), completion("sk-or-v1-a", FREE), start).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.class, QuotaClass::QuotaExhausted);
    assert_eq!(a.classification.code(), Some("free-models-per-day"));
    // Resets at the next UTC midnight, 14 hours away.
    assert_eq!(
        a.classification.reset_after(),
        Some(Duration::from_secs(14 * 3600))
    );
    assert_eq!(a.info.attempts, 1);
    assert_eq!(a.at, Duration::ZERO, "returned at once");
    assert_eq!(sim.stats().rate_limited, 1);

    // The limiter learned the reset: the next request is not sent, and fails at once with
    // the limiter's typed error (the retry layer does not retry the limiter's refusals).
    let err = client
        .clone()
        .oneshot(completion("sk-or-v1-a", FREE))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once: {err}");
    let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(14 * 3600)));
    assert_eq!(sim.stats().requests, 6, "nothing more reached the server");
}

/// The client's clock runs 90 s ahead of the server's (a container's, a laptop's after
/// sleep), or 90 s behind. The server's resets are on its own clock, as its `Date` says:
/// the daily cap still resets 14 hours from the refusal, not 14 hours less 90 s (the
/// requests of those 90 s would be refused), nor more.
#[tokio::test(start_paused = true)]
async fn resets_are_read_on_the_servers_clock_whatever_ours_says() {
    for (ahead, skew) in [(true, 90), (false, 90)] {
        let sim = Simulator::builder()
            .key(
                "sk-or-v1-a",
                SimTier::new("used up").with_limit(Limit::daily(Models::Free, 1).with_message(
                    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
                )),
            )
            .start_wall_time(ten_am())
            .build();
        let theirs = sim.wall_clock();
        let skew = Duration::from_secs(skew);
        let ours = WallClock::from_fn(move || {
            if ahead {
                theirs() + skew
            } else {
                theirs() - skew
            }
        });
        let client = client_on(&sim, tiers::openrouter::free(), ours);
        let start = Instant::now();
        assert_eq!(
            send(client.clone(), completion("sk-or-v1-a", FREE), start)
                .await
                .status,
            200
        );
        let a = send(client.clone(), completion("sk-or-v1-a", FREE), start).await;
        assert_eq!(a.class, QuotaClass::QuotaExhausted);
        assert_eq!(
            a.classification.reset_after(),
            Some(Duration::from_secs(14 * 3600)),
            "ours {} by {skew:?}",
            if ahead { "ahead" } else { "behind" }
        );
        let err = client
            .clone()
            .oneshot(completion("sk-or-v1-a", FREE))
            .await
            .unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(14 * 3600)));
    }
}
