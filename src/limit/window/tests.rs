use proptest::prelude::*;

use super::*;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn rolling(limit: u64, window: u64) -> QuotaSpec {
    QuotaSpec::rolling(window, limit, window)
}

fn calendar(limit: u64, period: u64) -> QuotaSpec {
    QuotaSpec::calendar(period ^ 1, limit, period)
}

#[test]
fn exact_log_admits_n_then_waits_for_the_oldest() {
    let specs = [rolling(3, 60 * S)];
    let mut k = KeyWindows::default();
    for t in [0, S, 2 * S] {
        assert_eq!(k.acquire(&specs, &[1], t, 0), Decision::Admitted);
    }
    assert_eq!(
        k.acquire(&specs, &[1], 3 * S, 0),
        Decision::NotBefore(60 * S)
    );
    assert_eq!(
        k.acquire(&specs, &[1], 60 * S - 1, 0),
        Decision::NotBefore(60 * S)
    );
    assert_eq!(k.acquire(&specs, &[1], 60 * S, 0), Decision::Admitted);
    assert_eq!(
        k.acquire(&specs, &[1], 60 * S, 0),
        Decision::NotBefore(61 * S)
    );
}

#[test]
fn weighted_cost_waits_for_enough_units() {
    let specs = [rolling(10, 10 * S)];
    let mut k = KeyWindows::default();
    assert_eq!(k.acquire(&specs, &[4], 0, 0), Decision::Admitted);
    assert_eq!(k.acquire(&specs, &[4], S, 0), Decision::Admitted);
    // 8 used; 7 more needs both entries gone.
    assert_eq!(
        k.acquire(&specs, &[7], 2 * S, 0),
        Decision::NotBefore(11 * S)
    );
    // 5 more needs only the first.
    assert_eq!(
        k.acquire(&specs, &[5], 2 * S, 0),
        Decision::NotBefore(10 * S)
    );
    assert_eq!(
        k.acquire(&specs, &[11], 2 * S, 0),
        Decision::Exceeds {
            quota: 0,
            limit: 10
        }
    );
}

#[test]
fn margin_extends_every_window() {
    let specs = [rolling(1, 10 * S)];
    let mut k = KeyWindows::default();
    assert_eq!(k.acquire(&specs, &[1], 0, 5), Decision::Admitted);
    assert_eq!(
        k.acquire(&specs, &[1], S, 5),
        Decision::NotBefore(10 * S + 5)
    );
}

#[test]
fn calendar_resets_at_the_boundary() {
    let day = 86_400 * S;
    let specs = [rolling(20, 60 * S), calendar(2, day)];
    let mut k = KeyWindows::default();
    let t0 = 100 * day - 90 * S; // 23:58:30 UTC
    assert_eq!(k.acquire(&specs, &[1, 1], t0, 0), Decision::Admitted);
    assert_eq!(k.acquire(&specs, &[1, 1], t0, 0), Decision::Admitted);
    assert_eq!(
        k.acquire(&specs, &[1, 1], t0 + S, 0),
        Decision::NotBefore(100 * day)
    );
    assert_eq!(k.acquire(&specs, &[1, 1], 100 * day, 0), Decision::Admitted);
}

#[test]
fn block_and_tighten() {
    let specs = [rolling(10, 60 * S)];
    let mut k = KeyWindows::default();
    assert_eq!(k.acquire(&specs, &[1], 0, 0), Decision::Admitted);
    k.update(&specs, Update::BlockUntil(30 * S), S, 0);
    assert_eq!(
        k.acquire(&specs, &[1], 2 * S, 0),
        Decision::NotBefore(30 * S)
    );
    // The server says 1 left (locally 9): count 8 more.
    k.update(
        &specs,
        Update::Remaining {
            quota: 0,
            remaining: 1,
            reset: None,
        },
        30 * S,
        0,
    );
    assert_eq!(k.acquire(&specs, &[1], 30 * S, 0), Decision::Admitted);
    assert_eq!(
        k.acquire(&specs, &[1], 30 * S, 0),
        Decision::NotBefore(60 * S)
    );
    // A learned, higher limit replaces the configured one.
    k.update(
        &specs,
        Update::Limit {
            quota: 0,
            limit: 20,
        },
        30 * S,
        0,
    );
    assert_eq!(k.acquire(&specs, &[1], 30 * S, 0), Decision::Admitted);
    let snap = k.snapshot(&specs, 30 * S, 0);
    assert_eq!(snap.windows[0].limit, 20);
    assert_eq!(snap.windows[0].used, 11);
}

