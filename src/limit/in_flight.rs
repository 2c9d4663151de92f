//! Caps on a key's requests in flight at once: LiteLLM's `max_parallel_requests`,
//! OpenRouter's in-flight budget — learned from their refusals
//! ([`Scope::InFlight`](crate::classify::Scope::InFlight)) or configured
//! ([`Limiter::with_max_in_flight`](super::Limiter::with_max_in_flight)).
//!
//! A capped key has a FIFO semaphore of its limit; an admitted request holds an
//! [`InFlightSlot`] until its response ends. Keys without a cap cost one atomic load.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::key::{Key, KeyHasher};

const SHARDS: usize = 16;

/// The most capped keys a shard holds (a learned cap of a key beyond it is not kept; a
/// configured cap still holds for every key, as its entries idle out).
const PER_SHARD: usize = 4096;

/// How long the places of the requests sent before a cap was learned are held at most,
/// when their answers do not give them back first.
const DEBT_HOLD: Duration = Duration::from_secs(30);

/// A request's place among the requests of its key in flight at once: the place frees when
/// the last clone is dropped. The layers hold it until the response's body ends (or is
/// dropped): the classification layer moves it into the body it hands on; without one
/// below, the rate-limit layer holds it until the response's head arrives.
#[derive(Clone)]
pub(crate) struct InFlightSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl InFlightSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        InFlightSlot {
            _permit: Arc::new(permit),
        }
    }
}

impl fmt::Debug for InFlightSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InFlightSlot")
    }
}

/// The wait for a place of a full key, up to `max_wait` (`None`: as long as it takes),
/// FIFO among the key's waiters: the place; `None` when the key's cap ended or was replaced
/// while it waited (its semaphore closed: the request goes on without a place); `Err` when
/// the wait ran out.
pub(crate) type PlaceWait =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<InFlightSlot>, ()>> + Send>>;

/// Waits for a place on `sem` (a full key's, from [`Slot::Full`]), calling `settle` (the
/// key's [`InFlight::settle`]) to give back the cap's debt when it falls due.
pub(crate) fn wait_for_place(
    settle: impl Fn() -> Option<Instant> + Send + 'static,
    sem: Arc<Semaphore>,
    max_wait: Option<Duration>,
) -> PlaceWait {
    Box::pin(async move {
        let deadline = max_wait.and_then(|d| Instant::now().checked_add(d));
        let mut acquire = std::pin::pin!(sem.acquire_owned());
        loop {
            let wake = match (settle(), deadline) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            let permit = match wake {
                Some(at) => match tokio::time::timeout_at(at, acquire.as_mut()).await {
                    Ok(permit) => permit,
                    Err(_) if deadline.is_some_and(|e| Instant::now() >= e) => return Err(()),
                    Err(_) => continue,
                },
                None => acquire.as_mut().await,
            };
            // Closed: the cap is gone (ended, or replaced by another limit).
            return Ok(permit.ok().map(InFlightSlot::new));
        }
    })
}

/// A shard's caps, by key.
type Caps = HashMap<u64, Cap, BuildHasherDefault<KeyHasher>>;

/// A key's cap.
struct Cap {
    sem: Arc<Semaphore>,
    limit: u32,
    /// When a learned cap ends; `None`: the configured cap.
    until: Option<Instant>,
    /// Places the server holds for requests sent before the cap was learned, which hold
    /// none of ours: the refusal that taught the cap said every place was taken. Each such
    /// request's answer gives one back ([`InFlight::repay`]); what is left is given back at
    /// `debt_until`.
    debt: u32,
    debt_until: Instant,
}

impl Cap {
    /// The configured cap: every place free, for good.
    fn configured(limit: u32, now: Instant) -> Cap {
        Cap {
            sem: Arc::new(Semaphore::new(limit as usize)),
            limit,
            until: None,
            debt: 0,
            debt_until: now,
        }
    }

