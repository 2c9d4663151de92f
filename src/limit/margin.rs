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
//!   outlier (a new connection) does not set it; it is trusted after 8 and bounded by a
//!   fiftieth of the window, since a round trip also holds the server's own time. Once 64
//!   are seen, at most one a millisecond (of admissions) is sampled: a busy limiter does not
//!   read the clock for every response.
//! - **A surprise 429.** A rate-limited answer the windows did not predict (the request was
//!   admitted) doubles the margin at once (at least 20 ms), so it does not recur; that part
//!   halves every 5 minutes without another surprise, so the margin shrinks again when the
//!   network calms.
//!
//! A surprise may take the margin to a twentieth of the tier's shortest window, and nothing
//! past 2 s: a long generation inflates round trips, never the cost by more than 2 %, and
//! surprises by more than 5 %. The configured margin
//! ([`Limiter::with_margin`](super::Limiter::with_margin)) is a floor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The round trips kept.
const SAMPLES: usize = 64;
/// The least a surprise raises the margin to.
const SURPRISE_MIN_NS: u64 = 20_000_000;
/// A surprise's contribution halves this often without another.
const SURPRISE_HALF_LIFE_NS: u64 = 300_000_000_000;
/// The most the learned margin may be, whatever the windows.
pub(crate) const MAX_LEARNED_NS: u64 = 2_000_000_000;
/// Once the samples are full, at most one round trip is sampled per this much time of
/// admissions: a busy limiter (thousands a second) reads the clock for a response only as
/// often, and 64 samples still span the last 64 ms of its traffic.
const SAMPLE_GAP_NS: u64 = 1_000_000;
/// Once the samples are full, the spread is recomputed this often.
const RECOMPUTE: usize = 32;
/// Round trips needed before their spread is trusted.
const MIN_SAMPLES: usize = 8;
/// The spread before [`MIN_SAMPLES`] round trips.
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Margin {
    /// The configured floor.
    floor: u64,
    /// Whether to learn at all.
    learn: bool,
    /// The learned value (uncapped), for reports.
    learned: AtomicU64,
    /// The round trips' spread ([`UNKNOWN`] before enough are seen), read on admissions.
    spread: AtomicU64,
    /// What the last surprise calls for, decayed, read on admissions.
    surprise: AtomicU64,
    /// Whether the samples are full (then sampling thins out).
    full: AtomicBool,
    /// The admission time of the last round trip sampled.
    sampled: AtomicU64,
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
            spread: AtomicU64::new(UNKNOWN),
            surprise: AtomicU64::new(0),
            full: AtomicBool::new(false),
            sampled: AtomicU64::new(0),
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

    /// The margin for a tier whose shortest window is `shortest_ns` (0: none): once 8 round
    /// trips are seen, their spread, at most
    /// a fiftieth (they include the server's own time, which can vary by seconds); a
    /// surprise 429 may take it to a twentieth. Never below the configured floor.
    #[inline]
    pub(crate) fn get(&self, shortest_ns: u64) -> u64 {
        if !self.learn {
            return self.floor;
        }
        let spread = self.spread.load(Ordering::Relaxed);
        let from_trips = if spread == UNKNOWN {
            0
        } else {
            spread.min(shortest_ns / 50)
        };
        let surprise = self.surprise.load(Ordering::Relaxed).min(shortest_ns / 20);
        from_trips.max(surprise).min(MAX_LEARNED_NS).max(self.floor)
    }

    /// The learned part alone, uncapped.
    pub(crate) fn learned(&self) -> u64 {
        self.learned.load(Ordering::Relaxed)
    }

    /// Whether to sample the round trip of a request admitted at `admitted` (limiter clock),
    /// decided before the clock is read for its end: every one until the samples are full,
    /// then at most one per [`SAMPLE_GAP_NS`] of admissions.
    pub(crate) fn samples(&self, admitted: u64) -> bool {
        if !self.learn {
            return false;
        }
        if !self.full.load(Ordering::Relaxed) {
            return true;
        }
        let last = self.sampled.load(Ordering::Relaxed);
        if admitted >= last && admitted - last < SAMPLE_GAP_NS {
            return false;
        }
        self.sampled.store(admitted, Ordering::Relaxed);
        true
    }

    /// A round trip of `rtt_ns` ended at `now` (limiter clock). Skipped when another thread
    /// holds the samples: one round trip more or less does not move percentiles, and a
    /// response never waits on another's bookkeeping.
    pub(crate) fn observe_rtt(&self, rtt_ns: u64, now: u64) {
        if !self.learn {
            return;
        }
        let mut s = match self.state.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let i = s.next;
        s.rtts[i] = rtt_ns;
        s.next = (i + 1) % SAMPLES;
        s.len = (s.len + 1).min(SAMPLES);
        if s.len == SAMPLES {
            self.full.store(true, Ordering::Relaxed);
        }
        // The percentiles move slowly once the samples are many: recomputed every
        // thirty-second round trip then, by selection rather than a sort (the cost of every
        // response stays a few nanoseconds).
        if s.len >= 2 && (s.len < SAMPLES || s.next.is_multiple_of(RECOMPUTE)) {
            let len = s.len;
            let mut copy = s.rtts;
            let sorted = &mut copy[..len];
            let hi_i = (len * 95 / 100).min(len - 1);
            let (_, &mut hi, _) = sorted.select_nth_unstable(hi_i);
            let lo_i = len * 5 / 100;
            // The low percentile is among the elements before the high one.
            let lo = if lo_i < hi_i {
                *sorted[..hi_i].select_nth_unstable(lo_i).1
            } else {
                hi
            };
            s.spread = hi - lo;
        }
        self.publish(&mut s, now);
    }

    /// Whether the margin is learned at all (not in reject mode, nor when turned off).
    pub(crate) fn learns(&self) -> bool {
        self.learn
    }

    /// A rate-limited answer the windows did not predict, at `now`.
    pub(crate) fn surprise(&self, now: u64, shortest_ns: u64) {
        if !self.learn {
            return;
        }
        let current = self.get(shortest_ns);
        let mut s = self.lock();
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
        if s.len >= MIN_SAMPLES {
            self.spread.store(s.spread, Ordering::Relaxed);
        }
        self.surprise.store(surprise, Ordering::Relaxed);
        self.learned.store(
            s.spread.max(surprise).min(MAX_LEARNED_NS),
            Ordering::Relaxed,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_spread_of_round_trips_sets_the_margin() {
        let m = Margin::new(0, true);
        assert_eq!(m.get(60_000 * MS), 0, "nothing seen yet");
        // Round trips of 300-700 ms: the spread, at most a fiftieth of the window.
        for i in 0..64 {
            m.observe_rtt((300 + (i * 37) % 400) * MS, i * MS);
        }
        let learned = m.get(60_000 * MS);
        assert!((300 * MS..=400 * MS).contains(&learned), "{learned}");
        assert_eq!(m.get(1_000 * MS), 20 * MS, "a fiftieth of a second");
        // One outlier does not move it.
        m.observe_rtt(10_000 * MS, 100 * MS);
        assert!(m.get(60_000 * MS) <= 400 * MS);
        // The configured margin is a floor.
        assert_eq!(Margin::new(500 * MS, true).get(1_000 * MS), 500 * MS);
    }

    #[test]
    fn sampling_thins_out_once_the_samples_are_full() {
        let m = Margin::new(0, true);
        // A burst admitted at one instant: every round trip sampled until 64 are seen.
        for i in 0..SAMPLES as u64 {
            assert!(m.samples(0), "sample {i}");
            m.observe_rtt(100 * MS, i);
        }
        // Then one per millisecond of admissions.
        assert!(m.samples(10 * MS));
        assert!(!m.samples(10 * MS));
        assert!(!m.samples(10 * MS + MS - 1));
        assert!(m.samples(11 * MS));
        // An admission older than the last sampled one is sampled (the clocks of
        // concurrent requests interleave), and becomes the reference.
        assert!(m.samples(5 * MS));
        // Nothing is sampled when the margin is not learned.
        assert!(!Margin::new(0, false).samples(0));
    }

    #[test]
    fn a_surprise_doubles_it_and_it_decays() {
        let m = Margin::new(0, true);
        for i in 0..8 {
            m.observe_rtt(100 * MS, i);
        }
        assert_eq!(m.get(60_000 * MS), 0, "a calm network");
        m.surprise(8, 60_000 * MS);
        assert_eq!(m.get(60_000 * MS), 20 * MS);
        m.surprise(9, 60_000 * MS);
        assert_eq!(m.get(60_000 * MS), 40 * MS);
        // Never more than a twentieth of the window.
        assert_eq!(m.get(400 * MS), 20 * MS);
        m.observe_rtt(100 * MS, 300_000 * MS + 9);
        assert_eq!(m.get(60_000 * MS), 20 * MS, "halved after 5 minutes");
        m.observe_rtt(100 * MS, 3_000_000 * MS);
        assert!(m.get(60_000 * MS) < MS, "calm again");
    }

    #[test]
    fn learning_off_keeps_the_floor() {
        let m = Margin::new(7, false);
        m.surprise(0, 60_000 * MS);
        m.observe_rtt(1_000 * MS, 0);
        m.observe_rtt(MS, 0);
        assert_eq!(m.get(60_000 * MS), 7);
    }
}
