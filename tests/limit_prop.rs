//! Property tests of the limiter in virtual time: random arrivals, costs, concurrency and one
//! to three quotas per tier.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use tower_quota::headers::Dimension;
use tower_quota::limit::{Key, Limiter};
use tower_quota::{Quota, Tier};

/// tokio's timer fires on millisecond ticks: an admission may come up to 1 ms after the
/// exact time.
const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Run {
    seq: usize,
    called: Instant,
    admitted: Instant,
    cost: u64,
}

fn run(quotas: &[(u64, Duration)], reqs: &[(u64, u64)], margin: Duration) -> (Instant, Vec<Run>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let tier = quotas.iter().fold(Tier::new("prop"), |t, &(n, w)| {
            t.with_quota(Quota::new(n, w).with_dimension(Dimension::Tokens))
        });
        let limiter = Limiter::new(tier).with_margin(margin).with_max_wait(None);
        let start = Instant::now();
        let seq = Rc::new(RefCell::new(0usize));
        let out = Rc::new(RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        for &(at_ms, cost) in reqs {
            let limiter = limiter.clone();
            let seq = seq.clone();
            let out = out.clone();
            local.spawn_local(async move {
                tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
                let called = Instant::now();
                let my = {
                    let mut s = seq.borrow_mut();
                    *s += 1;
                    *s
                };
                limiter.acquire(Key::GLOBAL, cost).await.unwrap();
                out.borrow_mut().push(Run {
                    seq: my,
                    called,
                    admitted: Instant::now(),
                    cost,
                });
            });
        }
        local.await;
        let mut v = out.borrow().clone();
        v.sort_by_key(|r| r.seq);
        (start, v)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn never_overflows_a_window_and_never_waits_too_long(
        quotas in prop::collection::vec((1u64..8, 1u64..20), 1..4),
        reqs in prop::collection::vec((0u64..4_000, 1u64..5), 1..60),
        margin_ms in prop_oneof![Just(0u64), 1u64..40],
    ) {
        let quotas: Vec<(u64, Duration)> =
            quotas.iter().map(|&(n, w)| (n, Duration::from_secs(w))).collect();
        let min = quotas.iter().map(|q| q.0).min().unwrap();
        // Arrivals on whole milliseconds, many at once (concurrency).
        let reqs: Vec<(u64, u64)> = reqs.iter().map(|&(t, c)| (t / 50 * 50, c.min(min))).collect();
        let margin = Duration::from_millis(margin_ms);
        let (_, runs) = run(&quotas, &reqs, margin);
        prop_assert_eq!(runs.len(), reqs.len());

        // 1. No interval of length W holds more than N units.
        for &(n, w) in &quotas {
            for r in &runs {
                let units: u64 = runs
                    .iter()
                    .filter(|s| s.admitted >= r.admitted && s.admitted < r.admitted + w)
                    .map(|s| s.cost)
                    .sum();
                prop_assert!(units <= n, "{} units in {:?} from {:?}", units, w, r.admitted);
            }
        }

        // 2. FIFO, and 3. work conservation: each request is admitted no later than the
        // earliest time the quotas (with the margin) allow after the one before it.
        let mut prev: Option<Instant> = None;
        for (i, r) in runs.iter().enumerate() {
            prop_assert!(r.admitted >= r.called);
            let mut t = prev.map_or(r.called, |p| p.max(r.called));
            if let Some(p) = prev {
                prop_assert!(r.admitted >= p, "FIFO");
            }
            loop {
                let blocking = quotas.iter().filter_map(|&(n, w)| {
                    let window = w + margin;
                    let live: Vec<&Run> = runs[..i].iter().filter(|s| s.admitted + window > t).collect();
                    let used: u64 = live.iter().map(|s| s.cost).sum();
                    (used + r.cost > n).then(|| {
                        // The time the oldest live entries have fallen out enough.
                        let mut excess = used + r.cost - n;
                        let mut at = t;
                        for s in live {
                            at = s.admitted + window;
                            if s.cost >= excess { break; }
                            excess -= s.cost;
                        }
                        at
                    })
                }).max();
                match blocking {
                    Some(next) => t = next,
                    None => break,
                }
            }
            prop_assert!(r.admitted >= t, "admitted early: {:?} < {:?}", r.admitted, t);
            prop_assert!(r.admitted <= t + TICK, "waited too long: {:?} > {:?}", r.admitted, t);
            prev = Some(r.admitted);
        }
    }
}