#[test]
fn a_learned_rolling_limit_outlives_a_pause_until_the_reset() {
    // A loose tier learns the server's 20 per minute from a 429, with a pause until the
    // reset. When the pause lifts every entry has left the window: the key must not read as
    // idle then, or the store's sweep forgets the learned limit just as requests resume.
    let specs = [rolling(1000, 60 * S)];
    let mut k = KeyWindows::default();
    let t = 1_000 * S;
    for _ in 0..21 {
        assert_eq!(k.acquire(&specs, &[1], t, 0), Decision::Admitted);
    }
    k.update(
        &specs,
        Update::Limit {
            quota: 0,
            limit: 20,
        },
        t,
        0,
    );
    k.update(&specs, Update::BlockUntil(t + 60 * S), t, 0);
    assert!(k.idle_at(&specs, t, 0) > t + 60 * S);
    // Still used: kept a window past the last use (plus the 2 s a learned margin could
    // grow to before the next use: a twentieth of the minute, at most 2 s).
    assert_eq!(k.acquire(&specs, &[1], t + 60 * S, 0), Decision::Admitted);
    assert_eq!(k.idle_at(&specs, t + 60 * S, 0), t + 122 * S);
    assert_eq!(k.snapshot(&specs, t + 60 * S, 0).windows[0].limit, 20);
    // Without a learned limit, an empty log is idle as soon as it empties.
    let mut fresh = KeyWindows::default();
    assert_eq!(fresh.acquire(&specs, &[1], t, 0), Decision::Admitted);
    assert_eq!(fresh.idle_at(&specs, t, 0), t + 62 * S);
}

#[test]
fn tightened_units_expire_at_the_servers_reset() {
    let specs = [rolling(10, 60 * S)];
    let mut k = KeyWindows::default();
    let t = 1_000 * S;
    assert_eq!(k.acquire(&specs, &[1], t, 0), Decision::Admitted);
    let update = Update::Remaining {
        quota: 0,
        remaining: 0,
        reset: Some(12 * S),
    };
    k.update(&specs, update, t + 10 * S, 0);
    // The 9 phantom units fall out at 22 s, the real one at 60 s.
    let d = k.acquire(&specs, &[1], t + 10 * S, 0);
    assert_eq!(d, Decision::NotBefore(t + 22 * S));
    assert_eq!(k.acquire(&specs, &[9], t + 22 * S, 0), Decision::Admitted);
    let d = k.acquire(&specs, &[1], t + 22 * S, 0);
    assert_eq!(d, Decision::NotBefore(t + 60 * S));
}

#[test]
fn idle_when_everything_expired() {
    let specs = [rolling(10, 60 * S)];
    let mut k = KeyWindows::default();
    assert_eq!(k.acquire(&specs, &[1], 5 * S, 0), Decision::Admitted);
    // The window, and the most a learned margin could grow to before the next use (a
    // twentieth of the window, at most 2 s): a grown margin still counts the admission.
    assert_eq!(k.idle_at(&specs, 5 * S, 0), 67 * S);
    let second = [rolling(10, S)];
    let mut k = KeyWindows::default();
    assert_eq!(k.acquire(&second, &[1], 5 * S, 0), Decision::Admitted);
    assert_eq!(k.idle_at(&second, 5 * S, 0), 6 * S + 50 * MS);
    // A configured margin larger than that is kept as it is.
    assert_eq!(k.idle_at(&second, 5 * S, 300 * MS), 6 * S + 300 * MS);
}

/// Units admitted in `[from, from + window)`.
fn in_window(log: &[(u64, u64)], from: u64, window: u64) -> u64 {
    log.iter()
        .filter(|(t, _)| *t >= from && *t < from.saturating_add(window))
        .map(|(_, c)| c)
        .sum()
}

