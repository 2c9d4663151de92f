//! `ReplayBody` when an earlier attempt's body is still being read: a connection that goes on
//! streaming attempt 1's body after the server answered it, while the retry layer sends
//! attempt 2. Paused tokio time throughout.
//!
//! Only one handle may read the caller's body at a time (the newest attempt's); an older
//! attempt's reader still gets what was recorded, and an error where it would have had to
//! read on. Neither reader hangs, and the attempt that wins sends every byte.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};
use tower_quota::retry::{NoBudget, ReplayBody, ReplayError, RetryInfo, StopReason};
use tower_quota::RetryAfterLayer;

#[path = "support/paced.rs"]
mod paced;

use paced::Paced;

// === readers ===

/// What a reader of one attempt's body ended with.
#[derive(Debug, Default)]
struct Read {
    bytes: Vec<u8>,
    trailers: Option<HeaderMap>,
    /// `None` while still reading (or stopped early); `Some(Ok)` at a clean end,
    /// `Some(Err)` on an error.
    end: Option<Result<(), String>>,
    /// The error was a `ReplayError::Superseded`.
    superseded: bool,
}

/// How a reader polls.
#[derive(Clone, Copy, Debug)]
enum Polling {
    /// One frame after another.
    Plain,
    /// Also wakes up every 50 ms for work of its own (a keep-alive, a ping), polling the
    /// body again each time.
    Ticking,
}

/// Reads at most `frames` frames of `body` (all, with `None`), recording into `into`.
async fn read_body<B>(
    body: &mut ReplayBody<B>,
    into: &Mutex<Read>,
    polling: Polling,
    frames: Option<usize>,
) where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let mut n = 0;
    while frames.is_none_or(|max| n < max) {
        let frame = match polling {
            Polling::Ticking => {
                match tokio::time::timeout(Duration::from_millis(50), body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => continue,
                }
            }
            Polling::Plain => body.frame().await,
        };
        n += 1;
        let mut r = into.lock().unwrap();
        match frame {
            None => {
                r.end = Some(Ok(()));
                return;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => r.bytes.extend_from_slice(&data),
                Err(f) => r.trailers = f.into_trailers().ok(),
            },
            Some(Err(e)) => {
                r.superseded = e.downcast_ref::<ReplayError>() == Some(&ReplayError::Superseded);
                r.end = Some(Err(e.to_string()));
                return;
            }
        }
    }
}

/// Every reader's record, in the order the attempts arrived.
type Log = Arc<Mutex<Vec<Arc<Mutex<Read>>>>>;

// === the two scenarios of the issue ===

const CHUNKS: usize = 10;
const CHUNK_LEN: usize = 7;
const GAP: Duration = Duration::from_millis(300);

/// Ten chunks of seven bytes, 300 ms apart (the first after 300 ms too), of known size.
fn trickle() -> Paced {
    trickle_sized(true)
}

fn trickle_sized(exact: bool) -> Paced {
    let chunks = (0..CHUNKS)
        .map(|i| (GAP, Bytes::from(vec![b'a' + i as u8; CHUNK_LEN])))
        .collect();
    Paced::new(chunks, None, exact)
}

fn trickled() -> Vec<u8> {
    (0..CHUNKS)
        .flat_map(|i| std::iter::repeat_n(b'a' + i as u8, CHUNK_LEN))
        .collect()
}

/// The server: attempt 1 is answered 429 with `retry-after: 1` at once, before its body is
/// read, and a spawned connection task goes on reading that body; attempt 2 is read to the
/// end and answered 200.
fn early_429_server(
    connection: Polling,
    log: Log,
) -> impl Service<http::Request<ReplayBody<Paced>>, Response = http::Response<()>, Error = BoxError>
       + Clone {
    tower::service_fn(move |req: http::Request<ReplayBody<Paced>>| {
        let read = Arc::new(Mutex::new(Read::default()));
        let attempt = {
            let mut log = log.lock().unwrap();
            log.push(Arc::clone(&read));
            log.len()
        };
        let mut body = req.into_body();
        async move {
            if attempt == 1 {
                tokio::spawn(async move { read_body(&mut body, &read, connection, None).await });
                let resp = http::Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "1")
                    .body(())
                    .unwrap();
                return Ok(resp);
            }
            read_body(&mut body, &read, Polling::Plain, None).await;
            let status = match read.lock().unwrap().end {
                Some(Ok(())) => StatusCode::OK,
                _ => StatusCode::BAD_REQUEST,
            };
            Ok(http::Response::builder().status(status).body(()).unwrap())
        }
    })
}

