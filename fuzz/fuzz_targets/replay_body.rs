//! `ReplayBody` through `RetryAfter`: a request body arriving in arbitrary chunks at arbitrary
//! times (paused tokio time), an arbitrary replay cap, and a server that for each attempt
//! reads some frames and then answers early (dropping the body, or leaving a connection that
//! goes on reading it), fails like a broken connection, or reads everything and answers 200;
//! sometimes the caller gives up mid-way. Every reader yields a prefix of the body and then
//! either all of it (and the trailers) or an error; none hangs; an attempt that reads the
//! whole body never fails; the caller gets the last attempt's answer.
#![no_main]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use libfuzzer_sys::fuzz_target;
use tower::{BoxError, Service, ServiceExt};
use tower_quota::retry::{NoBudget, ReplayBody};
use tower_quota::RetryAfterLayer;

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: Vec<(u16, Vec<u8>)>,
    trailers: bool,
    exact: bool,
    cap: u16,
    max_attempts: u8,
    plan: Vec<Answer>,
    abandon_after_ms: Option<u16>,
}

/// What the server does with one attempt.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Answer {
    /// Reads the whole body, then answers 200 (400 if reading failed).
    Ok,
    /// Reads `frames` frames, answers `status`, then keeps reading the body or drops it.
    Early {
        frames: u8,
        status: u8,
        delay_s: Option<u8>,
        keep: Keep,
    },
    /// Reads `frames` frames, then fails like a broken connection.
    Refused { frames: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Keep {
    Drop,
    Read,
    /// Reads, and also wakes up every 50 ms (a keep-alive), polling the body each time.
    ReadTicking,
}

const STATUSES: [u16; 5] = [429, 503, 500, 408, 502];

#[path = "../../tests/support/paced.rs"]
mod paced;

use paced::Paced;

/// What one reader got.
#[derive(Debug, Default)]
struct Read {
    bytes: Vec<u8>,
    trailers: Option<HeaderMap>,
    /// `Some(true)` at a clean end, `Some(false)` on an error, `None` if it stopped early.
    clean: Option<bool>,
    /// Still reading (a connection left with the body).
    reading_on: bool,
}

type Log = Arc<Mutex<Vec<Arc<Mutex<Read>>>>>;

/// Reads at most `frames` frames (all with `None`), checking the body contract.
async fn read(body: &mut ReplayBody<Paced>, into: &Mutex<Read>, tick: bool, frames: Option<usize>) {
    let mut n = 0;
    while frames.is_none_or(|max| n < max) {
        let said_end = body.is_end_stream();
        let frame = if tick {
            match tokio::time::timeout(
                Duration::from_millis(50),
                std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)),
            )
            .await
            {
                Ok(frame) => frame,
                Err(_) => continue,
            }
        } else {
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        };
        n += 1;
        let mut r = into.lock().unwrap();
        match frame {
            None => {
                r.clean = Some(true);
                r.reading_on = false;
                return;
            }
            Some(Ok(f)) => {
                assert!(!said_end, "a frame after is_end_stream");
                match f.into_data() {
                    Ok(d) => r.bytes.extend_from_slice(&d),
                    Err(f) => r.trailers = f.into_trailers().ok(),
                }
            }
            Some(Err(_)) => {
                assert!(!said_end, "an error after is_end_stream");
                r.clean = Some(false);
                r.reading_on = false;
                return;
            }
        }
    }
}

