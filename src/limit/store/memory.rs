//! The in-memory store: sharded mutexes over hash maps, a bounded number of keys, idle keys
//! swept away a few at a time.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
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
/// A key refused again and again (a client hammering its limit, an attacker's key) is
/// refused without the shard's lock from its third refusal on: each shard remembers a few
/// refusals (the time, the quotas, the costs, the margin), read under a sequence lock, and
/// answers the same admission with the same time until then, as the windows would. Any
/// other operation on the key forgets it; calendar windows are never remembered.
///
/// ```
/// use tower_quota::limit::store::MemoryStore;
///
/// let store = MemoryStore::new().with_max_keys(10_000);
/// assert_eq!(store.len(), 0);
/// assert_eq!(store.max_keys(), 10_000);
/// ```
pub struct MemoryStore {
    shards: Box<[ShardCell]>,
    max_keys: usize,
    /// Whether refusals are remembered (off only for tests that compare).
    remember_refusals: bool,
}

/// A shard behind its lock, and the refusals it remembers, read without the lock.
#[repr(C)]
struct ShardCell {
    /// How many slots hold a refusal to recall (written under the lock): when none does, an
    /// admission does not probe them. Beside the lock, on the line the lock needs anyway.
    live: AtomicU32,
    shard: Mutex<Shard>,
    refusals: Refusals,
}

impl ShardCell {
    /// [`Refusals::recall`], when any slot holds a refusal.
    #[inline]
    fn recall(&self, req: &AcquireRequest<'_>) -> Option<u64> {
        if self.live.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.refusals.recall(req)
    }

    /// [`Refusals::remember`], counting the slots that hold a refusal (under the lock).
    #[inline]
    fn remember(&self, key: u64, r: Refused<'_, '_>) {
        self.count(self.refusals.remember(key, r));
    }

    /// [`Refusals::forget`], counting (under the lock).
    #[inline]
    fn forget(&self, key: u64) {
        self.count(self.refusals.forget(key));
    }

