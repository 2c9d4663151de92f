//! The conformance suite for [`Store`]s (feature `conformance`): what every store must
//! decide, checked the same way against each.
//!
//! The in-memory store and the Redis store both pass it (the crate's own tests run it against
//! both); a store of your own should too. [`run`] runs every check, each on a fresh store from
//! your factory, and panics on the first failure with what was expected:
//!
//! ```
//! use tower_quota::limit::store::{conformance, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::run(MemoryStore::new).await;
//! # }
//! ```
//!
//! The checks pass explicit times (`now`, `wall`, the margin) and expect decisions exact to
//! the nanosecond, so a store with a clock of its own must decide on the caller's clock for
//! the suite (the Redis store: `TimeSource::Caller`).
//! Every time the suite uses is a whole number of microseconds: a store may keep time at that
//! resolution. Keys are fresh in every check, so a store on a shared server only needs a
//! fresh prefix per factory call, if that.
//!
//! The checks: exact rolling logs, weights, the margin, several quotas at once, calendar
//! periods on the wall clock, blocks, the server's remaining counts and limits, quotas found
//! by id whatever their order, separate keys, costs that never fit, bucketed logs, snapshots,
//! state of quotas a key's tier no longer names, atomicity under concurrent admissions, and
//! the window invariant — *never more than N units
//! in any interval of length W, for every quota at once, and every wait exactly as long as
//! needed* — on seeded random traffic against several weighted quotas.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::{AcquireRequest, Decision, QuotaSpec, SnapshotRequest, Store, Update, UpdateRequest};
use crate::limit::key::Key;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const DAY: u64 = 86_400 * S;
/// A Tuesday, 12:00 UTC (on the limiter's clock, which is anchored to the epoch).
const T0: u64 = 20_000 * DAY + DAY / 2;

type Check = for<'a> fn(&'a dyn Store) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("exact_log", |s| Box::pin(exact_log(s))),
    ("weighted_costs", |s| Box::pin(weighted_costs(s))),
    ("margin", |s| Box::pin(margin(s))),
    ("margin_grown", |s| Box::pin(margin_grown(s))),
    ("several_quotas", |s| Box::pin(several_quotas(s))),
    ("calendar", |s| Box::pin(calendar(s))),
    ("block_remaining_limit", |s| {
        Box::pin(block_remaining_limit(s))
    }),
    ("remaining_until_reset", |s| {
        Box::pin(remaining_until_reset(s))
    }),
    ("quotas_found_by_id", |s| Box::pin(quotas_found_by_id(s))),
    ("keys_are_separate", |s| Box::pin(keys_are_separate(s))),
    ("never_fits", |s| Box::pin(never_fits(s))),
    ("bucketed_log", |s| Box::pin(bucketed_log(s))),
    ("snapshot", |s| Box::pin(snapshot(s))),
    ("atomic_admissions", |s| Box::pin(atomic_admissions(s))),
    ("window_invariant", |s| Box::pin(window_invariant(s))),
    ("adjust", |s| Box::pin(adjust(s))),
    ("state_beyond_the_quotas", |s| {
        Box::pin(state_beyond_the_quotas(s))
    }),
];

/// Runs every check in [`CHECKS`], each on a store from `fresh`. Panics on the first failure.
pub async fn run<S: Store>(mut fresh: impl FnMut() -> S) {
    for (_, check) in CHECKS {
        let store = fresh();
        check(&store).await;
    }
}

// === helpers ===

fn key(name: &str) -> Key {
    // Stable across runs and processes, distinct per check.
    Key(crate::limit::key::stable_hash(&("conformance", name)))
}

fn rolling(id: u64, limit: u64, window: u64) -> QuotaSpec {
    QuotaSpec::rolling(id, limit, window)
}

async fn acquire(store: &dyn Store, key: Key, q: &[QuotaSpec], costs: &[u64], t: u64) -> Decision {
    acquire_at(store, key, q, costs, t, t, 0).await
}

async fn acquire_at(
    store: &dyn Store,
    key: Key,
    q: &[QuotaSpec],
    costs: &[u64],
    now: u64,
    wall: u64,
    margin: u64,
) -> Decision {
    let req = AcquireRequest::new(key, q, costs, now)
        .with_wall(wall)
        .with_margin(margin);
    match store.acquire(req).await {
        Ok(d) => d,
        Err(e) => panic!("conformance: the store failed: {e}"),
    }
}

