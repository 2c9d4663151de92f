//! The margin the limiter learns: how far the server's clock of *arrivals* may be from the
//! limiter's clock of *sends*.
//!
//! A server counts a request when it arrives, after a one-way delay that varies; two requests
//! sent exactly one window apart can arrive less than a window apart. The margin added to
//! every window absorbs that, and no fixed value is right (200 ms is 0.3 % of a minute and
//! 20 % of a second), so it is learned from what the limiter observes:
//!
//! - **The spread of round trips.** The one-way delays of two requests differ by no more
//!   than their round trips' spread when the server answers at once (a 429 does), and that
//!   spread is what the margin must cover. The estimate is the spread between the 5th and the
//!   95th percentile of the last 64 round trips (admission to response headers), so one
//!   outlier (a new connection) does not set it.
//! - **A surprise 429.** A rate-limited answer the windows did not predict (the request was
//!   admitted) doubles the margin at once (at least 20 ms), so it does not recur; that part
//!   halves every 5 minutes without another surprise, so the margin shrinks again when the
//!   network calms.
//!
//! The learned value is bounded by a twentieth of the tier's shortest window (and 2 s): a
//! long generation inflates round trips, never throughput by more than 5 %. The configured
//! margin ([`Limiter::with_margin`](super::Limiter::with_margin)) is a floor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The round trips kept.
const SAMPLES: usize = 64;
/// The least a surprise raises the margin to.
const SURPRISE_MIN_NS: u64 = 20_000_000;
/// A surprise's contribution halves this often without another.
const SURPRISE_HALF_LIFE_NS: u64 = 300_000_000_000;
/// The most the learned margin may be, whatever the windows.
pub(crate) const MAX_LEARNED_NS: u64 = 2_000_000_000;

#[derive(Debug)]
pub(crate) struct Margin {
    /// The configured floor.
    floor: u64,
    /// Whether to learn at all.
    learn: bool,
    /// The learned value, read on every admission.
    learned: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rtts: [u64; SAMPLES],
    len: usize,
    next: usize,
    /// The margin the round trips call for.
    spread: u64,
    /// The margin the last surprise called for, and when (limiter clock, ns).
    surprise: u64,
    surprise_at: u64,
}

impl Margin {
    pub(crate) fn new(floor: u64, learn: bool) -> Margin {
        Margin {
            floor,
            learn,
            learned: AtomicU64::new(0),
            state: Mutex::new(State {
                rtts: [0; SAMPLES],
                len: 0,
                next: 0,
                spread: 0,
                surprise: 0,
                surprise_at: 0,
            }),
        }
    }

    /// The margin for a tier whose shortest window is `shortest_ns` (0: none).
    pub(crate) fn get(&self, shortest_ns: u64) -> u64 {
        let learned = self.learned.load(Ordering::Relaxed);
        if learned == 0 {
            return self.floor;
        }
        learned.min(cap(shortest_ns)).max(self.floor)
    }

    /// The learned part alone, uncapped.
    pub(crate) fn learned(&self) -> u64 {
        self.learned.load(Ordering::Relaxed)
    }

    /// A round trip of `rtt_ns` ended at `now` (limiter clock).
    pub(crate) fn observe_rtt(&self, rtt_ns: u64, now: u64) {
        if !self.learn {
            return;
        }
        let mut s = self.lock();
        let i = s.next;
        s.rtts[i] = rtt_ns;
        s.next = (i + 1) % SAMPLES;
        s.len = (s.len + 1).min(SAMPLES);
        if s.len >= 2 {
            let mut sorted = s.rtts;
            let sorted = &mut sorted[..s.len];
            sorted.sort_unstable();
            let lo = sorted[s.len * 5 / 100];
            let hi = sorted[(s.len * 95 / 100).min(s.len - 1)];
            s.spread = hi - lo;
        }
        self.publish(&mut s, now);
    }

    /// A rate-limited answer the windows did not predict, at `now`.
    pub(crate) fn surprise(&self, now: u64) {
        if !self.learn {
            return;
        }
        let mut s = self.lock();
        let current = self.learned.load(Ordering::Relaxed).max(self.floor);
        s.surprise = current.saturating_mul(2).max(SURPRISE_MIN_NS);
        s.surprise_at = now;
        self.publish(&mut s, now);
    }

    fn publish(&self, s: &mut State, now: u64) {
        let halvings = now.saturating_sub(s.surprise_at) / SURPRISE_HALF_LIFE_NS;
        let surprise = if halvings >= 64 {
            0
        } else {
            s.surprise >> halvings
        };
        self.learned.store(
            s.spread.max(surprise).min(MAX_LEARNED_NS),
            Ordering::Relaxed,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The most a learned margin may add to windows as short as `shortest_ns`.
fn cap(shortest_ns: u64) -> u64 {
    if shortest_ns == 0 {
        MAX_LEARNED_NS
    } else {
        (shortest_ns / 20).min(MAX_LEARNED_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_spread_of_round_trips_sets_the_margin() {
        let m = Margin::new(0, true);
        assert_eq!(m.get(60_000 * MS), 0, "nothing learned yet");
        for i in 0..64 {
            m.observe_rtt((300 + (i * 37) % 400) * MS, i * MS);
        }
        let learned = m.get(60_000 * MS);
        assert!((300 * MS..=400 * MS).contains(&learned), "{learned}");
        // One outlier does not move it.
        m.observe_rtt(10_000 * MS, 100 * MS);
        assert!(m.get(60_000 * MS) <= 400 * MS);
        // Capped at a twentieth of the shortest window, floored by the configured margin.
        assert_eq!(m.get(1_000 * MS), 50 * MS);
        assert_eq!(Margin::new(500 * MS, true).get(1_000 * MS), 500 * MS);
    }

    #[test]
    fn a_surprise_doubles_it_and_it_decays() {
        let m = Margin::new(0, true);
        m.surprise(0);
        assert_eq!(m.get(60_000 * MS), 20 * MS);
        m.surprise(1);
        assert_eq!(m.get(60_000 * MS), 40 * MS);
        m.observe_rtt(100 * MS, 300_000 * MS + 1);
        assert_eq!(m.get(60_000 * MS), 20 * MS, "halved after 5 minutes");
        m.observe_rtt(100 * MS, 3_000_000 * MS);
        assert!(
            m.get(60_000 * MS) < MS,
            "the network calmed: the spread is 0"
        );
    }

    #[test]
    fn learning_off_keeps_the_floor() {
        let m = Margin::new(7, false);
        m.surprise(0);
        m.observe_rtt(1_000 * MS, 0);
        m.observe_rtt(MS, 0);
        assert_eq!(m.get(60_000 * MS), 7);
    }
}
