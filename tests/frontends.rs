//! One behaviour table, two front ends: every case runs through the tower stack
//! (`QuotaLayer` over a tower service) and through the reqwest middleware
//! (`QuotaMiddleware` over a reqwest client), against the same scripted server, and the two
//! must see the same thing — the same status, class and `RetryInfo`, or the same error; the
//! same number of calls to the server; the same time taken (paused tokio time).
//!
//! The server is scripted in-process on both sides (a `tower::service_fn`, a reqwest
//! middleware placed after ours that answers without a network), so the table runs in
//! virtual time.
#![cfg(feature = "reqwest-middleware")]

#[path = "support/answering.rs"]
mod answering;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_quota::limit::Mode;

use bytes::Bytes;
use http::Extensions;
use http_body_util::Full;
use reqwest_middleware::ClientBuilder;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::limit::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreError, StoreFuture,
    StoreSnapshot, UpdateRequest,
};
use tower_quota::limit::{Key, RateLimited};
use tower_quota::reqwest::QuotaMiddleware;
use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
use tower_quota::{Quota, QuotaLayer, RateLimitLayer, RetryAfterLayer, Tier};

use answering::Answering;

// === The scripted server ===

#[derive(Clone, Copy, Debug)]
enum Answer {
    Http(u16, &'static [(&'static str, &'static str)], &'static str),
    Io(io::ErrorKind),
}

/// Answers in order; the last answer repeats.
#[derive(Debug)]
struct Script {
    answers: Vec<Answer>,
    calls: AtomicUsize,
}

impl Script {
    fn new(answers: &[Answer]) -> Arc<Script> {
        Arc::new(Script {
            answers: answers.to_vec(),
            calls: AtomicUsize::new(0),
        })
    }

    fn next(&self) -> Result<http::Response<Bytes>, io::Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.answers[n.min(self.answers.len() - 1)] {
            Answer::Io(kind) => Err(io::Error::from(kind)),
            Answer::Http(status, headers, body) => {
                let mut b = http::Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                Ok(b.body(Bytes::from_static(body.as_bytes())).unwrap())
            }
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

// === A store that fails ===

#[derive(Debug, Default)]
struct Broken(MemoryStore);

impl Store for Broken {
    fn acquire<'a>(&'a self, _req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        Box::pin(async { Err(StoreError::new("connection refused by the store")) })
    }
    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        self.0.update(req)
    }
    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        self.0.snapshot(req)
    }
}

// === What a caller sees ===

#[derive(Debug, PartialEq)]
enum Seen {
    Response {
        status: u16,
        class: QuotaClass,
        info: Option<(u32, StopReason)>,
    },
    Error(String),
}

#[derive(Debug, PartialEq)]
struct Outcome {
    seen: Seen,
    calls: usize,
    elapsed: Duration,
}

fn seen_response(status: u16, extensions: &Extensions) -> Seen {
    Seen::Response {
        status,
        class: extensions
            .get::<Classification>()
            .map_or(QuotaClass::Success, Classification::class),
        info: extensions
            .get::<RetryInfo>()
            .map(|i| (i.attempts, i.stopped)),
    }
}

/// What kind of error: the first type of the chain that says.
fn kind(mut e: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(err) = e {
        if let Some(limited) = err.downcast_ref::<RateLimited>() {
            return format!("rate limited, retry after {:?}", limited.retry_after());
        }
        if err.is::<StoreError>() {
            return "store".into();
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return format!("transport: {:?}", io.kind());
        }
        e = err.source();
    }
    "unknown".into()
}

// === The cases ===

struct Case {
    name: &'static str,
    answers: &'static [Answer],
    layer: fn() -> QuotaLayer,
    /// Run on the limiter before the request (e.g. to fill the key).
    before: fn(&tower_quota::limit::Limiter),
    expect: Seen,
}

fn tier(n: u64) -> Tier {
    Tier::new("t").with_quota(Quota::per_minute(n))
}

fn plain() -> QuotaLayer {
    QuotaLayer::new(tier(100)).with_retry(RetryAfterLayer::new().with_seed(7))
}

fn nothing(_: &tower_quota::limit::Limiter) {}

fn fill(limiter: &tower_quota::limit::Limiter) {
    limiter.try_acquire(Key::GLOBAL, 1).unwrap();
}