    #[inline]
    fn count(&self, delta: i32) {
        if delta != 0 {
            let live = self.live.load(Ordering::Relaxed);
            self.live
                .store(live.saturating_add_signed(delta), Ordering::Relaxed);
        }
    }
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
            shards: (0..SHARDS)
                .map(|_| ShardCell {
                    live: AtomicU32::new(0),
                    shard: Mutex::default(),
                    refusals: Refusals::default(),
                })
                .collect(),
            max_keys: DEFAULT_MAX_KEYS,
            remember_refusals: true,
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
        self.shards.iter().map(|s| lock(&s.shard).slots.len()).sum()
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
            let mut shard = lock(&s.shard);
            let mut i = 0;
            while i < shard.slots.len() {
                if shard.times[i].idle_at <= now {
                    shard.remove(i, s);
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
                let s = lock(&s.shard);
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
        lock(&self.cell(key).shard)
    }

    #[inline]
    fn cell(&self, key: Key) -> &ShardCell {
        &self.shards[key.shard(SHARDS)]
    }

    #[inline]
    fn per_shard(&self) -> usize {
        self.max_keys.div_ceil(SHARDS)
    }

    /// Runs `f` on `key`'s windows under its shard's lock, then keeps the shard's record of
    /// refusals true: `refused` names the refusal to remember (`f`'s answer and whether it
    /// moved anything), and any other answer forgets the key's.
    #[inline]
    fn with_key<'r, 'a: 'r, T>(
        &self,
        key: Key,
        quotas: &[QuotaSpec],
        t: Now,
        margin: u64,
        f: impl FnOnce(&mut KeyWindows) -> (T, bool),
        refused: impl FnOnce(&T, bool) -> Option<Refused<'r, 'a>>,
    ) -> T {
        let cell = self.cell(key);
        let mut guard = lock(&cell.shard);
        let shard = &mut *guard;
        shard.step(t.now, SWEEP_STEP, cell);
        let i = match shard.index.get(&key.0) {
            Some(&i) => i as usize,
            None => {
                if shard.slots.len() >= self.per_shard() {
                    shard.evict_one(t.now, cell);
                }
                shard.push(key.0)
            }
        };
        let windows = &mut shard.slots[i].windows;
        let (out, moved) = f(windows);
        match refused(&out, moved) {
            Some(r) => cell.remember(key.0, r),
            None => cell.forget(key.0),
        }
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

    /// Drops the key at `i` (and the refusal remembered for it); the last key takes its place
    /// (and its mark).
    fn remove(&mut self, i: usize, cell: &ShardCell) {
        let last = self.slots.len() - 1;
        let mark = self.marked(last);
        self.set_mark(last, false);
        let gone = self.slots.swap_remove(i);
        self.times.swap_remove(i);
        self.index.remove(&gone.key);
        cell.forget(gone.key);
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
    fn step(&mut self, now: u64, n: usize, cell: &ShardCell) {
        let (mut dropped, mut passed) = (0, 0);
        while dropped < n && passed < (2 * n).min(self.slots.len()) {
            let i = self.hand;
            let times = self.times[i];
            if times.idle_at <= now {
                // The last key (often the newest) moves in under the hand: looked at next.
                self.remove(i, cell);
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
    fn evict_one(&mut self, now: u64, cell: &ShardCell) {
        for _ in 0..self.slots.len().saturating_mul(2).saturating_add(1) {
            let i = self.hand;
            if self.times[i].idle_at <= now {
                self.remove(i, cell);
                return;
            }
            if self.marked(i) {
                self.set_mark(i, false);
                self.hand = if i + 1 == self.slots.len() { 0 } else { i + 1 };
                continue;
            }
            let key = self.slots[i].key;
            self.remove(i, cell);
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

/// How many refusals a shard remembers (one per slot, by key hash).
const REFUSAL_SLOTS: usize = 8;

/// How long a remembered refusal answers without the lock before one answer goes through
/// it again (10 ms): that marks the key used, so that a key refused without the lock is not
/// taken for the least recently used and evicted (which would forget its windows).
const RECALL_FOR_NS: u64 = 10_000_000;

/// How long a slot taken by one key is left to it before another key's refusal may take it
/// (1 ms): keys refused once in a while, many to a slot, do not write it on every refusal,
/// nor push out a key refused again and again.
const SLOT_HELD_NS: u64 = 1_000_000;

/// The refusals a shard remembers, so that a key hammered while refused is refused without
/// taking the shard's lock (a gateway under a flood of one key, or a key hammering its
/// limit, does not slow the shard's other keys). A refusal is remembered when its decision
/// moved nothing and no window is a calendar one: then, until its time, the same admission
/// (the same costs, quotas and margin) is refused with the same time, as the windows would
/// refuse it. Any other operation on the key under the
/// lock, and its eviction, forget it.
///
/// Each slot is a sequence lock written under the shard's lock (one writer) and read
/// without it: a reader that sees the sequence odd or changed reads nothing.
#[derive(Default)]
struct Refusals {
    /// The key of each slot, apart in one cache line: what every admission reads first (a
    /// line that stays cached, where the slots would not under many keys' state).
    keys: SlotKeys,
    slots: [RefusalSlot; REFUSAL_SLOTS],
}

#[derive(Default)]
#[repr(align(64))]
struct SlotKeys([AtomicU64; REFUSAL_SLOTS]);

/// A slot's state besides its key (in [`SlotKeys`]), all written under its sequence lock;
/// one cache line.
#[derive(Default)]
#[repr(align(64))]
struct RefusalSlot {
    seq: AtomicU64,
    /// The refusal's time; 0: nothing remembered.
    at: AtomicU64,
    /// A fingerprint of the quotas (see [`specs_fingerprint`]).
    specs: AtomicU64,
    /// The costs it was refused for, per quota (two quotas at most).
    costs: [AtomicU64; 2],
    margin: AtomicU64,
    /// When the slot was taken, or its refusal last remembered.
    taken: AtomicU64,
}

/// A refusal to remember: its time, and the admission refused.
#[derive(Clone, Copy)]
struct Refused<'r, 'a> {
    at: u64,
    req: &'r AcquireRequest<'a>,
}

/// What a remembered refusal holds of its admission, and what an admission must match to
/// be answered from it: the quotas' fingerprint, the costs, the margin. `None` for one that
/// is never remembered: a calendar window, more than two quotas.
#[inline]
fn refused_admission(req: &AcquireRequest<'_>) -> Option<(u64, [u64; 2], u64)> {
    if req.quotas.len() > 2
        || req.costs.len() != req.quotas.len()
        || req.quotas.iter().any(|q| q.calendar)
    {
        return None;
    }
    let mut costs = [0; 2];
    costs[..req.costs.len()].copy_from_slice(req.costs);
    Some((specs_fingerprint(req.quotas), costs, req.margin))
}

/// What a decision reads of a tier's quotas (ids, limits, windows, kinds, granularity),
/// mixed into 64 bits, with the number of quotas.
#[inline]
fn specs_fingerprint(specs: &[QuotaSpec]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(K).rotate_left(29);
    specs.iter().fold(specs.len() as u64, |h, s| {
        let h = mix(h, s.id);
        let h = mix(h, s.limit);
        let h = mix(h, s.window_ns);
        let h = mix(h, s.granularity_ns);
        mix(h, u64::from(s.calendar))
    })
}

impl Refusals {
    #[inline]
    fn index(key: u64) -> usize {
        // Bits neither the shard (32..36) nor the maps' tags (57..64) use.
        (key >> 40) as usize % REFUSAL_SLOTS
    }

    #[inline]
    fn slot(&self, key: u64) -> &RefusalSlot {
        &self.slots[Self::index(key)]
    }

    /// Whether the slot of `key` is `key`'s (a slot's key is written under its sequence
    /// lock: a reader checks it again within).
    #[inline]
    fn holds(&self, key: u64) -> bool {
        self.keys.0[Self::index(key)].load(Ordering::Relaxed) == key
    }

    /// The time `req`'s key is refused until, if a refusal remembered for it still holds
    /// for `req`; without the lock.
    #[inline]
    fn recall(&self, req: &AcquireRequest<'_>) -> Option<u64> {
        if !self.holds(req.key.0) {
            return None;
        }
        let slot = self.slot(req.key.0);
        let seq = slot.seq.load(Ordering::Acquire);
        if seq & 1 == 1 || !self.holds(req.key.0) {
            return None;
        }
        let at = slot.at.load(Ordering::Relaxed);
        let specs = slot.specs.load(Ordering::Relaxed);
        let costs = [
            slot.costs[0].load(Ordering::Relaxed),
            slot.costs[1].load(Ordering::Relaxed),
        ];
        let margin = slot.margin.load(Ordering::Relaxed);
        let taken = slot.taken.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != seq {
            return None;
        }
        // The same admission (a larger cost or margin is refused too, but until later).
        let holds = req.now < at
            && req.now.saturating_sub(taken) < RECALL_FOR_NS
            && refused_admission(req) == Some((specs, costs, margin));
        holds.then_some(at)
    }

    /// Remembers a refusal of `key` (under the shard's lock: the only writer). The first
    /// refusal of a key the slot does not hold only takes the slot (time 0: nothing to
    /// recall), and only if no other key took it in the last millisecond; a second one
    /// remembers it. Keys refused once in a while, many to a slot, so mostly read the slot,
    /// and a key refused again and again keeps it, answered from memory from its third
    /// refusal on.
    /// Returns the change in the slots holding a refusal (-1, 0 or 1).
    #[inline]
    fn remember(&self, key: u64, r: Refused<'_, '_>) -> i32 {
        let req = r.req;
        let slot = self.slot(key);
        let held = slot.at.load(Ordering::Relaxed);
        if !self.holds(key) {
            // A refusal still remembered is the slot's key's while it keeps coming through
            // the lock (every `RECALL_FOR_NS`); a slot only taken, for a millisecond.
            let taken = slot.taken.load(Ordering::Relaxed);
            let hold = if held > req.now {
                2 * RECALL_FOR_NS
            } else {
                SLOT_HELD_NS
            };
            if taken != 0 && req.now.saturating_sub(taken) < hold {
                return 0;
            }
            self.write(slot, |slot| {
                self.keys.0[Self::index(key)].store(key, Ordering::Relaxed);
                slot.at.store(0, Ordering::Relaxed);
                slot.taken.store(req.now, Ordering::Relaxed);
            });
            return -i32::from(held != 0);
        }
        let Some((specs, costs, margin)) = refused_admission(req) else {
            return self.forget(key);
        };
        self.write(slot, |slot| {
            slot.at.store(r.at, Ordering::Relaxed);
            slot.specs.store(specs, Ordering::Relaxed);
            slot.costs[0].store(costs[0], Ordering::Relaxed);
            slot.costs[1].store(costs[1], Ordering::Relaxed);
            slot.margin.store(margin, Ordering::Relaxed);
            slot.taken.store(req.now, Ordering::Relaxed);
        });
        i32::from(held == 0)
    }

    /// Forgets the refusal remembered for `key`, if any (under the shard's lock).
    /// Returns the change in the slots holding a refusal (-1 or 0).
    #[inline]
    fn forget(&self, key: u64) -> i32 {
        if !self.holds(key) {
            return 0;
        }
        let slot = self.slot(key);
        if slot.at.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.write(slot, |slot| slot.at.store(0, Ordering::Relaxed));
        -1
    }

    /// A write to `slot` under the sequence lock.
    #[inline]
    fn write(&self, slot: &RefusalSlot, f: impl FnOnce(&RefusalSlot)) {
        let seq = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(slot);
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
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
        self.with_key(
            req.key,
            req.quotas,
            t,
            req.margin,
            |w| {
                for &u in req.updates {
                    w.update(req.quotas, u, t, req.margin);
                }
                ((), true)
            },
            |_, _| None,
        );
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
    /// The decision on an admission: a refusal remembered for the key that still holds,
    /// read without the lock; else the windows', under it.
    #[inline]
    fn decide(&self, req: &AcquireRequest<'_>) -> Decision {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        if self.remember_refusals {
            if let Some(at) = self.cell(req.key).recall(req) {
                return Decision::NotBefore(at);
            }
        }
        self.with_key(
            req.key,
            req.quotas,
            t,
            req.margin,
            |w| w.decide(req.quotas, req.costs, t, req.margin),
            |decision, moved| match *decision {
                Decision::NotBefore(at) if !moved && self.remember_refusals => {
                    Some(Refused { at, req })
                }
                _ => None,
            },
        )
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

    /// One operation of the refusal memory's test: on a key, after some time, seen at a
    /// time a little stale (another thread's clock read), under one of two tiers.
    #[derive(Debug, Clone)]
    enum Step {
        Acquire { cost: u64, two: bool, margin: u64 },
        Remaining(u64),
        Limit(u64),
        Block(u64),
        Adjust(i64),
        Sweep,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            12 => (0..4u64, any::<bool>(), prop_oneof![Just(0u64), 0..40u64])
                .prop_map(|(cost, two, margin)| Step::Acquire { cost, two, margin }),
            1 => (0..4u64).prop_map(Step::Remaining),
            1 => (1..6u64).prop_map(Step::Limit),
            1 => (0..2_000u64).prop_map(Step::Block),
            1 => (-3..3i64).prop_map(Step::Adjust),
            1 => Just(Step::Sweep),
        ]
    }

    proptest! {
        /// The refusals remembered change no decision: a store that remembers them and one
        /// that does not answer every admission alike (the same refusal time to the
        /// nanosecond), whatever the updates, sweeps, evictions (a shard holds one key),
        /// keys sharing a slot, costs, margins, tiers, stale clocks and slots changing hands
        /// (now and then, milliseconds pass) in between.
        #[test]
        fn remembered_refusals_decide_as_the_windows_do(
            steps in proptest::collection::vec(
                (0..4usize, prop_oneof![8 => 0..300u64, 1 => 0..25_000_000u64], 0..3u64, step()),
                1..200,
            ),
        ) {
            let remembering = MemoryStore::new().with_max_keys(16);
            let mut plain = MemoryStore::new().with_max_keys(16);
            plain.remember_refusals = false;
            let one = [QuotaSpec::rolling(1, 3, 1_000)];
            let two = [QuotaSpec::rolling(1, 3, 1_000), QuotaSpec::rolling(2, 5, 3_000)];
            // Keys 0 and 16 share a shard and a slot; 1 and 17 another shard.
            let keys = [0u64, 16, 1, 17].map(|k| Key(k << 32 | k));
            let mut now = 0u64;
            for (i, (k, dt, stale, step)) in steps.into_iter().enumerate() {
                now += dt;
                let at = now.saturating_sub(stale * 20);
                let key = keys[k];
                let update = |u: Update, specs: &[QuotaSpec]| {
                    let u = [u];
                    for store in [&remembering, &plain] {
                        store.update_now(&UpdateRequest::new(key, specs, &u, at));
                    }
                };
                match step {
                    Step::Acquire { cost, two: both, margin } => {
                        let (specs, costs): (&[QuotaSpec], &[u64]) =
                            if both { (&two, &[1, cost][..]) } else { (&one, &[cost][..]) };
                        let req = AcquireRequest::new(key, specs, costs, at).with_margin(margin);
                        let a = remembering.decide(&req);
                        let b = plain.decide(&req);
                        prop_assert_eq!(a, b, "step {}", i);
                    }
                    Step::Remaining(left) => {
                        update(Update::Remaining { quota: 0, remaining: left, reset: Some(700) }, &one)
                    }
                    Step::Limit(limit) => update(Update::Limit { quota: 0, limit }, &one),
                    Step::Block(d) => update(Update::BlockUntil(at + d), &two),
                    Step::Adjust(delta) => update(Update::Adjust { quota: 0, at: at.saturating_sub(100), delta }, &one),
                    Step::Sweep => {
                        remembering.evict_idle(at);
                        plain.evict_idle(at);
                    }
                }
                // Each shard counts the slots that hold a refusal to recall.
                for cell in remembering.shards.iter() {
                    let holding = cell.refusals.slots.iter().filter(|s| s.at.load(Ordering::Relaxed) != 0).count();
                    prop_assert_eq!(cell.live.load(Ordering::Relaxed) as usize, holding, "step {}", i);
                }
            }
        }
    }

    /// A key refused again and again is refused from memory from its third refusal; an
    /// admission forgets it.
    #[test]
    fn a_hammered_refusal_is_remembered() {
        let store = MemoryStore::new();
        let spec = [QuotaSpec::rolling(1, 1, 1_000)];
        let key = Key(7 << 32 | 7);
        assert_eq!(
            store.decide(&AcquireRequest::new(key, &spec, &[1], 0)),
            Decision::Admitted
        );
        let req = AcquireRequest::new(key, &spec, &[1], 10);
        // The first refusal takes the slot, the second is remembered.
        assert_eq!(store.decide(&req), Decision::NotBefore(1_000));
        assert!(store.cell(key).refusals.recall(&req).is_none());
        assert_eq!(store.decide(&req), Decision::NotBefore(1_000));
        assert!((0..200).all(|_| store.cell(key).refusals.recall(&req).is_some()));
        // Another cost, another margin, another tier: not from memory.
        let cheaper = AcquireRequest::new(key, &spec, &[0], 10);
        assert!(store.cell(key).refusals.recall(&cheaper).is_none());
        let other = [QuotaSpec::rolling(1, 2, 1_000)];
        assert!(store
            .cell(key)
            .refusals
            .recall(&AcquireRequest::new(key, &other, &[1], 10))
            .is_none());
        let wider = AcquireRequest::new(key, &spec, &[1], 10).with_margin(5);
        assert!(store.cell(key).refusals.recall(&wider).is_none());
        // Once the time comes, the windows decide, and the admission forgets.
        let later = AcquireRequest::new(key, &spec, &[1], 1_000);
        assert!(store.cell(key).refusals.recall(&later).is_none());
        assert_eq!(store.decide(&later), Decision::Admitted);
        assert!(store.cell(key).refusals.recall(&req).is_none());
        // A calendar window is never remembered.
        let day = [QuotaSpec::calendar(3, 1, 86_400_000_000_000)];
        let key = Key(9 << 32 | 9);
        assert_eq!(
            store.decide(&AcquireRequest::new(key, &day, &[1], 0)),
            Decision::Admitted
        );
        let req = AcquireRequest::new(key, &day, &[1], 10);
        assert!(matches!(store.decide(&req), Decision::NotBefore(_)));
        assert!(store.cell(key).refusals.recall(&req).is_none());
    }

    /// A key admitted under two quotas, then updated under one of them only (its tier
    /// without a pace or a learned quota): the sweep does not take it for idle while the
    /// other quota's log still counts, so the two-quota tier still finds its admissions.
    /// (Found by `remembered_refusals_decide_as_the_windows_do`: the key was dropped and a
    /// second admission of 3 went into a window of 5 that held 3.)
    #[test]
    fn state_beyond_the_tiers_quotas_keeps_the_key() {
        let store = MemoryStore::new().with_max_keys(16);
        let one = [QuotaSpec::rolling(1, 3, 1_000)];
        let two = [
            QuotaSpec::rolling(1, 3, 1_000),
            QuotaSpec::rolling(2, 5, 3_000),
        ];
        let key = Key(1 << 32 | 1);
        let decide = |specs: &[QuotaSpec], at| {
            store.decide(&AcquireRequest::new(key, specs, &[1, 3][..specs.len()], at))
        };
        assert_eq!(decide(&two, 0), Decision::Admitted);
        let u = [Update::Remaining {
            quota: 0,
            remaining: 0,
            reset: Some(700),
        }];
        store.update_now(&UpdateRequest::new(key, &one, &u, 275));
        assert_eq!(decide(&two, 1_070), Decision::NotBefore(3_000));
        store.evict_idle(2_000);
        assert_eq!(decide(&two, 2_100), Decision::NotBefore(3_000));
        assert_eq!(decide(&two, 3_000), Decision::Admitted);
    }

    /// A remembered refusal answers for 10 ms; then one answer goes through the lock (which
    /// marks the key used and remembers it again). Another key of the slot does not push
    /// out a key still refused and coming back, and takes a slot only taken after 1 ms.
    #[test]
    fn a_slot_stays_with_the_key_refused_again_and_again() {
        const SEC: u64 = 1_000_000_000;
        let store = MemoryStore::new();
        let spec = [QuotaSpec::rolling(1, 1, SEC)];
        // Same shard (bits 32..36) and slot (bits 40..): 1 << 32 | 1 and 1 << 32 | 2.
        let (hot, cold) = (Key(1 << 32 | 1), Key(1 << 32 | 2));
        assert_eq!(
            store.cell(hot).refusals.slot(hot.0) as *const _,
            store.cell(cold).refusals.slot(cold.0) as *const _
        );
        let ask = |key, t| AcquireRequest::new(key, &spec, &[1], t);
        for key in [hot, cold] {
            assert_eq!(store.decide(&ask(key, 0)), Decision::Admitted);
        }
        let refusals = &store.cell(hot).refusals;
        store.decide(&ask(hot, 10));
        store.decide(&ask(hot, 20));
        assert_eq!(refusals.recall(&ask(hot, 30)), Some(SEC));
        // The cold key's refusals leave the slot to the hot one.
        store.decide(&ask(cold, 40));
        store.decide(&ask(cold, 50));
        assert_eq!(refusals.recall(&ask(hot, 60)), Some(SEC));
        assert_eq!(refusals.recall(&ask(cold, 60)), None);
        // 10 ms after it was remembered, the hot key goes through the lock once, and is
        // remembered again.
        let t = 20 + RECALL_FOR_NS;
        assert_eq!(refusals.recall(&ask(hot, t)), None);
        assert_eq!(store.decide(&ask(hot, t)), Decision::NotBefore(SEC));
        assert_eq!(refusals.recall(&ask(hot, t + 1)), Some(SEC));
        // Left alone for 20 ms, the hot key's slot goes to the cold key.
        let t = t + 2 * RECALL_FOR_NS;
        store.decide(&ask(cold, t));
        store.decide(&ask(cold, t + 1));
        assert_eq!(refusals.recall(&ask(cold, t + 2)), Some(SEC));
        assert_eq!(refusals.recall(&ask(hot, t + 2)), None);
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
