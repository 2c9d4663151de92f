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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// The costs of every waiter, summed per quota (saturating): what a request joining
    /// the back has ahead of it, without a pass over the queue (a queue 10 000 deep would
    /// make every join a pass of 10 000).
    total: Vec<u64>,
}

impl Queue {
    fn push(&mut self, slot: Slot) {
        let costs = slot.costs.as_slice();
        if self.total.len() < costs.len() {
            self.total.resize(costs.len(), 0);
        }
        for (t, &c) in self.total.iter_mut().zip(costs) {
            *t = t.saturating_add(c);
        }
        self.slots.push_back(slot);
    }

    fn forget(&mut self, slot: &Slot) {
        for (t, &c) in self.total.iter_mut().zip(slot.costs.as_slice()) {
            *t = t.saturating_sub(c);
        }
    }

    /// The waiter `id`: ids increase from head to back.
    fn find_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let i = self.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        self.slots.get_mut(i)
    }

    /// The costs of every waiter, per quota, for a request of `n` quotas.
    fn ahead(&self, n: usize) -> Costs {
        Costs::new((0..n).map(|i| self.total.get(i).copied().unwrap_or(0)))
    }
}

type Shard = HashMap<u64, Queue, BuildHasherDefault<KeyHasher>>;

/// Waiter ids, drawn under a queue's lock (never 0: 0 is "not queued").
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

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
#[derive(Clone)]
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
    #[inline]
    pub(crate) fn has_waiters(&self, key: Key) -> bool {
        self.gate(key).queued.load(Ordering::Acquire) != 0 && self.waiting(key) > 0
    }

    /// Joins the back of `key`'s queue costing `costs`, unless it already holds `max`
    /// waiters; the waiter's id (0 when it did not join). Ids are drawn under the queue's
    /// lock, so a queue's ids increase from head to back: a waiter is found by a binary
    /// search, not a pass over the queue.
    pub(crate) fn join(&self, key: Key, waker: &Waker, costs: &Costs, max: usize) -> (Joined, u64) {
        let mut shard = self.shard(key);
        let q = shard.entry(key.0).or_insert_with(|| {
            self.gate(key).queued.fetch_add(1, Ordering::AcqRel);
            Queue::default()
        });
        if q.slots.is_empty() {
            q.head_until = 0;
            let id = next_id();
            q.push(Slot {
                id,
                waker: None,
                costs: costs.clone(),
            });
            self.total.fetch_add(1, Ordering::Relaxed);
            return (Joined::Head, id);
        }
        let ahead = q.ahead(costs.as_slice().len());
        if q.slots.len() >= max {
            let full = Joined::Full {
                head_until: q.head_until,
                ahead,
            };
            return (full, 0);
        }
        let id = next_id();
        q.push(Slot {
            id,
            waker: Some(waker.clone()),
            costs: costs.clone(),
        });
        self.total.fetch_add(1, Ordering::Relaxed);
        let queued = Joined::Queued {
            head_until: q.head_until,
            ahead,
        };
        (queued, id)
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
        if let Some(slot) = q.find_mut(id) {
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
            if let Some(head) = q.slots.pop_front() {
                q.forget(&head);
            }
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
        } else if let Ok(i) = q.slots.binary_search_by_key(&id, |s| s.id) {
            if let Some(gone) = q.slots.remove(i) {
                q.forget(&gone);
            }
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

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn costs(c: &[u64]) -> Costs {
        Costs::new(c.iter().copied())
    }

    fn ahead(j: (Joined, u64)) -> Vec<u64> {
        match j.0 {
            Joined::Queued { ahead, .. } | Joined::Full { ahead, .. } => ahead.as_slice().to_vec(),
            Joined::Head => Vec::new(),
        }
    }

    #[test]
    fn what_a_joiner_has_ahead_follows_joins_and_leaves() {
        let gates = Gates::new();
        let key = Key(7);
        let w = Waker::noop();
        let join = |c: &[u64], max| gates.join(key, w, &costs(c), max);
        let (head, first) = join(&[2, 5], 10);
        assert!(matches!(head, Joined::Head));
        let (queued, second) = join(&[3, 1], 10);
        assert_eq!(ahead((queued, second)), [2, 5]);
        let third = join(&[4, 0], 10);
        assert_eq!(ahead(third.clone()), [5, 6]);
        assert!(
            first < second && second < third.1,
            "ids increase from head to back"
        );
        // A waiter leaving from the middle, then the head: their costs are no longer ahead.
        gates.leave(key, second);
        let fourth = join(&[1, 1], 10);
        assert_eq!(ahead(fourth.clone()), [6, 5]);
        gates.leave(key, first);
        assert!(gates.is_head(key, third.1, w));
        assert!(!gates.is_head(key, fourth.1, w));
        let fifth = join(&[1, 1], 10);
        assert_eq!(ahead(fifth.clone()), [5, 1]);
        // A full queue says what the caller would have had ahead, and takes no id; a
        // request of fewer quotas sees those it has.
        let full = join(&[9, 9], 3);
        assert_eq!(full.1, 0);
        assert_eq!(ahead(full), [6, 2]);
        let seventh = join(&[1], 10);
        assert_eq!(ahead(seventh.clone()), [6]);
        // Once everyone has left, the queue is gone, and the next is the head.
        for (_, id) in [third, fourth, fifth, seventh] {
            gates.leave(key, id);
        }
        assert_eq!(gates.total(), 0);
        assert!(matches!(join(&[1, 1], 10).0, Joined::Head));
    }
}