async fn update(store: &dyn Store, key: Key, q: &[QuotaSpec], u: &[Update], now: u64) {
    let req = UpdateRequest::new(key, q, u, now);
    if let Err(e) = store.update(req).await {
        panic!("conformance: the store failed: {e}");
    }
}

async fn snap(
    store: &dyn Store,
    key: Key,
    q: &[QuotaSpec],
    now: u64,
) -> Option<super::StoreSnapshot> {
    match store.snapshot(SnapshotRequest::new(key, q, now)).await {
        Ok(s) => s,
        Err(e) => panic!("conformance: the store failed: {e}"),
    }
}

macro_rules! expect {
    ($check:literal, $got:expr, $want:expr) => {{
        let (got, want) = ($got, $want);
        assert_eq!(
            got,
            want,
            "conformance check `{}`: {}",
            $check,
            stringify!($got)
        );
    }};
}

// === checks ===

/// An exact log admits N, then waits until the oldest admission leaves the window.
pub async fn exact_log(store: &dyn Store) {
    let k = key("exact_log");
    let q = [rolling(1, 3, 60 * S)];
    for t in [T0, T0 + S, T0 + 2 * S] {
        expect!(
            "exact_log",
            acquire(store, k, &q, &[1], t).await,
            Decision::Admitted
        );
    }
    expect!(
        "exact_log",
        acquire(store, k, &q, &[1], T0 + 3 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    let just_before = T0 + 60 * S - 1_000;
    expect!(
        "exact_log",
        acquire(store, k, &q, &[1], just_before).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    expect!(
        "exact_log",
        acquire(store, k, &q, &[1], T0 + 60 * S).await,
        Decision::Admitted
    );
    expect!(
        "exact_log",
        acquire(store, k, &q, &[1], T0 + 60 * S).await,
        Decision::NotBefore(T0 + 61 * S)
    );
}

/// A weighted cost waits until enough units have left.
pub async fn weighted_costs(store: &dyn Store) {
    let k = key("weighted_costs");
    let q = [rolling(1, 10, 10 * S)];
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[4], T0).await,
        Decision::Admitted
    );
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[4], T0 + S).await,
        Decision::Admitted
    );
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[7], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 11 * S)
    );
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[5], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 10 * S)
    );
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[2], T0 + 2 * S).await,
        Decision::Admitted
    );
    // A zero cost always fits.
    expect!(
        "weighted_costs",
        acquire(store, k, &q, &[0], T0 + 2 * S).await,
        Decision::Admitted
    );
}

/// The margin lengthens every window.
pub async fn margin(store: &dyn Store) {
    let k = key("margin");
    let q = [rolling(1, 1, 10 * S)];
    let m = 250 * MS;
    expect!(
        "margin",
        acquire_at(store, k, &q, &[1], T0, T0, m).await,
        Decision::Admitted
    );
    expect!(
        "margin",
        acquire_at(store, k, &q, &[1], T0 + S, T0 + S, m).await,
        Decision::NotBefore(T0 + 10 * S + m)
    );
    expect!(
        "margin",
        acquire_at(store, k, &q, &[1], T0 + 10 * S, T0 + 10 * S, m).await,
        Decision::NotBefore(T0 + 10 * S + m)
    );
    expect!(
        "margin",
        acquire_at(store, k, &q, &[1], T0 + 10 * S + m, T0 + 10 * S + m, m).await,
        Decision::Admitted
    );
}

/// A margin that grew since a key's last use still counts that use: the store keeps a key's
/// state as long as a learned margin could (a twentieth of the window), not only as long as
/// the margin of its last use said. (The in-memory store once dropped the key as idle at
/// the end of the old window, and admitted at once what the grown margin refuses.)
pub async fn margin_grown(store: &dyn Store) {
    let k = key("margin_grown");
    let q = [rolling(1, 1, 10 * S)];
    expect!(
        "margin_grown",
        acquire_at(store, k, &q, &[1], T0, T0, 0).await,
        Decision::Admitted
    );
    let m = 300 * MS;
    expect!(
        "margin_grown",
        acquire_at(store, k, &q, &[1], T0 + 10 * S, T0 + 10 * S, m).await,
        Decision::NotBefore(T0 + 10 * S + m)
    );
    expect!(
        "margin_grown",
        acquire_at(store, k, &q, &[1], T0 + 10 * S + m, T0 + 10 * S + m, m).await,
        Decision::Admitted
    );
}

