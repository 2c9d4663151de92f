//! tower-quota's pacing targets, asserted on the very runs the pacing benchmark reports
//! (`benches/pacing/harness.rs`), in virtual time against the in-process simulator, with the
//! simulator's own records as the oracle. Every scenario runs on a simulated network: the
//! simulator decides each request when it arrives (150 ms + 0–200 ms each way unless the
//! scenario says otherwise), and tower-quota runs with its defaults — no margin, no tuning.

#[path = "../benches/pacing/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{run, Scenario, Strategy};
use tower_quota::sim::Network;

/// `sc` with no network at all: each request decided the instant it is sent.
fn without_network(mut sc: Scenario) -> Scenario {
    sc.network = Network::none();
    sc
}

/// The figures of tower-quota's run of `sc`, after checking that the simulator's limits held.
async fn tower_quota(sc: Scenario) -> (harness::Run, harness::Figures) {
    let run = run(&sc, Strategy::TowerQuota).await;
    run.sim.check_invariants().unwrap();
    let f = run.figures();
    eprintln!("{}", harness::markdown(std::slice::from_ref(&run)));
    (run, f)
}

/// (a) Tier known, 0–200 ms of jitter each way: zero 429s, every request succeeds, makespan
/// within 2 % of the optimum.
#[tokio::test(start_paused = true)]
async fn a_free_tier_no_429_near_optimal() {
    let (_, f) = tower_quota(Scenario::a()).await;
    eprintln!(
        "a_free_tier_no_429_near_optimal: {} 429s, {:.4} × optimum",
        f.rate_limited,
        f.ratio()
    );
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

/// (c) Limits unknown to the client, on no network (the target as first set): at most two
/// 429s, makespan within 10 % of the optimum.
#[tokio::test(start_paused = true)]
async fn c_unknown_limits_learned_without_network() {
    let (_, f) = tower_quota(without_network(Scenario::c())).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= 2, "{} 429s", f.rate_limited);
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (c) on the far network, the benchmark's run: every request succeeds, makespan within 10 %.
#[tokio::test(start_paused = true)]
async fn c_unknown_limits_learned() {
    let (_, f) = tower_quota(Scenario::c()).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (c) on the far network: at most two 429s once the first 429 has reached the client. The
/// server says nothing on a 200 (OpenRouter's style), so the requests sent before the first
/// 429 came back — up to the concurrency, 16 — could not be held back; issue 10 counts them
/// in its "≤ 20 in all" target for an unknown tier. Measured: 11 429s in all, 0 after the
/// first was known, 1.039 × optimum.
#[tokio::test(start_paused = true)]
async fn c_unknown_limits_learned_few_429s_once_known() {
    let (_, f) = tower_quota(Scenario::c()).await;
    eprintln!(
        "c_unknown_limits_learned_few_429s_once_known: {} 429s, {} after the first was known, {:.4} × optimum",
        f.rate_limited,
        f.rate_limited_after_known,
        f.ratio()
    );
    assert!(f.rate_limited <= 20, "{} 429s", f.rate_limited);
    assert!(
        f.rate_limited_after_known <= 2,
        "{} 429s after the first was known",
        f.rate_limited_after_known
    );
}

/// (d) Upstream 429s, on no network (the target as first set): every request succeeds, none
/// sent before its delay has passed.
#[tokio::test(start_paused = true)]
async fn d_upstream_429s_honoured_without_network() {
    let (run, f) = tower_quota(without_network(Scenario::d())).await;
    assert!(f.rate_limited > 0, "the scenario injects upstream 429s");
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.early, 0);
    assert_eq!(run.sim.stats().early_retries(), 0);
}

/// (d) on the far network, the benchmark's run: none sent after the client had an upstream
/// 429 and before its delay had passed.
#[tokio::test(start_paused = true)]
async fn d_upstream_429s_honoured() {
    let (run, f) = tower_quota(Scenario::d()).await;
    assert!(f.rate_limited > 0, "the scenario injects upstream 429s");
    assert_eq!(f.early, 0);
    assert_eq!(run.sim.stats().early_retries(), 0);
}

/// (d) on the far network: every request succeeds. Each upstream 429 also refuses the requests
/// of the same burst already on the wire; those refusals were foreseen (the cooldown was
/// learned while they were on the wire) and do not use up their requests' attempts. Before
/// that: 97/100.
#[tokio::test(start_paused = true)]
async fn d_upstream_429s_every_request_succeeds() {
    let (_, f) = tower_quota(Scenario::d()).await;
    assert_eq!(f.succeeded, f.requests);
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

/// (f) 10 per second on a near network: every request succeeds.
#[tokio::test(start_paused = true)]
async fn f_ten_per_second_near_network() {
    let (_, f) = tower_quota(Scenario::f()).await;
    assert_eq!(f.succeeded, f.requests);
}

/// (f) at most two 429s. Measured: 0 429s, 1.046 × optimum. It was 3 429s, 1.100 ×: the
/// in-memory store dropped the key as idle at the end of its first window, as the margin
/// of its last use (none learned yet) said, so the second window opened with the margin
/// learned from the first round trips (20 ms) but without the admissions it should count.
#[tokio::test(start_paused = true)]
async fn f_ten_per_second_near_network_few_429s() {
    let (_, f) = tower_quota(Scenario::f()).await;
    eprintln!("(f) {} 429s, {:.4} × optimum", f.rate_limited, f.ratio());
    assert!(f.rate_limited <= 2, "{} 429s", f.rate_limited);
}

/// (f) makespan within 5 % of the optimum.
#[tokio::test(start_paused = true)]
async fn f_ten_per_second_near_network_makespan() {
    let (_, f) = tower_quota(Scenario::f()).await;
    assert!(f.ratio() <= 1.05, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (g) Tier unknown — an empty `Tier`, OpenRouter's headers only: at most twenty 429s in
/// all, makespan within 10 % of the optimum.
#[tokio::test(start_paused = true)]
async fn g_tier_unknown_learned_from_openrouter_headers() {
    let (_, f) = tower_quota(Scenario::g()).await;
    eprintln!(
        "g_tier_unknown_learned_from_openrouter_headers: {} 429s, {} after the first was known, {:.4} × optimum",
        f.rate_limited,
        f.rate_limited_after_known,
        f.ratio()
    );
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= 20, "{} 429s", f.rate_limited);
    // What the learning did not prevent: the rest were on the wire before the first 429
    // came back.
    assert!(
        f.rate_limited_after_known <= 2,
        "{} 429s after the first was known",
        f.rate_limited_after_known
    );
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (h) A fixed clock-minute server admitting 19 for `rpm: 20`, the tier configured as 20/min:
/// makespan within 10 % of the optimum.
#[tokio::test(start_paused = true)]
async fn h_fixed_clock_minute_rpm_20_admitting_19() {
    let (_, f) = tower_quota(Scenario::h()).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// (h) at most two 429s: the first 429 says the proxy's count ("current rpm: 19, rpm
/// limit: 20"), and the limiter adopts the 19 it really admits. Measured: 1 429, 1.019 ×
/// optimum (it was 10 429s, one a clock minute, before).
#[tokio::test(start_paused = true)]
async fn h_fixed_clock_minute_few_429s() {
    let (_, f) = tower_quota(Scenario::h()).await;
    eprintln!(
        "h_fixed_clock_minute_few_429s: {} 429s, {:.4} × optimum",
        f.rate_limited,
        f.ratio()
    );
    assert!(f.rate_limited <= 2, "{} 429s", f.rate_limited);
}

/// (i) A fixed window anchored at the first request that answers `retry-after` = the whole
/// window: at most two 429s, makespan within 10 % of the optimum.
#[tokio::test(start_paused = true)]
async fn i_fixed_window_anchored_retry_after_window() {
    let (_, f) = tower_quota(Scenario::i()).await;
    eprintln!(
        "i_fixed_window_anchored_retry_after_window: {} 429s, {:.4} × optimum",
        f.rate_limited,
        f.ratio()
    );
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= 2, "{} 429s", f.rate_limited);
    assert!(f.ratio() <= 1.10, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// Every peer runs every new scenario too, and the simulator's limits — counted as each
/// server counts, on arrival — hold whatever they do.
#[tokio::test(start_paused = true)]
async fn peers_run_every_server_and_its_limits_hold() {
    for sc in [Scenario::f(), Scenario::h(), Scenario::i()] {
        for strategy in [Strategy::TowerRetry, Strategy::Governor] {
            let run = run(&sc, strategy).await;
            run.sim.check_invariants().unwrap();
            assert_eq!(run.done.len(), sc.requests);
        }
    }
}

/// The optimum accounts for the network and for how the server counts.
#[test]
fn optima() {
    let s = |d: Duration| d.as_secs_f64();
    // 9 windows of 60 s after the first arrival (150 ms), then 200 ms upstream and 150 ms back.
    assert_eq!(s(Scenario::a().optimum()), 540.5);
    // 19 windows of 1 s after 15 ms, then 200 ms and 15 ms.
    assert!((s(Scenario::f().optimum()) - 19.23).abs() < 1e-9);
    // 200 at 19 per clock minute from 10:00:00: the 11th minute starts at 600 s.
    assert_eq!(s(Scenario::h().optimum()), 600.35);
    // The first window opens at 10:00:00.150, truncated to 10:00:00.
    assert_eq!(s(Scenario::i().optimum()), 540.35);
}

/// (c) with no quota at all on the client, on no network: each window costs at most one 429.
#[tokio::test(start_paused = true)]
async fn c_without_any_quota_one_429_per_window() {
    let mut sc = without_network(Scenario::c());
    sc.client_tier = tower_quota::Tier::new("unknown");
    let windows = sc.requests.div_ceil(20);
    let (_, f) = tower_quota(sc).await;
    assert_eq!(f.succeeded, f.requests);
    assert!(f.rate_limited <= windows as u64, "{} 429s", f.rate_limited);
    assert!(f.ratio() <= 1.05, "makespan ÷ optimum = {:.4}", f.ratio());
}

/// tower-quota's run of a token scenario with the built-in token cost and the reconciliation
/// that fits its server, after checking that the simulator's limits held.
async fn built_in_cost(sc: Scenario) -> harness::Figures {
    let strategy = Strategy::TowerQuotaTokens(sc.fitting_reconcile());
    let run = run(&sc, strategy).await;
    run.sim.check_invariants().unwrap();
    eprintln!("{}", harness::markdown_tokens(std::slice::from_ref(&run)));
    run.figures()
}

/// (j) An OpenAI-style server that charges the prompt and `max_tokens` on arrival: the
/// built-in cost (no cost function, no header) reconciled `KeepMaxTokens` gets no 429 and every
/// request through.
#[tokio::test(start_paused = true)]
async fn j_tokens_reserved_built_in_cost_no_429() {
    let f = built_in_cost(Scenario::j()).await;
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.rate_limited, 0);
}

/// (k) A server that counts the real usage when each answer is done (rolling minute): the
/// built-in cost reconciled to the `Usage` gets no 429 and every request through.
#[tokio::test(start_paused = true)]
async fn k_tokens_real_usage_built_in_cost_no_429() {
    let f = built_in_cost(Scenario::k()).await;
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.rate_limited, 0);
}

/// (k) Issue 15's target: zero 429s and at least 90 % of the token quota used (tokens the
/// server counted ÷ 30 000 × ⌈makespan / 1 min⌉).
///
/// Measured: 300/300, 0 429s, 91.5 % (604 121 tokens over 1 300 s, 1.083 × optimum; 1 279 s
/// when the usage was counted as of the admission, which a server counting it at the
/// answer's end could refuse — see below). Before
/// a refund woke the key's sleeping head waiter it was 71.9 %, the same as without
/// reconciliation.
#[tokio::test(start_paused = true)]
async fn k_tokens_real_usage_target() {
    let f = built_in_cost(Scenario::k()).await;
    let used = f.token_use.unwrap();
    eprintln!(
        "k_tokens_real_usage_target: {} 429s, {:.1} % of the token quota",
        f.rate_limited,
        used * 100.0
    );
    assert_eq!(f.rate_limited, 0);
    assert!(used >= 0.90, "token utilisation {:.1} %", used * 100.0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// With random prompts, `max_tokens` and real usage (the completions' share of
    /// `max_tokens`), tower-quota's built-in token cost and the reconciliation that fits the
    /// server — `KeepMaxTokens` where it charges the reservation (OpenAI), `Usage` where it
    /// adjusts it to the real count at the end (Anthropic) or counts the real usage once the
    /// answer is done (LiteLLM) — never lets the server's token window pass its limit: the server
    /// never refuses a request, and its window, rebuilt from its admissions, holds at most
    /// the limit. No network (the server counts each request the instant it is sent, the
    /// limiter's admission), so this is the accounting alone: reserved − refunded.
    #[test]
    fn built_in_cost_and_reconciliation_never_overfill_the_server(
        seed in 0u64..1_000_000,
        lo in 50u64..2_000,
        span in 0u64..3_000,
        max_tokens in 1u64..2_000,
        usage_lo in 0.0f64..1.0,
        counting in 0usize..3,
    ) {
        use tower_quota::sim::{Completions, Counting, Limit, Models, Style, Tier, TokenKind, TokenLimit};
        let counting = [Counting::Reserve, Counting::ReserveThenAdjust, Counting::AfterResponse][counting];
        let mut sc = Scenario::j();
        sc.requests = 40;
        sc.seed = seed;
        sc.network = Network::none();
        sc.sim_tier = Tier::new("random-tpm")
            .with_limit(Limit::rolling(Models::All, 500, Duration::from_secs(60)))
            .with_token_limit(TokenLimit::per_minute(TokenKind::Total, 30_000).counting_as(counting))
            .with_style(Style::OpenAi);
        sc.workload = Some(harness::TokenWorkload { prompt_tokens: (lo, lo + span), max_tokens });
        sc.completions = Completions::fraction(usage_lo, 1.0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let run = rt.block_on(run(&sc, Strategy::TowerQuotaTokens(sc.fitting_reconcile())));
        let limit = &run.sim.accounts()[0].tier().token_limits()[0];
        let peak = run.sim.stats().max_tokens_in(limit);
        proptest::prop_assert!(run.sim.check_invariants().is_ok());
        proptest::prop_assert_eq!(run.sim.stats().count(429), 0, "429s; window peak {} of {}", peak, limit.tokens());
        proptest::prop_assert!(peak <= limit.tokens(), "window peak {} of {}", peak, limit.tokens());
        // A request may still be refused by the limiter itself (its `max_wait`), never by
        // the server.
        proptest::prop_assert!(run.done.iter().all(|d| d.reply.ok() || d.reply.status.is_none()));
    }
}

/// A case the property above once found (1 run in about 25): a server that counts the real
/// usage when each answer is done (LiteLLM's `tpm`) holds it a window from then, while the
/// limiter corrected its reservation as of the admission and so let it go the answer's
/// latency sooner — a request 60.465 s in was refused with the window at 26 297 of 30 000.
/// `Reconcile::Usage` now counts the usage from the answer's end.
#[tokio::test(start_paused = true)]
async fn usage_counted_after_the_response_is_held_from_the_answers_end() {
    use tower_quota::sim::{
        Completions, Counting, Limit, Models, Style, Tier, TokenKind, TokenLimit,
    };
    let mut sc = Scenario::j();
    sc.requests = 40;
    sc.seed = 497_828;
    sc.network = Network::none();
    sc.sim_tier = Tier::new("random-tpm")
        .with_limit(Limit::rolling(Models::All, 500, Duration::from_secs(60)))
        .with_token_limit(
            TokenLimit::per_minute(TokenKind::Total, 30_000).counting_as(Counting::AfterResponse),
        )
        .with_style(Style::OpenAi);
    sc.workload = Some(harness::TokenWorkload {
        prompt_tokens: (1_835, 1_835 + 2_375),
        max_tokens: 726,
    });
    sc.completions = Completions::fraction(0.911_729_544_744_538_8, 1.0);
    let run = run(&sc, Strategy::TowerQuotaTokens(sc.fitting_reconcile())).await;
    run.sim.check_invariants().unwrap();
    assert_eq!(run.sim.stats().count(429), 0);
    assert!(run.done.iter().all(|d| d.reply.ok()));
}

/// (d) on the far network over 30 seeds (3 000 requests): none sent early, and at most two
/// fail. Measured: 1 failed (74 when the refusals caught on the wire counted as attempts).
#[tokio::test(start_paused = true)]
async fn d_upstream_429s_across_seeds() {
    let mut failed = 0;
    for seed in 1..=30 {
        let mut sc = Scenario::d();
        sc.seed = seed;
        let run = run(&sc, Strategy::TowerQuota).await;
        run.sim.check_invariants().unwrap();
        let f = run.figures();
        assert_eq!(f.early, 0, "seed {seed}");
        assert_eq!(run.sim.stats().early_retries(), 0, "seed {seed}");
        failed += f.requests - f.succeeded;
    }
    eprintln!("d_upstream_429s_across_seeds: {failed} of 3000 failed");
    assert!(failed <= 2, "{failed} of 3000 failed");
}

/// Anthropic's request limit is a token bucket (50 a minute, refilled continuously), not a
/// window. A client configured with the rolling window of the same figure (50/min), 200
/// requests 16 at a time on the far network: every request succeeds, zero 429s (a window
/// never asks more of the bucket than it holds), the bucket's own record never overdrawn.
#[tokio::test(start_paused = true)]
async fn an_anthropic_request_bucket_is_never_tripped_by_its_rolling_window() {
    let sc = Scenario {
        sim_tier: tower_quota::sim::Tier::anthropic(50, 100_000_000, 100_000_000),
        client_tier: tower_quota::Tier::new("anthropic")
            .with_quota(tower_quota::Quota::per_minute(50)),
        peer_limit: (50, Duration::from_secs(60)),
        ..Scenario::a()
    };
    let run = run(&sc, Strategy::TowerQuota).await;
    run.sim.check_invariants().unwrap();
    let f = run.figures();
    eprintln!("{}", harness::markdown(std::slice::from_ref(&run)));
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.rate_limited, 0);
}

/// Buckets smaller than their minute (50 a minute, one back every 1.2 s, holding 1, 2 or 5):
/// Anthropic's "a rate of 60 requests per minute may be enforced as 1 request per second". A
/// tier of 50/min alone bursts into it at first. Every answer then says how little the
/// bucket holds (`remaining` and the time until it is full again), and after three the key
/// is paced to bursts the bucket holds: every request succeeds, with 22, 17 and 11 429s,
/// most of them the first burst's (64, 53 and 33 when only refusals paced the key; 1 244,
/// 837 and 370 before either). With
/// a second quota spacing requests by a refill and the jitter (1 per 1.4 s), none is
/// refused at all.
#[tokio::test(start_paused = true)]
async fn buckets_smaller_than_their_window_are_learned_from_the_answers() {
    let scenario = |client: tower_quota::Tier, burst: u32| Scenario {
        sim_tier: tower_quota::sim::Tier::new("anthropic")
            .with_limit(
                tower_quota::sim::Limit::bucket(
                    tower_quota::sim::Models::All,
                    50,
                    Duration::from_secs(60),
                )
                .with_burst(burst),
            )
            .with_style(tower_quota::sim::Style::Anthropic),
        client_tier: client,
        peer_limit: (50, Duration::from_secs(60)),
        ..Scenario::a()
    };
    let per_minute =
        tower_quota::Tier::new("anthropic").with_quota(tower_quota::Quota::per_minute(50));
    for burst in [1, 2, 5] {
        let paced = run(&scenario(per_minute.clone(), burst), Strategy::TowerQuota).await;
        paced.sim.check_invariants().unwrap();
        let f = paced.figures();
        eprintln!(
            "bucket holding {burst}:\n{}",
            harness::markdown(std::slice::from_ref(&paced))
        );
        assert_eq!(f.succeeded, f.requests);
        assert!(
            f.rate_limited <= 30,
            "bucket holding {burst}: {} 429s",
            f.rate_limited
        );
    }

    let spaced = per_minute.with_quota(tower_quota::Quota::new(1, Duration::from_millis(1400)));
    let spaced = run(&scenario(spaced, 1), Strategy::TowerQuota).await;
    spaced.sim.check_invariants().unwrap();
    let f = spaced.figures();
    eprintln!("{}", harness::markdown(std::slice::from_ref(&spaced)));
    assert_eq!(f.succeeded, f.requests);
    assert_eq!(f.rate_limited, 0);
}
