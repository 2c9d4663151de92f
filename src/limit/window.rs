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

/// What most keys never hold, boxed so that a key without it pays one pointer: a rolling
/// window's admission log, and a learned limit.
#[derive(Debug, Clone, Default)]
struct Ext {
    entries: VecDeque<Entry>,
    /// A limit the server announced, replacing the configured one.
    learned_limit: Option<u64>,
    /// The window (plus margin) the log was last purged with, so that a sweep that knows
    /// no quota can still drop the entries that expired.
    window: u64,
}

/// The state of one quota of a key: 32 bytes, and a box only while a rolling log holds
/// entries or a limit was learned.
#[derive(Debug, Clone, Default)]
struct WindowState {
    /// The [`QuotaSpec::id`] whose state this is.
    id: u64,
    /// The units counted: the rolling log's total, or the calendar period's count.
    used: u64,
    /// For a calendar window, the period counted, `floor((wall - margin) / period)`. For a
    /// rolling window, the newest entry's `last` plus one, 0 for an empty log: what the
    /// decisions and the store's expiry read of the log's back, without reaching into the
    /// log.
    stamp: u64,
    ext: Option<Box<Ext>>,
}

impl WindowState {
    fn new(id: u64) -> WindowState {
        WindowState {
            id,
            ..WindowState::default()
        }
    }

    #[inline]
    fn learned_limit(&self) -> Option<u64> {
        self.ext.as_ref().and_then(|e| e.learned_limit)
    }

    #[inline]
    fn limit(&self, spec: &QuotaSpec) -> u64 {
        self.learned_limit().unwrap_or(spec.limit)
    }

    fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.ext.iter().flat_map(|e| e.entries.iter())
    }

    /// The newest entry's `last` (a rolling window's stamp).
    #[inline]
    fn newest(&self) -> Option<u64> {
        self.stamp.checked_sub(1)
    }

    /// Sets the stamp from the log's back, after a change there.
    fn restamp(&mut self) {
        self.stamp = self
            .ext
            .as_ref()
            .and_then(|e| e.entries.back())
            .map_or(0, |e| e.last.saturating_add(1));
    }

    // === rolling windows ===

    /// Drops the entries that no longer count at `now` (`last + window <= now`), and the
    /// box once it holds nothing. Whether the stamp moved (the log emptied).
    #[inline]
    fn purge(&mut self, now: u64, window: u64) -> bool {
        let Some(ext) = self.ext.as_mut() else {
            return false;
        };
        ext.window = window;
        let before = ext.entries.len();
        while let Some(e) = ext.entries.front() {
            if e.last.saturating_add(window) <= now {
                self.used -= e.cost;
                ext.entries.pop_front();
            } else {
                break;
            }
        }
        if !ext.entries.is_empty() {
            return false;
        }
        if ext.learned_limit.is_none() {
            self.ext = None;
        } else if before > 0 {
            // A key held for its learned limit keeps no log buffer.
            ext.entries = VecDeque::new();
        }
        if before > 0 {
            self.stamp = 0;
        }
        before > 0
    }

    /// The earliest time `>= now` at which `cost` more units fit under `limit`, assuming no
    /// other admission. Requires `cost <= limit` and a purged log.
    #[inline]
    fn earliest(&self, now: u64, window: u64, limit: u64, cost: u64) -> u64 {
        let total = self.used.saturating_add(cost);
        if total <= limit {
            return now;
        }
        let mut excess = total - limit;
        for e in self.entries() {
            if e.cost >= excess {
                return e.last.saturating_add(window).max(now);
            }
            excess -= e.cost;
        }
        // Unreachable with cost <= limit: every entry falls out eventually.
        now
    }

    #[inline]
    fn ext_mut(&mut self, window: u64) -> &mut Ext {
        let ext = self.ext.get_or_insert_with(Box::default);
        ext.window = window;
        ext
    }

    #[inline]
    fn record(&mut self, now: u64, cost: u64, granularity: u64, window: u64) {
        if cost == 0 {
            return;
        }
        self.used = self.used.saturating_add(cost);
        let ext = self.ext_mut(window);
        if let Some(back) = ext.entries.back_mut() {
            if now == back.last || (granularity > 0 && now - back.first < granularity) {
                back.last = back.last.max(now);
                back.cost = back.cost.saturating_add(cost);
                self.stamp = back.last.saturating_add(1);
                return;
            }
        }
        ext.entries.push_back(Entry {
            first: now,
            last: now,
            cost,
        });
        self.stamp = now.saturating_add(1);
    }

    /// Records `cost` units counted as if admitted at `at <= now` (what a server reported
    /// as used, expiring when the server said it resets), keeping the log in time order.
    fn record_before(&mut self, at: u64, cost: u64, granularity: u64, window: u64) {
        if self.newest().is_none_or(|last| last <= at) {
            return self.record(at, cost, granularity, window);
        }
        self.used = self.used.saturating_add(cost);
        let ext = self.ext_mut(window);
        let i = ext.entries.partition_point(|e| e.last <= at);
        ext.entries.insert(
            i,
            Entry {
                first: at,
                last: at,
                cost,
            },
        );
    }

    /// Gives back up to `units` of the admission made at `at`: taken from the newest entry
    /// that began at or before it (the admission's own, or the bucket it merged into).
    fn refund(&mut self, at: u64, units: u64) {
        let Some(ext) = self.ext.as_mut() else {
            return;
        };
        let i = ext.entries.partition_point(|e| e.first <= at);
        let Some(i) = i.checked_sub(1) else {
            return;
        };
        let e = &mut ext.entries[i];
        let taken = e.cost.min(units);
        e.cost -= taken;
        self.used = self.used.saturating_sub(taken);
        if e.cost == 0 {
            ext.entries.remove(i);
            self.restamp();
        }
    }

    /// When a sweep that knows no quota may empty the log (its newest entry plus twice the
    /// window it was last purged with), 0 for an empty log.
    fn log_expires_at(&self) -> u64 {
        self.ext.as_ref().map_or(0, |e| {
            e.entries
                .back()
                .map_or(0, |b| b.last.saturating_add(e.window.saturating_mul(2)))
        })
    }

    #[inline]
    fn expires_at(&self, window: u64) -> u64 {
        self.newest().map_or(0, |last| last.saturating_add(window))
    }

    // === calendar windows ===

    /// Moves to the period `wall - margin` falls in: a boundary counts only once the margin
    /// has passed it.
    #[inline]
    fn roll(&mut self, wall: u64, margin: u64, period_ns: u64) -> bool {
        let p = wall.saturating_sub(margin) / period_ns.max(1);
        let rolled = p > self.stamp;
        if rolled {
            self.stamp = p;
            self.used = 0;
        }
        rolled
    }

    /// When the period ends (plus the margin), in `now`'s timeline.
    #[inline]
    fn next_boundary(&self, t: Now, margin: u64, period_ns: u64) -> u64 {
        let boundary = self
            .stamp
            .saturating_add(1)
            .saturating_mul(period_ns)
            .saturating_add(margin);
        t.now.saturating_add(boundary.saturating_sub(t.wall))
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.ext.as_ref().map_or(0, |e| {
            std::mem::size_of::<Ext>() + e.entries.capacity() * std::mem::size_of::<Entry>()
        })
    }
}

/// The windows of a key: the first two inline (most tiers have one or two quotas), more in a
/// `Vec`.
#[derive(Debug, Clone)]
enum Windows {
    Inline(u8, [WindowState; 2]),
    Heap(Vec<WindowState>),
}

impl Default for Windows {
    fn default() -> Self {
        Windows::Inline(0, Default::default())
    }
}

