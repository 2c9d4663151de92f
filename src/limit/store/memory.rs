//! The in-memory store: sharded mutexes over hash maps, a bounded number of keys, idle keys
//! swept away a few at a time.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};

use super::{
    AcquireRequest, Decision, QuotaSpec, SnapshotRequest, Store, StoreError, StoreFuture,
    StoreSnapshot, UpdateRequest,
};
use crate::limit::key::{Key, KeyHasher};
use crate::limit::window::{KeyWindows, Now};

const SHARDS: usize = 16;

/// The default bound on the keys a [`MemoryStore`] holds.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// How many idle keys each operation on a shard drops at most in the idle sweep (passing at
/// most twice as many live ones).
const SWEEP_STEP: usize = 2;

/// The default store: every key's windows in this process's memory.
///
/// Keys are spread over 16 mutex-guarded shards, and bounded: at most
/// [`with_max_keys`](Self::with_max_keys) keys (default [`DEFAULT_MAX_KEYS`], spread evenly
/// over the shards). A new key beyond the bound evicts one of its shard: an idle one when
/// there is one, else the least recently used as the CLOCK algorithm approximates it (every
/// use marks a key; the hand clears marks and evicts the first unmarked key). An evicted key
/// that comes back starts afresh, so the bound is a memory bound for gateways facing
/// attacker-chosen keys; size it above the keys you serve.
///
/// A key whose windows are all empty (and which is not cooling down) is *idle*. Each
/// operation moves its shard's hand on, dropping up to two idle keys (passing at most four
/// live ones, whose expired log entries it drops): eviction is incremental, never a scan of
/// a whole shard on a request's path, and needs no background task. A calendar quota's state
/// is its period and count (a few bytes), not a log; a key held only for a calendar count
/// takes about 130 bytes (measured at a million keys).
///
/// ```
/// use tower_quota::limit::store::MemoryStore;
///
/// let store = MemoryStore::new().with_max_keys(10_000);
/// assert_eq!(store.len(), 0);
/// assert_eq!(store.max_keys(), 10_000);
/// ```
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    max_keys: usize,
}

/// One shard: the keys' state in a dense array that the CLOCK hand walks, and an index from
/// key to position. An idle key held costs its 72-byte slot, 16 bytes of times and about two index entries of
/// 16 bytes (a hash table is between 44 % and 88 % full).
#[derive(Default)]
struct Shard {
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Slot>,
    /// Each slot's times, apart from its state: the hand reads only these, 16 bytes a key
    /// in one dense array, not a cache line of state per key it passes.
    times: Vec<Times>,
    /// The CLOCK marks, a bit per slot: used since the hand last passed.
    marks: Vec<u64>,
    /// The CLOCK hand: the slot it looks at next.
    hand: usize,
}

struct Slot {
    key: u64,
    windows: KeyWindows,
}

/// A slot's times.
#[derive(Clone, Copy)]
struct Times {
    /// When the windows stop mattering (see [`KeyWindows::idle_at`]).
    idle_at: u64,
    /// When the sweep may empty the key's logs (see [`KeyWindows::logs_expire_at`]); 0: no
    /// log holds entries. Kept apart so that the sweep passes live keys without reaching
    /// into their windows.
    compact_at: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// Sets the most keys held (at least one per shard, 16).
    pub fn with_max_keys(mut self, max_keys: usize) -> MemoryStore {
        self.max_keys = max_keys.clamp(SHARDS, u32::MAX as usize);
        self
    }

    /// The most keys held.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The number of keys held (idle ones included until the hand passes them).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key idle at `now` (nanoseconds since the Unix epoch, the limiter's clock)
    /// and the expired log entries of the others: a whole sweep, for callers that want one
    /// off the request path (a periodic task).
    pub fn evict_idle(&self, now: u64) {
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let mut i = 0;
            while i < shard.slots.len() {
                if shard.times[i].idle_at <= now {
                    shard.remove(i);
                } else {
                    let windows = &mut shard.slots[i].windows;
                    windows.compact(now);
                    shard.times[i].compact_at = windows.logs_expire_at();
                    i += 1;
                }
            }
            shard.shrink();
        }
    }

    /// An estimate of the bytes the keys take (index slots, key slots, marks, and what the
    /// window state holds on the heap).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
                    + s.slots.capacity() * std::mem::size_of::<Slot>()
                    + s.times.capacity() * std::mem::size_of::<Times>()
                    + s.marks.capacity() * std::mem::size_of::<u64>()
                    + s.slots
                        .iter()
                        .map(|v| v.windows.heap_bytes())
                        .sum::<usize>()
            })
            .sum()
    }

    #[inline]
    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard(SHARDS)])
    }

    #[inline]
    fn per_shard(&self) -> usize {
        self.max_keys.div_ceil(SHARDS)
    }

    #[inline]
    fn with_key<T>(
        &self,
        key: Key,
        quotas: &[QuotaSpec],
        t: Now,
        margin: u64,
        f: impl FnOnce(&mut KeyWindows) -> (T, bool),
    ) -> T {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        shard.step(t.now, SWEEP_STEP);
        let i = match shard.index.get(&key.0) {
            Some(&i) => i as usize,
            None => {
                if shard.slots.len() >= self.per_shard() {
                    shard.evict_one(t.now);
                }
                shard.push(key.0)
            }
        };
        let windows = &mut shard.slots[i].windows;
        let (out, moved) = f(windows);
        if moved {
            let (idle_at, compact_at) = windows.expiry(quotas, t, margin);
            shard.times[i] = Times {
                idle_at,
                compact_at,
            };
        }
        shard.marks[i / 64] |= 1 << (i % 64);
        out
    }
}