async fn early_429(connection: Polling) {
    let log = Log::default();
    let mut client = tower::ServiceBuilder::new()
        .layer(RetryAfterLayer::new().with_seed(3))
        .service(early_429_server(connection, Arc::clone(&log)));
    let req = http::Request::post("http://router.test/v1/chat")
        .body(trickle())
        .unwrap();
    let start = Instant::now();
    let call = client.ready().await.unwrap().call(req);
    // Ten chunks 300 ms apart take 3 s; a minute of virtual time is a hang.
    let resp = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the caller never got a response; readers: {:?}",
                log.lock().unwrap()
            )
        })
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.extensions().get::<RetryInfo>(),
        Some(&RetryInfo::new(2, StopReason::Success))
    );
    // About 3 s: the last chunk at 3 s. Later means attempt 2's reader stalled until
    // something else (the timeout's own timer) happened to poll it again.
    assert!(
        start.elapsed() <= Duration::from_secs(5),
        "the caller got its response after {:?}",
        start.elapsed()
    );

    // Attempt 1's reader is not left hanging either.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reads = log.lock().unwrap();
    assert_eq!(reads.len(), 2);
    let first = reads[0].lock().unwrap();
    let total = CHUNKS * CHUNK_LEN;
    match &first.end {
        None => panic!(
            "attempt 1's reader stalled at {}/{total} bytes",
            first.bytes.len()
        ),
        // A clean end is the whole body, never a truncated one.
        Some(Ok(())) => assert_eq!(first.bytes, trickled()),
        // Else the newer attempt took the caller's body over, and attempt 1 was told so
        // after a prefix.
        Some(Err(e)) => {
            assert!(first.superseded, "{e}");
            assert!(trickled().starts_with(&first.bytes));
        }
    }
    // The attempt that won sent every byte.
    let second = reads[1].lock().unwrap();
    assert_eq!(second.end, Some(Ok(())));
    assert_eq!(
        second.bytes,
        trickled(),
        "attempt 2 sent {:?}",
        second.bytes
    );
}

#[tokio::test(start_paused = true)]
async fn earlier_attempt_still_reading_does_not_stall_either_reader() {
    early_429(Polling::Plain).await;
}

#[tokio::test(start_paused = true)]
async fn earlier_attempt_polling_again_does_not_steal_the_wakeup() {
    early_429(Polling::Ticking).await;
}

/// The connection still reading attempt 1's body passes the replay cap while the retry
/// waits out its delay: the retry is not sent (it could not be whole), the caller gets the
/// server's 429, and attempt 1 sends the whole body.
#[tokio::test(start_paused = true)]
async fn body_past_the_cap_during_the_wait_is_not_retried() {
    let log = Log::default();
    let mut client = tower::ServiceBuilder::new()
        .layer(
            RetryAfterLayer::new()
                .with_seed(3)
                .with_max_replay_bytes(2 * CHUNK_LEN),
        )
        .service(early_429_server(Polling::Plain, Arc::clone(&log)));
    // Of unknown size, so replayable until the cap is passed.
    let req = http::Request::post("http://router.test/v1/chat")
        .body(trickle_sized(false))
        .unwrap();
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.extensions().get::<RetryInfo>(),
        Some(&RetryInfo::new(1, StopReason::NotReplayable))
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reads = log.lock().unwrap();
    assert_eq!(reads.len(), 1, "the retry was sent");
    let first = reads[0].lock().unwrap();
    assert_eq!(first.end, Some(Ok(())));
    assert_eq!(first.bytes, trickled());
}

// === any chunking, cap and attempt behaviour ===

/// What the server does with one attempt.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Reads the whole body, then answers 200 (or 400 if the body failed).
    Ok,
    /// Reads `frames` frames, answers with `status` (a `retry-after` of `delay_s` if
    /// `Some`), and then drops the body or leaves a connection reading it.
    Early {
        frames: usize,
        status: u16,
        delay_s: Option<u8>,
        keep: Option<Polling>,
    },
    /// Reads `frames` frames, then fails as a transport error would.
    Refused { frames: usize },
}

fn answer() -> impl proptest::strategy::Strategy<Value = Answer> {
    use proptest::prelude::*;
    let polling = prop_oneof![
        Just(None),
        Just(Some(Polling::Plain)),
        Just(Some(Polling::Ticking))
    ];
    prop_oneof![
        1 => Just(Answer::Ok),
        3 => (0usize..6, prop_oneof![Just(429u16), Just(503)], proptest::option::of(0u8..3), polling)
            .prop_map(|(frames, status, delay_s, keep)| Answer::Early { frames, status, delay_s, keep }),
        1 => (0usize..6).prop_map(|frames| Answer::Refused { frames }),
    ]
}

fn plan_server(
    plan: Arc<Vec<Answer>>,
    log: Log,
) -> impl Service<
    http::Request<ReplayBody<Paced>>,
    Response = http::Response<()>,
    Error = std::io::Error,