impl Windows {
    #[inline]
    fn as_slice(&self) -> &[WindowState] {
        match self {
            Windows::Inline(n, w) => &w[..usize::from(*n)],
            Windows::Heap(v) => v,
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [WindowState] {
        match self {
            Windows::Inline(n, w) => &mut w[..usize::from(*n)],
            Windows::Heap(v) => v,
        }
    }

    fn insert(&mut self, i: usize, w: WindowState) {
        match self {
            Windows::Inline(n, inline) if usize::from(*n) < inline.len() => {
                let len = usize::from(*n);
                inline[len] = w;
                inline[i..=len].rotate_right(1);
                *n += 1;
            }
            Windows::Inline(n, inline) => {
                let mut v: Vec<WindowState> = inline[..usize::from(*n)]
                    .iter_mut()
                    .map(std::mem::take)
                    .collect();
                v.insert(i, w);
                *self = Windows::Heap(v);
            }
            Windows::Heap(v) => v.insert(i, w),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Windows::Inline(..) => 0,
            Windows::Heap(v) => v.capacity() * std::mem::size_of::<WindowState>(),
        }
    }
}

/// The state of every quota of one key.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyWindows {
    windows: Windows,
    /// No admission before this time (a cooldown or a pause until a reset).
    blocked_until: u64,
}

impl KeyWindows {
    /// Puts the state of `specs[i]` at `windows[i]`, finding each by its id and creating what
    /// is missing. State of other quotas is kept behind them, never wiped: the same key with
    /// its quotas in another order (or a deploy that added one) finds its own counts.
    /// Whether anything moved.
    #[inline]
    fn conform(&mut self, specs: &[QuotaSpec]) -> bool {
        let windows = self.windows.as_slice();
        let aligned =
            windows.len() >= specs.len() && windows.iter().zip(specs).all(|(w, s)| w.id == s.id);
        if aligned {
            return false;
        }
        for (i, s) in specs.iter().enumerate() {
            let windows = self.windows.as_mut_slice();
            match windows[i..].iter().position(|w| w.id == s.id) {
                Some(j) => windows.swap(i, i + j),
                None => self.windows.insert(i, WindowState::new(s.id)),
            }
        }
        true
    }

    /// Brings every window to `t`: expired log entries dropped, calendar periods rolled.
    #[inline]
    fn advance(&mut self, specs: &[QuotaSpec], t: Now, margin: u64) -> Now {
        self.advance_moved(specs, t, margin).0
    }

    /// [`advance`](Self::advance), and whether what [`expiry`](Self::expiry) reads moved: a
    /// window created or reordered, a log emptied, a period rolled, or a learned limit (whose
    /// hold on the key runs from now).
    #[inline]
    fn advance_moved(&mut self, specs: &[QuotaSpec], t: Now, margin: u64) -> (Now, bool) {
        let mut moved = self.conform(specs);
        // Time never goes backwards inside one key: a log stays in time order.
        let now = self
            .windows
            .as_slice()
            .iter()
            .filter_map(WindowState::newest)
            .fold(t.now, u64::max);
        for (w, s) in self.windows.as_mut_slice().iter_mut().zip(specs) {
            moved |= if s.calendar {
                w.roll(t.wall, margin, s.window_ns)
            } else {
                w.purge(now, s.window_ns.saturating_add(margin))
            };
            moved |= w.learned_limit().is_some();
        }
        (Now { now, wall: t.wall }, moved)
    }

    /// [`decide`](Self::decide)'s decision alone.
    #[cfg(test)]
    pub(crate) fn acquire(
        &mut self,
        specs: &[QuotaSpec],
        costs: &[u64],
        t: impl Into<Now>,
        margin: u64,
    ) -> Decision {
        self.decide(specs, costs, t.into(), margin).0
    }

    /// Checks every window for an admission of `costs[i]` units to quota `i` at `now` and,
    /// if all admit, records it. Otherwise returns the earliest time at which all would admit
    /// (absent other admissions), or that a cost can never fit. Also says whether the key's
    /// [`expiry`](Self::expiry) may have moved: not after a refusal that changed nothing it
    /// reads, so that a refusal need not recompute it (the expiry stored before still
    /// holds).
    #[inline]
    pub(crate) fn decide(
        &mut self,
        specs: &[QuotaSpec],
        costs: &[u64],
        t: Now,
        margin: u64,
    ) -> (Decision, bool) {
        let (t, moved) = self.advance_moved(specs, t, margin);
        let now = t.now;
        let mut at = now.max(self.blocked_until);
        let windows = self.windows.as_mut_slice();
        for (i, ((w, s), &cost)) in windows.iter().zip(specs).zip(costs).enumerate() {
            let limit = w.limit(s);
            if cost > limit {
                return (Decision::Exceeds { quota: i, limit }, moved);
            }
            let t = if s.calendar {
                if w.used.saturating_add(cost) <= limit {
                    now
                } else {
                    w.next_boundary(t, margin, s.window_ns)
                }
            } else {
                w.earliest(now, s.window_ns.saturating_add(margin), limit, cost)
            };
            at = at.max(t);
        }
        if at > now {
            return (Decision::NotBefore(at), moved);
        }
        for ((w, s), &cost) in windows.iter_mut().zip(specs).zip(costs) {
            if s.calendar {
                w.used = w.used.saturating_add(cost);
            } else {
                let window = s.window_ns.saturating_add(margin);
                w.record(now, cost, s.granularity_ns, window);
            }
        }
        (Decision::Admitted, true)
    }

