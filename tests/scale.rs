//! The in-memory store at gateway scale: attacker-chosen keys, a million keys over a week, in
//! virtual time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_quota::clock::WallClock;
use tower_quota::limit::store::MemoryStore;
use tower_quota::limit::{Key, Limiter, Mode};
use tower_quota::{tiers, Quota, Tier};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn attacker_chosen_keys_never_exceed_the_bound() {
    // Reject mode on OpenRouter's free tier (20 per minute and 50 per UTC day): a used daily
    // quota would keep each key until midnight. 200 000 distinct keys, a bound of 10 000.
    let store = Arc::new(MemoryStore::new().with_max_keys(10_000));
    let limiter = Limiter::new(tiers::openrouter::free())
        .with_mode(Mode::Reject)
        .with_store(store.clone());
    let mut most = 0;
    for i in 0..200_000u32 {
        limiter.try_acquire(Key::of(&i), 1).unwrap();
        if i % 1_000 == 0 {
            most = most.max(store.len());
        }
    }
    most = most.max(store.len());
    assert!(most <= 10_000, "{most} keys held");
    // A key in use: a map slot, the window state of two quotas and a one-entry log (an idle
    // key takes 140 B: `tests/memory.rs`).
    let per_key = store.bytes() / store.len();
    assert!(per_key <= 640, "{per_key} bytes a key");
    // A key in use survives the churn: its count is still there.
    let hot = Key::of("hot");
    for _ in 0..20 {
        limiter.try_acquire(hot, 1).unwrap();
    }
    for i in 0..5_000u32 {
        limiter.try_acquire(Key::of(&(1_000_000 + i)), 1).unwrap();
        if i % 100 == 0 {
            assert!(
                limiter.try_acquire(hot, 1).is_err(),
                "the hot key's minute is full"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_million_keys_over_a_week_stay_bounded_and_drain() {
    // 2026-01-05T00:00:00Z, a Monday.
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_571_200);
    let store = Arc::new(MemoryStore::new().with_max_keys(50_000));
    let tier = Tier::new("gw")
        .with_quota(Quota::per_minute(5))
        .with_quota(Quota::per_utc_day(200));
    let wait = Limiter::new(tier.clone())
        .with_wall_clock(WallClock::starting_at(t))
        .with_store(store.clone());
    let reject = Limiter::new(tier)
        .with_wall_clock(WallClock::starting_at(t))
        .with_mode(Mode::Reject)
        .with_store(store.clone());
    // A week in 168 hours: each hour ~6 000 new keys (1 000 000 in all) and a few regulars
    // (5 at once in reject mode, a 6th that waits a minute: 144 a day), whose admissions are
    // checked against the 5-per-minute window.
    let regulars: Vec<Key> = (0..8).map(|i| Key::of(&format!("regular-{i}"))).collect();
    let mut admitted: Vec<Vec<tokio::time::Instant>> = vec![Vec::new(); regulars.len()];
    let mut next = 0u32;
    let mut most = 0;
    let mut bytes_most = 0;
    for hour in 0..168u32 {
        let fresh = if hour == 167 { 1_000_000 - next } else { 5_952 };
        for _ in 0..fresh {
            let key = Key::of(&next);
            next += 1;
            let limiter = if next.is_multiple_of(2) {
                &wait
            } else {
                &reject
            };
            let _ = limiter.try_acquire(key, 1);
        }
        for (i, &k) in regulars.iter().enumerate() {
            for _ in 0..7 {
                if reject.try_acquire(k, 1).is_ok() {
                    admitted[i].push(tokio::time::Instant::now());
                }
            }
            wait.acquire(k, 1).await.unwrap();
            admitted[i].push(tokio::time::Instant::now());
        }
        most = most.max(store.len());
        bytes_most = bytes_most.max(store.bytes());
        tokio::time::sleep(3600 * SEC - 60 * SEC).await;
    }
    assert_eq!(next, 1_000_000);
    assert!(most <= 50_000, "{most} keys held at most");
    // Measured: 26.5 MB for 50 000 keys, about 530 B a key.
    assert!(bytes_most <= 50_000 * 640, "{bytes_most} bytes at most");
    // The window invariant for every regular: never more than 5 in any 60 s.
    for log in &admitted {
        for (i, a) in log.iter().enumerate() {
            let in_window = log[i..].iter().take_while(|b| **b - *a < 60 * SEC).count();
            assert!(in_window <= 5, "{in_window} admissions in a minute");
        }
    }
    // Traffic stops; a day later a periodic sweep leaves nothing.
    tokio::time::sleep(2 * 86_400 * SEC).await;
    store.evict_idle(wait.now_ns());
    assert_eq!(store.len(), 0);
    assert!(store.bytes() < 64 * 1024, "{} bytes left", store.bytes());
}

#[tokio::test(start_paused = true)]
async fn idle_keys_drain_a_few_at_a_time_with_traffic() {
    let store = Arc::new(MemoryStore::new());
    let limiter =
        Limiter::new(Tier::new("t").with_quota(Quota::per_second(10))).with_store(store.clone());
    for i in 0..1_000u32 {
        limiter.try_acquire(Key::of(&i), 1).unwrap();
    }
    assert_eq!(store.len(), 1_000);
    tokio::time::sleep(2 * SEC).await;
    // Each operation moves its shard's hand over two keys and drops the idle ones: 100
    // operations on new keys drop 200 old ones, and no request sweeps a whole shard.
    for i in 0..100u32 {
        limiter.try_acquire(Key::of(&(10_000 + i)), 1).unwrap();
    }
    assert!(store.len() <= 900, "{} keys left", store.len());
}