const OK: Answer = Answer::Http(200, &[], r#"{"choices":[]}"#);
const LIMITED_7S: Answer = Answer::Http(
    429,
    &[("retry-after", "7")],
    r#"{"error":{"message":"Rate limit exceeded: limit_rpm/x","code":429}}"#,
);
const LIMITED_1H: Answer = Answer::Http(
    429,
    &[("retry-after", "3600")],
    r#"{"error":{"message":"Rate limit exceeded","code":429}}"#,
);
const NO_CREDITS: Answer = Answer::Http(
    402,
    &[],
    r#"{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}"#,
);
const UNAVAILABLE: Answer = Answer::Http(
    503,
    &[],
    r#"{"error":{"message":"No available provider","code":503}}"#,
);

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "success",
            answers: &[OK],
            layer: plain,
            before: nothing,
            expect: Seen::Response {
                status: 200,
                class: QuotaClass::Success,
                info: None,
            },
        },
        Case {
            name: "429 with a delay, then success",
            answers: &[LIMITED_7S, OK],
            layer: plain,
            before: nothing,
            expect: Seen::Response {
                status: 200,
                class: QuotaClass::Success,
                info: Some((2, StopReason::Success)),
            },
        },
        Case {
            name: "429 with a delay past max_wait",
            answers: &[LIMITED_1H, OK],
            layer: plain,
            before: nothing,
            expect: Seen::Response {
                status: 429,
                class: QuotaClass::RateLimited,
                info: Some((
                    1,
                    StopReason::DelayTooLong {
                        requested: Duration::from_secs(3600),
                    },
                )),
            },
        },
        Case {
            name: "quota exhausted",
            answers: &[NO_CREDITS, OK],
            layer: plain,
            before: nothing,
            expect: Seen::Response {
                status: 402,
                class: QuotaClass::QuotaExhausted,
                info: Some((1, StopReason::NotRetryable)),
            },
        },
        Case {
            name: "store error",
            answers: &[OK],
            layer: || {
                QuotaLayer::new(tier(100))
                    .with_rate_limit(RateLimitLayer::new(tier(100)).with_store(Broken::default()))
                    .with_retry(RetryAfterLayer::new().with_seed(7))
            },
            before: nothing,
            expect: Seen::Error("store".into()),
        },
        Case {
            name: "limiter refuses the first attempt",
            answers: &[OK],
            layer: || {
                QuotaLayer::new(tier(1))
                    .with_rate_limit(RateLimitLayer::new(tier(1)).with_mode(Mode::Reject))
                    .with_retry(RetryAfterLayer::new().with_seed(7))
            },
            before: fill,
            expect: Seen::Error("rate limited, retry after Some(60s)".into()),
        },
        Case {
            name: "limiter refuses a retry",
            answers: &[UNAVAILABLE, OK],
            layer: || {
                QuotaLayer::new(tier(1))
                    .with_rate_limit(
                        RateLimitLayer::new(tier(1)).with_max_wait(Duration::from_secs(10)),
                    )
                    .with_retry(RetryAfterLayer::new().with_seed(7))
            },
            before: nothing,
            expect: Seen::Response {
                status: 503,
                class: QuotaClass::Unavailable,
                info: Some((1, StopReason::LimiterRefused)),
            },
        },
        Case {
            name: "transport error before sending, then success",
            answers: &[Answer::Io(io::ErrorKind::ConnectionRefused), OK],
            layer: plain,
            before: nothing,
            expect: Seen::Response {
                status: 200,
                class: QuotaClass::Success,
                info: Some((2, StopReason::Success)),
            },
        },
        Case {
            name: "transport error that may have reached the server",
            answers: &[Answer::Io(io::ErrorKind::ConnectionReset), OK],
            layer: plain,
            before: nothing,
            expect: Seen::Error("transport: ConnectionReset".into()),
        },
        Case {
            name: "server errors until attempts run out",
            answers: &[UNAVAILABLE],
            layer: || {
                QuotaLayer::new(tier(100))
                    .with_retry(RetryAfterLayer::new().with_seed(7).with_max_attempts(3))
            },
            before: nothing,
            expect: Seen::Response {
                status: 503,
                class: QuotaClass::Unavailable,
                info: Some((3, StopReason::MaxAttempts)),
            },
        },
    ]
}

