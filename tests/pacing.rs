//! tower-quota's pacing targets, asserted on the very runs the pacing benchmark reports
//! (`benches/pacing/harness.rs`), in virtual time against the in-process simulator, with the
//! simulator's own records as the oracle.

#[path = "../benches/pacing/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{run, Scenario, Strategy};

/// The figures of tower-quota's run of `sc`, after checking that the simulator's limits held.
async fn tower_quota(sc: Scenario) -> (harness::Run, harness::Figures) {
    let run = run(&sc, Strategy::TowerQuota).await;
    run.sim.check_invariants().unwrap();
    let f = run.figures();
    eprintln!("{}", harness::markdown(std::slice::from_ref(&run)));
    (run, f)
}

/// (a) Free tier: zero 429s, every request succeeds, makespan within 2 % of the optimum.
#[tokio::test(start_paused = true)]
async fn a_free_tier_no_429_near_optimal() {
    let (_, f) = tower_quota(Scenario::a()).await;
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.rate_limited, 0);
    assert_eq!(f.wasted, 0);
    assert!(f.ratio() <= 1.02, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (b) Daily cap gone midway: no call after the cap is known; every later request fails in
/// under a millisecond, told when the quota comes back (at the next UTC midnight).
#[tokio::test(start_paused = true)]
async fn b_daily_cap_fails_fast_with_reset() {
    let sc = Scenario::b();
    let (run, f) = tower_quota(sc.clone()).await;
    assert_eq!(f.succeeded, sc.possible);
    assert_eq!(f.after_cap, Some(0), "calls sent after the cap was known");
    let fail_fast = f.fail_fast.expect("the cap was reached");
    assert!(
        fail_fast < Duration::from_millis(1),
        "fail fast took {fail_fast:?}"
    );
    let failed: Vec<_> = run.done.iter().filter(|d| !d.reply.ok()).collect();
    assert_eq!(failed.len(), sc.requests - sc.possible);
    assert_eq!(f.told_reset, Some(failed.len()));
    // The reset is the next UTC midnight: 14 h after the run's 10:00 start, less the run.
    for d in failed {
        let reset = d.reply.reset_after.unwrap();
        assert!(
            reset > Duration::from_secs(13 * 3600) && reset <= Duration::from_secs(14 * 3600),
            "reset after {reset:?}"
        );
    }
}

/// (c) Limits unknown to the client: at most two 429s, makespan within 10 % of the optimum.
#[tokio::test(start_paused = true)]
async fn c_unknown_limits_learned() {
    let (_, f) = tower_quota(Scenario::c()).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= 2, "{} 429s", f.rate_limited);
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (d) Upstream 429s: every request succeeds, none sent before its delay has passed.
#[tokio::test(start_paused = true)]
async fn d_upstream_429s_honoured() {
    let (run, f) = tower_quota(Scenario::d()).await;
    assert!(f.rate_limited > 0, "the scenario injects upstream 429s");
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.early, 0);
    assert_eq!(run.sim.stats().early_retries(), 0);
}

/// (e) Bursts of 503s: every request succeeds within the retry bounds (5 attempts).
#[tokio::test(start_paused = true)]
async fn e_unavailable_bursts_ride_out() {
    let (run, f) = tower_quota(Scenario::e()).await;
    assert!(run.sim.stats().count(503) > 0, "the scenario injects 503s");
    assert_eq!(f.succeeded, f.requests);
    assert!(run.done.iter().all(|d| d.reply.error.is_none()));
}

/// The peers run too (the benchmark's rows), and the simulator's limits hold whatever they do.
#[tokio::test(start_paused = true)]
async fn peers_run_and_limits_hold() {
    let sc = Scenario::a();
    for strategy in [Strategy::Plain, Strategy::TowerRetry, Strategy::Governor] {
        let run = run(&sc, strategy).await;
        run.sim.check_invariants().unwrap();
        assert_eq!(run.done.len(), sc.requests);
        eprintln!("{}", harness::markdown(std::slice::from_ref(&run)));
    }
}

/// A run is a function of its scenario: the same seed gives the same figures.
#[tokio::test(start_paused = true)]
async fn runs_are_deterministic() {
    let sc = Scenario::e();
    let first = run(&sc, Strategy::TowerQuota).await.figures();
    let second = run(&sc, Strategy::TowerQuota).await.figures();
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
}

/// (c) with no quota at all on the client: nothing to adopt a limit into, so each window
/// costs one 429 — whose cooldown holds every other request of the key — and no more.
#[tokio::test(start_paused = true)]
async fn c_without_any_quota_one_429_per_window() {
    let mut sc = Scenario::c();
    sc.client_tier = tower_quota::Tier::new("unknown");
    let windows = sc.requests.div_ceil(20);
    let (_, f) = tower_quota(sc).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= windows as u64, "{} 429s", f.rate_limited);
    assert!(f.ratio() <= 1.05, "makespan ÷ optimum = {:.4}", f.ratio());
}
