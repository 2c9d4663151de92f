//! The in-memory store: sharded mutexes over hash maps, a bounded number of keys, idle keys
//! swept away a few at a time.

use std::collections::{HashMap, VecDeque};
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

/// How many keys each operation on a shard looks at for the idle sweep.
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
/// operation moves its shard's hand over two keys and drops those that are idle: eviction is
/// incremental, never a scan of a whole shard on a request's path, and needs no background
/// task. A calendar quota's state is its period and count (a few bytes), not a log.
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

#[derive(Default)]
struct Shard {
    keys: HashMap<u64, Slot, BuildHasherDefault<KeyHasher>>,
    /// The CLOCK ring: every key once, in the order the hand visits them.
    ring: VecDeque<u64>,
}

struct Slot {
    windows: KeyWindows,
    /// When the windows stop mattering (see [`KeyWindows::idle_at`]).
    idle_at: u64,
    /// Used since the hand last passed.
    used: bool,
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
        self.max_keys = max_keys.max(SHARDS);
        self
    }

    /// The most keys held.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The number of keys held (idle ones included until the hand passes them).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).keys.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key idle at `now` (nanoseconds since the Unix epoch, the limiter's clock):
    /// a whole sweep, for callers that want one off the request path (a periodic task).
    pub fn evict_idle(&self, now: u64) {
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let shard = &mut *shard;
            shard.keys.retain(|_, slot| slot.idle_at > now);
            let keys = &shard.keys;
            shard.ring.retain(|k| keys.contains_key(k));
            shrink(shard);
        }
    }

    /// An estimate of the bytes the keys take (map slots, the ring, window state and logs).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.keys.capacity() * (std::mem::size_of::<(u64, Slot)>() + 1)
                    + s.ring.capacity() * std::mem::size_of::<u64>()
                    + s.keys
                        .values()
                        .map(|v| v.windows.bytes() - std::mem::size_of::<KeyWindows>())
                        .sum::<usize>()
            })
            .sum()
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard(SHARDS)])
    }

    fn per_shard(&self) -> usize {
        self.max_keys.div_ceil(SHARDS)
    }

    fn with_key<T>(
        &self,
        key: Key,
        quotas: &[QuotaSpec],
        now: u64,
        margin: u64,
        f: impl FnOnce(&mut KeyWindows) -> T,
    ) -> T {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        shard.step(now, SWEEP_STEP);
        if !shard.keys.contains_key(&key.0) {
            if shard.keys.len() >= self.per_shard() {
                shard.evict_one(now);
            }
            shard.ring.push_back(key.0);
        }
        let slot = shard.keys.entry(key.0).or_insert_with(|| Slot {
            windows: KeyWindows::default(),
            idle_at: 0,
            used: false,
        });
        let out = f(&mut slot.windows);
        slot.idle_at = slot.windows.idle_at(quotas, margin);
        slot.used = true;
        out
    }
}

impl Shard {
    /// Moves the hand over up to `n` keys, dropping the idle ones.
    fn step(&mut self, now: u64, n: usize) {
        for _ in 0..n.min(self.ring.len()) {
            let Some(k) = self.ring.pop_front() else {
                break;
            };
            match self.keys.get(&k) {
                Some(slot) if slot.idle_at <= now => {
                    self.keys.remove(&k);
                }
                Some(_) => self.ring.push_back(k),
                None => {}
            }
        }
        shrink(self);
    }

    /// Makes room for one key: the first idle or unmarked key under the hand goes (marks are
    /// cleared as the hand passes: two turns at most).
    fn evict_one(&mut self, now: u64) {
        for _ in 0..self.ring.len().saturating_mul(2).saturating_add(1) {
            let Some(k) = self.ring.pop_front() else {
                return;
            };
            let Some(slot) = self.keys.get_mut(&k) else {
                continue;
            };
            if slot.idle_at <= now {
                self.keys.remove(&k);
                return;
            }
            if slot.used {
                slot.used = false;
                self.ring.push_back(k);
                continue;
            }
            self.keys.remove(&k);
            tracing::debug!(key = %Key(k), "rate limit: the store is full, evicted the least recently used key");
            return;
        }
    }
}

/// Gives memory back once a shard has emptied out.
fn shrink(shard: &mut Shard) {
    if shard.keys.capacity() > 64 && shard.keys.len() < shard.keys.capacity() / 4 {
        shard.keys.shrink_to_fit();
        shard.ring.shrink_to_fit();
    }
}

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
        self.with_key(req.key, req.quotas, req.now, req.margin, |w| {
            for &u in req.updates {
                w.update(req.quotas, u, t, req.margin);
            }
        });
        true
    }

    fn snapshot<'a>(&'a self, req: SnapshotRequest<'a>) -> StoreFuture<'a, Option<StoreSnapshot>> {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        let mut shard = self.shard(req.key);
        let out = shard
            .keys
            .get_mut(&req.key.0)
            .map(|slot| slot.windows.snapshot(req.quotas, t, req.margin));
        Box::pin(std::future::ready(Ok(out)))
    }
}

impl MemoryStore {
    fn decide(&self, req: &AcquireRequest<'_>) -> Decision {
        let t = Now {
            now: req.now,
            wall: req.wall,
        };
        self.with_key(req.key, req.quotas, req.now, req.margin, |w| {
            w.acquire(req.quotas, req.costs, t, req.margin)
        })
    }
}