    /// A cap taught by a refusal: every place is the server's until its requests end.
    fn learned(limit: u32, until: Instant, now: Instant) -> Cap {
        Cap {
            sem: Arc::new(Semaphore::new(0)),
            limit,
            until: Some(until),
            debt: limit,
            debt_until: now + DEBT_HOLD,
        }
    }

    /// Gives back `n` places of the debt.
    fn repay(&mut self, n: u32) {
        let n = n.min(self.debt);
        self.debt -= n;
        self.sem.add_permits(n as usize);
    }

    /// Gives back what is left of the debt once it is due.
    fn settle(&mut self, now: Instant) {
        if self.debt > 0 && now >= self.debt_until {
            self.repay(self.debt);
        }
    }

    /// No request holds a place.
    fn idle(&self) -> bool {
        self.debt == 0 && self.sem.available_permits() >= self.limit as usize
    }

    fn ended(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u <= now)
    }
}

impl Drop for Cap {
    /// A cap dropped (ended, replaced by another limit, or evicted) lets its waiters go:
    /// nothing would give them back a place it owes.
    fn drop(&mut self) {
        self.sem.close();
    }
}

/// What a key's cap says of one more request.
pub(crate) enum Slot {
    /// The key has no cap.
    Uncapped,
    /// A place, taken.
    Held(InFlightSlot),
    /// Every place is taken: wait on the semaphore, or refuse.
    Full(Arc<Semaphore>),
}

/// The caps of a limiter's keys.
pub(crate) struct InFlight {
    /// Any key capped (a learned cap, or a configured one): the one load an uncapped
    /// request pays.
    any: AtomicBool,
    /// The configured cap of every key.
    configured: Option<u32>,
    shards: Box<[Mutex<Caps>]>,
}

