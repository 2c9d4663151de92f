//! The reqwest middleware against the simulator served on loopback (real time, minutes scaled
//! down): paced traffic never sees a 429, a server-given delay is honoured, a non-retryable
//! quota error comes back at once with its classification.
#![cfg(feature = "reqwest-middleware")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_quota::classify::{Classification, QuotaClass, Scope};
use tower_quota::limit::{KeyBy, Model, RateLimited, RequestHead};
use tower_quota::reqwest::QuotaMiddleware;
use tower_quota::retry::{RetryInfo, StopReason};
use tower_quota::sim::{Account, Faults, Limit, Models, Simulator, Tier as SimTier};
use tower_quota::{Quota, QuotaLayer, RetryAfterLayer, Tier};

const FREE_MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID_MODEL: &str = "openai/gpt-4o";

fn client(layer: QuotaLayer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(QuotaMiddleware::from(layer))
        .build()
}

fn completion(
    client: &ClientWithMiddleware,
    addr: std::net::SocketAddr,
    key: &str,
    model: &str,
) -> reqwest_middleware::RequestBuilder {
    client
        .post(format!("http://{addr}/api/v1/chat/completions"))
        .bearer_auth(key)
        .body(format!(r#"{{"model":"{model}"}}"#))
}

fn class_of(response: &reqwest::Response) -> &Classification {
    response
        .extensions()
        .get::<Classification>()
        .expect("every response carries its classification")
}

#[tokio::test]
async fn paced_tier_sees_no_429() {
    let minute = Duration::from_secs(1);
    let sim = Simulator::builder()
        .key("sk-a", SimTier::openrouter_free())
        .minute(minute)
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let tier = Tier::new("free").with_quota(Quota::new(20, minute));
    let layer = QuotaLayer::new(tier)
        .key_by(KeyBy::ApiKey)
        .with_margin(Duration::from_millis(250));
    let client = client(layer);

    // 30 requests at once: 20 go, 10 wait for the window.
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let req = completion(&client, addr, "sk-a", FREE_MODEL);
        tasks.spawn(async move { req.send().await });
    }
    while let Some(done) = tasks.join_next().await {
        let response = done.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(class_of(&response).class(), QuotaClass::Success);
        assert!(RetryInfo::get(response.extensions()).attempts <= 2);
    }
    assert!(start.elapsed() >= minute, "{:?}", start.elapsed());
    let stats = sim.stats();
    // Real time on loopback: 0 on a quiet machine. The server counts arrivals; a stall of
    // more than the margin between an admission and its arrival (a loaded CI machine) can
    // shift one arrival into the previous window, and the retry layer then recovers it.
    assert_eq!(stats.succeeded, 30);
    assert!(stats.rate_limited <= 1, "{stats:?}");
    sim.check_invariants().unwrap();
    server.shutdown().await;
}

/// A seed under which the first request that reaches the simulator's upstream stage gets an
/// upstream 429 and the second does not (found in process, where nothing waits).
async fn seed_with_one_upstream_429(faults: &Faults) -> u64 {
    for seed in 0..1_000 {
        let sim = Simulator::builder()
            .key("sk-a", SimTier::openrouter_free())
            .faults(faults.clone().with_enforced_retry_after(false))
            .seed(seed)
            .build();
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let req = http::Request::post("/api/v1/chat/completions")
                .header("authorization", "Bearer sk-a")
                .body(Full::new(Bytes::from(format!(
                    r#"{{"model":"{FREE_MODEL}"}}"#
                ))))
                .unwrap();
            statuses.push(sim.clone().oneshot(req).await.unwrap().status().as_u16());
        }
        if statuses == [429, 200] {
            return seed;
        }
    }
    panic!("no seed gives one upstream 429");
}

/// A simulator on loopback whose first completion gets an upstream 429 with a 1 s delay in
/// its body, and a client paced to the free tier.
async fn one_upstream_429() -> (
    Simulator,
    std::net::SocketAddr,
    tower_quota::sim::ServerHandle,
    ClientWithMiddleware,
) {
    let faults = Faults::none().with_upstream_429(0.5, 1, 1);
    let seed = seed_with_one_upstream_429(&faults).await;
    let sim = Simulator::builder()
        .key("sk-a", SimTier::openrouter_free())
        .faults(faults)
        .seed(seed)
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let client = client(QuotaLayer::new(
        Tier::new("free").with_quota(Quota::per_minute(20)),
    ));
    (sim, addr, server, client)
}

