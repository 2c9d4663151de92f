//! The window algorithms: pure, time passed in as nanoseconds, no I/O.
//!
//! A [`KeyWindows`] holds the state of every quota of one key and makes the one atomic
//! decision a [`Store`](super::store::Store) exposes: *check every window and record the
//! admission together*. The in-memory store runs it under a mutex; a Redis store runs the
//! same arithmetic in a Lua script.
//!
//! - **Rolling windows** keep a log of admissions, `(first, last, cost)` entries in time order.
//!   With `granularity = 0` every admission is its own entry: the log is exact, and an entry
//!   stops counting at `last + window + margin`, so no interval of length `window` ever holds
//!   more than `limit` units. The earliest admissible time of a cost `c` is exact: walk the
//!   log from the oldest entry until enough units have fallen out. With `granularity = g > 0`
//!   (large limits), admissions less than `g` after a bucket's first entry merge into it, and
//!   the bucket counts until its *newest* entry expires: never over-admits, memory is bounded
//!   by `window / g + 1` buckets, and throughput loss is at most `g / window`.
//! - **Calendar windows** count per period `floor((wall - margin) / period)` of the Unix epoch
//!   on the *wall* clock as it is now, and reset at the boundary plus the margin (the server's
//!   clock may still be in the previous period).
//!
//! Two clocks come in: `now`, the limiter's monotonic clock (rolling logs, blocks, every time
//! returned), and `wall`, the wall clock read at the same moment (calendar periods only). A
//! calendar boundary is converted into `now`'s timeline as `now + (boundary - wall)`, so an
//! NTP step moves the next reset with the wall clock, not the admissions already counted.
//!
//! A quota's state is addressed by [`QuotaSpec::id`], never by its position: the same quotas
//! in another order find their own state, and state is never wiped to fit a mismatch.

use std::collections::VecDeque;

use super::store::{Decision, QuotaSpec, StoreSnapshot, StoreWindow, Update};

/// The two clocks a decision reads, in nanoseconds since the Unix epoch: the limiter's
/// monotonic clock and the wall clock at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) now: u64,
    pub(crate) wall: u64,
}

impl From<u64> for Now {
    /// Both clocks the same (tests, and stores with one clock).
    fn from(t: u64) -> Now {
        Now { now: t, wall: t }
    }
}

/// One admission (or a bucket of admissions) in a rolling log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    first: u64,
    last: u64,
    cost: u64,
}

/// An admission log for one rolling window.
#[derive(Debug, Clone, Default)]
pub(crate) struct RollingLog {
    entries: VecDeque<Entry>,
    used: u64,
}

impl RollingLog {
    /// Drops the entries that no longer count at `now` (`last + window <= now`).
    fn purge(&mut self, now: u64, window: u64) {
        let before = self.entries.len();
        while let Some(e) = self.entries.front() {
            if e.last.saturating_add(window) <= now {
                self.used -= e.cost;
                self.entries.pop_front();
            } else {
                break;
            }
        }
        if self.entries.is_empty() && before > 0 {
            // An idle key (held for its calendar count, say) keeps no log buffer.
            self.entries = VecDeque::new();
        }
    }

    /// The earliest time `>= now` at which `cost` more units fit under `limit`, assuming no
    /// other admission. Requires `cost <= limit` and a purged log.
    fn earliest(&self, now: u64, window: u64, limit: u64, cost: u64) -> u64 {
        let total = self.used.saturating_add(cost);
        if total <= limit {
            return now;
        }
        let mut excess = total - limit;
        for e in &self.entries {
            if e.cost >= excess {
                return e.last.saturating_add(window).max(now);
            }
            excess -= e.cost;
        }
        // Unreachable with cost <= limit: every entry falls out eventually.
        now
    }

    fn record(&mut self, now: u64, cost: u64, granularity: u64) {
        if cost == 0 {
            return;
        }
        self.used = self.used.saturating_add(cost);
        if let Some(back) = self.entries.back_mut() {
            if now == back.last || (granularity > 0 && now - back.first < granularity) {
                back.last = back.last.max(now);
                back.cost = back.cost.saturating_add(cost);
                return;
            }
        }
        self.entries.push_back(Entry {
            first: now,
            last: now,
            cost,
        });
    }

    /// Records `cost` units counted as if admitted at `at <= now` (what a server reported
    /// as used, expiring when the server said it resets), keeping the log in time order.
    fn record_before(&mut self, at: u64, cost: u64, granularity: u64) {
        if self.entries.back().is_none_or(|b| b.last <= at) {
            return self.record(at, cost, granularity);
        }
        self.used = self.used.saturating_add(cost);
        let i = self.entries.partition_point(|e| e.last <= at);
        self.entries.insert(
            i,
            Entry {
                first: at,
                last: at,
                cost,
            },
        );
    }

