//! The in-memory store: sharded mutexes over hash maps, idle keys swept away.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    AcquireRequest, Decision, QuotaSpec, SnapshotRequest, Store, StoreError, StoreFuture,
    StoreSnapshot, UpdateRequest,
};
use crate::limit::key::{Key, KeyHasher};
use crate::limit::quota::dur_ns;
use crate::limit::window::{KeyWindows, Now};

const SHARDS: usize = 16;

/// The default store: every key's windows in this process's memory.
///
/// Keys are spread over 16 mutex-guarded shards. A key whose windows are all empty (and
/// which is not cooling down) is *idle*; each shard drops its idle keys at most once per
/// sweep interval (default 60 s), during an operation on that shard — no background task.
///
/// ```
/// use tower_quota::limit::store::MemoryStore;
/// use std::time::Duration;
///
/// let store = MemoryStore::new().with_sweep_interval(Duration::from_secs(10));
/// assert_eq!(store.len(), 0);
/// ```
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    sweep_ns: u64,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<u64, Slot, BuildHasherDefault<KeyHasher>>,
    next_sweep: u64,
}

struct Slot {
    windows: KeyWindows,
    /// When the windows stop mattering (see [`KeyWindows::idle_at`]).
    idle_at: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sweep_ns: dur_ns(Duration::from_secs(60)),
        }
    }

    /// Sets how often (at most) each shard drops its idle keys.
    pub fn with_sweep_interval(mut self, every: Duration) -> MemoryStore {
        self.sweep_ns = dur_ns(every);
        self
    }

    /// The number of keys held (idle ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).keys.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key idle at `now` (nanoseconds since the Unix epoch, the limiter's clock).
    pub fn evict_idle(&self, now: u64) {
        for s in self.shards.iter() {
            sweep(&mut lock(s), now, self.sweep_ns);
        }
    }

    /// An estimate of the bytes the keys take (map slots, window state and logs).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.keys.capacity() * (std::mem::size_of::<(u64, Slot)>() + 1)
                    + s.keys
                        .values()
                        .map(|v| v.windows.bytes() - std::mem::size_of::<KeyWindows>())
                        .sum::<usize>()
            })
            .sum()
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        // The low bits pick the map bucket; use high bits for the shard.
        lock(&self.shards[key.shard(SHARDS)])
    }

    fn with_key<T>(
        &self,
        key: Key,
        quotas: &[QuotaSpec],
        now: u64,
        margin: u64,
        f: impl FnOnce(&mut KeyWindows) -> T,
    ) -> T {
        let mut shard = self.shard(key);
        if now >= shard.next_sweep {
            sweep(&mut shard, now, self.sweep_ns);
        }
        let slot = shard.keys.entry(key.0).or_insert_with(|| Slot {
            windows: KeyWindows::default(),
            idle_at: 0,
        });
        let out = f(&mut slot.windows);
        slot.idle_at = slot.windows.idle_at(quotas, margin);
        out
    }
}

fn sweep(shard: &mut Shard, now: u64, every: u64) {
    shard.keys.retain(|_, slot| slot.idle_at > now);
    if shard.keys.capacity() > 64 && shard.keys.len() < shard.keys.capacity() / 4 {
        shard.keys.shrink_to_fit();
    }
    shard.next_sweep = now.saturating_add(every);
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