#[tokio::test]
async fn server_delay_is_honoured() {
    let (sim, addr, server, client) = one_upstream_429().await;

    let start = Instant::now();
    let response = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(response.status(), 200);
    // The delay was in the body only (`metadata.retry_after_seconds`): never retried before
    // 1 s (no upper bound on time: the machine may be loaded; the counts below say that
    // exactly one retry was made).
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    let info = RetryInfo::get(response.extensions());
    assert_eq!((info.attempts, info.stopped), (2, StopReason::Success));
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.rate_limited), (2, 1));
    assert_eq!(
        stats.early_retries(),
        0,
        "never sent before the delay had passed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_cannot_be_cloned_is_sent_once() {
    let (sim, addr, server, client) = one_upstream_429().await;

    // A streaming body: `try_clone()` is `None`.
    let body = reqwest::Body::wrap(Full::new(Bytes::from(format!(
        r#"{{"model":"{FREE_MODEL}"}}"#
    ))));
    let response = client
        .post(format!("http://{addr}/api/v1/chat/completions"))
        .bearer_auth("sk-a")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let c = class_of(&response);
    assert_eq!(c.class(), QuotaClass::RateLimited);
    assert_eq!(c.retry_after(), Some(Duration::from_secs(1)));
    let info = RetryInfo::get(response.extensions());
    assert_eq!(
        (info.attempts, info.stopped),
        (1, StopReason::NotReplayable)
    );
    assert_eq!(sim.stats().requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn insufficient_credits_arrive_at_once_with_the_whole_body() {
    let sim = Simulator::builder()
        .account(
            Account::new("sk-poor")
                .with_tier(SimTier::unlimited())
                .with_credits(0.0),
        )
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    // A classifier that reads only 16 bytes of the body: the rest must still reach the caller.
    let layer = QuotaLayer::new(Tier::new("paid"));
    let classify = layer.classify().clone().with_max_body(16);
    let client = client(layer.with_classify(classify));

    let url = format!("http://{addr}/api/v1/chat/completions");
    let response = completion(&client, addr, "sk-poor", PAID_MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(
        response.url().as_str(),
        url,
        "the URL survives the round trip"
    );
    let c = class_of(&response);
    assert_eq!(c.class(), QuotaClass::QuotaExhausted);
    assert!(!c.should_retry());
    let info = RetryInfo::get(response.extensions());
    assert_eq!((info.attempts, info.stopped), (1, StopReason::NotRetryable));

    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], 402);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Insufficient credits"));
    assert_eq!(sim.stats().requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn daily_cap_arrives_at_once_with_its_classification() {
    let sim = Simulator::builder()
        .key(
            "sk-a",
            // OpenRouter's free daily cap, with a smaller number.
            SimTier::new("tiny-daily").with_limit(Limit::daily(Models::Free, 2).with_message(
                "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
            )),
        )
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    // The client does not know about the daily cap: it learns it from the 429.
    let layer = QuotaLayer::new(Tier::new("rpm").with_quota(Quota::per_minute(100)))
        .with_retry(RetryAfterLayer::new().with_max_delay(Duration::from_secs(30)));
    let limiter = layer.limiter().clone();
    let client = client(layer);

    for _ in 0..2 {
        let ok = completion(&client, addr, "sk-a", FREE_MODEL)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let response = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let c = class_of(&response);
    assert_eq!(c.class(), QuotaClass::QuotaExhausted);
    assert_eq!(c.scope(), Scope::Account);
    assert!(c.reset_after().unwrap() <= Duration::from_secs(86_400));
    assert_eq!(RetryInfo::get(response.extensions()).attempts, 1);
    assert_eq!(sim.stats().requests, 3);

    // The limiter learnt it: the key is blocked until the reset, so the next request fails
    // in the limiter (its wait exceeds `max_wait`) without reaching the server.
    let snap = limiter
        .snapshot(tower_quota::limit::Key::GLOBAL)
        .await
        .unwrap();
    assert!(snap.blocked_until.is_some());
    let err = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("expected the limiter's error, got {err:?}");
    };
    let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
    assert!(limited.retry_after().unwrap() > Duration::from_secs(60));
    assert_eq!(sim.stats().requests, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn keys_and_tiers_read_the_middleware_extensions() {
    let sim = Simulator::builder()
        .key("sk-a", SimTier::unlimited())
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let tier = Tier::new("per-model").with_quota(Quota::per_minute(10));
    let selected = tier.clone();
    // Only requests that name a model are paced, each model under its own key.
    let layer = QuotaLayer::selecting(move |head| head.model().map(|_| selected.clone()))
        .key_by(KeyBy::Model);
    let limiter = layer.limiter().clone();
    let client = client(layer);

    for _ in 0..3 {
        let response = completion(&client, addr, "sk-a", PAID_MODEL)
            .with_extension(Model::new(PAID_MODEL))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // No extension, but the JSON body names the model: read from the body, paced the same.
    completion(&client, addr, "sk-a", PAID_MODEL)
        .send()
        .await
        .unwrap();
    // Not paced: no model anywhere.
    client
        .post(format!("http://{addr}/api/v1/chat/completions"))
        .bearer_auth("sk-a")
        .body("{}")
        .send()
        .await
        .unwrap();

    let mut head = http::Request::new(());
    head.extensions_mut().insert(Model::new(PAID_MODEL));
    let key = KeyBy::Model.key(&RequestHead::of(&head));
    let snap = limiter.snapshot_with(key, &tier).await.unwrap();
    assert_eq!(snap.windows[0].used, 4);
    let snap = limiter
        .snapshot_with(tower_quota::limit::Key::GLOBAL, &tier)
        .await
        .unwrap();
    assert_eq!(snap.windows[0].used, 0);
    assert_eq!(sim.stats().requests, 5);
    server.shutdown().await;
}

/// The middleware holds a request's place among its key's requests in flight until the
/// response body ends, as the tower layers do: with a cap of 1 in reject mode, a second
/// request is refused while the first's body is unread, and goes once it is read.
#[tokio::test]
async fn a_place_in_flight_is_held_until_the_body_is_read() {
    let sim = Simulator::builder()
        .key("sk-a", SimTier::openrouter_free())
        .build();
    let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await.unwrap();
    let layer = QuotaLayer::new(Tier::new("free").with_quota(Quota::per_minute(20)))
        .key_by(KeyBy::ApiKey)
        .with_mode(tower_quota::limit::Mode::Reject)
        .with_max_in_flight(1);
    let client = client(layer);
    let first = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let refused = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap_err();
    let limited = match &refused {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<RateLimited>(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("not the limiter's: {refused}"));
    assert_eq!(limited.reason(), tower_quota::limit::Reason::InFlight);
    // Read to its end, the first body frees the place.
    assert!(!first.bytes().await.unwrap().is_empty());
    let second = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    drop(second);
    // Dropped unread, too.
    let third = completion(&client, addr, "sk-a", FREE_MODEL)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
    server.shutdown().await;
}