    /// Applies what a response taught.
    pub(crate) fn update(
        &mut self,
        specs: &[QuotaSpec],
        update: Update,
        t: impl Into<Now>,
        margin: u64,
    ) {
        let t = self.advance(specs, t.into(), margin);
        let now = t.now;
        match update {
            Update::Adjust { quota, at, delta } => {
                let windows = self.windows.as_mut_slice();
                let (Some(w), Some(s)) = (windows.get_mut(quota), specs.get(quota)) else {
                    return;
                };
                let units = delta.unsigned_abs();
                if s.calendar {
                    // The admission's period, on the wall clock as it was then.
                    let wall_at = t.wall.saturating_sub(now.saturating_sub(at));
                    if wall_at.saturating_sub(margin) / s.window_ns.max(1) != w.stamp {
                        return;
                    }
                    w.used = if delta >= 0 {
                        w.used.saturating_add(units)
                    } else {
                        w.used.saturating_sub(units)
                    };
                    return;
                }
                let window = s.window_ns.saturating_add(margin);
                if at.saturating_add(window) <= now {
                    return; // that admission no longer counts
                }
                if delta >= 0 {
                    w.record_before(at.min(now), units, s.granularity_ns, window);
                } else {
                    w.refund(at, units);
                }
            }
            Update::BlockUntil(t) => self.blocked_until = self.blocked_until.max(t),
            Update::Remaining {
                quota,
                remaining,
                reset,
            } => {
                let windows = self.windows.as_mut_slice();
                let (Some(w), Some(s)) = (windows.get_mut(quota), specs.get(quota)) else {
                    return;
                };
                let local = w.limit(s).saturating_sub(w.used);
                if remaining >= local {
                    return;
                }
                if s.calendar {
                    w.used += local - remaining;
                } else {
                    // Count the difference until the server's reset (if sooner than a whole
                    // window from now).
                    let window = s.window_ns.saturating_add(margin);
                    let at = match reset {
                        Some(r) => now
                            .saturating_add(r)
                            .saturating_add(margin)
                            .saturating_sub(window)
                            .min(now),
                        None => now,
                    };
                    w.record_before(at, local - remaining, s.granularity_ns, window);
                }
            }
            Update::Limit { quota, limit } => {
                if let Some(w) = self.windows.as_mut_slice().get_mut(quota) {
                    let window = w.ext.as_ref().map_or(0, |e| e.window);
                    w.ext_mut(window).learned_limit = Some(limit);
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
            .as_slice()
            .iter()
            .zip(specs)
            .map(|(w, s)| {
                let limit = w.limit(s);
                let next_free = if s.calendar {
                    if w.used < limit {
                        now
                    } else {
                        w.next_boundary(t, margin, s.window_ns)
                    }
                } else if limit == 0 {
                    u64::MAX
                } else {
                    w.earliest(now, s.window_ns.saturating_add(margin), limit, 1)
                };
                StoreWindow {
                    limit,
                    used: w.used,
                    next_free: next_free.max(self.blocked_until),
                }
            })
            .collect();
        StoreSnapshot {
            windows,
            blocked_until: self.blocked_until,
        }
    }

    /// The time after which this state no longer matters, as of the operation at `t` that
    /// just ran (every window empty, no block; a learned limit is kept a whole window past
    /// the last use of the key, so that a pause until the server's reset, which empties the
    /// log, does not forget it).
    ///
    /// The margin may grow before the key is used again (a learned margin reaches up to a
    /// twentieth of the window, at most 2 s), and a key dropped as idle under the margin of
    /// its last use would forget admissions the grown margin still counts: the state is
    /// kept as long as the largest margin a limiter could learn would count it.
    #[cfg(test)]
    pub(crate) fn idle_at(&self, specs: &[QuotaSpec], t: impl Into<Now>, margin: u64) -> u64 {
        self.expiry(specs, t.into(), margin).0
    }

    /// [`idle_at`](Self::idle_at) and [`logs_expire_at`](Self::logs_expire_at) in one pass
    /// over the windows, reading no log: what a store keeps of a key after each operation.
    /// As of the operation at `t` that just ran with `specs` and `margin`, which purged each
    /// rolling log with its window plus `margin` (the window a sweep compacts it with).
    #[inline]
    pub(crate) fn expiry(&self, specs: &[QuotaSpec], t: Now, margin: u64) -> (u64, u64) {
        let mut idle = self.blocked_until;
        let mut logs = 0;
        let windows = self.windows.as_slice();
        for (w, s) in windows.iter().zip(specs) {
            if !s.calendar {
                let purged_with = s.window_ns.saturating_add(margin);
                logs = logs.max(
                    w.newest()
                        .map_or(0, |last| last.saturating_add(purged_with.saturating_mul(2))),
                );
            }
            let margin = keep_margin(margin, s.window_ns);
            let window = s.window_ns.saturating_add(margin);
            let learned = w.learned_limit().is_some();
            let e = if !s.calendar {
                let expires = w.expires_at(window);
                if learned {
                    expires.max(t.now.max(self.blocked_until).saturating_add(window))
                } else {
                    expires
                }
            } else if w.used > 0 || learned {
                w.next_boundary(t, margin, s.window_ns)
            } else {
                0
            };
            idle = idle.max(e);
        }
        // State beyond the specs (the quotas of another tier of the key: a pace that ended,
        // a learned quota) still counts when that tier comes back: the key is not idle
        // while it does. Its window is the one it was last used with (twice, as a sweep
        // compacts it); a calendar count, whose period is not kept, is held a day.
        for w in windows.get(specs.len()..).unwrap_or_default() {
            let log = w.log_expires_at();
            logs = logs.max(log);
            idle = idle.max(log);
            if let Some(e) = w.ext.as_deref().filter(|e| e.learned_limit.is_some()) {
                idle = idle.max(t.now.saturating_add(e.window.saturating_mul(2)));
            }
            if w.used > 0 && log == 0 {
                idle = idle.max(t.now.saturating_add(CALENDAR_BEYOND_SPECS_NS));
            }
        }
        (idle, logs)
    }

    /// When [`compact`](Self::compact) would empty every log (each log's newest entry plus
    /// twice its window), 0 when no log holds entries: a sweep compacts only then, and passes
    /// a key whose logs still count without touching them.
    pub(crate) fn logs_expire_at(&self) -> u64 {
        self.windows
            .as_slice()
            .iter()
            .map(WindowState::log_expires_at)
            .max()
            .unwrap_or(0)
    }

    /// Drops the log entries that expired by `now` and the buffers left empty, for a sweep
    /// that knows no quota: with twice the window (and margin) each log was last used with,
    /// since the margin may have grown since (a learned margin stays under a twentieth of
    /// the window).
    pub(crate) fn compact(&mut self, now: u64) {
        for w in self.windows.as_mut_slice() {
            if let Some(window) = w.ext.as_ref().map(|e| e.window) {
                if window > 0 {
                    w.purge(now, window.saturating_mul(2));
                    if let Some(e) = w.ext.as_mut() {
                        e.window = window;
                    }
                }
            }
        }
    }

    /// Heap bytes held by this state (the inline part is the caller's).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.windows.heap_bytes()
            + self
                .windows
                .as_slice()
                .iter()
                .map(WindowState::heap_bytes)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests;

/// How long a calendar count of a quota the key's current tier does not name is held (its
/// period is not kept): a day, the longest calendar window a tier learns.
const CALENDAR_BEYOND_SPECS_NS: u64 = 86_400 * 1_000_000_000;

/// The margin a key's state is kept for, when its last use had `margin` on a window of
/// `window_ns`: the largest a learned margin may grow to before the next use (a twentieth of
/// the window, at most [`MAX_LEARNED_NS`](super::margin::MAX_LEARNED_NS)), or `margin` if it
/// is larger (a configured floor). The Redis script's `save` keeps keys as long.
pub(crate) fn keep_margin(margin: u64, window_ns: u64) -> u64 {
    margin.max((window_ns / 20).min(super::margin::MAX_LEARNED_NS))
}
