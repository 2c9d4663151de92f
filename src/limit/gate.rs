//! FIFO queues of the waiters of each key, in this process.
//!
//! Only the waiter at the head of a key's queue asks the store; it sleeps until the time the
//! store names, and when it is admitted (or gives up, or is dropped) it leaves and wakes the
//! next one. So waiters are served in arrival order and wake-ups track admissions: no one
//! polls. A key without waiters has no queue; its first request asks the store at once while
//! holding the shard's lock, so no later request can pass it.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use super::key::{Key, KeyHasher};

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Queue {
    slots: VecDeque<(u64, Option<Waker>)>,
    /// When the head expects to be admitted (nanoseconds since the Unix epoch), 0 if unknown.
    head_until: u64,
}

type Shard = HashMap<u64, Queue, BuildHasherDefault<KeyHasher>>;

#[derive(Debug)]
pub(crate) struct Gates {
    shards: Box<[GateShard]>,
}

#[derive(Debug, Default)]
struct GateShard {
    map: Mutex<Shard>,
    /// How many keys of this shard have a queue: when none, a request may ask the store
    /// without taking the lock (nobody can be waiting ahead of it).
    queued: AtomicUsize,
}

/// What happened on entering a key's gate.
pub(crate) enum Entered<T> {
    /// The queue was empty and `f` ran under the lock: with `Some` the caller is done (it did
    /// not join), with `None` it joined as the head and must ask the store.
    Decided(T),
    /// The queue was empty, `f` ran and said to wait: the caller is now the head.
    Head(T),
    /// Others were waiting: the caller joined the back of the queue.
    Queued {
        /// When the head expects to be admitted, 0 if unknown.
        head_until: u64,
    },
}

impl Gates {
    pub(crate) fn new() -> Gates {
        Gates {
            shards: (0..SHARDS).map(|_| GateShard::default()).collect(),
        }
    }

    fn gate(&self, key: Key) -> &GateShard {
        &self.shards[(key.0 >> 60) as usize % SHARDS]
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        self.gate(key).map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether some key of `key`'s shard may have waiters. When `false`, no request that
    /// started before this call is waiting on `key`.
    pub(crate) fn maybe_queued(&self, key: Key) -> bool {
        self.gate(key).queued.load(Ordering::Acquire) != 0
    }

    /// Enters the gate of `key` as waiter `id`. When nobody waits, runs `f` under the lock:
    /// if `done(&result)` the caller is finished and does not join, otherwise it joins as the
    /// head.
    pub(crate) fn enter<T>(
        &self,
        key: Key,
        id: u64,
        waker: &Waker,
        f: impl FnOnce() -> T,
        done: impl FnOnce(&T) -> bool,
    ) -> Entered<T> {
        let mut shard = self.shard(key);
        if let Some(q) = shard.get_mut(&key.0) {
            if !q.slots.is_empty() {
                q.slots.push_back((id, Some(waker.clone())));
                return Entered::Queued {
                    head_until: q.head_until,
                };
            }
        }
        let out = f();
        if done(&out) {
            return Entered::Decided(out);
        }
        let q = shard.entry(key.0).or_insert_with(|| {
            self.gate(key).queued.fetch_add(1, Ordering::AcqRel);
            Queue::default()
        });
        q.slots.push_back((id, None));
        q.head_until = 0;
        Entered::Head(out)
    }

    /// Whether `id` is at the head of `key`'s queue; if not, refreshes its waker.
    pub(crate) fn is_head(&self, key: Key, id: u64, waker: &Waker) -> bool {
        let mut shard = self.shard(key);
        let Some(q) = shard.get_mut(&key.0) else {
            return false;
        };
        if q.slots.front().is_some_and(|s| s.0 == id) {
            return true;
        }
        if let Some(slot) = q.slots.iter_mut().find(|s| s.0 == id) {
            match &slot.1 {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.1 = Some(waker.clone()),
            }
        }
        false
    }

    /// Records when the head expects to be admitted.
    pub(crate) fn set_head_until(&self, key: Key, until: u64) {
        if let Some(q) = self.shard(key).get_mut(&key.0) {
            q.head_until = until;
        }
    }

    /// Leaves `key`'s queue; if `id` was the head, wakes the next waiter.
    pub(crate) fn leave(&self, key: Key, id: u64) {
        let mut shard = self.shard(key);
        let Some(q) = shard.get_mut(&key.0) else {
            return;
        };
        if q.slots.front().is_some_and(|s| s.0 == id) {
            q.slots.pop_front();
            q.head_until = 0;
            match q.slots.front_mut() {
                Some(next) => {
                    if let Some(w) = next.1.take() {
                        w.wake();
                    }
                }
                None => {
                    shard.remove(&key.0);
                    self.gate(key).queued.fetch_sub(1, Ordering::AcqRel);
                }
            }
        } else if let Some(i) = q.slots.iter().position(|s| s.0 == id) {
            q.slots.remove(i);
        }
    }

    /// The number of waiters queued on `key`.
    pub(crate) fn waiting(&self, key: Key) -> usize {
        self.shard(key).get(&key.0).map_or(0, |q| q.slots.len())
    }
}
