//! [`Acquire`]: one request's admission — its place in the key's queue, the store's
//! answer, the wait.

use super::*;
use crate::limit::in_flight::{wait_for_place, InFlightSlot, PlaceWait};
use std::task::ready;

// === impl Acquire ===

enum State {
    Start,
    /// Asking a network store, not queued (nobody waits on the key).
    Asking(StoreFuture<'static, Decision>),
    /// Behind other waiters.
    Queued,
    /// At the head of the queue: ask the store.
    Check,
    /// At the head, a network store's answer outstanding.
    Storing(StoreFuture<'static, Decision>),
    /// At the head, sleeping until the time the store named.
    Sleeping,
    Done,
}

/// The future of [`Limiter::acquire`]: resolves once the request is admitted (and recorded),
/// or fails with an [`AcquireError`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    limiter: Limiter,
    tier: Tier,
    key: Key,
    store_key: Key,
    costs: Costs,
    /// The waiter's id in the key's queue, 0 when not queued.
    id: u64,
    deadline: Option<Instant>,
    state: State,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The wait for a place among the key's requests in flight, first.
    place_wait: Option<PlaceWait>,
    /// The place, held (taken at once, or waited for).
    place: Option<InFlightSlot>,
}

impl Acquire {
    /// `key`'s admission under `tier` (or the tier learned for it), for `cost` units.
    pub(super) fn new(limiter: &Limiter, key: Key, tier: Tier, cost: Cost) -> Acquire {
        let store_key = key.with_tier(tier.id());
        let tier = limiter.shared.learned.in_force(store_key, tier);
        Acquire {
            limiter: limiter.clone(),
            store_key,
            key,
            costs: tier.costs(&cost),
            tier,
            id: 0,
            deadline: None,
            state: State::Start,
            sleep: None,
            place_wait: None,
            place: None,
        }
    }

    /// Holds `place` (taken at once) until the front end takes it.
    pub(crate) fn holding(mut self, place: Option<InFlightSlot>) -> Acquire {
        self.place = place;
        self
    }

    /// Waits for a place on `sem` (the key's, all taken) before the windows: up to
    /// `max_wait`, in order among the key's waiters.
    pub(crate) fn after_place(mut self, sem: Arc<tokio::sync::Semaphore>) -> Acquire {
        let max_wait = self.limiter.shared.config.max_wait;
        let (limiter, key) = (self.limiter.clone(), self.key);
        let settle = move || limiter.shared.in_flight.settle(key);
        self.place_wait = Some(wait_for_place(settle, sem, max_wait));
        self
    }

    /// The place among the key's requests in flight this admission holds, for the front end
    /// to hold until the response ends.
    pub(crate) fn take_place(&mut self) -> Option<InFlightSlot> {
        self.place.take()
    }

    /// The (hashed) key.
    pub fn key(&self) -> Key {
        self.key
    }

    fn leave(&mut self) {
        if self.id != 0 {
            self.limiter.shared.gates.leave(self.store_key, self.id);
            self.id = 0;
        }
    }

    /// Arms the timer for `at` (polled by the caller's state).
    fn arm(&mut self, at: Instant) {
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    fn limited(&self, reason: Reason, available_at: Option<Instant>) -> AcquireError {
        limited(self.key, &self.tier, reason, available_at, Instant::now())
    }

    fn mode(&self) -> Mode {
        self.limiter.shared.config.mode
    }

    /// Asks the store for this request: at once if it can answer so, else as a future.
    fn ask(
        &self,
        at: Instant,
    ) -> Result<Result<Decision, StoreError>, StoreFuture<'static, Decision>> {
        let l = &self.limiter;
        let t = l.times(&self.tier, at);
        match l.ask_now(&self.tier, self.store_key, self.costs.as_slice(), t) {
            Some(d) => Ok(d),
            None => Err(l.ask(&self.tier, self.store_key, &self.costs, t)),
        }
    }

    /// The earliest time the waiter behind `ahead` (per-quota units queued before it) could
    /// be admitted, when the head goes no earlier than `head_at`: a quota of N units per W
    /// admits at most N units in any W, so the units ahead plus this request's own need at
    /// least `floor((ahead + cost - 1) / N)` more windows after the head's admission. A lower
    /// bound: honest as a `retry_after`, and a sure sign the request cannot make its deadline.
    fn earliest_behind(&self, head_at: Instant, ahead: &Costs) -> Instant {
        let margin = self.limiter.margin_for(&self.tier);
        let mut at = head_at;
        for ((q, &units), &cost) in self
            .tier
            .quotas()
            .iter()
            .zip(ahead.as_slice())
            .zip(self.costs.as_slice())
        {
            let limit = q.limit().max(1);
            let windows = units.saturating_add(cost).saturating_sub(1) / limit;
            let window = q.window();
            let span = if window.is_calendar() {
                windows.saturating_sub(1)
            } else {
                windows
            };
            let length = window.length().saturating_add(margin);
            let wait = length.saturating_mul(u32::try_from(span).unwrap_or(u32::MAX));
            at = at.max(head_at.checked_add(wait).unwrap_or_else(far_future));
        }
        at
    }