    fn expires_at(&self, window: u64) -> u64 {
        self.entries
            .back()
            .map_or(0, |e| e.last.saturating_add(window))
    }

    /// Heap bytes held by the log.
    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// A counter for one calendar window: the period it counts (on the wall clock) and the
/// units used in it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CalendarCount {
    period: u64,
    used: u64,
}

impl CalendarCount {
    /// Moves to the period `wall - margin` falls in: a boundary counts only once the margin
    /// has passed it.
    fn roll(&mut self, wall: u64, margin: u64, period_ns: u64) {
        let p = wall.saturating_sub(margin) / period_ns.max(1);
        if p > self.period {
            self.period = p;
            self.used = 0;
        }
    }

    /// When the period ends (plus the margin), in `now`'s timeline.
    fn next_boundary(&self, t: Now, margin: u64, period_ns: u64) -> u64 {
        let boundary = self
            .period
            .saturating_add(1)
            .saturating_mul(period_ns)
            .saturating_add(margin);
        t.now.saturating_add(boundary.saturating_sub(t.wall))
    }
}

#[derive(Debug, Clone)]
enum State {
    Rolling(RollingLog),
    Calendar(CalendarCount),
}

#[derive(Debug, Clone)]
struct WindowState {
    /// The [`QuotaSpec::id`] whose state this is.
    id: u64,
    state: State,
    /// A limit the server announced, replacing the configured one.
    learned_limit: Option<u64>,
}

/// The state of every quota of one key.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyWindows {
    windows: Vec<WindowState>,
    /// No admission before this time (a cooldown or a pause until a reset).
    blocked_until: u64,
    /// The latest time seen: time never goes backwards inside one key.
    last: u64,
    /// The wall clock read with `last`.
    last_wall: u64,
}

impl KeyWindows {
    /// Puts the state of `specs[i]` at `windows[i]`, finding each by its id and creating what
    /// is missing. State of other quotas is kept behind them, never wiped: the same key with
    /// its quotas in another order (or a deploy that added one) finds its own counts.
    fn conform(&mut self, specs: &[QuotaSpec]) {
        let aligned = self.windows.len() >= specs.len()
            && self.windows.iter().zip(specs).all(|(w, s)| w.id == s.id);
        if aligned {
            return;
        }
        for (i, s) in specs.iter().enumerate() {
            match self.windows[i..].iter().position(|w| w.id == s.id) {
                Some(j) => self.windows.swap(i, i + j),
                None => {
                    let state = if s.calendar {
                        State::Calendar(CalendarCount::default())
                    } else {
                        State::Rolling(RollingLog::default())
                    };
                    self.windows.insert(
                        i,
                        WindowState {
                            id: s.id,
                            state,
                            learned_limit: None,
                        },
                    );
                }
            }
        }
    }

    fn advance(&mut self, specs: &[QuotaSpec], t: Now, margin: u64) -> Now {
        self.conform(specs);
        let now = t.now.max(self.last);
        self.last = now;
        self.last_wall = t.wall;
        for (w, s) in self.windows.iter_mut().zip(specs) {
            match &mut w.state {
                State::Rolling(log) => log.purge(now, s.window_ns.saturating_add(margin)),
                State::Calendar(c) => c.roll(t.wall, margin, s.window_ns),
            }
        }
        Now { now, wall: t.wall }
    }

    /// Checks every window for an admission of `costs[i]` units to quota `i` at `now` and,
    /// if all admit, records it. Otherwise returns the earliest time at which all would admit
    /// (absent other admissions), or that a cost can never fit.
    pub(crate) fn acquire(
        &mut self,
        specs: &[QuotaSpec],
        costs: &[u64],
        t: impl Into<Now>,
        margin: u64,
    ) -> Decision {
        let t = self.advance(specs, t.into(), margin);
        let now = t.now;
        let mut at = now.max(self.blocked_until);
        for (i, ((w, s), &cost)) in self.windows.iter().zip(specs).zip(costs).enumerate() {
            let limit = w.learned_limit.unwrap_or(s.limit);
            if cost > limit {
                return Decision::Exceeds { quota: i, limit };
            }
            let t = match &w.state {
                State::Rolling(log) => {
                    log.earliest(now, s.window_ns.saturating_add(margin), limit, cost)
                }
                State::Calendar(c) => {
                    if c.used.saturating_add(cost) <= limit {
                        now
                    } else {
                        c.next_boundary(t, margin, s.window_ns)
                    }
                }
            };
            at = at.max(t);
        }
        if at > now {
            return Decision::NotBefore(at);
        }
        for ((w, s), &cost) in self.windows.iter_mut().zip(specs).zip(costs) {
            match &mut w.state {
                State::Rolling(log) => log.record(now, cost, s.granularity_ns),
                State::Calendar(c) => c.used = c.used.saturating_add(cost),
            }
        }
        Decision::Admitted
    }

