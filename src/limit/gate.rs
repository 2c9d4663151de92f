//! FIFO queues of the waiters of each key, in this process.
//!
//! Only the waiter at the head of a key's queue asks the store; it sleeps until the time the
//! store names, and when it is admitted (or gives up, or is dropped) it leaves and wakes the
//! next one. So waiters are served in arrival order and wake-ups track admissions: no one
//! polls. A key without waiters has no queue: its requests ask the store directly, each on
//! its own (concurrently, with a network store), and join the queue only when the store
//! says to wait. A request that finds waiters joins behind them without asking.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use super::key::{Key, KeyHasher};
use super::quota::smallcosts::Costs;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Slot {
    id: u64,
    waker: Option<Waker>,
    costs: Costs,
}

#[derive(Debug, Default)]
struct Queue {
    slots: VecDeque<Slot>,
    /// When the head expects to be admitted (nanoseconds since the Unix epoch), 0 if unknown.
    head_until: u64,
    /// Room was given back since the head last asked: it asks again.
    nudged: bool,
}

type Shard = HashMap<u64, Queue, BuildHasherDefault<KeyHasher>>;

#[derive(Debug)]
pub(crate) struct Gates {
    shards: Box<[GateShard]>,
    /// Waiters in every queue, for [`Limiter::waiting`](super::Limiter::waiting).
    total: AtomicUsize,
}

#[derive(Debug, Default)]
struct GateShard {
    map: Mutex<Shard>,
    /// How many keys of this shard have a queue: when none, a request may ask the store
    /// without taking the lock (nobody can be waiting ahead of it).
    queued: AtomicUsize,
}

/// What happened on joining a key's queue.
pub(crate) enum Joined {
    /// The queue was empty: the caller is the head and asks the store.
    Head,
    /// Others were waiting: the caller is at the back.
    Queued {
        /// When the head expects to be admitted, 0 if unknown.
        head_until: u64,
        /// The costs of every waiter ahead, summed per quota.
        ahead: Costs,
    },
    /// The queue holds `max` waiters already: the caller did not join.
    Full {
        /// When the head expects to be admitted, 0 if unknown.
        head_until: u64,
        /// The costs of every waiter, summed per quota.
        ahead: Costs,
    },
}

impl Gates {
    pub(crate) fn new() -> Gates {
        Gates {
            shards: (0..SHARDS).map(|_| GateShard::default()).collect(),
            total: AtomicUsize::new(0),
        }
    }

    fn gate(&self, key: Key) -> &GateShard {
        &self.shards[key.shard(SHARDS)]
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        self.gate(key).map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` may have waiters: `false` is certain (no queue in its shard), `true`
    /// asks the lock.
    pub(crate) fn has_waiters(&self, key: Key) -> bool {
        self.gate(key).queued.load(Ordering::Acquire) != 0 && self.waiting(key) > 0
    }

    /// Joins the back of `key`'s queue as waiter `id` costing `costs`, unless it already
    /// holds `max` waiters.
    pub(crate) fn join(
        &self,
        key: Key,
        id: u64,
        waker: &Waker,
        costs: &Costs,
        max: usize,
    ) -> Joined {
        let mut shard = self.shard(key);
        let q = shard.entry(key.0).or_insert_with(|| {
            self.gate(key).queued.fetch_add(1, Ordering::AcqRel);
            Queue::default()
        });
        if q.slots.is_empty() {
            q.head_until = 0;
            q.slots.push_back(Slot {
                id,
                waker: None,
                costs: costs.clone(),
            });
            self.total.fetch_add(1, Ordering::Relaxed);
            return Joined::Head;
        }
        let ahead = Costs::sum(q.slots.iter().map(|s| &s.costs), costs.as_slice().len());
        if q.slots.len() >= max {
            return Joined::Full {
                head_until: q.head_until,
                ahead,
            };
        }
        q.slots.push_back(Slot {
            id,
            waker: Some(waker.clone()),
            costs: costs.clone(),
        });
        self.total.fetch_add(1, Ordering::Relaxed);
        Joined::Queued {
            head_until: q.head_until,
            ahead,
        }
    }

    /// Whether `id` is at the head of `key`'s queue; if not, refreshes its waker.
    pub(crate) fn is_head(&self, key: Key, id: u64, waker: &Waker) -> bool {
        let mut shard = self.shard(key);
        let Some(q) = shard.get_mut(&key.0) else {
            return false;
        };
        if q.slots.front().is_some_and(|s| s.id == id) {
            return true;
        }
        if let Some(slot) = q.slots.iter_mut().find(|s| s.id == id) {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
        false
    }

    /// The head, sleeping until the time the store named: keeps its waker for a
    /// [`nudge`](Self::nudge), and says whether one came since it last asked (clearing it).
    pub(crate) fn head_nudged(&self, key: Key, id: u64, waker: &Waker) -> bool {
        let mut shard = self.shard(key);
        let Some(q) = shard.get_mut(&key.0) else {
            return false;
        };
        let Some(head) = q.slots.front_mut().filter(|s| s.id == id) else {
            return false;
        };
        match &head.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => head.waker = Some(waker.clone()),
        }
        std::mem::take(&mut q.nudged)
    }

    /// Room was given back on `key` (a refund): its head asks the store again now rather
    /// than sleep until the time it was named when the window was fuller.
    pub(crate) fn nudge(&self, key: Key) {
        if let Some(q) = self.shard(key).get_mut(&key.0) {
            q.nudged = true;
            if let Some(w) = q.slots.front_mut().and_then(|s| s.waker.take()) {
                w.wake();
            }
        }
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
        if q.slots.front().is_some_and(|s| s.id == id) {
            q.slots.pop_front();
            self.total.fetch_sub(1, Ordering::Relaxed);
            q.head_until = 0;
            match q.slots.front_mut() {
                Some(next) => {
                    if let Some(w) = next.waker.take() {
                        w.wake();
                    }
                }
                None => {
                    shard.remove(&key.0);
                    self.gate(key).queued.fetch_sub(1, Ordering::AcqRel);
                }
            }
        } else if let Some(i) = q.slots.iter().position(|s| s.id == id) {
            q.slots.remove(i);
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The number of waiters queued on `key`.
    pub(crate) fn waiting(&self, key: Key) -> usize {
        self.shard(key).get(&key.0).map_or(0, |q| q.slots.len())
    }

    /// The number of waiters queued on every key.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}
