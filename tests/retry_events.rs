//! Every bound that stops `RetryAfterLayer` from retrying says so in a `tracing` event.
//! Alone in its own test binary (see `tests/common`).

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::retry::budget::Budget;
use tower::{service_fn, Layer, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::retry::ReplayBody;
use tower_quota::RetryAfterLayer;

use common::Capture;

/// A budget that allows no retry.
struct Empty;

impl Budget for Empty {
    fn deposit(&self) {}
    fn withdraw(&self) -> bool {
        false
    }
}

/// Sends `body` through `layer` to a server that always answers `status`, with
/// `classification` attached when given, draining the request body as a client would.
async fn send(
    layer: RetryAfterLayer,
    status: u16,
    classification: Option<Classification>,
    body: Full<Bytes>,
) {
    let server = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let c = classification.clone();
        async move {
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            let mut resp = Response::builder().status(status).body(()).unwrap();
            if let Some(c) = c {
                resp.extensions_mut().insert(c);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = layer.layer(server).oneshot(Request::new(body)).await;
}

#[tokio::test(start_paused = true)]
async fn every_bound_that_stops_says_so_in_a_tracing_event() {
    let capture = Capture::default();
    let _guard = capture.install();
    let layer = || RetryAfterLayer::new().with_seed(7);
    let limited = |secs| {
        Some(
            Classification::new(QuotaClass::RateLimited)
                .with_retry_after(Duration::from_secs(secs)),
        )
    };
    let empty = || Full::new(Bytes::new());

    send(layer(), 503, None, empty()).await;
    send(layer(), 429, limited(3600), empty()).await;
    send(
        layer().with_deadline(Duration::from_secs(5)),
        503,
        limited(4),
        empty(),
    )
    .await;
    send(layer().with_budget(Empty), 503, None, empty()).await;
    send(layer(), 401, None, empty()).await;
    let big = Full::new(Bytes::from(vec![1u8; 64]));
    send(layer().with_max_replay_bytes(8), 503, None, big).await;

    assert_eq!(
        capture.values("reason"),
        [
            "max_attempts",
            "delay_too_long",
            "deadline",
            "budget_exhausted",
            "not_retryable",
            "not_replayable"
        ]
    );
}