// === The two front ends ===

async fn through_tower(case: &Case) -> Outcome {
    let script = Script::new(case.answers);
    let layer = (case.layer)();
    (case.before)(layer.limiter());
    let server = {
        let script = script.clone();
        tower::service_fn(move |_req: http::Request<ReplayBody<Full<Bytes>>>| {
            let answer = script.next();
            async move { answer.map(|r| r.map(Full::new)) }
        })
    };
    let client = layer.layer(server);
    let start = Instant::now();
    let request = http::Request::post("http://router.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let seen = match client.oneshot(request).await {
        Ok(response) => seen_response(response.status().as_u16(), response.extensions()),
        Err(e) => Seen::Error(kind(Some(&*e))),
    };
    Outcome {
        seen,
        calls: script.calls(),
        elapsed: start.elapsed(),
    }
}

async fn through_reqwest(case: &Case) -> Outcome {
    let script = Script::new(case.answers);
    let layer = (case.layer)();
    (case.before)(layer.limiter());
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(layer))
        .with(Answering::new({
            let script = script.clone();
            move |_| script.next()
        }))
        .build();
    let start = Instant::now();
    let result = client
        .post("http://router.test/v1/chat/completions")
        .body("{}")
        .send()
        .await;
    let seen = match result {
        Ok(response) => seen_response(response.status().as_u16(), response.extensions()),
        Err(reqwest_middleware::Error::Middleware(e)) => Seen::Error(kind(Some(e.as_ref()))),
        Err(reqwest_middleware::Error::Reqwest(e)) => Seen::Error(kind(Some(&e))),
    };
    Outcome {
        seen,
        calls: script.calls(),
        elapsed: start.elapsed(),
    }
}