impl InFlight {
    pub(crate) fn new(configured: Option<u32>) -> InFlight {
        InFlight {
            any: AtomicBool::new(configured.is_some()),
            configured,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, key: Key) -> MutexGuard<'_, Caps> {
        self.shards[key.shard(SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// No key is capped.
    #[inline]
    pub(crate) fn none(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Takes a place for one request of `key`, if the key is capped (the caller checked
    /// [`none`](Self::none) first: this takes the shard's lock).
    pub(crate) fn try_slot(&self, key: Key) -> Slot {
        let now = Instant::now();
        let mut caps = self.lock(key);
        let sem = match caps.get_mut(&key.0) {
            Some(cap) if !cap.ended(now) => {
                cap.settle(now);
                Arc::clone(&cap.sem)
            }
            _ => {
                caps.remove(&key.0);
                let Some(limit) = self.configured else {
                    return Slot::Uncapped;
                };
                if !room(&mut caps, now) {
                    return Slot::Uncapped;
                }
                let cap = Cap::configured(limit, now);
                let sem = Arc::clone(&cap.sem);
                caps.insert(key.0, cap);
                sem
            }
        };
        drop(caps);
        match Arc::clone(&sem).try_acquire_owned() {
            Ok(permit) => Slot::Held(InFlightSlot::new(permit)),
            Err(_) => Slot::Full(sem),
        }
    }

    /// Caps `key` at `limit` requests in flight until `until` (a later refusal renews it).
    /// Whether the cap is new or changed.
    pub(crate) fn cap(&self, key: Key, limit: u32, until: Instant) -> bool {
        let limit = limit.max(1);
        let now = Instant::now();
        let mut caps = self.lock(key);
        if let Some(cap) = caps.get_mut(&key.0) {
            if cap.limit == limit || (cap.until.is_none() && cap.limit < limit) {
                // The same cap, renewed; a configured cap below the server's stays.
                if cap.until.is_some() {
                    cap.until = Some(until);
                }
                return false;
            }
            // A new limit: a new semaphore. Places held under the old one free on it, and
            // the server holds every place of the new one for now.
            *cap = Cap::learned(limit, until, now);
            return true;
        }
        if !room(&mut caps, now) {
            return false;
        }
        caps.insert(key.0, Cap::learned(limit, until, now));
        self.any.store(true, Ordering::Release);
        true
    }

    /// A request of `key` that held no place was answered (it was sent before the key was
    /// capped): the server's place it took is free, one of the cap's debt given back.
    #[inline]
    pub(crate) fn repay(&self, key: Key) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        self.repay_capped(key);
    }

    #[inline(never)]
    fn repay_capped(&self, key: Key) {
        if let Some(cap) = self.lock(key).get_mut(&key.0) {
            cap.repay(1);
        }
    }

    /// Gives back a capped key's debt once it is due; when it is (or will be) due.
    pub(crate) fn settle(&self, key: Key) -> Option<Instant> {
        let now = Instant::now();
        let mut caps = self.lock(key);
        let cap = caps.get_mut(&key.0)?;
        cap.settle(now);
        (cap.debt > 0).then_some(cap.debt_until)
    }

    /// The cap in force for `key`, if any (for tests and snapshots).
    #[cfg(test)]
    pub(crate) fn limit(&self, key: Key) -> Option<u32> {
        let now = Instant::now();
        match self.lock(key).get(&key.0) {
            Some(cap) if !cap.ended(now) => Some(cap.limit),
            _ => self.configured,
        }
    }
}

/// Makes room for one more cap in a shard: drops the ended caps and the idle configured ones
/// when it is full. Whether there is room.
fn room(caps: &mut Caps, now: Instant) -> bool {
    if caps.len() < PER_SHARD {
        return true;
    }
    caps.retain(|_, cap| !(cap.ended(now) || (cap.until.is_none() && cap.idle())));
    caps.len() < PER_SHARD
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(s: Slot) -> InFlightSlot {
        match s {
            Slot::Held(s) => s,
            Slot::Uncapped => panic!("uncapped"),
            Slot::Full(_) => panic!("full"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncapped_key_takes_no_place() {
        let f = InFlight::new(None);
        assert!(matches!(f.try_slot(Key::of("a")), Slot::Uncapped));
    }

    #[tokio::test(start_paused = true)]
    async fn a_learned_cap_holds_its_places_until_it_ends() {
        let f = InFlight::new(None);
        let (a, b) = (Key::of("a"), Key::of("b"));
        assert!(f.cap(a, 2, Instant::now() + Duration::from_secs(60)));
        // The refusal said the server's places are all taken, by requests that hold none of
        // ours: each one's answer gives one back.
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        f.repay(a);
        let one = held(f.try_slot(a));
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        f.repay(a);
        f.repay(a); // no more than the debt
        let two = held(f.try_slot(a));
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        assert!(
            matches!(f.try_slot(b), Slot::Uncapped),
            "other keys are free"
        );
        // A clone is the same place: it frees with the last one.
        let again = one.clone();
        drop(one);
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        drop(again);
        let three = held(f.try_slot(a));
        drop((two, three));
        // Renewed by the same limit, not replaced (no new debt).
        assert!(!f.cap(a, 2, Instant::now() + Duration::from_secs(60)));
        let (_x, _y) = (held(f.try_slot(a)), held(f.try_slot(a)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(f.try_slot(a), Slot::Uncapped));
        assert_eq!(f.limit(a), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_debt_not_repaid_falls_due() {
        let f = Arc::new(InFlight::new(None));
        let a = Key::of("a");
        assert!(f.cap(a, 1, Instant::now() + Duration::from_secs(60)));
        let Slot::Full(sem) = f.try_slot(a) else {
            panic!("in debt")
        };
        // A waiter is woken when the debt falls due, though nobody else calls.
        let start = Instant::now();
        let place = wait_for_place(
            {
                let f = Arc::clone(&f);
                move || f.settle(a)
            },
            sem,
            None,
        )
        .await;
        assert!(matches!(place, Ok(Some(_))));
        assert_eq!(start.elapsed(), DEBT_HOLD);
        // A waiter with a shorter bound gives up first.
        assert!(f.cap(a, 2, Instant::now() + Duration::from_secs(60)));
        let Slot::Full(sem) = f.try_slot(a) else {
            panic!("in debt")
        };
        let start = Instant::now();
        assert!(wait_for_place(
            {
                let f = Arc::clone(&f);
                move || f.settle(a)
            },
            sem,
            Some(Duration::from_secs(5))
        )
        .await
        .is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// A waiter on a cap that is replaced (another limit) or ends goes on without a place
    /// at once, rather than wait on places nobody will give back.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_on_a_cap_replaced_or_ended_goes_on() {
        let f = Arc::new(InFlight::new(None));
        let a = Key::of("a");
        let wait = |f: &Arc<InFlight>, sem| {
            let f = Arc::clone(f);
            tokio::spawn(wait_for_place(move || f.settle(a), sem, None))
        };
        assert!(f.cap(a, 1, Instant::now() + Duration::from_secs(60)));
        let Slot::Full(sem) = f.try_slot(a) else {
            panic!("in debt")
        };
        let waiter = wait(&f, sem);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            f.cap(a, 2, Instant::now() + Duration::from_secs(60)),
            "replaced"
        );
        assert!(matches!(waiter.await.unwrap(), Ok(None)));
        // Once the cap has ended, the next look at the key drops it and closes its
        // semaphore: whoever still waits on it goes on.
        let Slot::Full(sem) = f.try_slot(a) else {
            panic!("in debt")
        };
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(f.try_slot(a), Slot::Uncapped));
        assert!(sem.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_configured_cap_holds_for_every_key_and_a_lower_learned_one_wins() {
        let f = InFlight::new(Some(3));
        let a = Key::of("a");
        let held_a: Vec<_> = (0..3).map(|_| held(f.try_slot(a))).collect();
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        let _b = held(f.try_slot(Key::of("b")));
        // The server says 1: the key is capped at 1 for the minute; the places held under
        // the configured cap free on its old semaphore.
        assert!(f.cap(a, 1, Instant::now() + Duration::from_secs(60)));
        assert_eq!(f.limit(a), Some(1));
        f.repay(a);
        let one = held(f.try_slot(a));
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
        drop((one, held_a));
        // A server's cap above the configured one does not raise it.
        let c = Key::of("c");
        let _c = held(f.try_slot(c));
        assert!(!f.cap(c, 10, Instant::now() + Duration::from_secs(60)));
        assert_eq!(f.limit(c), Some(3));
        // The learned cap ends: the configured one is back.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(f.limit(a), Some(3));
        let _x: Vec<_> = (0..3).map(|_| held(f.try_slot(a))).collect();
        assert!(matches!(f.try_slot(a), Slot::Full(_)));
    }

    /// A server naming an absurd limit (LiteLLM's "no limit" is i64::MAX) caps at u32::MAX
    /// places, owed and given back like any other.
    #[tokio::test(start_paused = true)]
    async fn an_absurd_limit_is_a_large_cap_not_a_panic() {
        let f = InFlight::new(None);
        let a = Key::of("a");
        assert!(f.cap(a, u32::MAX, Instant::now() + Duration::from_secs(60)));
        assert_eq!(f.limit(a), Some(u32::MAX));
        assert!(matches!(f.try_slot(a), Slot::Full(_)), "owed");
        tokio::time::advance(DEBT_HOLD).await;
        let places: Vec<_> = (0..100).map(|_| held(f.try_slot(a))).collect();
        assert_eq!(places.len(), 100);
        // Zero is one.
        let b = Key::of("b");
        assert!(f.cap(b, 0, Instant::now() + Duration::from_secs(60)));
        assert_eq!(f.limit(b), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_caps_are_bounded() {
        let f = InFlight::new(None);
        let until = Instant::now() + Duration::from_secs(60);
        let mut kept = 0;
        for i in 0..(SHARDS * PER_SHARD + 1000) as u64 {
            if f.cap(Key::of(&i), 1, until) {
                kept += 1;
            }
        }
        assert!(kept <= SHARDS * PER_SHARD, "{kept}");
        // Once they end, new keys find room.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(f.cap(Key::of("late"), 1, Instant::now() + Duration::from_secs(60)));
    }
}