impl Shard {
    /// Adds a key with no state; returns its position.
    fn push(&mut self, key: u64) -> usize {
        let i = self.slots.len();
        self.slots.push(Slot {
            key,
            windows: KeyWindows::default(),
        });
        self.times.push(Times {
            idle_at: 0,
            compact_at: 0,
        });
        if i / 64 >= self.marks.len() {
            self.marks.push(0);
        }
        self.index.insert(key, i as u32);
        i
    }

    fn marked(&self, i: usize) -> bool {
        self.marks[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_mark(&mut self, i: usize, on: bool) {
        let bit = 1 << (i % 64);
        if on {
            self.marks[i / 64] |= bit;
        } else {
            self.marks[i / 64] &= !bit;
        }
    }

    /// Drops the key at `i`; the last key takes its place (and its mark).
    fn remove(&mut self, i: usize) {
        let last = self.slots.len() - 1;
        let mark = self.marked(last);
        self.set_mark(last, false);
        let gone = self.slots.swap_remove(i);
        self.times.swap_remove(i);
        self.index.remove(&gone.key);
        if i < last {
            self.set_mark(i, mark);
            self.index.insert(self.slots[i].key, i as u32);
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }

    /// Moves the hand until it has dropped `n` idle keys or passed `2n` live ones (dropping
    /// the expired log entries of those): a dropped key's place goes to the last one, often
    /// a new key, which the hand passes next.
    #[inline]
    fn step(&mut self, now: u64, n: usize) {
        let (mut dropped, mut passed) = (0, 0);
        while dropped < n && passed < (2 * n).min(self.slots.len()) {
            let i = self.hand;
            let times = self.times[i];
            if times.idle_at <= now {
                // The last key (often the newest) moves in under the hand: looked at next.
                self.remove(i);
                dropped += 1;
            } else {
                if times.compact_at != 0 && times.compact_at <= now {
                    let windows = &mut self.slots[i].windows;
                    windows.compact(now);
                    self.times[i].compact_at = windows.logs_expire_at();
                }
                self.hand = if i + 1 == self.slots.len() { 0 } else { i + 1 };
                passed += 1;
            }
        }
        if dropped > 0 {
            self.shrink();
        }
    }

    /// Makes room for one key: the first idle or unmarked key under the hand goes (marks are
    /// cleared as the hand passes: two turns at most).
    fn evict_one(&mut self, now: u64) {
        for _ in 0..self.slots.len().saturating_mul(2).saturating_add(1) {
            let i = self.hand;
            if self.times[i].idle_at <= now {
                self.remove(i);
                return;
            }
            if self.marked(i) {
                self.set_mark(i, false);
                self.hand = if i + 1 == self.slots.len() { 0 } else { i + 1 };
                continue;
            }
            let key = self.slots[i].key;
            self.remove(i);
            tracing::debug!(key = %Key(key), "rate limit: the store is full, evicted the least recently used key");
            return;
        }
    }

    /// Gives memory back once a shard has emptied out.
    fn shrink(&mut self) {
        if self.slots.capacity() > 64 && self.slots.len() < self.slots.capacity() / 4 {
            self.index.shrink_to_fit();
            self.slots.shrink_to_fit();
            self.times.shrink_to_fit();
            self.marks.truncate(self.slots.len().div_ceil(64));
            self.marks.shrink_to_fit();
        }
    }
}

#[inline]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent window state (no invariant spans an
    // unwind point), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl Store for MemoryStore {
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> StoreFuture<'a, Decision> {
        Box::pin(std::future::ready(Ok(self.decide(&req))))
    }

    #[inline]
    fn acquire_now(&self, req: &AcquireRequest<'_>) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.decide(req)))
    }

    fn update<'a>(&'a self, req: UpdateRequest<'a>) -> StoreFuture<'a, ()> {
        self.update_now(&req);
        Box::pin(std::future::ready(Ok(())))
    }

    fn update_now(&self, req: &UpdateRequest<'_>) -> bool {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        self.with_key(req.key, req.quotas, t, req.margin, |w| {
            for &u in req.updates {
                w.update(req.quotas, u, t, req.margin);
            }
            ((), true)
        });
        true
    }

    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        let mut shard = self.shard(req.key);
        let shard = &mut *shard;
        let out = shard.index.get(&req.key.0).map(|&i| {
            shard.slots[i as usize]
                .windows
                .snapshot(req.quotas, t, req.margin)
        });
        Box::pin(std::future::ready(Ok(out)))
    }
}