fn server(
    plan: Arc<Vec<Answer>>,
    log: Log,
) -> impl Service<http::Request<ReplayBody<Paced>>, Response = http::Response<()>, Error = BoxError>
       + Clone {
    tower::service_fn(move |req: http::Request<ReplayBody<Paced>>| {
        let record = Arc::new(Mutex::new(Read::default()));
        let attempt = {
            let mut log = log.lock().unwrap();
            log.push(Arc::clone(&record));
            log.len() - 1
        };
        let answer = plan.get(attempt).copied().unwrap_or(Answer::Ok);
        let mut body = req.into_body();
        async move {
            match answer {
                Answer::Ok => {
                    read(&mut body, &record, false, None).await;
                    let status = if record.lock().unwrap().clean == Some(true) {
                        200
                    } else {
                        400
                    };
                    Ok(http::Response::builder().status(status).body(()).unwrap())
                }
                Answer::Refused { frames } => {
                    read(&mut body, &record, false, Some(usize::from(frames % 8))).await;
                    Err::<_, BoxError>("connection reset".into())
                }
                Answer::Early {
                    frames,
                    status,
                    delay_s,
                    keep,
                } => {
                    read(&mut body, &record, false, Some(usize::from(frames % 8))).await;
                    if keep != Keep::Drop && record.lock().unwrap().clean.is_none() {
                        record.lock().unwrap().reading_on = true;
                        tokio::spawn(async move {
                            read(&mut body, &record, keep == Keep::ReadTicking, None).await;
                        });
                    }
                    let mut resp = http::Response::builder()
                        .status(STATUSES[usize::from(status) % STATUSES.len()]);
                    if let Some(s) = delay_s {
                        resp = resp.header("retry-after", (s % 4).to_string());
                    }
                    Ok(resp.body(()).unwrap())
                }
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // A request written as text (the seeds): its body after the blank line, sent in 7-byte
    // chunks 300 ms apart, to a server that answers the first attempt 429 at once and keeps
    // reading its body, then reads the second to the end (the scenario of issue 9); or a
    // structured input.
    if data.starts_with(b"POST ") {
        let at = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(data.len(), |i| i + 4);
        let input = Input {
            chunks: data[at..].chunks(7).map(|c| (300, c.to_vec())).collect(),
            trailers: false,
            exact: false,
            cap: u16::MAX,
            max_attempts: 5,
            plan: vec![
                Answer::Early {
                    frames: 0,
                    status: 0,
                    delay_s: Some(1),
                    keep: Keep::Read,
                },
                Answer::Ok,
            ],
            abandon_after_ms: None,
        };
        run(input);
    } else if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        run(input);
    }
});

fn run(input: Input) {
    let chunks: Vec<(Duration, Bytes)> = input
        .chunks
        .iter()
        .take(64)
        .map(|(ms, c)| {
            (
                Duration::from_millis(u64::from(ms % 1000)),
                Bytes::copy_from_slice(c),
            )
        })
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let trailers = input.trailers.then(|| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t
    });
    let body = Paced::new(chunks, trailers.clone(), input.exact);
    let plan = Arc::new(input.plan.into_iter().take(6).collect::<Vec<_>>());
    let max_attempts = u32::from(input.max_attempts % 6).max(1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let log = Log::default();
        let mut client = tower::ServiceBuilder::new()
            .layer(
                RetryAfterLayer::new()
                    .with_seed(1)
                    .with_budget(NoBudget)
                    .with_max_attempts(max_attempts)
                    .with_max_replay_bytes(usize::from(input.cap)),
            )
            .service(server(Arc::clone(&plan), Arc::clone(&log)));
        let req = http::Request::post("http://router.test/v1/chat")
            .body(body)
            .unwrap();
        let call = client.ready().await.unwrap().call(req);
        let limit = match input.abandon_after_ms {
            Some(ms) => Duration::from_millis(u64::from(ms)),
            None => Duration::from_secs(3600),
        };
        let result = tokio::time::timeout(limit, call).await;
        // The connections left reading have time to finish.
        tokio::time::sleep(Duration::from_secs(3600)).await;

        let reads = log.lock().unwrap();
        match result {
            Err(_) => assert!(
                input.abandon_after_ms.is_some(),
                "the caller got no answer: {reads:?}"
            ),
            Ok(result) => {
                let last = plan.get(reads.len() - 1).copied().unwrap_or(Answer::Ok);
                match (&result, last) {
                    (Ok(resp), Answer::Ok) => assert_eq!(resp.status(), 200, "{reads:?}"),
                    (Ok(resp), Answer::Early { status, .. }) => {
                        assert_eq!(
                            resp.status(),
                            STATUSES[usize::from(status) % STATUSES.len()]
                        )
                    }
                    (Err(_), Answer::Refused { .. }) => {}
                    (result, last) => panic!("{result:?} after {last:?}"),
                }
            }
        }
        for (i, r) in reads.iter().enumerate() {
            let r = r.lock().unwrap();
            assert!(expected.starts_with(&r.bytes), "attempt {}: {r:?}", i + 1);
            assert!(!r.reading_on, "attempt {} hangs: {r:?}", i + 1);
            if r.clean == Some(true) {
                assert_eq!(r.bytes, expected, "attempt {}", i + 1);
                assert_eq!(r.trailers, trailers, "attempt {}", i + 1);
            }
        }
    });
}
