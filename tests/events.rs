//! The `tracing` events of the three layers speak one vocabulary (see the crate docs'
//! "Observability" table). Alone in its own test binary: tracing caches per-callsite interest
//! process-wide, so a thread-local subscriber must not race other tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::retry::ReplayBody;
use tower_quota::{Quota, QuotaLayer, RateLimitLayer, Tier};

type Event = (String, BTreeMap<String, String>);

/// A subscriber that keeps every event: its message and its fields, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Event);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.to_owned());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: String) {
        if field.name() == "message" {
            self.0 .0 = value;
        } else {
            self.0 .1.insert(field.name().to_owned(), value);
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut e = Event::default();
        event.record(&mut Fields(&mut e));
        self.0.lock().unwrap().push(e);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn find(&self, message: &str) -> BTreeMap<String, String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .find(|(m, _)| m == message)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no {message:?} event in {events:#?}"))
    }
}

#[tokio::test(start_paused = true)]
async fn one_vocabulary_across_the_layers() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

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
        .layer(QuotaLayer::new(tier.clone()).with_rate_limit(RateLimitLayer::new(tier).reject()))
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