/// Every quota must admit, and the latest of their times is the answer; nothing is recorded
/// in any quota unless all admit.
pub async fn several_quotas(store: &dyn Store) {
    let k = key("several_quotas");
    let q = [rolling(1, 2, 10 * S), rolling(2, 3, 60 * S)];
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 1], T0).await,
        Decision::Admitted
    );
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 1], T0 + S).await,
        Decision::Admitted
    );
    // The 10 s quota is full until T0 + 10 s.
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 1], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 10 * S)
    );
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 1], T0 + 10 * S).await,
        Decision::Admitted
    );
    // Now the minute is full (3) until T0 + 60 s, though the 10 s quota has room at T0 + 11 s.
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 1], T0 + 20 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    // A weighted quota beside a request quota.
    let k = key("several_quotas/weighted");
    let q = [rolling(1, 5, 60 * S), rolling(3, 1000, 60 * S)];
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 900], T0).await,
        Decision::Admitted
    );
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 200], T0 + S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    expect!(
        "several_quotas",
        acquire(store, k, &q, &[1, 100], T0 + S).await,
        Decision::Admitted
    );
}

/// Calendar periods count on the wall clock and reset at the boundary plus the margin; the
/// answer is on the limiter's clock.
pub async fn calendar(store: &dyn Store) {
    let k = key("calendar");
    let q = [rolling(1, 20, 60 * S), QuotaSpec::calendar(2, 2, DAY)];
    // The limiter's clock and the wall clock differ by an hour (it was anchored before an
    // NTP step): the boundary is found on the wall clock and answered on the limiter's.
    let skew = 3_600 * S;
    let wall = 20_001 * DAY - 90 * S; // 23:58:30 UTC
    let now = wall - skew;
    let m = 100 * MS;
    expect!(
        "calendar",
        acquire_at(store, k, &q, &[1, 1], now, wall, m).await,
        Decision::Admitted
    );
    expect!(
        "calendar",
        acquire_at(store, k, &q, &[1, 1], now, wall, m).await,
        Decision::Admitted
    );
    expect!(
        "calendar",
        acquire_at(store, k, &q, &[1, 1], now + S, wall + S, m).await,
        Decision::NotBefore(20_001 * DAY - skew + m)
    );
    // At the boundary the server may still be in the old day: not before the margin.
    let b = 20_001 * DAY;
    expect!(
        "calendar",
        acquire_at(store, k, &q, &[1, 1], b - skew, b, m).await,
        Decision::NotBefore(b - skew + m)
    );
    expect!(
        "calendar",
        acquire_at(store, k, &q, &[1, 1], b - skew + m, b + m, m).await,
        Decision::Admitted
    );
}