    /// Handles a final decision, or a wait: for a request not yet queued, joins the queue.
    fn decide(
        &mut self,
        decision: Result<Decision, StoreError>,
        cx: &mut Context<'_>,
    ) -> Option<Result<(), AcquireError>> {
        match decision {
            Ok(Decision::Admitted) => {
                self.leave();
                Some(Ok(()))
            }
            Ok(Decision::NotBefore(t)) => {
                let at = self.limiter.to_instant(t);
                if self.mode() == Mode::Reject {
                    self.leave();
                    return Some(Err(self.limited(Reason::Rejected, Some(at))));
                }
                if self.deadline.is_some_and(|d| at > d) {
                    self.leave();
                    return Some(Err(self.limited(Reason::MaxWait, Some(at))));
                }
                if self.id == 0 {
                    return self.join(cx, Some(t));
                }
                self.sleep_until(t, at);
                None
            }
            Ok(Decision::Exceeds { quota, limit }) => {
                self.leave();
                Some(Err(AcquireError::CostExceedsLimit(CostExceedsLimit {
                    tier: self.tier.clone(),
                    quota,
                    cost: self.costs.as_slice().get(quota).copied().unwrap_or(0),
                    limit,
                })))
            }
            Err(e) => {
                self.leave();
                Some(Err(AcquireError::Store(e)))
            }
        }
    }

    /// As the head, sleeps until `t` (`at` as an instant).
    fn sleep_until(&mut self, t: u64, at: Instant) {
        self.limiter.shared.gates.set_head_until(self.store_key, t);
        tracing::debug!(key = %self.key, tier = self.tier.name(), wait_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64, "rate limit: waiting");
        self.arm(at);
        self.state = State::Sleeping;
    }

    /// Joins the key's queue. `not_before` is the store's answer when it was just asked (the
    /// caller becomes the head and sleeps until then); `None` when the request joins without
    /// asking, because others wait.
    fn join(
        &mut self,
        cx: &mut Context<'_>,
        not_before: Option<u64>,
    ) -> Option<Result<(), AcquireError>> {
        let shared = self.limiter.shared.clone();
        let (joined, id) = shared.gates.join(
            self.store_key,
            cx.waker(),
            &self.costs,
            shared.config.max_queue,
        );
        let (head_until, ahead, full) = match joined {
            Joined::Head => {
                self.id = id;
                match not_before {
                    Some(t) => self.sleep_until(t, self.limiter.to_instant(t)),
                    None => self.state = State::Check,
                }
                return None;
            }
            Joined::Queued { head_until, ahead } => {
                self.id = id;
                (head_until, ahead, false)
            }
            Joined::Full { head_until, ahead } => (head_until, ahead, true),
        };
        let now = Instant::now();
        let mut head_at = now;
        if head_until != 0 {
            head_at = head_at.max(self.limiter.to_instant(head_until));
        }
        if let Some(t) = not_before {
            head_at = head_at.max(self.limiter.to_instant(t));
        }
        let at = self.earliest_behind(head_at, &ahead);
        if full {
            return Some(Err(self.limited(Reason::QueueFull, Some(at))));
        }
        if let Some(d) = self.deadline {
            if at > d {
                self.leave();
                return Some(Err(self.limited(Reason::MaxWait, Some(at))));
            }
            self.arm(d);
        }
        self.state = State::Queued;
        None
    }
}

impl Future for Acquire {
    type Output = Result<(), AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(wait) = this.place_wait.as_mut() {
            let place = ready!(wait.as_mut().poll(cx));
            this.place_wait = None;
            match place {
                Ok(place) => this.place = place,
                Err(()) => {
                    this.state = State::Done;
                    return Poll::Ready(Err(this.limited(Reason::MaxWait, None)));
                }
            }
        }
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Start => {
                    let now = Instant::now();
                    let shared = this.limiter.shared.clone();
                    this.deadline = match shared.config.mode {
                        Mode::Reject => Some(now),
                        Mode::Wait => shared.config.max_wait.and_then(|d| now.checked_add(d)),
                    };
                    // Behind waiters, join them without asking: nobody passes the queue.
                    if shared.config.mode == Mode::Wait && shared.gates.has_waiters(this.store_key)
                    {
                        if let Some(out) = this.join(cx, None) {
                            return Poll::Ready(out);
                        }
                        continue;
                    }
                    // Nobody waits: ask on our own (concurrently with others, for a network
                    // store), and queue only if told to wait.
                    match this.ask(now) {
                        Ok(d) => {
                            if let Some(out) = this.decide(d, cx) {
                                return Poll::Ready(out);
                            }
                        }
                        Err(fut) => this.state = State::Asking(fut),
                    }
                }
                State::Asking(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Poll::Pending => {
                        this.state = State::Asking(fut);
                        return Poll::Pending;
                    }
                },
                State::Queued => {
                    if this
                        .limiter
                        .shared
                        .gates
                        .is_head(this.store_key, this.id, cx.waker())
                    {
                        this.state = State::Check;
                        continue;
                    }
                    this.state = State::Queued;
                    if let Some(s) = &mut this.sleep {
                        if s.as_mut().poll(cx).is_ready() {
                            this.leave();
                            return Poll::Ready(Err(this.limited(Reason::MaxWait, None)));
                        }
                    }
                    return Poll::Pending;
                }
                State::Check => match this.ask(Instant::now()) {
                    Ok(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Err(fut) => this.state = State::Storing(fut),
                },
                State::Storing(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(d) => {
                        if let Some(out) = this.decide(d, cx) {
                            return Poll::Ready(out);
                        }
                    }
                    Poll::Pending => {
                        this.state = State::Storing(fut);
                        return Poll::Pending;
                    }
                },
                State::Sleeping => {
                    let s = this.sleep.as_mut().expect("sleeping has a timer");
                    let gates = &this.limiter.shared.gates;
                    if s.as_mut().poll(cx).is_ready()
                        || gates.head_nudged(this.store_key, this.id, cx.waker())
                    {
                        this.state = State::Check;
                    } else {
                        this.state = State::Sleeping;
                        return Poll::Pending;
                    }
                }
                State::Done => panic!("Acquire polled after completion"),
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        self.leave();
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("key", &self.key)
            .field("tier", &self.tier.name())
            .field("costs", &self.costs.as_slice())
            .finish()
    }
}
