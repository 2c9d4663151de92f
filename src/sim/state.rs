//! The simulator's own limit check: a log of admission times per account, checked by
//! counting. Plain on purpose — it is the ground truth the crate's limiter is tested against,
//! and shares no code with it. Time is an argument; nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::config::{Limit, Period};
use super::tokens::TokenLog;

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
    pub(crate) wall: SystemTime,
    pub(crate) day: u64,
    pub(crate) free: bool,
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn epoch_nanos(wall: SystemTime) -> u128 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The index of the clock-aligned window of length `w` that holds `wall`.
pub(crate) fn clock_window(wall: SystemTime, w: Duration) -> u128 {
    epoch_nanos(wall) / w.as_nanos().max(1)
}

/// `wall` rounded down to a multiple of `unit` since the epoch.
pub(crate) fn truncate(wall: SystemTime, unit: Duration) -> SystemTime {
    let unit = unit.as_nanos().max(1);
    let t = epoch_nanos(wall) / unit * unit;
    UNIX_EPOCH + Duration::new((t / 1_000_000_000) as u64, (t % 1_000_000_000) as u32)
}

/// A token bucket's level: `level` quanta at `at`, where one token is the window's length in
/// nanoseconds' worth of quanta, and `n` tokens per window refill `n` quanta a nanosecond
/// (exact integers: no rounding drifts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    level: u128,
    at: Instant,
}

impl Bucket {
    /// The level at `now` of `limit`'s bucket (full when it never took a token), refilled
    /// `admits` per `w`.
    fn level(this: Option<&Bucket>, limit: &Limit, w: Duration, now: Instant) -> u128 {
        let n = u128::from(limit.admits);
        let full = u128::from(limit.burst()) * w.as_nanos();
        this.map_or(full, |b| {
            (b.level + n * now.saturating_duration_since(b.at).as_nanos()).min(full)
        })
    }

    /// How long until the bucket holds `quanta` more than `level` (never, for `n` = 0: a
    /// window).
    fn refill_time(level: u128, quanta: u128, n: u32, w: Duration) -> Duration {
        let Some(missing) = quanta.checked_sub(level).filter(|&m| m > 0) else {
            return Duration::ZERO;
        };
        match u128::from(n) {
            0 => w,
            n => Duration::from_nanos(u64::try_from(missing.div_ceil(n)).unwrap_or(u64::MAX)),
        }
    }
}

/// An anchored window: when it started (wall clock) and the requests it counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Anchor {
    pub(crate) start: SystemTime,
    pub(crate) count: u64,
}

/// Why a request is not admitted, or that it is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    Admit,
    /// A window (rolling, clock-aligned or anchored) is full; a slot frees at `reset`.
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
    /// Per model: until when the upstream provider asked to wait, and when that 429
    /// reached the client (after its latency and the network's outbound delay).
    pub(crate) cooldowns: HashMap<String, (Instant, Instant)>,
    /// Per anchored limit (by index): its current window.
    pub(crate) anchors: HashMap<usize, Anchor>,
    /// Per token-bucket limit (by index): its level (none: full).
    pub(crate) buckets: HashMap<usize, Bucket>,
    /// Per token limit (by index): its charges.
    pub(crate) token_logs: Vec<TokenLog>,
}