/// Whether `cost` more fits at `t` in an exact sliding window given `log`.
fn fits(log: &[(u64, u64)], t: u64, window: u64, limit: u64, cost: u64) -> bool {
    let used: u64 = log
        .iter()
        .filter(|(s, _)| s + window > t)
        .map(|(_, c)| c)
        .sum();
    used + cost <= limit
}

fn quota_strategy() -> impl Strategy<Value = (u64, u64)> {
    (1u64..12, 1u64..50)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A greedy single-waiter run against 1–3 rolling quotas: no interval of any window's
    /// length holds more than its limit, and every wait ends at the exact earliest time
    /// (one nanosecond before it, some window would overflow).
    #[test]
    fn exact_log_is_safe_and_work_conserving(
        quotas in prop::collection::vec(quota_strategy(), 1..4),
        reqs in prop::collection::vec((0u64..20, 1u64..6), 1..80),
    ) {
        let specs: Vec<QuotaSpec> = quotas.iter().map(|&(n, w)| rolling(n, w)).collect();
        let min_limit = specs.iter().map(|s| s.limit).min().unwrap();
        let mut k = KeyWindows::default();
        let mut log: Vec<(u64, u64)> = Vec::new();
        let mut arrival = 0;
        let mut last = 0;
        for (gap, cost) in reqs {
            arrival += gap;
            let cost = cost.min(min_limit);
            let costs = vec![cost; specs.len()];
            let mut t = arrival.max(last);
            let mut tries = 0;
            loop {
                match k.acquire(&specs, &costs, t, 0) {
                    Decision::Admitted => break,
                    Decision::NotBefore(t2) => {
                        prop_assert!(t2 > t);
                        // Work conservation: just before t2 it does not fit.
                        prop_assert!(specs.iter().any(|s| !fits(&log, t2 - 1, s.window_ns, s.limit, cost)));
                        t = t2;
                        tries += 1;
                        prop_assert!(tries == 1, "admissible at the time it named");
                    }
                    Decision::Exceeds { .. } => prop_assert!(false, "cost <= limit"),
                }
            }
            // It fits now by the brute-force count.
            for s in &specs {
                prop_assert!(fits(&log, t, s.window_ns, s.limit, cost));
            }
            log.push((t, cost));
            last = t;
        }
        for s in &specs {
            for &(t, _) in &log {
                prop_assert!(in_window(&log, t, s.window_ns) <= s.limit);
            }
        }
    }

    /// The bucketed log never over-admits and waits at most one granule longer than the
    /// exact log would.
    #[test]
    fn bucketed_log_never_over_admits(
        limit in 1000u64..5000,
        reqs in prop::collection::vec((0u64..2_000, 1u64..200), 1..300),
    ) {
        let window = 60_000u64;
        let g = window / 256;
        let bucketed = [QuotaSpec::rolling(1, limit, window).with_granularity(g)];
        let mut k = KeyWindows::default();
        let mut log: Vec<(u64, u64)> = Vec::new();
        let mut arrival = 0;
        let mut last = 0;
        for (gap, cost) in reqs {
            arrival += gap;
            let mut t = arrival.max(last);
            // The exact earliest time given the same history.
            let mut exact = t;
            while !fits(&log, exact, window, limit, cost) {
                exact = log.iter().map(|(s, _)| s + window).filter(|&e| e > exact).min().unwrap();
            }
            loop {
                match k.acquire(&bucketed, &[cost], t, 0) {
                    Decision::Admitted => break,
                    Decision::NotBefore(t2) => t = t2,
                    Decision::Exceeds { .. } => prop_assert!(false),
                }
            }
            prop_assert!(t >= exact);
            prop_assert!(t <= exact + g, "t={t} exact={exact}");
            log.push((t, cost));
            last = t;
        }
        for &(t, _) in &log {
            prop_assert!(in_window(&log, t, window) <= limit);
        }
        let bounded = k.windows.as_slice().iter().all(|w| w.entries().count() <= 257);
        prop_assert!(bounded);
    }
}