/// A reservation corrected to what the request really cost: a refund frees its units at
/// once (and only what that admission counted), a charge counts until that admission leaves
/// the window; a calendar count is corrected in the admission's period only; a correction to
/// an admission that no longer counts is dropped.
pub async fn adjust(store: &dyn Store) {
    let k = key("adjust");
    let q = [rolling(1, 100, 60 * S), QuotaSpec::calendar(2, 1_000, DAY)];
    let admitted = |t| acquire(store, k, &q, &[80, 80], t);
    expect!("adjust", admitted(T0).await, Decision::Admitted);
    expect!(
        "adjust",
        admitted(T0 + S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    // It cost 30, not 80: 50 back in both windows.
    let refund = |at| {
        [
            Update::Adjust {
                quota: 0,
                at,
                delta: -50,
            },
            Update::Adjust {
                quota: 1,
                at,
                delta: -50,
            },
        ]
    };
    update(store, k, &q, &refund(T0), T0 + 2 * S).await;
    let s = snap(store, k, &q, T0 + 2 * S).await.expect("state");
    expect!("adjust", (s.windows[0].used, s.windows[1].used), (30, 30));
    expect!(
        "adjust",
        acquire(store, k, &q, &[70, 0], T0 + 3 * S).await,
        Decision::Admitted
    );
    // A refund takes only what that admission counted: 30 of the first, nothing more.
    update(store, k, &q, &refund(T0)[..1], T0 + 4 * S).await;
    let s = snap(store, k, &q, T0 + 4 * S).await.expect("state");
    expect!("adjust", s.windows[0].used, 70);
    // A charge counts as of its admission: the second admission (at T0 + 3 s) cost 20 more,
    // which leave the window with it, at T0 + 63 s.
    let charge = [Update::Adjust {
        quota: 0,
        at: T0 + 3 * S,
        delta: 20,
    }];
    update(store, k, &q, &charge, T0 + 5 * S).await;
    expect!(
        "adjust",
        acquire(store, k, &q, &[11, 0], T0 + 6 * S).await,
        Decision::NotBefore(T0 + 63 * S)
    );
    expect!(
        "adjust",
        acquire(store, k, &q, &[10, 0], T0 + 6 * S).await,
        Decision::Admitted
    );
    // Once an admission has left the window, its correction is dropped.
    update(store, k, &q, &refund(T0)[..1], T0 + 200 * S).await;
    let s = snap(store, k, &q, T0 + 200 * S).await.expect("state");
    expect!("adjust", s.windows[0].used, 0);
    // The calendar count is corrected only in the admission's own period.
    update(
        store,
        k,
        &q,
        &[Update::Adjust {
            quota: 1,
            at: T0 - DAY,
            delta: 40,
        }],
        T0 + 201 * S,
    )
    .await;
    let s = snap(store, k, &q, T0 + 201 * S).await.expect("state");
    expect!("adjust", s.windows[1].used, 30);
}

/// A block holds every admission; a server's lower remaining count is counted as used; a
/// learned limit replaces the configured one.
pub async fn block_remaining_limit(store: &dyn Store) {
    let k = key("block_remaining_limit");
    let q = [rolling(1, 10, 60 * S)];
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[1], T0).await,
        Decision::Admitted
    );
    update(store, k, &q, &[Update::BlockUntil(T0 + 30 * S)], T0 + S).await;
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[1], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 30 * S)
    );
    // The server says 1 left (locally 9): 8 more count as used.
    let remaining = Update::Remaining {
        quota: 0,
        remaining: 1,
        reset: None,
    };
    update(store, k, &q, &[remaining], T0 + 30 * S).await;
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[1], T0 + 30 * S).await,
        Decision::Admitted
    );
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[1], T0 + 30 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    // A higher learned limit, in a batch after an earlier block that is already over.
    let batch = [
        Update::BlockUntil(T0 + 10 * S),
        Update::Limit {
            quota: 0,
            limit: 20,
        },
    ];
    update(store, k, &q, &batch, T0 + 30 * S).await;
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[1], T0 + 30 * S).await,
        Decision::Admitted
    );
    let s = snap(store, k, &q, T0 + 30 * S).await.expect("state");
    expect!(
        "block_remaining_limit",
        (s.windows[0].limit, s.windows[0].used),
        (20, 11)
    );
    // A lower one, and a cost above it.
    update(
        store,
        k,
        &q,
        &[Update::Limit { quota: 0, limit: 2 }],
        T0 + 30 * S,
    )
    .await;
    expect!(
        "block_remaining_limit",
        acquire(store, k, &q, &[3], T0 + 30 * S).await,
        Decision::Exceeds { quota: 0, limit: 2 }
    );
    // An update for a quota the key does not have is ignored.
    update(
        store,
        k,
        &q,
        &[Update::Limit { quota: 7, limit: 1 }],
        T0 + 30 * S,
    )
    .await;
}