impl MemoryStore {
    #[inline]
    fn decide(&self, req: &AcquireRequest<'_>) -> Decision {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        self.with_key(req.key, req.quotas, t, req.margin, |w| {
            w.decide(req.quotas, req.costs, t, req.margin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::store::Update;
    use proptest::prelude::*;

    /// One operation on a key of a rolling-and-calendar tier.
    #[derive(Debug, Clone)]
    enum Op {
        Acquire { cost: u64 },
        Remaining(u64),
        Limit(u64),
        Block(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4u64).prop_map(|cost| Op::Acquire { cost }),
            1 => (0..4u64).prop_map(Op::Remaining),
            1 => (1..6u64).prop_map(Op::Limit),
            1 => (0..2_000u64).prop_map(Op::Block),
        ]
    }

    proptest! {
        /// A refusal that changes nothing the key's expiry reads keeps the times stored
        /// with it rather than recomputing them: after every operation, the touched key's
        /// stored times are what a recomputation gives (a stale idle time would drop a key
        /// that still counts).
        #[test]
        fn stored_times_are_the_keys_expiry(
            ops in proptest::collection::vec((0..3u64, 0..400u64, op()), 1..120),
            margin in prop_oneof![Just(0u64), 1..50u64],
        ) {
            let store = MemoryStore::new();
            let specs = [QuotaSpec::rolling(1, 3, 1_000), QuotaSpec::calendar(2, 5, 5_000)];
            let mut now = 0u64;
            for (key, dt, op) in ops {
                now += dt;
                let key = Key(key << 32 | key);
                match op {
                    Op::Acquire { cost } => {
                        let costs = [1, cost];
                        let req = AcquireRequest::new(key, &specs, &costs, now).with_margin(margin);
                        store.decide(&req);
                    }
                    Op::Remaining(left) => {
                        let u = [Update::Remaining { quota: 0, remaining: left, reset: Some(700) }];
                        store.update_now(&UpdateRequest::new(key, &specs, &u, now).with_margin(margin));
                    }
                    Op::Limit(limit) => {
                        let u = [Update::Limit { quota: 0, limit }];
                        store.update_now(&UpdateRequest::new(key, &specs, &u, now).with_margin(margin));
                    }
                    Op::Block(d) => {
                        let u = [Update::BlockUntil(now + d)];
                        store.update_now(&UpdateRequest::new(key, &specs, &u, now).with_margin(margin));
                    }
                }
                let shard = store.shard(key);
                let Some(&i) = shard.index.get(&key.0) else { continue };
                let i = i as usize;
                let t = Now::from(now);
                let (idle_at, compact_at) = shard.slots[i].windows.expiry(&specs, t, margin);
                prop_assert_eq!(shard.times[i].idle_at, idle_at);
                prop_assert_eq!(shard.times[i].compact_at, compact_at);
            }
        }
    }

    #[test]
    fn the_hand_drops_idle_keys() {
        let store = MemoryStore::new();
        let spec = [QuotaSpec::rolling(1, 10, 1_000)];
        for i in 0..1_000u64 {
            let req = AcquireRequest::new(Key(i << 32 | i), &spec, &[1], 0);
            assert_eq!(store.decide(&req), Decision::Admitted);
        }
        assert_eq!(store.len(), 1_000);
        for i in 0..100u64 {
            let k = 10_000 + i;
            let req = AcquireRequest::new(Key(k << 32 | k), &spec, &[1], 5_000);
            assert_eq!(store.decide(&req), Decision::Admitted);
        }
        // 100 operations drop 200 idle keys.
        assert!(store.len() <= 1_000 - 200 + 100, "{}", store.len());
    }
}
