//! `RetryAfterLayer` against a mock server, in paused tokio time.
//!
//! Most responses carry the `Classification` a classifier would attach, so each test states
//! exactly what the layer decides from; the `parsed_*` tests at the end attach none and rely
//! on the header parsers (the generic classifier) alone.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::clock::WallClock;
use tower_quota::retry::{
    Attempt, Backoff, Budget, Jitter, NoBudget, Outcome, ReplayBody, RetryInfo, StopReason,
    TpsBudget, Verdict,
};
use tower_quota::RetryAfterLayer;

// === the mock server ===

/// What the mock answers to one attempt.
#[derive(Clone, Debug)]
enum Reply {
    Response {
        status: u16,
        headers: Vec<(&'static str, String)>,
        class: Option<Classification>,
        body: String,
    },
    Refused,
}

fn reply(status: u16) -> Reply {
    Reply::Response {
        status,
        headers: Vec::new(),
        class: None,
        body: format!("status {status}"),
    }
}

fn ok() -> Reply {
    reply(200)
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        if let Reply::Response { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }

    fn class(mut self, c: Classification) -> Self {
        if let Reply::Response { class, .. } = &mut self {
            *class = Some(c);
        }
        self
    }

    fn body(mut self, b: &str) -> Self {
        if let Reply::Response { body, .. } = &mut self {
            *body = b.to_owned();
        }
        self
    }

    fn into_result(self) -> Result<http::Response<String>, std::io::Error> {
        match self {
            Reply::Refused => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
            Reply::Response {
                status,
                headers,
                class,
                body,
            } => {
                let mut resp = http::Response::new(body);
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    resp.headers_mut().append(name, value.parse().unwrap());
                }
                if let Some(c) = class {
                    resp.extensions_mut().insert(c);
                }
                Ok(resp)
            }
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Arrival {
    at: Instant,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

#[derive(Default)]
struct Server {
    /// Replies in order; the last one repeats.
    script: Mutex<VecDeque<Reply>>,
    arrivals: Mutex<Vec<Arrival>>,
}

impl Server {
    fn new(script: impl IntoIterator<Item = Reply>) -> Arc<Self> {
        Arc::new(Server {
            script: Mutex::new(script.into_iter().collect()),
            arrivals: Mutex::new(Vec::new()),
        })
    }

    fn next(&self) -> Reply {
        let mut s = self.script.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front().cloned().expect("empty script")
        }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn calls(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// Times between consecutive arrivals.
    fn gaps(&self) -> Vec<Duration> {
        let a = self.arrivals();
        a.windows(2).map(|w| w[1].at - w[0].at).collect()
    }

    /// The mock service: records the arrival time when called and the body bytes and
    /// trailers it reads, then answers from the script.
    fn service<B>(
        self: &Arc<Self>,
    ) -> impl Service<
        http::Request<ReplayBody<B>>,
        Response = http::Response<String>,
        Error = std::io::Error,
    > + Clone
    where
        B: Body + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let server = Arc::clone(self);
        tower::service_fn(move |req: http::Request<ReplayBody<B>>| {
            let server = Arc::clone(&server);
            let index = {
                let mut a = server.arrivals.lock().unwrap();
                a.push(Arrival {
                    at: Instant::now(),
                    body: None,
                    trailers: None,
                });
                a.len() - 1
            };
            let reply = server.next();
            async move {
                if let Ok(collected) = req.into_body().collect().await {
                    let mut a = server.arrivals.lock().unwrap();
                    a[index].trailers = collected.trailers().cloned();
                    a[index].body = Some(collected.to_bytes());
                }
                reply.into_result()
            }
        })
    }
}

/// Sends one request with an empty body through `layer` to a server running `script`.
async fn run(
    layer: RetryAfterLayer,
    script: impl IntoIterator<Item = Reply>,
) -> (Result<http::Response<String>, std::io::Error>, Arc<Server>) {
    let server = Server::new(script);
    let result = send(layer, &server, Full::new(Bytes::new())).await;
    (result, server)
}

async fn send<B>(
    layer: RetryAfterLayer,
    server: &Arc<Server>,
    body: B,
) -> Result<http::Response<String>, std::io::Error>
where
    B: Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(server.service::<B>());
    let req = http::Request::post("http://router.test/v1/chat")
        .body(body)
        .unwrap();
    svc.ready().await?.call(req).await
}

fn info(resp: &http::Response<String>) -> RetryInfo {
    RetryInfo::get(resp.extensions())
}

fn layer() -> RetryAfterLayer {
    RetryAfterLayer::new().with_seed(7)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn rate_limited(delay: Duration) -> Classification {
    Classification::new(QuotaClass::RateLimited).with_retry_after(delay)
}

/// The retry went out at or after the server's delay, within the upward jitter bound
/// (min(10 %, 1 s)).
#[track_caller]
fn assert_honoured(gap: Duration, asked: Duration) {
    let jitter = (asked / 10).min(secs(1));
    assert!(
        gap >= asked && gap <= asked + jitter,
        "retried after {gap:?}, asked {asked:?} (+ at most {jitter:?})"
    );
}

// === delays ===

/// The wall-clock time HTTP-dates are written against.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + secs(1_700_000_000) // Tue, 14 Nov 2023 22:13:20 GMT
}

#[tokio::test(start_paused = true)]
async fn every_delay_form_is_honoured() {
    // (header, value, the delay the parser or classifier finds)
    let mut forms: Vec<(&str, String, Duration)> = vec![
        ("retry-after", "3".into(), secs(3)),
        ("retry-after", "1.5".into(), ms(1500)),
        ("retry-after", "0".into(), Duration::ZERO),
        (
            "retry-after-ms",
            "1500.5".into(),
            Duration::from_micros(1_500_500),
        ),
        ("retry-after-ms", "20".into(), ms(20)),
        ("grpc-retry-pushback-ms", "1200".into(), ms(1200)),
        // A delay well past the 1 s jitter cap.
        ("retry-after", "45".into(), secs(45)),
    ];
    // Each HTTP-date form, 4 s after t0; a date in the past means now.
    for date in [
        "Tue, 14 Nov 2023 22:13:24 GMT",
        "Tuesday, 14-Nov-23 22:13:24 GMT",
        "Tue Nov 14 22:13:24 2023",
        "Tue, 14 Nov 2023 22:13:00 GMT",
    ] {
        let at = httpdate::parse_http_date(date).unwrap();
        let delay = at.duration_since(t0()).unwrap_or(Duration::ZERO);
        forms.push(("retry-after", date.to_owned(), delay));
    }
    assert_eq!(forms[forms.len() - 2].2, secs(4));

    for (seed, (name, value, delay)) in forms.into_iter().enumerate() {
        let first = reply(429)
            .header(name, value.clone())
            .class(Classification::new_at(QuotaClass::RateLimited, t0()).with_retry_after(delay));
        let layer = layer()
            .with_seed(seed as u64)
            .with_clock(WallClock::fixed(t0()));
        let (resp, server) = run(layer, [first, ok()]).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200, "{name}: {value}");
        assert_eq!(info(&resp), RetryInfo::new(2, StopReason::Success));
        if delay.is_zero() {
            // No delay at all (`0`, a date past): the backoff's first step, 0.25–0.5 s,
            // not a retry back to back.
            let gap = server.gaps()[0];
            assert!(gap >= ms(250) && gap <= ms(500), "{name}: {value}: {gap:?}");
        } else {
            assert_honoured(server.gaps()[0], delay);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn body_only_delay_is_honoured() {
    // OpenRouter's upstream 429: the delay is only in the JSON body; its classifier finds it.
    let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"m is temporarily rate-limited upstream","provider_name":"P","retry_after_seconds":29}}}"#;
    let first = reply(429).body(body).class(rate_limited(secs(29)));
    let (resp, server) = run(layer(), [first, ok()]).await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_honoured(server.gaps()[0], secs(29));
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_clients_told_the_same_delay() {
    let mut gaps = Vec::new();
    for seed in 0..20 {
        let first = reply(429).class(rate_limited(secs(5)));
        let (_, server) = run(layer().with_seed(seed), [first, ok()]).await;
        let gap = server.gaps()[0];
        assert_honoured(gap, secs(5));
        gaps.push(gap);
    }
    gaps.sort();
    gaps.dedup();
    assert!(gaps.len() > 15, "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_without_server_delay() {
    for seed in 0..10 {
        let (resp, server) = run(
            layer().with_seed(seed),
            [reply(503), reply(500), reply(502), reply(504), ok()],
        )
        .await;
        assert_eq!(info(&resp.unwrap()), RetryInfo::new(5, StopReason::Success));
        // Equal jitter: retry n waits within [d/2, d] for d = 0.5 s · 2ⁿ⁻¹.
        for (n, gap) in server.gaps().into_iter().enumerate() {
            let nominal = ms(500) * 2u32.pow(n as u32);
            assert!(gap >= nominal / 2 && gap <= nominal, "retry {n}: {gap:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn custom_backoff_full_jitter_and_cap() {
    let backoff = Backoff::new(ms(100), ms(300)).with_jitter(Jitter::Full);
    let (_, server) = run(layer().with_backoff(backoff), [reply(503)]).await;
    assert_eq!(server.calls(), 5);
    for gap in server.gaps() {
        assert!(gap <= ms(300), "{gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn exact_delay_from_a_custom_decision() {
    let layer = layer().with_decide(|a: &Attempt<'_, std::io::Error>| match a.outcome() {
        Outcome::Response { status, .. } if status == 503 => Verdict::RetryAfter(ms(250)),
        _ => Verdict::Stop,
    });
    let server = Server::new([reply(503).class(rate_limited(secs(40))), reply(503), ok()]);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(server.service::<Full<Bytes>>());
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Full::new(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.gaps(), vec![ms(250), ms(250)]);
}

// === bounds ===

#[tokio::test(start_paused = true)]
async fn max_wait_returns_at_once() {
    let start = Instant::now();
    let daily = Classification::new(QuotaClass::RateLimited).with_retry_after(secs(3600));
    let (resp, server) = run(layer(), [reply(429).class(daily), ok()]).await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        info(&resp),
        RetryInfo::new(
            1,
            StopReason::DelayTooLong {
                requested: secs(3600)
            }
        )
    );
    assert_eq!(server.calls(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Within a raised max_wait, it is waited out.
    let first = reply(429).class(rate_limited(secs(90)));
    let (resp, server) = run(layer().with_max_delay(secs(120)), [first, ok()]).await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_honoured(server.gaps()[0], secs(90));
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_retried_only_with_a_delay_within_max_wait() {
    let exhausted = Classification::new(QuotaClass::QuotaExhausted);
    let (resp, server) = run(layer(), [reply(402).class(exhausted.clone()), ok()]).await;
    assert_eq!(info(&resp.unwrap()).stopped, StopReason::NotRetryable);
    assert_eq!(server.calls(), 1);

    let soon = exhausted.clone().with_retry_after(secs(2));
    let (resp, server) = run(layer(), [reply(402).class(soon), ok()]).await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_honoured(server.gaps()[0], secs(2));

    let midnight = exhausted.with_retry_after(secs(5 * 3600));
    let (resp, server) = run(layer(), [reply(429).class(midnight), ok()]).await;
    assert!(matches!(
        info(&resp.unwrap()).stopped,
        StopReason::DelayTooLong { .. }
    ));
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_stops_retries() {
    let (resp, server) = run(layer(), [reply(503)]).await;
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(5, StopReason::MaxAttempts)
    );
    assert_eq!(server.calls(), 5);

    let (resp, server) = run(layer().with_max_attempts(2), [reply(503)]).await;
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(2, StopReason::MaxAttempts)
    );
    assert_eq!(server.calls(), 2);

    let (resp, server) = run(layer().with_max_attempts(1), [reply(503)]).await;
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(1, StopReason::MaxAttempts)
    );
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_retries() {
    let start = Instant::now();
    let slow =
        reply(503).class(Classification::new(QuotaClass::Unavailable).with_retry_after(secs(4)));
    let (resp, server) = run(layer().with_deadline(secs(10)), [slow]).await;
    // Attempts at 0, ~4 and ~8 s; the next would start after 12 s.
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(3, StopReason::Deadline)
    );
    assert_eq!(server.calls(), 3);
    assert!(start.elapsed() < secs(10));
}

/// A budget allowing a fixed number of retries.
struct Allow(AtomicU32);

impl Budget for Allow {
    fn deposit(&self) {}
    fn withdraw(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[tokio::test(start_paused = true)]
async fn budget_stops_retries() {
    let (resp, server) = run(layer().with_budget(Allow(AtomicU32::new(1))), [reply(503)]).await;
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(2, StopReason::BudgetExhausted)
    );
    assert_eq!(server.calls(), 2);

    // tower's TpsBudget with no reserve and no share of deposits: no retry at all.
    let tps = TpsBudget::new(secs(1), 0, 0.0);
    let (resp, server) = run(layer().with_budget(tps), [reply(503)]).await;
    assert_eq!(
        info(&resp.unwrap()),
        RetryInfo::new(1, StopReason::BudgetExhausted)
    );
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_by_clones_and_services_of_a_layer() {
    let layer = layer().with_budget(Allow(AtomicU32::new(3)));
    let server = Server::new([reply(503)]);
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(server.service::<Full<Bytes>>());
    let other = tower::ServiceBuilder::new()
        .layer(layer)
        .service(server.service::<Full<Bytes>>());
    let mut attempts = Vec::new();
    for mut s in [svc.clone(), svc, other] {
        let req = http::Request::new(Full::new(Bytes::new()));
        let resp = s.ready().await.unwrap().call(req).await.unwrap();
        attempts.push(info(&resp).attempts);
    }
    // 3 retries in all: the first request takes all of them.
    assert_eq!(attempts, vec![4, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn default_tps_budget_allows_the_default_attempts() {
    let (resp, server) = run(RetryAfterLayer::new(), [reply(503)]).await;
    assert_eq!(info(&resp.unwrap()).stopped, StopReason::MaxAttempts);
    assert_eq!(server.calls(), 5);
    let (resp, _) = run(layer().with_budget(NoBudget), [reply(503)]).await;
    assert_eq!(info(&resp.unwrap()).stopped, StopReason::MaxAttempts);
}

// === decisions ===

#[tokio::test(start_paused = true)]
async fn non_retryable_classes_are_returned_after_one_attempt() {
    use QuotaClass::*;
    for (status, class) in [
        (401, Auth),
        (403, Forbidden),
        (400, InvalidRequest),
        (404, ClientError),
        (402, QuotaExhausted),
        (429, QuotaExhausted),
    ] {
        let c = Classification::new(class).with_code("some_code");
        let first = reply(status)
            .header("x-request-id", "abc")
            .body("the server's own words")
            .class(c.clone());
        let (resp, server) = run(layer(), [first, ok()]).await;
        let resp = resp.unwrap();
        assert_eq!(server.calls(), 1, "{class}");
        // Returned unchanged: status, headers, body, classification.
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["x-request-id"], "abc");
        assert_eq!(resp.extensions().get::<Classification>(), Some(&c));
        assert_eq!(info(&resp), RetryInfo::new(1, StopReason::NotRetryable));
        assert_eq!(resp.into_body(), "the server's own words");
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_classes_are_retried() {
    use QuotaClass::*;
    for (status, class) in [
        (429, RateLimited),
        (529, Overloaded),
        (503, Unavailable),
        (504, Timeout),
        (500, ServerError),
    ] {
        let first = reply(status).class(Classification::new(class));
        let (resp, server) = run(layer(), [first, ok()]).await;
        assert_eq!(resp.unwrap().status(), 200, "{class}");
        assert_eq!(server.calls(), 2, "{class}");
    }
}

#[tokio::test(start_paused = true)]
async fn server_verdict_overrides_the_class() {
    // x-should-retry: false on a 503 is not retried.
    let no = reply(503)
        .header("x-should-retry", "false")
        .class(Classification::new(QuotaClass::Unavailable).with_retryable(false));
    let (resp, server) = run(layer(), [no, ok()]).await;
    let resp = resp.unwrap();
    assert_eq!((resp.status().as_u16(), server.calls()), (503, 1));
    assert_eq!(info(&resp).stopped, StopReason::NotRetryable);

    // x-should-retry: true on a 400 is.
    let yes = reply(400)
        .header("x-should-retry", "true")
        .class(Classification::new(QuotaClass::InvalidRequest).with_retryable(true));
    let (resp, server) = run(layer(), [yes, ok()]).await;
    assert_eq!((resp.unwrap().status().as_u16(), server.calls()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn classification_is_derived_from_status_when_absent() {
    let (resp, server) = run(layer(), [reply(503), ok()]).await;
    assert_eq!((resp.unwrap().status().as_u16(), server.calls()), (200, 2));
    let (resp, server) = run(layer(), [reply(401), ok()]).await;
    let resp = resp.unwrap();
    assert_eq!((resp.status().as_u16(), server.calls()), (401, 1));
    // The derived classification is not added to the response.
    assert!(resp.extensions().get::<Classification>().is_none());
}

#[tokio::test(start_paused = true)]
async fn last_response_is_returned_unchanged() {
    let nth = |n: u32| {
        reply(503)
            .header("x-attempt", n.to_string())
            .body(&format!("attempt {n}"))
            .class(Classification::new(QuotaClass::Unavailable).with_message(&format!("m{n}")))
    };
    let (resp, server) = run(layer().with_max_attempts(3), [nth(1), nth(2), nth(3)]).await;
    let resp = resp.unwrap();
    assert_eq!(server.calls(), 3);
    assert_eq!(resp.headers()["x-attempt"], "3");
    assert_eq!(
        resp.extensions().get::<Classification>().unwrap().message(),
        Some("m3")
    );
    assert_eq!(resp.into_body(), "attempt 3");
}

#[tokio::test(start_paused = true)]
async fn custom_decision_replaces_the_default() {
    // Never retry, whatever the class.
    let layer = layer().with_decide(|_: &Attempt<'_, std::io::Error>| Verdict::Stop);
    let server = Server::new([reply(503), ok()]);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(server.service::<Full<Bytes>>());
    let req = http::Request::new(Full::new(Bytes::new()));
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!((resp.status().as_u16(), server.calls()), (503, 1));
    assert_eq!(info(&resp).stopped, StopReason::NotRetryable);
}

// === bodies ===

/// A streaming body: the chunks one per poll (yielding `Pending` between them), then the
/// trailers. Its size is unknown.
struct Chunked {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    yielded: bool,
}

impl Chunked {
    fn new(chunks: &[&[u8]], trailers: Option<HeaderMap>) -> Self {
        Chunked {
            chunks: chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
            trailers,
            yielded: false,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !std::mem::replace(&mut self.yielded, true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[tokio::test(start_paused = true)]
async fn streaming_body_is_identical_on_every_attempt() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    let chunks: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + i as usize]).collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let expected: Vec<u8> = chunks.concat();

    let server = Server::new([reply(503), reply(429), ok()]);
    let body = Chunked::new(&refs, Some(trailers.clone()));
    let resp = send(layer(), &server, body).await.unwrap();
    assert_eq!(info(&resp).attempts, 3);
    let arrivals = server.arrivals();
    assert_eq!(arrivals.len(), 3);
    for a in arrivals {
        assert_eq!(a.body.as_deref(), Some(&expected[..]));
        assert_eq!(a.trailers.as_ref(), Some(&trailers));
    }
}

#[tokio::test(start_paused = true)]
async fn cloneable_body_is_identical_on_every_attempt() {
    let payload = Bytes::from(r#"{"model":"openrouter/free","messages":[]}"#);
    let server = Server::new([reply(500), reply(502), ok()]);
    let resp = send(layer(), &server, Full::new(payload.clone()))
        .await
        .unwrap();
    assert_eq!(info(&resp).attempts, 3);
    for a in server.arrivals() {
        assert_eq!(a.body.as_ref(), Some(&payload));
    }
}

#[tokio::test(start_paused = true)]
async fn over_cap_body_is_sent_once_and_intact() {
    let chunks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let expected = chunks.concat();
    let layer = || layer().with_max_replay_bytes(4096);

    // Streaming, size unknown up front.
    let server = Server::new([reply(503), ok()]);
    let resp = send(layer(), &server, Chunked::new(&refs, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(info(&resp), RetryInfo::new(1, StopReason::NotReplayable));
    assert_eq!(server.calls(), 1);
    assert_eq!(server.arrivals()[0].body.as_deref(), Some(&expected[..]));

    // Known size above the cap.
    let server = Server::new([reply(503), ok()]);
    let resp = send(layer(), &server, Full::new(Bytes::from(expected.clone())))
        .await
        .unwrap();
    assert_eq!(info(&resp), RetryInfo::new(1, StopReason::NotReplayable));
    assert_eq!(server.arrivals()[0].body.as_deref(), Some(&expected[..]));

    // Exactly at the cap: replayed.
    let server = Server::new([reply(503), ok()]);
    let body = Full::new(Bytes::from(expected[..4096].to_vec()));
    let resp = send(layer(), &server, body).await.unwrap();
    assert_eq!(info(&resp), RetryInfo::new(2, StopReason::Success));
    for a in server.arrivals() {
        assert_eq!(a.body.as_deref(), Some(&expected[..4096]));
    }
}

// === errors and cancellation ===

#[tokio::test(start_paused = true)]
async fn transport_errors_are_retried_then_returned() {
    let (resp, server) = run(layer(), [Reply::Refused, Reply::Refused, ok()]).await;
    assert_eq!(info(&resp.unwrap()), RetryInfo::new(3, StopReason::Success));
    assert_eq!(server.calls(), 3);
    // Backoff between them.
    for gap in server.gaps() {
        assert!(gap >= ms(250), "{gap:?}");
    }

    let (resp, server) = run(layer(), [Reply::Refused]).await;
    let err = resp.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(server.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_not_retried_without_replay() {
    let server = Server::new([Reply::Refused, ok()]);
    let body = Full::new(Bytes::from(vec![0u8; 100]));
    let err = send(layer().with_max_replay_bytes(10), &server, body)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_future_mid_wait_sends_nothing_more() {
    let server = Server::new([reply(503).class(rate_limited(secs(5)))]);
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer())
        .service(server.service::<Full<Bytes>>());
    let req = http::Request::new(Full::new(Bytes::new()));
    let fut = svc.ready().await.unwrap().call(req);
    // Give up mid-wait.
    let timed_out = tokio::time::timeout(secs(2), fut).await;
    assert!(timed_out.is_err());
    assert_eq!(server.calls(), 1);
    tokio::time::sleep(secs(600)).await;
    assert_eq!(server.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_future_mid_attempt_sends_nothing_more() {
    // The second attempt never answers; dropping the future cancels it and nothing follows.
    let server = Server::new([reply(503)]);
    let svc = server.service::<Full<Bytes>>();
    let sent = Arc::new(AtomicU32::new(0));
    let hang = tower::service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
        let mut svc = svc.clone();
        let n = sent.fetch_add(1, Ordering::SeqCst);
        async move {
            let resp = svc.call(req).await;
            if n > 0 {
                tokio::time::sleep(secs(3600)).await;
            }
            resp
        }
    });
    let mut svc = tower::ServiceBuilder::new().layer(layer()).service(hang);
    let req = http::Request::new(Full::new(Bytes::new()));
    let fut = svc.ready().await.unwrap().call(req);
    assert!(tokio::time::timeout(secs(10), fut).await.is_err());
    assert_eq!(server.calls(), 2);
    tokio::time::sleep(secs(7200)).await;
    assert_eq!(server.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn services_are_cheap_clones_and_unwrap() {
    let server = Server::new([ok()]);
    let svc = tower_quota::retry::RetryAfter::new(server.service::<Full<Bytes>>());
    let mut clone = svc.clone();
    let _ = clone.get_ref();
    let _ = clone.get_mut();
    let req = http::Request::new(Full::new(Bytes::new()));
    let resp = clone.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(info(&resp), RetryInfo::new(1, StopReason::Success));
    // A first-attempt success carries nothing extra.
    assert!(resp.extensions().is_empty());
    let _inner = svc.into_inner();
    assert!(format!("{:?}", layer()).contains("max_attempts: 5"));
}

// === once the header parsers land ===
//
// These rely on the real parsers (`headers::retry_after`, `should_retry`) through the generic
// classifier: no Classification is attached. Run with `cargo test --test retry -- --ignored`.

#[tokio::test(start_paused = true)]
async fn parsed_retry_after_seconds_is_honoured() {
    let (resp, server) = run(layer(), [reply(429).header("retry-after", "3"), ok()]).await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_honoured(server.gaps()[0], secs(3));
}

#[tokio::test(start_paused = true)]
async fn parsed_http_date_is_honoured() {
    for (date, delay) in [
        ("Tue, 14 Nov 2023 22:13:24 GMT", secs(4)),
        ("Tuesday, 14-Nov-23 22:13:24 GMT", secs(4)),
        ("Tue Nov 14 22:13:24 2023", secs(4)),
        ("Tue, 14 Nov 2023 22:13:00 GMT", Duration::ZERO),
    ] {
        let first = reply(503).header("retry-after", date);
        let layer = layer().with_clock(WallClock::fixed(t0()));
        let (resp, server) = run(layer, [first, ok()]).await;
        assert_eq!(resp.unwrap().status(), 200, "{date}");
        if delay.is_zero() {
            // A date past is no delay: the backoff's first step.
            let gap = server.gaps()[0];
            assert!(gap >= ms(250) && gap <= ms(500), "{date}: {gap:?}");
        } else {
            assert_honoured(server.gaps()[0], delay);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn parsed_retry_after_ms_and_pushback_are_honoured() {
    let (_, server) = run(layer(), [reply(429).header("retry-after-ms", "1500"), ok()]).await;
    assert_honoured(server.gaps()[0], ms(1500));
    let (_, server) = run(
        layer(),
        [reply(503).header("grpc-retry-pushback-ms", "700"), ok()],
    )
    .await;
    assert_honoured(server.gaps()[0], ms(700));
}

#[tokio::test(start_paused = true)]
async fn parsed_should_retry_overrides_the_status() {
    let (_, server) = run(
        layer(),
        [reply(503).header("x-should-retry", "false"), ok()],
    )
    .await;
    assert_eq!(server.calls(), 1);
    let (_, server) = run(layer(), [reply(400).header("x-should-retry", "true"), ok()]).await;
    assert_eq!(server.calls(), 2);
    let (_, server) = run(
        layer(),
        [reply(503).header("grpc-retry-pushback-ms", "-1"), ok()],
    )
    .await;
    assert_eq!(server.calls(), 1);
}

// === visibility ===

// The tracing events of each bound: tests/retry_events.rs (a binary of its own).

#[test]
fn futures_and_bodies_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let inner = tower::service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let mut svc = RetryAfterLayer::new().layer(inner);
    let fut = svc.call(http::Request::new(Full::new(Bytes::new())));
    is_send(&fut);
    is_send(&ReplayBody::new(Full::new(Bytes::new()), 10));
}
