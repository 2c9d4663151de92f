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

/// A refusal of the key's parallel requests is no window's: a slot frees when a request
/// ends. The limiter neither blocks the key for the constant `retry-after: 60` beside it nor
/// widens its margin; it paces the key to the proxy's limit (1, which the message names)
/// per round trip (a second before any is sampled), for a minute from the last such
/// refusal: requests go out about as others end. Then bursts come back.
#[tokio::test(start_paused = true)]
async fn a_parallel_request_refusal_paces_the_key_to_the_round_trip() {
    use tower_quota::headers::{Dimension, IN_FLIGHT};
    for name in ["key_parallel_chat", "legacy_parallel_chat"] {
        let f = Fixture::load(name).expect("fixture");
        for (who, c) in f.classify() {
            assert_eq!(c.class(), QuotaClass::RateLimited, "[{name}] {who}");
            assert_eq!(c.retry_after(), None, "[{name}] {who}");
            let in_flight = c.rate_limit().get(&Dimension::Named(IN_FLIGHT.into()));
            assert_eq!(in_flight.and_then(|w| w.limit), Some(1), "[{name}] {who}");
            let tier = Tier::new("litellm-key").with_quota(Quota::per_minute(60));
            let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
            let key = Key::of("sk-parallel");
            for _ in 0..3 {
                limiter.acquire(key, 1).await.unwrap();
            }
            if let Some(learning) = limiter.learn(key, &tier, &c, LearnOptions::default()) {
                learning.await;
            }
            // Not blocked for a minute: one now, the next a round trip later.
            assert!(limiter.try_acquire(key, 1).is_ok(), "[{name}] {who}");
            assert!(
                limiter.try_acquire(key, 1).is_err(),
                "[{name}] {who}: paced"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(limiter.try_acquire(key, 1).is_ok(), "[{name}] {who}");
            assert_eq!(limiter.learned_margin(), Duration::ZERO, "[{name}] {who}");
            // A minute on, bursts again.
            tokio::time::sleep(Duration::from_secs(60)).await;
            for i in 0..3 {
                assert!(
                    limiter.try_acquire(key, 1).is_ok(),
                    "[{name}] {who}: request {i} refused"
                );
            }
        }
    }
}