/// Corrections nobody should send — the most negative and positive deltas, an admission in
/// the future or before the epoch of the log, a quota that does not exist — change nothing
/// they should not, and never panic or wrap a count.
#[test]
fn absurd_adjustments_are_bounded() {
    let specs = [rolling(100, 60 * S), calendar(1_000, 86_400 * S)];
    let mut k = KeyWindows::default();
    let t = 20_000 * 86_400 * S;
    assert_eq!(k.acquire(&specs, &[10, 10], t, 0), Decision::Admitted);
    let used = |k: &mut KeyWindows, now| {
        let s = k.snapshot(&specs, now, 0);
        (s.windows[0].used, s.windows[1].used)
    };
    let adjust = |quota, at, delta| Update::Adjust { quota, at, delta };
    // An unknown quota, and an admission older than the window: nothing.
    k.update(&specs, adjust(7, t, 5), t + S, 0);
    k.update(&specs, adjust(0, 0, i64::MAX), t + S, 0);
    assert_eq!(used(&mut k, t + S), (10, 10));
    // The largest refund takes what the admission counted, no more.
    k.update(&specs, adjust(0, t, i64::MIN), t + S, 0);
    k.update(&specs, adjust(1, t, i64::MIN), t + S, 0);
    assert_eq!(used(&mut k, t + S), (0, 0));
    // A charge dated in the future counts as of now, saturating, and leaves with the window.
    k.update(&specs, adjust(0, u64::MAX, i64::MAX), t + 2 * S, 0);
    let d = k.acquire(&specs, &[1, 0], t + 3 * S, 0);
    assert_eq!(d, Decision::NotBefore(t + 62 * S));
    assert_eq!(
        k.acquire(&specs, &[1, 0], t + 62 * S, 0),
        Decision::Admitted
    );
}

/// What the stamps stand for, read from the logs themselves: each rolling window's newest
/// entry, and when a sweep may empty the logs.
fn check_stamps(k: &KeyWindows, specs: &[QuotaSpec], t: u64, margin: u64) {
    for (w, _) in k
        .windows
        .as_slice()
        .iter()
        .zip(specs)
        .filter(|(_, s)| !s.calendar)
    {
        let back = w
            .ext
            .as_ref()
            .and_then(|e| e.entries.back())
            .map(|e| e.last);
        assert_eq!(w.newest(), back, "the stamp is the log's newest entry");
    }
    let (idle, logs) = k.expiry(specs, Now::from(t), margin);
    assert_eq!(
        logs,
        k.logs_expire_at(),
        "expiry reads the logs' ends from the stamps"
    );
    assert_eq!(idle, k.idle_at(specs, t, margin));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Admissions (exact and bucketed), charges and refunds at past times, a server's
    /// `remaining`, learned limits and sweeps, in any order: a rolling window's stamp is
    /// always its log's newest entry, and the store's expiry read from the stamps equals
    /// the one read from the logs.
    #[test]
    fn stamps_follow_the_logs(
        granularity in prop_oneof![Just(0u64), 1u64..5],
        margin in 0u64..3,
        ops in prop::collection::vec((0u8..6, 0u64..6, 0u64..8, 0u64..4), 1..60),
    ) {
        let specs = [rolling(6, 10).with_granularity(granularity), calendar(20, 50)];
        let mut k = KeyWindows::default();
        let mut t = 0;
        for (op, gap, units, back) in ops {
            t += gap;
            let at = t.saturating_sub(back);
            match op {
                0 | 1 => {
                    let _ = k.acquire(&specs, &[units.min(6), 1], t, margin);
                }
                2 => {
                    let delta = -(units as i64);
                    k.update(&specs, Update::Adjust { quota: 0, at, delta }, t, margin);
                }
                3 => {
                    let delta = units as i64;
                    k.update(&specs, Update::Adjust { quota: 0, at, delta }, t, margin);
                }
                4 => {
                    let update = Update::Remaining { quota: 0, remaining: units, reset: Some(back) };
                    k.update(&specs, update, t, margin);
                }
                _ => {
                    if units == 0 {
                        k.update(&specs, Update::Limit { quota: 0, limit: 3 }, t, margin);
                    } else {
                        k.compact(t);
                    }
                }
            }
            if op != 5 || units == 0 {
                check_stamps(&k, &specs, t, margin);
            }
        }
    }
}
