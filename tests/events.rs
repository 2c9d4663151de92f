//! The `tracing` events of the three layers speak one vocabulary (see the crate docs'
//! "Observability" table). Alone in its own test binary: tracing caches per-callsite interest
//! process-wide, so a thread-local subscriber must not race other tests.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tower_quota::limit::Mode;

use bytes::Bytes;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::retry::ReplayBody;
use tower_quota::{Quota, QuotaLayer, RateLimitLayer, Tier};

mod common;

use common::Capture;

#[tokio::test(start_paused = true)]
async fn one_vocabulary_across_the_layers() {
    let capture = Capture::default();
    let _guard = capture.install();

    // A rate limit with a 2 s delay, then a success; then a request the limiter refuses.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let upstream = tower::service_fn(move |_req: http::Request<ReplayBody<Full<Bytes>>>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut resp = http::Response::builder();
            if n == 0 {
                resp = resp.status(429).header("retry-after", "2");
            }
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
        }
    });
    let tier = Tier::new("demo").with_quota(Quota::per_minute(2));
    let svc = ServiceBuilder::new()
        .layer(
            QuotaLayer::new(tier.clone())
                .with_rate_limit(RateLimitLayer::new(tier).with_mode(Mode::Reject)),
        )
        .service(upstream);
    let req = || http::Request::new(Full::new(Bytes::new()));
    svc.clone().oneshot(req()).await.unwrap();
    svc.clone().oneshot(req()).await.unwrap_err();

    let classified = capture.find("classified response");
    assert_eq!(classified["status"], "429");
    assert_eq!(classified["class"], "rate_limited");
    assert_eq!(classified["retry_after_ms"], "2000");
    assert!(classified.contains_key("scope"));

    let cooling = capture.find("rate limit: cooling down");
    assert_eq!(cooling["class"], "rate_limited");
    assert_eq!(cooling["delay_ms"], "2000");
    assert_eq!(cooling["tier"], "demo");

    let retrying = capture.find("retrying");
    assert_eq!(retrying["attempts"], "1");
    assert_eq!(retrying["class"], "rate_limited");
    assert_eq!(retrying["server_delay_ms"], "2000");
    assert!(retrying["delay_ms"].parse::<u64>().unwrap() >= 2000);

    let refused = capture.find("rate limit: request not admitted");
    assert_eq!(refused["reason"], "rejected");
    assert_eq!(refused["tier"], "demo");

    let stopped = capture.find("not retrying");
    assert_eq!(stopped["attempts"], "1");
    assert_eq!(stopped["reason"], "not_retryable");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
