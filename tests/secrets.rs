//! An API key planted in every request never comes out: not in the `Debug` or `Display` of
//! any public type on its path, not in any `tracing` event (every level) of a full run of
//! the stack against the simulator — successes, 429s, a 402, a daily cap, upstream 429s,
//! a reject-mode refusal —, and not in any key handed to a store.
//!
//! Every test in this binary installs a capturing subscriber (see `common`).

mod common;

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_quota::limit::Mode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_quota::classify::{Classification, QuotaClassifyLayer};
use tower_quota::clock::WallClock;
use tower_quota::limit::store::{
    AcquireRequest, Decision, MemoryStore, SnapshotRequest, Store, StoreError, StoreFuture,
    StoreSnapshot, UpdateRequest,
};
use tower_quota::limit::{Key, KeyBy, KeySecret, Model, RateLimited, RequestHead};
use tower_quota::retry::{ReplayBody, RetryInfo};
use tower_quota::sim::{Account, Faults, Simulator, Tier as SimTier};
use tower_quota::{Quota, QuotaLayer, RateLimitLayer, RetryAfterLayer, Tier};

use common::Capture;

/// The planted key, and the parts of it that must not come out either (a truncated or
/// partly masked key is still a leak). The secret keys are hashed with is planted too.
const SECRET: &str = "sk-or-v1-PLANTED-SECRET-4b1d9e7c2a6f03e8";
const HASH_SECRET: &str = "PLANTED-HASH-SECRET-90c2f1d7";
const FRAGMENTS: [&str; 4] = ["PLANTED-SECRET", "4b1d9e7c2a6f03e8", "PLANTED", "90c2f1d7"];
/// A second planted key, short enough that the simulator's label for it is the whole key.
const SHORT_SECRET: &str = "sk-PLANTED-2";

const FREE: &str = "meta-llama/llama-3.3-70b-instruct:free";
const PAID: &str = "openai/gpt-4o-mini";

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for f in FRAGMENTS {
        assert!(!text.contains(f), "{what} shows the API key: {text}");
    }
}

/// Checks the `Debug` output of `value`.
#[track_caller]
fn debug(what: &str, value: &impl Debug) {
    assert_clean(what, &format!("{value:?}"));
    assert_clean(what, &format!("{value:#?}"));
}

/// Checks the `Debug` and `Display` output of `value`.
#[track_caller]
fn shown(what: &str, value: &(impl Debug + std::fmt::Display)) {
    debug(what, value);
    assert_clean(what, &value.to_string());
}

// === a store that records every key it is handed ===

/// `MemoryStore`, recording the keys that cross the `Store` trait.
#[derive(Debug)]
struct Recording {
    inner: MemoryStore,
    keys: Arc<Mutex<Vec<Key>>>,
}

impl Recording {
    fn record(&self, key: Key) {
        self.keys.lock().unwrap().push(key);
    }
}

impl Store for Recording {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        self.record(req.key);
        self.inner.acquire(req)
    }

    fn acquire_now(&self, req: &AcquireRequest<'_>) -> Option<Result<Decision, StoreError>> {
        self.record(req.key);
        self.inner.acquire_now(req)
    }

    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        self.record(req.key);
        self.inner.update(req)
    }

    fn update_now(&self, req: &UpdateRequest<'_>) -> bool {
        self.record(req.key);
        self.inner.update_now(req)
    }

    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        self.record(req.key);
        self.inner.snapshot(req)
    }

    fn key_secret(&self) -> Option<&KeySecret> {
        self.inner.key_secret()
    }
}

// === the run ===

/// 2026-11-22 10:00:00 UTC: the daily cap, once used up, resets fourteen hours later.
fn ten_am() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

fn completion(model: &str) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post("/api/v1/chat/completions?key=".to_owned() + SECRET)
        .header("authorization", format!("Bearer {SECRET}"))
        .header("x-api-key", SECRET)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))))
        .unwrap();
    req.extensions_mut().insert(Model::new(model));
    req
}

/// Checks everything a response carries that the crate made.
fn check_response(resp: &http::Response<impl Sized>) {
    let c = resp
        .extensions()
        .get::<Classification>()
        .expect("a classification");
    shown("Classification", c);
    shown("QuotaClass", &c.class());
    shown("Scope", &c.scope());
    debug("RateLimitInfo", c.rate_limit());
    for text in [c.message(), c.code(), c.provider()].into_iter().flatten() {
        assert_clean("a classification's text", text);
    }
    if let Some(info) = resp.extensions().get::<RetryInfo>() {
        debug("RetryInfo", info);
        shown("StopReason", &info.stopped);
    }
}