impl AccountState {
    /// Whether every limit admits one more request for a model (`free` or not) arriving at
    /// `now` (`wall` on the wall clock, `today` its UTC day). Does not record anything: call
    /// [`arrive`](Self::arrive) next (anchored windows count every arrival), then
    /// [`admit`](Self::admit) if admitted.
    pub(crate) fn check(
        &self,
        limits: &[Limit],
        free: bool,
        now: Instant,
        wall: SystemTime,
        today: u64,
    ) -> Verdict {
        let mut window: Option<(usize, Instant)> = None;
        let mut full = |i: usize, reset: Instant| {
            if window.is_none_or(|(_, r)| reset > r) {
                window = Some((i, reset));
            }
        };
        for (i, limit) in limits.iter().enumerate() {
            if !limit.models.matches(free) {
                continue;
            }
            let n = limit.admits as usize;
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
                        full(i, reset);
                    }
                }
                Period::Clock(w) => {
                    let k = clock_window(wall, w);
                    let used = self
                        .log
                        .iter()
                        .filter(|e| limit.models.matches(e.free) && clock_window(e.wall, w) == k)
                        .count();
                    if used >= n {
                        let next = (k + 1) * w.as_nanos();
                        let left = next.saturating_sub(epoch_nanos(wall));
                        full(i, now + Duration::from_nanos(left as u64));
                    }
                }
                Period::Bucket(w) => {
                    let level = Bucket::level(self.buckets.get(&i), limit, w, now);
                    let token = w.as_nanos();
                    if level < token {
                        full(i, now + Bucket::refill_time(level, token, limit.admits, w));
                    }
                }
                Period::Anchored(w) => match self.anchors.get(&i) {
                    Some(a) if wall < a.start + w => {
                        if a.count >= n as u64 {
                            let left = (a.start + w).duration_since(wall).unwrap_or_default();
                            full(i, now + left);
                        }
                    }
                    // This arrival opens a window.
                    _ => {
                        if n == 0 {
                            let end = truncate(wall, limit.second) + w;
                            full(i, now + end.duration_since(wall).unwrap_or_default());
                        }
                    }
                },
            }
        }
        match window {
            Some((limit, reset)) => Verdict::Window { limit, reset },
            None => Verdict::Admit,
        }
    }

    /// Counts an arrival that reached the limit check, admitted or not, in the anchored
    /// windows of the limits that count its model (opening a window where none is open).
    pub(crate) fn arrive(&mut self, limits: &[Limit], free: bool, wall: SystemTime) {
        for (i, limit) in limits.iter().enumerate() {
            let Period::Anchored(w) = limit.period else {
                continue;
            };
            if !limit.models.matches(free) {
                continue;
            }
            match self.anchors.get_mut(&i) {
                Some(a) if wall < a.start + w => a.count += 1,
                _ => {
                    let start = truncate(wall, limit.second);
                    self.anchors.insert(i, Anchor { start, count: 1 });
                }
            }
        }
    }

    /// Admissions (or, for an anchored window, arrivals) counted by limit `i` in the window
    /// that holds `wall`; `None` for rolling and daily limits.
    pub(crate) fn used_in_window(
        &self,
        limits: &[Limit],
        i: usize,
        wall: SystemTime,
    ) -> Option<u64> {
        let limit = &limits[i];
        match limit.period {
            Period::Clock(w) => {
                let k = clock_window(wall, w);
                Some(
                    self.log
                        .iter()
                        .filter(|e| limit.models.matches(e.free) && clock_window(e.wall, w) == k)
                        .count() as u64,
                )
            }
            Period::Anchored(w) => Some(
                self.anchors
                    .get(&i)
                    .filter(|a| wall < a.start + w)
                    .map_or(0, |a| a.count),
            ),
            Period::Rolling(_) | Period::UtcDay | Period::Bucket(_) => None,
        }
    }

    /// A token-bucket limit's state at `now`: the whole tokens left, and how long until it
    /// is full again.
    pub(crate) fn bucket_use(&self, limits: &[Limit], i: usize, now: Instant) -> (u64, Duration) {
        let limit = &limits[i];
        let Period::Bucket(w) = limit.period else {
            return (0, Duration::ZERO);
        };
        let level = Bucket::level(self.buckets.get(&i), limit, w, now);
        let full = u128::from(limit.burst()) * w.as_nanos();
        let tokens = u64::try_from(level / w.as_nanos().max(1)).unwrap_or(u64::MAX);
        (tokens, Bucket::refill_time(level, full, limit.admits, w))
    }

    /// Records an admission (a token taken from each bucket that counts it) and forgets
    /// those no limit can count any more.
    pub(crate) fn admit(&mut self, limits: &[Limit], entry: Entry) {
        for (i, limit) in limits.iter().enumerate() {
            let Period::Bucket(w) = limit.period else {
                continue;
            };
            if !limit.models.matches(entry.free) {
                continue;
            }
            let level = Bucket::level(self.buckets.get(&i), limit, w, entry.at);
            let level = level.saturating_sub(w.as_nanos());
            self.buckets.insert(
                i,
                Bucket {
                    level,
                    at: entry.at,
                },
            );
        }
        self.log.push_back(entry);
        let longest = limits
            .iter()
            .filter_map(|l| match l.period {
                Period::Rolling(w) | Period::Clock(w) => Some(w),
                Period::Anchored(_) | Period::UtcDay | Period::Bucket(_) => None,
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

    /// Admissions of a rolling limit in the window ending at `now`, and when the newest of
    /// them leaves it (`now` if none).
    pub(crate) fn rolling_use(&self, limit: &Limit, now: Instant) -> (u64, Instant) {
        let Period::Rolling(w) = limit.period else {
            return (0, now);
        };
        let inside = self
            .log
            .iter()
            .filter(|e| limit.models.matches(e.free) && now - e.at < w);
        inside.fold((0, now), |(n, last), e| (n + 1, last.max(e.at + w)))
    }

    /// What a rolling or token-bucket limit has left at `now`, and how long until it is
    /// whole again: the admissions its window has room for, or the tokens in its bucket.
    pub(crate) fn requests_left(
        &self,
        limits: &[Limit],
        i: usize,
        now: Instant,
    ) -> (u64, Duration) {
        let limit = &limits[i];
        match limit.period {
            Period::Bucket(_) => self.bucket_use(limits, i, now),
            _ => {
                let (used, full) = self.rolling_use(limit, now);
                (u64::from(limit.admits).saturating_sub(used), full - now)
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
            assert_eq!(s.check(&limits, true, at, UNIX_EPOCH, 0), Verdict::Admit);
            s.admit(
                &limits,
                Entry {
                    at,
                    wall: UNIX_EPOCH,
                    day: 0,
                    free: true,
                },
            );
        }
        let early = t0 + Duration::from_millis(9_999);
        assert_eq!(
            s.check(&limits, false, early, UNIX_EPOCH, 0),
            Verdict::Window {
                limit: 0,
                reset: t0 + Duration::from_secs(10)
            }
        );
        assert_eq!(
            s.check(&limits, false, t0 + Duration::from_secs(10), UNIX_EPOCH, 0),
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
                wall: UNIX_EPOCH,
                day: 5,
                free: true,
            },
        );
        assert_eq!(
            s.check(&limits, true, t0, UNIX_EPOCH, 5),
            Verdict::Daily { limit: 0 }
        );
        assert_eq!(s.check(&limits, false, t0, UNIX_EPOCH, 5), Verdict::Admit);
        assert_eq!(s.check(&limits, true, t0, UNIX_EPOCH, 6), Verdict::Admit);
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
                match s.check(&limits, true, t, UNIX_EPOCH, day) {
                    Verdict::Admit => {
                        proptest::prop_assert!(!forced);
                        s.admit(&limits, Entry { at: t, wall: UNIX_EPOCH, day, free: true });
                        admitted.push((t, day));
                    }
                    Verdict::Window { reset, .. } => {
                        proptest::prop_assert!(forced);
                        proptest::prop_assert!(reset > t);
                        // The reset is exact: refused a nanosecond before, not by a window at it.
                        let before = reset - Duration::from_nanos(1);
                        proptest::prop_assert!(s.check(&limits, true, before, UNIX_EPOCH, day) != Verdict::Admit);
                        let at_reset = s.check(&limits, true, reset, UNIX_EPOCH, day);
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

    proptest::proptest! {
        /// Any arrivals against a token bucket of `n` per 2 s holding `burst`: an arrival is
        /// admitted exactly when the admissions so far leave room for it under the bucket's
        /// arrival curve (for every earlier admission i, the admissions from i on plus this
        /// one fit in `burst` plus what refilled since i: an oracle that tracks no level),
        /// the reset of a
        /// refusal is exact to the nanosecond, and the stats' replay finds the bucket never
        /// overdrawn.
        #[test]
        fn a_bucket_admits_exactly_what_its_arrival_curve_allows(
            gaps in proptest::collection::vec(0u64..600, 1..150),
            n in 1u32..8,
            burst in proptest::option::of(1u32..8),
        ) {
            let w = Duration::from_secs(2);
            let mut limit = Limit::bucket(Models::All, n, w);
            if let Some(b) = burst {
                limit = limit.with_burst(b);
            }
            let cap = u128::from(burst.unwrap_or(n));
            let limits = vec![limit];
            let (n128, w_ns) = (u128::from(n), w.as_nanos());
            let fits = |admitted: &[Instant], t: Instant| {
                let m = admitted.len();
                admitted.iter().enumerate().all(|(j, &a)| {
                    (m - j + 1) as u128 * w_ns <= cap * w_ns + n128 * (t - a).as_nanos()
                })
            };
            let t0 = Instant::now();
            let mut s = AccountState::default();
            let mut admitted: Vec<Instant> = Vec::new();
            let mut t = t0;
            for gap in gaps {
                t += Duration::from_millis(gap);
                match s.check(&limits, true, t, UNIX_EPOCH, 0) {
                    Verdict::Admit => {
                        proptest::prop_assert!(fits(&admitted, t));
                        s.admit(&limits, Entry { at: t, wall: UNIX_EPOCH, day: 0, free: true });
                        admitted.push(t);
                    }
                    Verdict::Window { reset, .. } => {
                        proptest::prop_assert!(!fits(&admitted, t));
                        proptest::prop_assert!(fits(&admitted, reset));
                        proptest::prop_assert!(!fits(&admitted, reset - Duration::from_nanos(1)));
                        proptest::prop_assert_eq!(s.check(&limits, true, reset, UNIX_EPOCH, 0), Verdict::Admit);
                    }
                    Verdict::Daily { .. } => proptest::prop_assert!(false, "no daily cap"),
                }
            }
            let records = crate::sim::stats::admissions_at("a", &admitted);
            proptest::prop_assert!(crate::sim::stats::check_limit("a", &limits[0], &records, &[]).is_ok());
        }
    }

    /// Arrivals every `gap_ms` from `start` (wall) against one limit: which were admitted,
    /// and the resets of those refused (from the arrival).
    fn run(limit: Limit, start: SystemTime, gaps_ms: &[u64]) -> Vec<Result<(), Duration>> {
        let limits = vec![limit];
        let t0 = Instant::now();
        let mut s = AccountState::default();
        let mut out = Vec::new();
        let mut offset = Duration::ZERO;
        for gap in gaps_ms {
            offset += Duration::from_millis(*gap);
            let (at, wall) = (t0 + offset, start + offset);
            let verdict = s.check(&limits, true, at, wall, 0);
            s.arrive(&limits, true, wall);
            match verdict {
                Verdict::Admit => {
                    s.admit(
                        &limits,
                        Entry {
                            at,
                            wall,
                            day: 0,
                            free: true,
                        },
                    );
                    out.push(Ok(()));
                }
                Verdict::Window { reset, .. } => out.push(Err(reset - at)),
                Verdict::Daily { .. } => unreachable!(),
            }
        }
        out
    }

    #[test]
    fn clock_windows_count_per_aligned_window_and_admit_their_own_n() {
        let minute = Duration::from_secs(60);
        // 10:00:50 UTC: the first clock minute has 10 s left.
        let start = UNIX_EPOCH + Duration::from_secs(1_795_341_600 + 50);
        let limit = Limit::fixed_clock(Models::All, 3, minute).admitting(2);
        let got = run(limit, start, &[0, 1000, 1000, 7999, 1, 1, 1]);
        let left = |ms: u64| Err(Duration::from_millis(ms));
        // Two in the first window, the third told the 8 s left; at 10:01:00 a new window.
        assert_eq!(
            got,
            [
                Ok(()),
                Ok(()),
                left(8_000),
                left(1),
                Ok(()),
                Ok(()),
                left(59_998)
            ]
        );
    }

    #[test]
    fn anchored_windows_open_on_arrival_truncated_to_the_second_and_count_refusals() {
        let w = Duration::from_secs(10);
        let start = UNIX_EPOCH + Duration::from_millis(1_795_341_600_700);
        let limit = Limit::fixed_anchored(Models::All, 2, w);
        // Opened at …:00.700, truncated to …:00: it ends at …:10, 9.3 s later.
        let got = run(limit.clone(), start, &[0, 100, 100, 9_099, 1, 5_000]);
        assert_eq!(
            got,
            [
                Ok(()),
                Ok(()),
                Err(Duration::from_millis(9_100)),
                Err(Duration::from_millis(1)),
                // …:10.000 opens the next window, to …:20.
                Ok(()),
                Ok(()),
            ]
        );
        // A refused arrival counts: the window's count is past its limit.
        let limits = vec![limit];
        let mut s = AccountState::default();
        for _ in 0..5 {
            s.arrive(&limits, true, start);
        }
        assert_eq!(s.used_in_window(&limits, 0, start), Some(5));
        assert_eq!(s.used_in_window(&limits, 0, start + w), Some(0));
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