> + Clone {
    tower::service_fn(move |req: http::Request<ReplayBody<Paced>>| {
        let read = Arc::new(Mutex::new(Read::default()));
        let attempt = {
            let mut log = log.lock().unwrap();
            log.push(Arc::clone(&read));
            log.len() - 1
        };
        let answer = plan.get(attempt).copied().unwrap_or(Answer::Ok);
        let mut body = req.into_body();
        async move {
            match answer {
                Answer::Ok => {
                    read_body(&mut body, &read, Polling::Plain, None).await;
                    let status = match read.lock().unwrap().end {
                        Some(Ok(())) => 200,
                        _ => 400,
                    };
                    Ok(http::Response::builder().status(status).body(()).unwrap())
                }
                Answer::Refused { frames } => {
                    read_body(&mut body, &read, Polling::Plain, Some(frames)).await;
                    Err(std::io::Error::other("connection reset"))
                }
                Answer::Early {
                    frames,
                    status,
                    delay_s,
                    keep,
                } => {
                    read_body(&mut body, &read, Polling::Plain, Some(frames)).await;
                    if let Some(polling) = keep {
                        tokio::spawn(async move {
                            read_body(&mut body, &read, polling, None).await;
                        });
                    }
                    let mut resp = http::Response::builder().status(status);
                    if let Some(s) = delay_s {
                        resp = resp.header("retry-after", s.to_string());
                    }
                    Ok(resp.body(()).unwrap())
                }
            }
        }
    })
}

proptest::proptest! {
    /// Whatever the chunking and pacing of the caller's body, the cap, and what each attempt's
    /// server does (answers early and drops the body or keeps reading it, fails, reads it
    /// all): the caller gets the last attempt's answer, no reader hangs, every reader's bytes
    /// are a prefix of the body, a reader that ends cleanly has all of it (and the
    /// trailers), and an attempt that reads the whole body (the one that answers 200) never
    /// gets an error.
    #[test]
    fn every_reader_sends_the_body_or_a_prefix_and_an_error(
        chunks in proptest::collection::vec(
            (0u64..400, proptest::collection::vec(proptest::num::u8::ANY, 0..24)),
            0..8,
        ),
        with_trailers in proptest::bool::ANY,
        exact in proptest::bool::ANY,
        cap in 0usize..160,
        plan in proptest::collection::vec(answer(), 1..5),
    ) {
        let expected: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        let trailers = with_trailers.then(|| {
            let mut t = HeaderMap::new();
            t.insert("x-checksum", "42".parse().unwrap());
            t
        });
        let body = Paced::new(
            chunks
                .iter()
                .map(|(ms, c)| (Duration::from_millis(*ms), Bytes::copy_from_slice(c)))
                .collect(),
            trailers.clone(),
            exact,
        );
        let plan = Arc::new(plan);
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let log = Log::default();
                let mut client = tower::ServiceBuilder::new()
                    .layer(
                        RetryAfterLayer::new()
                            .with_seed(1)
                            .with_budget(NoBudget)
                            .with_max_replay_bytes(cap),
                    )
                    .service(plan_server(Arc::clone(&plan), Arc::clone(&log)));
                let req = http::Request::post("http://router.test/v1/chat").body(body).unwrap();
                let call = client.ready().await.unwrap().call(req);
                let result = tokio::time::timeout(Duration::from_secs(3600), call)
                    .await
                    .expect("the caller got an answer");
                // Leave the connections time to read on, then look at every reader.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let reads = log.lock().unwrap();
                let last = plan.get(reads.len() - 1).copied().unwrap_or(Answer::Ok);
                match (&result, last) {
                    (Ok(resp), Answer::Ok) => assert_eq!(resp.status(), 200, "{reads:?}"),
                    (Ok(resp), Answer::Early { status, .. }) => assert_eq!(resp.status(), status),
                    (Err(_), Answer::Refused { .. }) => {}
                    (result, last) => panic!("{result:?} after {last:?}"),
                }
                for (i, read) in reads.iter().enumerate() {
                    let read = read.lock().unwrap();
                    assert!(expected.starts_with(&read.bytes), "attempt {}: {read:?}", i + 1);
                    match &read.end {
                        Some(Ok(())) => {
                            assert_eq!(read.bytes, expected, "attempt {}", i + 1);
                            assert_eq!(read.trailers, trailers, "attempt {}", i + 1);
                        }
                        Some(Err(_)) => {}
                        None => {
                            // Stopped early by its server, or dropped: never still waiting.
                            let reading_on = matches!(
                                plan.get(i),
                                Some(Answer::Early { keep: Some(_), .. })
                            );
                            assert!(!reading_on, "attempt {} hangs: {read:?}", i + 1);
                        }
                    }
                }
            });
    }
}