/// Units a server reports as used expire when it said the window resets.
pub async fn remaining_until_reset(store: &dyn Store) {
    let k = key("remaining_until_reset");
    let q = [rolling(1, 10, 60 * S)];
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[1], T0).await,
        Decision::Admitted
    );
    let u = Update::Remaining {
        quota: 0,
        remaining: 0,
        reset: Some(12 * S),
    };
    update(store, k, &q, &[u], T0 + 10 * S).await;
    // The 9 reported units leave at 22 s, the real one at 60 s.
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[1], T0 + 10 * S).await,
        Decision::NotBefore(T0 + 22 * S)
    );
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[9], T0 + 22 * S).await,
        Decision::Admitted
    );
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[1], T0 + 22 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    // On a calendar quota the difference counts until the period ends.
    let k = key("remaining_until_reset/calendar");
    let q = [QuotaSpec::calendar(2, 5, DAY)];
    let u = Update::Remaining {
        quota: 0,
        remaining: 1,
        reset: None,
    };
    update(store, k, &q, &[u], T0).await;
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[1], T0).await,
        Decision::Admitted
    );
    expect!(
        "remaining_until_reset",
        acquire(store, k, &q, &[1], T0).await,
        Decision::NotBefore(20_001 * DAY)
    );
}

/// A quota's state is found by its id, whatever its position; quotas the request does not
/// name are kept, not wiped.
pub async fn quotas_found_by_id(store: &dyn Store) {
    let k = key("quotas_found_by_id");
    let a = rolling(11, 2, 60 * S);
    let b = rolling(12, 5, 60 * S);
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[a, b], &[1, 1], T0).await,
        Decision::Admitted
    );
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[b, a], &[1, 1], T0 + S).await,
        Decision::Admitted
    );
    // `a` is full: in either order.
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[b, a], &[1, 1], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[a], &[1], T0 + 2 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    // `b` alone has 3 left; then `a` and `b` together still see `a` full.
    for i in 0..3 {
        expect!(
            "quotas_found_by_id",
            acquire(store, k, &[b], &[1], T0 + (3 + i) * S).await,
            Decision::Admitted
        );
    }
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[b], &[1], T0 + 6 * S).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    expect!(
        "quotas_found_by_id",
        acquire(store, k, &[a, b], &[1, 1], T0 + 60 * S).await,
        Decision::Admitted
    );
}

/// A key's state of a quota its current tier does not name (another tier of the key: a pace
/// that ended, a learned quota) still counts when that tier comes back: a key admitted under
/// two quotas and then used under one of them is not forgotten while the other's log holds
/// admissions. (The in-memory store once dropped such a key as idle, and admitted 3 more
/// into a window of 5 that held 3.)
pub async fn state_beyond_the_quotas(store: &dyn Store) {
    let one = [rolling(1, 3, S)];
    let u = [Update::Remaining {
        quota: 0,
        remaining: 0,
        reset: Some(700 * MS),
    }];
    // Beside the rolling quota of `one`, a rolling one of 5 per 3 s, and a day's count.
    let fuller = [
        ("beyond", rolling(2, 5, 3 * S), T0 + 3 * S),
        ("beyond-day", QuotaSpec::calendar(3, 5, DAY), T0 + DAY / 2),
    ];
    for (name, other, free_at) in fuller {
        let k = key(name);
        let full = [rolling(1, 3, S), other];
        let admitted = acquire(store, k, &full, &[1, 3], T0).await;
        assert_eq!(admitted, Decision::Admitted, "{name}");
        update(store, k, &one, &u, T0 + 275 * MS).await;
        // Other keys' traffic in between (a sweep passes).
        for i in 0..8 {
            let other = key(&format!("{name}-{i}"));
            acquire(store, other, &one, &[1], T0 + 2 * S).await;
        }
        assert_eq!(
            acquire(store, k, &full, &[1, 3], T0 + 2_100 * MS).await,
            Decision::NotBefore(free_at),
            "{name}: the other quota's 3 of 5 still count"
        );
        let later = acquire(store, k, &full, &[1, 3], free_at).await;
        assert_eq!(later, Decision::Admitted, "{name}");
    }
}

