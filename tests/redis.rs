//! The Redis store against real servers: the conformance suite on a single node and on a
//! three-master Cluster, Redis's own clock, keys shared through a secret, and faults (a server
//! killed and restarted, a server frozen).
//!
//! Each test starts its own `redis-server` on free loopback ports; without one installed the
//! tests print why and pass, unless `TOWER_QUOTA_REDIS=1`.

mod redis_common;

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis_common::{available, command, RedisCluster, RedisServer};
use tower_quota::limit::store::redis::{FaultPolicy, RedisFault, RedisStoreError, TimeSource};
use tower_quota::limit::store::{
    conformance, AcquireRequest, Decision, QuotaSpec, RedisStore, Store,
};
use tower_quota::limit::{AcquireError, KeyBy, KeySecret, Limiter, Mode, RequestHead};
use tower_quota::{Quota, RateLimitLayer, Tier};

const S: u64 = 1_000_000_000;

fn secret() -> KeySecret {
    KeySecret::new("tower-quota tests: a shared secret").unwrap()
}

/// A fresh prefix per store, so that checks never see each other's keys.
fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "tq-test-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn request(api_key: &str) -> http::Request<()> {
    http::Request::builder()
        .header("authorization", format!("Bearer {api_key}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn conformance_on_a_single_node() {
    if !available("conformance_on_a_single_node") {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    conformance::run(|| caller_clocked(&url)).await;
}

/// A store on `url` deciding on the caller's clock, failing closed, with a fresh prefix.
fn caller_clocked(url: &str) -> RedisStore {
    RedisStore::builder(secret())
        .prefix(prefix())
        .time_source(TimeSource::Caller)
        .on_fault(FaultPolicy::FailClosed)
        .timeout(Duration::from_secs(5))
        .open(url)
        .unwrap()
}

#[tokio::test]
async fn conformance_on_a_cluster() {
    if !available("conformance_on_a_cluster") {
        return;
    }
    let cluster = RedisCluster::start();
    let conn = redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    conformance::run(|| {
        RedisStore::builder(secret())
            .prefix(prefix())
            .time_source(TimeSource::Caller)
            .on_fault(FaultPolicy::FailClosed)
            .timeout(Duration::from_secs(5))
            .with_cluster_connection(conn.clone())
            .unwrap()
    })
    .await;
    // The keys of one limit share a slot; different limits spread over the nodes.
    let held: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            command(n.port(), "DBSIZE")
                .trim_start_matches(':')
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        held.iter().filter(|&&k| k > 0).count() >= 2,
        "keys on one node only: {held:?}"
    );
}

#[tokio::test]
async fn decisions_on_redis_time_answer_on_the_callers_clock() {
    if !available("decisions_on_redis_time_answer_on_the_callers_clock") {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::builder(secret())
        .on_fault(FaultPolicy::FailClosed)
        .timeout(Duration::from_secs(5))
        .open(&server.url())
        .unwrap();
    // The caller's clock is decades away from Redis's: only Redis's counts.
    let now = 1_000 * S;
    let q = [QuotaSpec::rolling(1, 2, 2 * S)];
    let key = secret().key(b"k");
    for _ in 0..2 {
        let d = store
            .acquire(AcquireRequest::new(key, &q, &[1], now))
            .await
            .unwrap();
        assert_eq!(d, Decision::Admitted);
    }
    let d = store
        .acquire(AcquireRequest::new(key, &q, &[1], now))
        .await
        .unwrap();
    let Decision::NotBefore(t) = d else {
        panic!("expected a wait, got {d:?}");
    };
    assert!(
        t > now && t <= now + 2 * S,
        "a wait of at most the window: {}",
        t - now
    );
    tokio::time::sleep(Duration::from_nanos(t - now)).await;
    let later = store
        .acquire(AcquireRequest::new(key, &q, &[1], 0))
        .await
        .unwrap();
    assert_eq!(
        later,
        Decision::Admitted,
        "admissible once the wait is over, whatever the caller's clock says"
    );
}

#[tokio::test]
async fn processes_with_one_secret_share_one_limit_and_redis_never_sees_the_api_key() {
    if !available("processes_with_one_secret_share_one_limit") {
        return;
    }
    let server = RedisServer::start();
    let tier = Tier::new("shared").with_quota(Quota::per_minute(3));
    // Two "processes": two limiters, two stores, one secret.
    let open = |secret: KeySecret| {
        let store = RedisStore::builder(secret)
            .on_fault(FaultPolicy::FailClosed)
            .open(&server.url())
            .unwrap();
        Limiter::new(tier.clone())
            .with_store(store)
            .with_mode(Mode::Reject)
    };
    let (a, b) = (open(secret()), open(secret()));
    assert!(a.key_secret().is_shared());
    let req = request("sk-or-v1-team-key");
    let key_a = KeyBy::ApiKey.key_with(&RequestHead::of(&req), a.key_secret());
    let key_b = KeyBy::ApiKey.key_with(&RequestHead::of(&req), b.key_secret());
    assert_eq!(key_a, key_b);
    a.acquire(key_a, 1).await.unwrap();
    b.acquire(key_b, 1).await.unwrap();
    a.acquire(key_a, 1).await.unwrap();
    let refused = b.acquire(key_b, 1).await;
    assert!(
        matches!(refused, Err(AcquireError::RateLimited(_))),
        "{refused:?}"
    );
    assert_eq!(b.snapshot(key_b).await.unwrap().windows[0].used, 3);
    // Another secret, another key: its own limit.
    let c = open(KeySecret::new("another secret of sixteen bytes").unwrap());
    let key_c = KeyBy::ApiKey.key_with(&RequestHead::of(&req), c.key_secret());
    assert_ne!(key_c, key_a);
    c.acquire(key_c, 1).await.unwrap();
    // What Redis holds: hash-tagged keys under the prefix, nothing of the API key.
    let keys = command(server.port(), "KEYS *");
    assert!(keys.contains("tower-quota:{"), "{keys}");
    assert!(!keys.contains("sk-or") && !keys.contains("team"), "{keys}");
    // A layer given the store hashes with its secret.
    let store = RedisStore::open(&server.url(), secret()).unwrap();
    let layer = RateLimitLayer::new(tier).with_store(store);
    assert!(layer.limiter().key_secret().is_shared());
    assert!(!format!("{layer:?}").contains("shared secret"));
}

fn store_error_fault(e: &AcquireError) -> Option<RedisFault> {
    let AcquireError::Store(e) = e else {
        return None;
    };
    e.source()?
        .downcast_ref::<RedisStoreError>()
        .map(RedisStoreError::fault)
}

#[tokio::test]
async fn killed_and_restarted_the_fallback_paces_and_redis_takes_over_again() {
    if !available("killed_and_restarted") {
        return;
    }
    let mut server = RedisServer::start();
    let store = RedisStore::builder(secret())
        .on_fault(FaultPolicy::fallback(0.5))
        .timeout(Duration::from_millis(150))
        .retry_interval(Duration::from_millis(200))
        .open(&server.url())
        .unwrap();
    let limiter = Limiter::new(Tier::new("t").with_quota(Quota::per_minute(10)))
        .with_store(store)
        .with_mode(Mode::Reject);
    let key = secret().key(b"team");
    for _ in 0..4 {
        limiter.acquire(key, 1).await.unwrap();
    }
    assert_eq!(limiter.snapshot(key).await.unwrap().windows[0].used, 4);

    server.kill();
    // Each call ends within its bound: at most one timeout, then the fallback at once. The
    // fallback holds half the limit, counted from nothing (Redis's count is out of reach).
    let mut admitted = 0;
    for _ in 0..8 {
        let start = Instant::now();
        match limiter.acquire(key, 1).await {
            Ok(()) => admitted += 1,
            Err(AcquireError::RateLimited(_)) => {}
            Err(e) => panic!("the fallback answers, not {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "bounded by the timeout"
        );
    }
    assert_eq!(admitted, 5, "half of 10, in this process's memory");

    server.restart();
    // Redis is asked again after the retry interval, and the connection comes back by itself.
    let other = secret().key(b"another team");
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = limiter.acquire(other, 1).await;
        if command(server.port(), "DBSIZE").trim() != ":0" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "redis taken up again"
        );
    }
    // Pacing resumes on Redis, which lost the window's admissions when it restarted.
    for _ in 0..10 {
        limiter.acquire(key, 1).await.unwrap();
    }
    assert!(matches!(
        limiter.acquire(key, 1).await,
        Err(AcquireError::RateLimited(_))
    ));
    assert_eq!(limiter.snapshot(key).await.unwrap().windows[0].used, 10);
}

#[tokio::test]
async fn frozen_and_failing_closed_every_call_ends_with_a_typed_error() {
    if !available("frozen_and_failing_closed") {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::builder(secret())
        .on_fault(FaultPolicy::FailClosed)
        .timeout(Duration::from_millis(150))
        .retry_interval(Duration::from_millis(300))
        .open(&server.url())
        .unwrap();
    let limiter = Limiter::new(Tier::new("t").with_quota(Quota::per_minute(10))).with_store(store);
    let key = secret().key(b"team");
    limiter.acquire(key, 1).await.unwrap();

    server.freeze();
    let start = Instant::now();
    let e = limiter.acquire(key, 1).await.unwrap_err();
    assert_eq!(store_error_fault(&e), Some(RedisFault::Timeout), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    // Within the retry interval Redis is not asked at all.
    let e = limiter.acquire(key, 1).await.unwrap_err();
    assert_eq!(store_error_fault(&e), Some(RedisFault::Unavailable), "{e}");
    assert!(limiter.snapshot(key).await.is_err());

    server.thaw();
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if limiter.acquire(key, 1).await.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "redis answers again"
        );
    }
    // Nothing was lost: the first admission and the last are both counted (a timed-out call
    // may have been counted too: never fewer).
    let used = limiter.snapshot(key).await.unwrap().windows[0].used;
    assert!((2..=3).contains(&used), "{used}");
}

/// A key's hash holds the state of every quota it was used with; its time to live never
/// shrinks when the key is used under fewer quotas (its tier without a pace that ended, or
/// without a learned quota), so the other quota's calendar count (kept in the hash, not in a
/// log of its own) outlives the shorter TTL and still counts when the full tier comes back.
/// Real time: 2.5 s, past the 2 s the update alone would keep the hash for.
#[tokio::test]
async fn a_key_used_under_fewer_quotas_keeps_the_others_state() {
    use tower_quota::limit::store::{Update, UpdateRequest};
    use tower_quota::limit::Key;
    if !available("a_key_used_under_fewer_quotas_keeps_the_others_state") {
        return;
    }
    let server = RedisServer::start();
    let store = caller_clocked(&server.url());
    const DAY: u64 = 86_400 * S;
    let one = [QuotaSpec::rolling(1, 3, S)];
    let two = [QuotaSpec::rolling(1, 3, S), QuotaSpec::calendar(2, 5, DAY)];
    let key = Key::of("beyond");
    let t0 = 20_000 * DAY + DAY / 2;
    let admitted = store
        .acquire(AcquireRequest::new(key, &two, &[1, 3], t0))
        .await
        .unwrap();
    assert_eq!(admitted, Decision::Admitted);
    let u = [Update::Remaining {
        quota: 0,
        remaining: 0,
        reset: Some(700_000_000),
    }];
    store
        .update(UpdateRequest::new(key, &one, &u, t0 + 275_000_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let again = store
        .acquire(AcquireRequest::new(key, &two, &[1, 3], t0 + 2_100_000_000))
        .await
        .unwrap();
    assert_eq!(
        again,
        Decision::NotBefore(20_001 * DAY),
        "the day's 3 of 5 still count"
    );
}