    /// Applies what a response taught.
    pub(crate) fn update(
        &mut self,
        specs: &[QuotaSpec],
        update: Update,
        t: impl Into<Now>,
        margin: u64,
    ) {
        let now = self.advance(specs, t.into(), margin).now;
        match update {
            Update::BlockUntil(t) => self.blocked_until = self.blocked_until.max(t),
            Update::Remaining {
                quota,
                remaining,
                reset,
            } => {
                let (Some(w), Some(s)) = (self.windows.get_mut(quota), specs.get(quota)) else {
                    return;
                };
                let limit = w.learned_limit.unwrap_or(s.limit);
                match &mut w.state {
                    State::Rolling(log) => {
                        let local = limit.saturating_sub(log.used);
                        if remaining < local {
                            // Count the difference until the server's reset (if sooner than
                            // a whole window from now).
                            let window = s.window_ns.saturating_add(margin);
                            let at = match reset {
                                Some(r) => now
                                    .saturating_add(r)
                                    .saturating_add(margin)
                                    .saturating_sub(window)
                                    .min(now),
                                None => now,
                            };
                            log.record_before(at, local - remaining, s.granularity_ns);
                        }
                    }
                    State::Calendar(c) => {
                        let local = limit.saturating_sub(c.used);
                        if remaining < local {
                            c.used += local - remaining;
                        }
                    }
                }
            }
            Update::Limit { quota, limit } => {
                if let Some(w) = self.windows.get_mut(quota) {
                    w.learned_limit = Some(limit);
                }
            }
        }
    }

    /// The state of every window at `now`.
    pub(crate) fn snapshot(
        &mut self,
        specs: &[QuotaSpec],
        t: impl Into<Now>,
        margin: u64,
    ) -> StoreSnapshot {
        let t = self.advance(specs, t.into(), margin);
        let now = t.now;
        let windows = self
            .windows
            .iter()
            .zip(specs)
            .map(|(w, s)| {
                let limit = w.learned_limit.unwrap_or(s.limit);
                let (used, next_free) = match &w.state {
                    State::Rolling(log) => (
                        log.used,
                        if limit == 0 {
                            u64::MAX
                        } else {
                            log.earliest(now, s.window_ns.saturating_add(margin), limit, 1)
                        },
                    ),
                    State::Calendar(c) => (
                        c.used,
                        if c.used < limit {
                            now
                        } else {
                            c.next_boundary(t, margin, s.window_ns)
                        },
                    ),
                };
                StoreWindow {
                    limit,
                    used,
                    next_free: next_free.max(self.blocked_until),
                }
            })
            .collect();
        StoreSnapshot {
            windows,
            blocked_until: self.blocked_until,
        }
    }

    /// The time after which this state no longer matters (every window empty, no block; a
    /// learned limit is kept a whole window past the last use of the key, so that a pause
    /// until the server's reset, which empties the log, does not forget it).
    pub(crate) fn idle_at(&self, specs: &[QuotaSpec], margin: u64) -> u64 {
        let mut t = self.blocked_until;
        for (w, s) in self.windows.iter().zip(specs) {
            let window = s.window_ns.saturating_add(margin);
            let e = match &w.state {
                State::Rolling(log) if w.learned_limit.is_some() => log
                    .expires_at(window)
                    .max(self.last.max(self.blocked_until).saturating_add(window)),
                State::Rolling(log) => log.expires_at(window),
                State::Calendar(c) if c.used > 0 || w.learned_limit.is_some() => {
                    let at = Now {
                        now: self.last,
                        wall: self.last_wall,
                    };
                    c.next_boundary(at, margin, s.window_ns)
                }
                State::Calendar(_) => 0,
            };
            t = t.max(e);
        }
        t
    }

    /// Bytes held by this state (inline and heap).
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.windows.capacity() * std::mem::size_of::<WindowState>()
            + self
                .windows
                .iter()
                .map(|w| match &w.state {
                    State::Rolling(log) => log.heap_bytes(),
                    State::Calendar(_) => 0,
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