#[tokio::test(start_paused = true)]
async fn the_api_key_never_comes_out() {
    let capture = Capture::default();
    let _guard = capture.install();

    // The provider: OpenRouter's free tier (20 a minute, 50 a day) for the planted key, paid
    // models priced beyond its credits (none), and upstream 429s now and then.
    let sim = Simulator::builder()
        .account(
            Account::new(SECRET)
                .with_tier(SimTier::openrouter_free())
                .with_credits(0.0),
        )
        // A short key, whose label (what `/api/v1/key` shows) is the whole key.
        .account(Account::new(SHORT_SECRET))
        .price_per_request(0.01)
        .faults(Faults::none().with_upstream_429(0.1, 1, 3))
        .start_wall_time(ten_am())
        .seed(7)
        .build();
    debug("Simulator", &sim);
    debug("Account", &sim.accounts());

    // The stack, keyed by API key and model under a configured hash secret (as processes
    // sharing a store are), with a tier looser than the server's (so the server does
    // answer 429s) and a store that records every key.
    let keys = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        inner: MemoryStore::new(),
        keys: Arc::clone(&keys),
    };
    let tier = Tier::new("loose").with_quota(Quota::per_minute(30));
    debug("Tier", &tier);
    shown("Quota", &Quota::per_minute(30));
    let layer = QuotaLayer::new(tier.clone())
        .with_rate_limit(
            RateLimitLayer::new(tier)
                .with_store(store)
                .key_by(KeyBy::ApiKeyAndModel)
                .with_key_secret(KeySecret::new(HASH_SECRET).unwrap())
                .with_wall_clock(WallClock::from_fn(sim.wall_clock())),
        )
        .with_retry(RetryAfterLayer::new().with_seed(3));
    debug("QuotaLayer", &layer);
    debug("RetryAfterLayer", layer.retry());
    debug("RateLimitLayer", layer.rate_limit());
    debug("QuotaClassifyLayer", layer.classify());
    debug(
        "QuotaClassifyLayer::default",
        &QuotaClassifyLayer::default(),
    );
    debug("Limiter", layer.limiter());
    debug("KeySecret", layer.limiter().key_secret());
    shown("ShortSecret", &KeySecret::new("PLANTED").unwrap_err());
    let client = layer.layer(sim.clone());
    debug("QuotaStack", &client);

    // What keying sees.
    let req = completion(FREE);
    let head = RequestHead::of(&req);
    debug("RequestHead", &head);
    debug("Model", &head.model());
    for key_by in [
        KeyBy::ApiKey,
        KeyBy::ApiKeyAndModel,
        KeyBy::Header(http::header::AUTHORIZATION),
    ] {
        debug("KeyBy", &key_by);
        let key = key_by.key(&head);
        shown("Key", &key);
        assert_ne!(key, Key::GLOBAL);
    }
    debug("ReplayBody", &ReplayBody::new(Full::new(Bytes::new()), 10));
    let mut service = client.clone();
    let ready = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut service);
    let future = ready.await.unwrap().call(completion(FREE));
    debug("the stack's response future", &future);
    drop(future);

    // Successes, then 429s from the server's minute window, retried after its delay; a 402
    // for a paid model; upstream 429s; then the daily cap (no Retry-After, reset at
    // midnight: past max_wait, returned at once).
    let mut statuses = Vec::new();
    for i in 0..60 {
        let model = if i % 25 == 24 { PAID } else { FREE };
        match client.clone().oneshot(completion(model)).await {
            Ok(resp) => {
                check_response(&resp);
                statuses.push(resp.status().as_u16());
                debug("a response's body", &resp.into_body());
            }
            Err(e) => {
                shown("an error of the stack", &e);
                if let Some(limited) = e.downcast_ref::<RateLimited>() {
                    shown("RateLimited", limited);
                }
                statuses.push(0);
            }
        }
    }
    for status in [200, 402, 429] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
    debug("Limiter, after the run", layer.limiter());
    let stats = sim.stats();
    assert!(stats.count(429) > 0, "the server answered no 429");
    debug("Stats", &stats);
    for record in &stats.records {
        debug("Record", record);
    }
    for admission in &stats.admissions {
        debug("Admission", admission);
    }

    // A gateway in reject mode refuses at once, and says so in a response of its own.
    let gateway = RateLimitLayer::new(Tier::new("gateway").with_quota(Quota::per_minute(2)))
        .with_mode(Mode::Reject)
        .key_by(KeyBy::ApiKey);
    debug("RateLimitLayer (reject)", &gateway);
    let service = gateway.layer(sim.clone());
    debug("RateLimit", &service);
    let mut refused = None;
    for _ in 0..3 {
        if let Err(e) = service.clone().oneshot(completion(FREE)).await {
            refused = Some(e);
        }
    }
    let refused: BoxError = refused.expect("a refusal");
    shown("the refusal", &refused);
    let limited = refused.downcast_ref::<RateLimited>().expect("RateLimited");
    shown("RateLimited", limited);
    shown("Key", &limited.key());
    let snapshot = limited.snapshot(gateway.limiter()).await.unwrap();
    debug("Snapshot", &snapshot);
    // The limiter's errors, straight from the limiter: not admissible now, and a cost no
    // window can ever hold.
    let key = limited.key();
    for cost in [1, 1_000] {
        let e = gateway.limiter().try_acquire(key, cost).unwrap_err();
        shown("AcquireError", &e);
    }
    let response = limited.to_response(Some(&snapshot), Full::new(Bytes::new()));
    debug("the refusal's response", &response);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_clean("the refusal's body", &String::from_utf8_lossy(&body));

    // Every key the store was handed is a hash, and none encodes the key's bytes.
    let keys = keys.lock().unwrap();
    assert!(keys.len() >= 60, "the store saw {} keys", keys.len());
    for key in keys.iter() {
        shown("a store key", key);
        let raw = key.as_u64();
        for bytes in [raw.to_le_bytes(), raw.to_be_bytes()] {
            assert!(
                !SECRET.as_bytes().windows(8).any(|w| w == bytes),
                "a store key holds the API key's bytes: {key:?}"
            );
        }
    }

    // Every event of the run, at every level.
    let events = capture.text();
    for expected in [
        "classified response",
        "retrying",
        "not retrying",
        "rate limit: cooling down",
        "rate limit: request not admitted",
    ] {
        assert!(
            events.contains(expected),
            "no {expected:?} event:\n{events}"
        );
    }
    assert_clean("a tracing event", &events);
}
