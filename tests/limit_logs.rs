//! The raw API key never shows in logs, errors or `Debug` output. Alone in its own test
//! binary: tracing caches per-callsite interest process-wide, so a thread-local subscriber
//! must not race other tests.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::limit::{Key, KeyBy, RateLimited};
use tower_quota::{Quota, RateLimitLayer, Tier};

mod common;

use common::Capture;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn the_raw_api_key_never_shows() {
    const SECRET: &str = "sk-or-v1-0123456789abcdef";
    let capture = Capture::default();
    let _guard = capture.install();
    let c = Classification::new(QuotaClass::RateLimited).with_retry_after(5 * SEC);
    let layer = RateLimitLayer::new(tier(1, 60 * SEC))
        .key_by(KeyBy::ApiKey)
        .with_max_wait(10 * SEC);
    let svc = layer.layer(answering(c));
    svc.clone().oneshot(req_with_key(SECRET)).await.unwrap(); // cools down
    let waited = svc.clone().oneshot(req_with_key(SECRET)).await; // beyond max_wait
    let err = waited.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    let key = Key::of(format!("Bearer {SECRET}").as_bytes());
    assert_eq!(limited.key(), key);
    let logs = capture.text();
    assert!(logs.contains("cooling down"), "{logs}");
    assert!(logs.contains("not admitted"), "{logs}");
    assert!(logs.contains(&key.to_string()), "{logs}");
    let debug = format!(
        "{err:?} {err} {limited:?} {layer:?} {:?} {:?}",
        layer.limiter(),
        layer.limiter().snapshot(key).await.unwrap()
    );
    for text in [&logs, &debug] {
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}

fn tier(n: u64, w: Duration) -> Tier {
    Tier::new("test").with_quota(Quota::new(n, w))
}

fn req_with_key(key: &str) -> Request<()> {
    Request::builder()
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap()
}

fn answering(
    first: Classification,
) -> impl tower::Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send>
       + Clone {
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
