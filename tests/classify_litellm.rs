//! The LiteLLM proxy's answers as a real proxy gave them (`tests/fixtures/litellm/*.json`,
//! captured by `tests/litellm.rs`, each naming the LiteLLM version and the configuration that
//! produced it), through every classifier that may face them: `Auto`, `LiteLlm`, and `OpenAi`
//! or `Anthropic` for the endpoint's API. No Python needed.

#[path = "support/litellm_fixture.rs"]
mod fixture;

use std::time::Duration;

use fixture::Fixture;
use tower_quota::classify::{Auto, Classify, QuotaClass};
use tower_quota::limit::{AcquireError, Key, LearnOptions, Limiter, Mode};
use tower_quota::{Quota, Tier};

#[test]
fn every_captured_answer_is_classified_as_reviewed() {
    let all = Fixture::all();
    assert!(all.len() >= 30, "only {} fixtures", all.len());
    let errors: Vec<String> = all.iter().flat_map(Fixture::mismatches).collect();
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn quota_exhaustion_is_never_retried() {
    let mut exhausted = 0;
    for f in Fixture::all() {
        for (who, c) in f.classify() {
            if c.class() == QuotaClass::QuotaExhausted {
                exhausted += 1;
                assert!(!c.should_retry(), "[{}] via {who}: {c}", f.name);
            }
        }
    }
    assert!(exhausted >= 8, "{exhausted} exhausted verdicts");
}

/// The key limiter's success headers (`x-ratelimit-api_key-remaining-requests: 0`) tell the
/// limiter that the key's window is full, though the upstream's copied headers on the same
/// response say 499 requests remain.
#[tokio::test(start_paused = true)]
async fn the_key_limiters_headers_fill_the_local_window() {
    let f = Fixture::load("key_rpm_ok_chat").expect("fixture");
    let c = Auto.classify_at(&f.parts(), b"", f.captured_at);
    let requests = c.rate_limit().requests().expect("a request window");
    assert_eq!((requests.limit, requests.remaining), (Some(2), Some(0)));

    let tier = Tier::new("litellm-key").with_quota(Quota::per_minute(2));
    let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
    let key = Key::of("sk-rpm");
    limiter.acquire(key, 1).await.unwrap();
    if let Some(learning) = limiter.learn(key, &tier, &c, LearnOptions::default()) {
        learning.await;
    }
    match limiter.acquire(key, 1).await {
        Err(AcquireError::RateLimited(e)) => {
            assert!(e.retry_after().unwrap() <= Duration::from_secs(60))
        }
        other => panic!("the window is full: {other:?}"),
    }
}

/// A refusal of the key's parallel requests is no window's: a place frees when a request
/// ends. The limiter neither blocks the key for the constant `retry-after: 60` beside it nor
/// widens its margin; it caps the key at the proxy's limit (1, which the message names) for
/// a minute from the last such refusal: through the layers, a second request waits (here,
/// in reject mode, is refused) until the first one's body ends. Then bursts come back.
#[tokio::test(start_paused = true)]
async fn a_parallel_request_refusal_caps_the_key() {
    use http_body_util::{BodyExt, Full};
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_quota::headers::{Dimension, IN_FLIGHT};
    use tower_quota::limit::{RateLimited, Reason, RequestHead};
    use tower_quota::{QuotaClassifyLayer, RateLimitLayer};
    type Req = http::Request<Full<bytes::Bytes>>;
    // An upstream that answers in a second.
    let ok = service_fn(|_req: Req| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("{}"))))
    });
    for name in ["key_parallel_chat", "legacy_parallel_chat"] {
        let f = Fixture::load(name).expect("fixture");
        for (who, c) in f.classify() {
            assert_eq!(c.class(), QuotaClass::RateLimited, "[{name}] {who}");
            assert_eq!(c.retry_after(), None, "[{name}] {who}");
            let in_flight = c.rate_limit().get(&Dimension::Named(IN_FLIGHT.into()));
            assert_eq!(in_flight.and_then(|w| w.limit), Some(1), "[{name}] {who}");
            let tier = Tier::new("litellm-key").with_quota(Quota::per_minute(60));
            let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
            let svc = ServiceBuilder::new()
                .layer(RateLimitLayer::with_limiter(limiter.clone()))
                .layer(QuotaClassifyLayer::default())
                .service(ok);
            let req = || Req::new(Full::default());
            // The layer's one global key.
            let key = tower_quota::limit::KeyBy::Global
                .key_with(&RequestHead::of(&req()), limiter.key_secret());
            // A request on the wire when the refusal teaches the cap: the server's one
            // place is its own until it is answered, though it holds none of ours.
            let on_the_wire = tokio::spawn(svc.clone().oneshot(req()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(learning) = limiter.learn(key, &tier, &c, LearnOptions::default()) {
                learning.await;
            }
            let refused = svc.clone().oneshot(req()).await.unwrap_err();
            let refused = refused.downcast_ref::<RateLimited>().expect("RateLimited");
            assert_eq!(refused.reason(), Reason::InFlight, "[{name}] {who}");
            on_the_wire.await.unwrap().unwrap();
            // Not blocked for a minute: one now, and the next once its body has ended.
            let first = svc.clone().oneshot(req()).await.unwrap();
            let refused = svc.clone().oneshot(req()).await.unwrap_err();
            let refused = refused.downcast_ref::<RateLimited>().expect("RateLimited");
            assert_eq!(refused.reason(), Reason::InFlight, "[{name}] {who}");
            first.into_body().collect().await.unwrap();
            let second = svc.clone().oneshot(req()).await.unwrap();
            // Nor does it widen the margin (a limiter in wait mode, which learns one): the
            // same refusal of the key's own windows, twice, does.
            let waits = Limiter::new(tier.clone());
            let twice = |c: &tower_quota::classify::Classification| {
                for _ in 0..2 {
                    assert!(waits
                        .learn(key, &tier, c, LearnOptions::default())
                        .is_none());
                }
            };
            twice(&c);
            assert_eq!(waits.learned_margin(), Duration::ZERO, "[{name}] {who}");
            twice(&c.clone().with_scope(tower_quota::classify::Scope::Account));
            assert!(waits.learned_margin() > Duration::ZERO, "[{name}] {who}");
            // A minute on, bursts again.
            tokio::time::sleep(Duration::from_secs(61)).await;
            let burst: Vec<_> = [
                svc.clone().oneshot(req()).await,
                svc.clone().oneshot(req()).await,
            ]
            .into_iter()
            .collect();
            assert!(burst.iter().all(Result::is_ok), "[{name}] {who}");
            drop((second, burst));
        }
    }
}
