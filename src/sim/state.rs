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
