//! The simulator's own limit check: a log of admission times per account, checked by
//! counting. Plain on purpose — it is the ground truth the crate's limiter is tested against,
//! and shares no code with it. Time is an argument; nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::config::{Limit, Period};

const DAY_SECS: u64 = 86_400;

/// Days since the Unix epoch, in UTC, of a wall-clock time (0 before the epoch).
pub(crate) fn utc_day(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / DAY_SECS)
        .unwrap_or(0)
}

/// The next UTC midnight after `wall`, in Unix epoch milliseconds.
pub(crate) fn next_utc_midnight_ms(wall: SystemTime) -> u64 {
    (utc_day(wall) + 1) * DAY_SECS * 1000
}

/// One admission as the check sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) at: Instant,
    pub(crate) day: u64,
    pub(crate) free: bool,
}

/// Why a request is not admitted, or that it is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    Admit,
    /// A rolling window is full; a slot frees at `reset`.
    Window {
        limit: usize,
        reset: Instant,
    },
    /// A UTC-daily cap is used up; it resets at the next UTC midnight.
    Daily {
        limit: usize,
    },
}

/// What the simulator knows about one account.
#[derive(Debug, Default)]
pub(crate) struct AccountState {
    /// Admissions, oldest first; pruned once no limit can count them.
    pub(crate) log: VecDeque<Entry>,
    /// Credits spent.
    pub(crate) usage: f64,
    /// Per model: until when the upstream provider asked to wait.
    pub(crate) cooldowns: HashMap<String, Instant>,
}

impl AccountState {
    /// Whether every limit admits one more request for a model (`free` or not) at `now`
    /// (`today` is `now`'s UTC day). Does not record anything.
    pub(crate) fn check(&self, limits: &[Limit], free: bool, now: Instant, today: u64) -> Verdict {
        let mut window: Option<(usize, Instant)> = None;
        for (i, limit) in limits.iter().enumerate() {
            if !limit.models.matches(free) {
                continue;
            }
            let n = limit.requests as usize;
            match limit.period {
                Period::UtcDay => {
                    let used = self
                        .log
                        .iter()
                        .filter(|e| e.day == today && limit.models.matches(e.free))
                        .count();
                    if used >= n {
                        // The daily cap binds longest: report it first.
                        return Verdict::Daily { limit: i };
                    }
                }
                Period::Rolling(w) => {
                    // Admissions in (now - w, now]: the interval of length w ending now.
                    let inside: Vec<Instant> = self
                        .log
                        .iter()
                        .filter(|e| limit.models.matches(e.free) && now - e.at < w)
                        .map(|e| e.at)
                        .collect();
                    if inside.len() >= n {
                        // One more is admitted once all but n - 1 of them have left the window.
                        let reset = match n {
                            0 => now + w,
                            _ => inside[inside.len() - n] + w,
                        };
                        if window.is_none_or(|(_, r)| reset > r) {
                            window = Some((i, reset));
                        }
                    }
                }
            }
        }
        match window {
            Some((limit, reset)) => Verdict::Window { limit, reset },
            None => Verdict::Admit,
        }
    }