/// Keys never share state.
pub async fn keys_are_separate(store: &dyn Store) {
    let q = [rolling(1, 1, 60 * S)];
    let (a, b) = (key("keys_are_separate/a"), key("keys_are_separate/b"));
    expect!(
        "keys_are_separate",
        acquire(store, a, &q, &[1], T0).await,
        Decision::Admitted
    );
    expect!(
        "keys_are_separate",
        acquire(store, b, &q, &[1], T0).await,
        Decision::Admitted
    );
    expect!(
        "keys_are_separate",
        acquire(store, a, &q, &[1], T0).await,
        Decision::NotBefore(T0 + 60 * S)
    );
    update(store, b, &q, &[Update::BlockUntil(T0 + 600 * S)], T0).await;
    expect!(
        "keys_are_separate",
        acquire(store, a, &q, &[1], T0 + 60 * S).await,
        Decision::Admitted
    );
}

/// A cost above a limit can never be admitted, and says which quota; nothing is recorded.
pub async fn never_fits(store: &dyn Store) {
    let k = key("never_fits");
    let q = [
        rolling(1, 10, 60 * S),
        rolling(2, 3, 60 * S),
        rolling(3, 0, 60 * S),
    ];
    expect!(
        "never_fits",
        acquire(store, k, &q, &[4, 4, 0], T0).await,
        Decision::Exceeds { quota: 1, limit: 3 }
    );
    expect!(
        "never_fits",
        acquire(store, k, &q, &[1, 1, 1], T0).await,
        Decision::Exceeds { quota: 2, limit: 0 }
    );
    expect!(
        "never_fits",
        acquire(store, k, &q, &[3, 3, 0], T0).await,
        Decision::Admitted
    );
}

/// A bucketed log never over-admits: a bucket counts until its newest admission leaves.
pub async fn bucketed_log(store: &dyn Store) {
    let k = key("bucketed_log");
    let g = 100 * MS;
    let q = [rolling(1, 100, 60 * S).with_granularity(g)];
    // 100 admissions within 50 ms: one bucket, from T0 to T0 + 49.5 ms.
    for i in 0..100 {
        let t = T0 + i * 500_000;
        expect!(
            "bucketed_log",
            acquire(store, k, &q, &[1], t).await,
            Decision::Admitted
        );
    }
    let newest = T0 + 99 * 500_000;
    expect!(
        "bucketed_log",
        acquire(store, k, &q, &[1], T0 + S).await,
        Decision::NotBefore(newest + 60 * S)
    );
    expect!(
        "bucketed_log",
        acquire(store, k, &q, &[100], newest + 60 * S).await,
        Decision::Admitted
    );
    // Past the granularity, a new bucket starts.
    let k = key("bucketed_log/two");
    let q = [rolling(1, 4, 60 * S).with_granularity(g)];
    expect!(
        "bucketed_log",
        acquire(store, k, &q, &[2], T0).await,
        Decision::Admitted
    );
    expect!(
        "bucketed_log",
        acquire(store, k, &q, &[2], T0 + g).await,
        Decision::Admitted
    );
    expect!(
        "bucketed_log",
        acquire(store, k, &q, &[2], T0 + 2 * g).await,
        Decision::NotBefore(T0 + 60 * S)
    );
}

/// A snapshot reports each window's limit, use and next free time, and the block; nothing
/// for a key never seen.
pub async fn snapshot(store: &dyn Store) {
    let k = key("snapshot");
    let q = [rolling(1, 2, 60 * S), QuotaSpec::calendar(2, 50, DAY)];
    expect!("snapshot", snap(store, k, &q, T0).await, None);
    expect!(
        "snapshot",
        acquire(store, k, &q, &[1, 1], T0).await,
        Decision::Admitted
    );
    expect!(
        "snapshot",
        acquire(store, k, &q, &[1, 1], T0 + S).await,
        Decision::Admitted
    );
    let s = snap(store, k, &q, T0 + 2 * S).await.expect("state");
    expect!("snapshot", s.windows.len(), 2);
    expect!(
        "snapshot",
        (
            s.windows[0].limit,
            s.windows[0].used,
            s.windows[0].next_free
        ),
        (2, 2, T0 + 60 * S)
    );
    expect!(
        "snapshot",
        (
            s.windows[1].limit,
            s.windows[1].used,
            s.windows[1].next_free
        ),
        (50, 2, T0 + 2 * S)
    );
    expect!("snapshot", s.blocked_until, 0);
    update(store, k, &q, &[Update::BlockUntil(T0 + 90 * S)], T0 + 2 * S).await;
    let s = snap(store, k, &q, T0 + 60 * S + 500 * MS)
        .await
        .expect("state");
    expect!("snapshot", s.blocked_until, T0 + 90 * S);
    expect!(
        "snapshot",
        (s.windows[0].used, s.windows[0].next_free),
        (1, T0 + 90 * S)
    );
    expect!("snapshot", s.windows[1].next_free, T0 + 90 * S);
}