#[tokio::test(start_paused = true)]
async fn both_front_ends_behave_the_same() {
    let mut failures = Vec::new();
    for case in cases() {
        let tower = through_tower(&case).await;
        let reqwest = through_reqwest(&case).await;
        if tower.seen != case.expect {
            failures.push(format!("{}: tower saw {:?}", case.name, tower.seen));
        }
        if tower != reqwest {
            failures.push(format!(
                "{}: tower {tower:?} but reqwest {reqwest:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The table's timings are the server's: a delay of 7 s takes 7 s (plus the upward jitter of
/// at most a tenth that keeps clients told the same delay apart), a refusal takes none.
#[tokio::test(start_paused = true)]
async fn the_timings_are_the_servers() {
    let cases = cases();
    let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let delayed = through_tower(find("429 with a delay, then success")).await;
    assert_eq!(delayed.calls, 2);
    assert!(
        delayed.elapsed >= Duration::from_secs(7)
            && delayed.elapsed <= Duration::from_millis(7_700),
        "{:?}",
        delayed.elapsed
    );
    let refused = through_tower(find("limiter refuses the first attempt")).await;
    assert_eq!((refused.calls, refused.elapsed), (0, Duration::ZERO));
    let store = through_tower(find("store error")).await;
    assert_eq!((store.calls, store.elapsed), (0, Duration::ZERO));
    let exhausted = through_tower(find("quota exhausted")).await;
    assert_eq!((exhausted.calls, exhausted.elapsed), (1, Duration::ZERO));
    let refused_retry = through_tower(find("limiter refuses a retry")).await;
    assert_eq!(refused_retry.calls, 1);
}

// === Refusals foreseen ===

/// A server answering each of two requests (`x-id: a` or `b`) from its own script, in order
/// (the last answer repeats), the first answers after 10 ms (`a`) and 100 ms (`b`): `a`'s
/// 429 comes back, and teaches the limiter its cooldown, while `b` is still on the wire.
#[derive(Clone)]
struct TwoScripts {
    a: &'static [Answer],
    b: &'static [Answer],
    calls: Arc<[AtomicUsize; 2]>,
}

impl TwoScripts {
    fn new(a: &'static [Answer], b: &'static [Answer]) -> TwoScripts {
        TwoScripts {
            a,
            b,
            calls: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
        }
    }

    async fn answer(&self, id: &str) -> http::Response<Bytes> {
        let (i, script) = if id == "b" { (1, self.b) } else { (0, self.a) };
        let n = self.calls[i].fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            // Both first calls are on the wire together; `b`'s answer comes back last.
            tokio::time::sleep(Duration::from_millis(if i == 1 { 100 } else { 10 })).await;
        }
        match script[n.min(script.len() - 1)] {
            Answer::Http(status, headers, body) => answering::response(status, headers, body),
            Answer::Io(kind) => panic!("no transport errors here: {kind:?}"),
        }
    }

    fn calls(&self) -> [usize; 2] {
        [0, 1].map(|i| self.calls[i].load(Ordering::SeqCst))
    }
}

/// The scripted server as the last reqwest middleware.
struct AnsweringTwo(TwoScripts);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for AnsweringTwo {
    async fn handle(
        &self,
        req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let id = req.headers()["x-id"].to_str().unwrap().to_owned();
        Ok(reqwest::Response::from(self.0.answer(&id).await))
    }
}

fn two_attempts() -> QuotaLayer {
    QuotaLayer::new(tier(100)).with_retry(RetryAfterLayer::new().with_seed(7).with_max_attempts(2))
}

const LIMITED_1S: Answer = Answer::Http(
    429,
    &[("retry-after", "1")],
    r#"{"error":{"message":"Rate limit exceeded","code":429}}"#,
);

/// Sends `a` and `b` at once through the tower stack; what each saw, and the calls of each.
async fn two_through_tower(server: &TwoScripts) -> ([Seen; 2], [usize; 2]) {
    let client = two_attempts().layer(tower::service_fn({
        let server = server.clone();
        move |req: http::Request<ReplayBody<Full<Bytes>>>| {
            let server = server.clone();
            async move {
                let id = req.headers()["x-id"].to_str().unwrap().to_owned();
                Ok::<_, io::Error>(server.answer(&id).await.map(Full::new))
            }
        }
    }));
    let send = |id: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::post("http://router.test/v1/chat/completions")
                .header("x-id", id)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let response = client.oneshot(request).await.unwrap();
            seen_response(response.status().as_u16(), response.extensions())
        }
    };
    let (a, b) = tokio::join!(send("a"), send("b"));
    ([a, b], server.calls())
}

/// The same through the reqwest middleware.
async fn two_through_reqwest(server: &TwoScripts) -> ([Seen; 2], [usize; 2]) {
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(two_attempts()))
        .with(AnsweringTwo(server.clone()))
        .build();
    let send = |id: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .post("http://router.test/v1/chat/completions")
                .header("x-id", id)
                .body("{}")
                .send()
                .await
                .unwrap();
            seen_response(response.status().as_u16(), response.extensions())
        }
    };
    let (a, b) = tokio::join!(send("a"), send("b"));
    ([a, b], server.calls())
}

/// Two requests on one key, two attempts each allowed. `a`'s 429 (retry after 1 s) puts the
/// key in a cooldown while `b` is on the wire; `b`'s 429, sent before anyone knew, is a
/// foreseen refusal and is not counted: `b` gets its two attempts after it, and succeeds on
/// its third call. A 429 of an attempt sent after the cooldown is news, and counts: `b`,
/// refused again, stops at its second counted attempt. Both front ends alike.
#[tokio::test(start_paused = true)]
async fn a_refusal_foreseen_on_the_wire_does_not_use_up_an_attempt() {
    const A: &[Answer] = &[LIMITED_1S, OK];
    let success_after = |attempts| Seen::Response {
        status: 200,
        class: QuotaClass::Success,
        info: Some((attempts, StopReason::Success)),
    };
    for (b, expect_b, calls_b) in [
        (&[LIMITED_1S, LIMITED_1S, OK][..], success_after(3), 3),
        (
            &[LIMITED_1S, LIMITED_1S, LIMITED_1S][..],
            Seen::Response {
                status: 429,
                class: QuotaClass::RateLimited,
                info: Some((3, StopReason::MaxAttempts)),
            },
            3,
        ),
    ] {
        let b: &'static [Answer] = b.to_vec().leak();
        let tower = two_through_tower(&TwoScripts::new(A, b)).await;
        let reqwest = two_through_reqwest(&TwoScripts::new(A, b)).await;
        assert_eq!(tower, ([success_after(2), expect_b], [2, calls_b]));
        assert_eq!(reqwest, tower);
    }
}