    /// Records an admission and forgets those no limit can count any more.
    pub(crate) fn admit(&mut self, limits: &[Limit], entry: Entry) {
        self.log.push_back(entry);
        let longest = limits
            .iter()
            .filter_map(|l| match l.period {
                Period::Rolling(w) => Some(w),
                Period::UtcDay => None,
            })
            .max()
            .unwrap_or(Duration::ZERO);
        while let Some(old) = self.log.front() {
            if entry.at - old.at >= longest && old.day < entry.day {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Admissions counted today by a daily limit.
    pub(crate) fn used_today(&self, limit: &Limit, today: u64) -> usize {
        self.log
            .iter()
            .filter(|e| e.day == today && limit.models.matches(e.free))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::{Models, Tier};

    #[test]
    fn rolling_window_frees_a_slot_when_the_oldest_is_w_old() {
        let limits = Tier::new("t")
            .with_limit(Limit::rolling(Models::All, 2, Duration::from_secs(10)))
            .limits
            .clone();
        let t0 = Instant::now();
        let mut s = AccountState::default();
        for dt in [0, 3] {
            let at = t0 + Duration::from_secs(dt);
            assert_eq!(s.check(&limits, true, at, 0), Verdict::Admit);
            s.admit(
                &limits,
                Entry {
                    at,
                    day: 0,
                    free: true,
                },
            );
        }
        let early = t0 + Duration::from_millis(9_999);
        assert_eq!(
            s.check(&limits, false, early, 0),
            Verdict::Window {
                limit: 0,
                reset: t0 + Duration::from_secs(10)
            }
        );
        assert_eq!(
            s.check(&limits, false, t0 + Duration::from_secs(10), 0),
            Verdict::Admit
        );
    }

    #[test]
    fn daily_cap_counts_the_calendar_day_and_scope() {
        let limits = Tier::new("t")
            .with_limit(Limit::daily(Models::Free, 1))
            .limits
            .clone();
        let t0 = Instant::now();
        let mut s = AccountState::default();
        s.admit(
            &limits,
            Entry {
                at: t0,
                day: 5,
                free: true,
            },
        );
        assert_eq!(s.check(&limits, true, t0, 5), Verdict::Daily { limit: 0 });
        assert_eq!(s.check(&limits, false, t0, 5), Verdict::Admit);
        assert_eq!(s.check(&limits, true, t0, 6), Verdict::Admit);
    }

    proptest::proptest! {
        /// Any arrivals against two rolling windows and a daily cap: what is admitted never
        /// breaks a limit, and every refusal was forced by admissions already in the log.
        #[test]
        fn admissions_keep_every_limit_and_refusals_are_forced(
            gaps in proptest::collection::vec(0u64..400, 1..200),
            n_short in 1u32..5,
            n_long in 1u32..12,
            cap in 1u32..60,
        ) {
            let short = Duration::from_millis(500);
            let long = Duration::from_millis(3_000);
            let limits = vec![
                Limit::rolling(Models::All, n_short, short),
                Limit::rolling(Models::All, n_long, long),
                Limit::daily(Models::All, cap),
            ];
            let t0 = Instant::now();
            let mut s = AccountState::default();
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            let mut t = t0;
            for (k, gap) in gaps.iter().enumerate() {
                t += Duration::from_millis(*gap);
                let day = (k / 100) as u64; // a day boundary halfway through
                let in_last = |w: Duration| admitted.iter().filter(|(a, _)| t - *a < w).count();
                let today = admitted.iter().filter(|(_, d)| *d == day).count();
                let forced = in_last(short) >= n_short as usize
                    || in_last(long) >= n_long as usize
                    || today >= cap as usize;
                match s.check(&limits, true, t, day) {
                    Verdict::Admit => {
                        proptest::prop_assert!(!forced);
                        s.admit(&limits, Entry { at: t, day, free: true });
                        admitted.push((t, day));
                    }
                    Verdict::Window { reset, .. } => {
                        proptest::prop_assert!(forced);
                        proptest::prop_assert!(reset > t);
                        // The reset is exact: refused a nanosecond before, not by a window at it.
                        let before = reset - Duration::from_nanos(1);
                        proptest::prop_assert!(s.check(&limits, true, before, day) != Verdict::Admit);
                        let at_reset = s.check(&limits, true, reset, day);
                        let window_at_reset = matches!(at_reset, Verdict::Window { .. });
                        proptest::prop_assert!(!window_at_reset);
                    }
                    Verdict::Daily { .. } => proptest::prop_assert!(today >= cap as usize),
                }
            }
            let times: Vec<Instant> = admitted.iter().map(|(a, _)| *a).collect();
            proptest::prop_assert!(crate::sim::stats::max_in_window(&times, short) <= n_short as usize);
            proptest::prop_assert!(crate::sim::stats::max_in_window(&times, long) <= n_long as usize);
        }
    }

    #[test]
    fn midnight() {
        let t = UNIX_EPOCH + Duration::from_secs(DAY_SECS * 3 - 30);
        assert_eq!(utc_day(t), 2);
        assert_eq!(next_utc_midnight_ms(t), DAY_SECS * 3 * 1000);
        assert_eq!(
            next_utc_midnight_ms(t + Duration::from_secs(30)),
            DAY_SECS * 4 * 1000
        );
    }
}