/// Concurrent admissions of one key behave as if one ran after the other: exactly the limit
/// is admitted.
pub async fn atomic_admissions(store: &dyn Store) {
    let k = key("atomic_admissions");
    let q = [rolling(1, 20, 60 * S), rolling(2, 1000, 60 * S)];
    let futs: Vec<_> = (0..64)
        .map(|i| {
            let req = AcquireRequest::new(k, &q, &[1, 10], T0 + (i % 4) * 1_000);
            store.acquire(req)
        })
        .collect();
    let admitted = join_all(futs)
        .await
        .into_iter()
        .map(|d| d.expect("the store failed"))
        .filter(|d| *d == Decision::Admitted)
        .count();
    expect!("atomic_admissions", admitted, 20);
}

/// The window invariant on seeded random traffic: a greedy client against one to three
/// rolling quotas with weighted requests. No interval of any window's
/// length ever holds more than its limit; every wait ends at the exact earliest time (just
/// before it, some window would overflow), and the request is admitted then.
pub async fn window_invariant(store: &dyn Store) {
    let mut rng = SplitMix(0x7175_6f74_6173_746f);
    for case in 0..48u64 {
        let k = key(&format!("window_invariant/{case}"));
        let n = 1 + rng.below(3) as usize;
        let specs: Vec<QuotaSpec> = (0..n)
            .map(|i| {
                let limit = 1 + rng.below(12);
                let window = (1 + rng.below(50)) * MS;
                rolling(100 + i as u64, limit, window)
            })
            .collect();
        let min_limit = specs.iter().map(|s| s.limit).min().unwrap_or(1);
        let mut log: Vec<(u64, u64)> = Vec::new();
        let (mut arrival, mut last) = (T0, T0);
        for _ in 0..(10 + rng.below(50)) {
            arrival += rng.below(20) * MS / 4;
            let cost = (1 + rng.below(5)).min(min_limit);
            let costs = vec![cost; n];
            let mut t = arrival.max(last);
            if let Decision::NotBefore(t2) = acquire(store, k, &specs, &costs, t).await {
                assert!(
                    t2 > t,
                    "conformance check `window_invariant` (case {case}): waits end in the future"
                );
                let overflows = specs
                    .iter()
                    .any(|s| !fits(&log, t2 - 1_000, s.window_ns, s.limit, cost));
                assert!(overflows, "conformance check `window_invariant` (case {case}): a wait no longer than needed");
                t = t2;
                let d = acquire(store, k, &specs, &costs, t).await;
                assert_eq!(d, Decision::Admitted, "conformance check `window_invariant` (case {case}): admissible at the time it named");
            }
            for s in &specs {
                assert!(fits(&log, t, s.window_ns, s.limit, cost), "conformance check `window_invariant` (case {case}): admitted over a limit at {t}");
            }
            log.push((t, cost));
            last = t;
        }
        for s in &specs {
            for &(t, _) in &log {
                let held: u64 = log
                    .iter()
                    .filter(|(u, _)| *u >= t && *u < t + s.window_ns)
                    .map(|(_, c)| c)
                    .sum();
                assert!(held <= s.limit, "conformance check `window_invariant` (case {case}): {held} units in a window of {} ns with a limit of {}", s.window_ns, s.limit);
            }
        }
    }
}

/// Whether `cost` more fits at `t` in an exact rolling window, given `log`.
fn fits(log: &[(u64, u64)], t: u64, window: u64, limit: u64, cost: u64) -> bool {
    let used: u64 = log
        .iter()
        .filter(|(s, _)| s + window > t)
        .map(|(_, c)| c)
        .sum();
    used + cost <= limit
}

/// A small seeded generator, so that a failure names a case that can be run again.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Drives every future to completion, concurrently, on the caller's task.
async fn join_all<T>(futs: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
