//! [`Attempts`]: one request through every attempt — the per-attempt core that every front
//! end drives.
//!
//! A front end (the tower [`RetryAfter`](super::RetryAfter) service, the reqwest middleware,
//! any later adapter) only translates its client's requests, responses and errors. For each
//! request it makes one `Attempts`, and for each attempt:
//!
//! 1. [`begin`](Attempts::begin) — counts the attempt;
//! 2. acquires admission from the limiter (`limit::Policy::admission`), sends, classifies
//!    (`classify::ResponseFuture`), and lets the limiter learn (`limit::Learn::observe`);
//! 3. hands the outcome here — [`response`](Attempts::response) or
//!    [`error`](Attempts::error) — and gets back a [`Then`]: return this to the caller, or
//!    wait until an instant and go again (the response is then held here, in case the
//!    limiter refuses the retry: [`error`](Attempts::error) returns it instead);
//! 4. before resending, asks [`cannot_replay`](Attempts::cannot_replay) whether the body can
//!    still be sent whole.
//!
//! Everything a caller sees — the decision, the bounds, the budget, the [`RetryInfo`], the
//! held response on a refusal, the `tracing` events — is decided here, once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{is_limiter_refusal, Decide, Outcome, RetryInfo, Step, StopReason};
use super::service::Shared;
use crate::classify::{Classification, Classify, Generic};
use crate::limit::Foreseen;

/// What a front end does after an attempt.
#[derive(Debug)]
pub(crate) enum Then<T> {
    /// Wait until this instant, then send the next attempt.
    RetryAt(Instant),
    /// Return this to the caller.
    Done(T),
}

/// One request through every attempt: see the [module docs](self).
pub(crate) struct Attempts<D, B> {
    shared: Arc<Shared<D>>,
    /// Attempts begun, foreseen ones included.
    attempts: u32,
    /// Attempts answered by a [`Foreseen`] refusal: not held against the bound, up to the
    /// bound again.
    foreseen: u32,
    // When the request entered; read only with a deadline.
    start: Option<Instant>,
    // The response of the last attempt that reached the server, held while a retry is
    // pending: if the limiter then refuses the retry, the caller gets it. Boxed: held only
    // while a retry is pending, and every request's future is the smaller for it.
    last: Option<Box<http::Response<B>>>,
}

impl<D, B> Attempts<D, B> {
    /// A request enters: it earns the retry budget its deposit, and the deadline starts.
    pub(crate) fn new(shared: Arc<Shared<D>>) -> Self {
        shared.budget.deposit();
        let start = shared.limits.deadline.map(|_| Instant::now());
        Attempts {
            shared,
            attempts: 0,
            foreseen: 0,
            start,
            last: None,
        }
    }

    /// The configuration every clone of the front end shares.
    pub(crate) fn shared(&self) -> &Shared<D> {
        &self.shared
    }

    /// Whether a retry can happen at all (more than one attempt allowed): a front end keeps
    /// a copy of the request only then.
    pub(crate) fn may_retry(&self) -> bool {
        self.shared.limits.max_attempts > 1
    }

    /// Counts an attempt about to be sent; `true` when it is the last one allowed (a front
    /// end then sends its copy of the request, keeping none: even a foreseen refusal of it
    /// is not let off).
    pub(crate) fn begin(&mut self) -> bool {
        self.attempts += 1;
        self.counted() >= self.shared.limits.max_attempts
    }

    /// The attempts begun so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The attempts held against the bound: those begun, less the foreseen refusals let off.
    fn counted(&self) -> u32 {
        self.attempts - self.foreseen
    }

    /// After a response: return it (with a [`RetryInfo`] when it was retried or is not a
    /// success) or hold it and retry at the instant returned.
    ///
    /// A response with an error status and no [`Classification`] in its extensions (a bare
    /// client below) is judged by one derived from its head; one with a success status and
    /// none is a success.
    pub(crate) fn response<E>(
        &mut self,
        mut response: http::Response<B>,
        replayable: bool,
    ) -> Then<Result<http::Response<B>, E>>
    where
        D: Decide<E>,
    {
        // Taken apart only for a bare error status: the success path moves nothing.
        let derived = if response.status().as_u16() >= 400
            && response.extensions().get::<Classification>().is_none()
        {
            let (parts, body) = response.into_parts();
            let c = Generic.classify_at(&parts, &[], self.shared.clock.now());
            response = http::Response::from_parts(parts, body);
            Some(c)
        } else {
            None
        };
        let classification = derived
            .as_ref()
            .or_else(|| response.extensions().get::<Classification>())
            .unwrap_or(&self.shared.success);
        // A refusal foreseen (see `Foreseen`) is let off, up to the bound again, unless the
        // attempt was the last (`begin`). A success is never a refusal: its extensions are
        // not searched.
        let max = self.shared.limits.max_attempts;
        if !response.status().is_success()
            && self.counted() < max
            && self.foreseen < max
            && response.extensions().get::<Foreseen>().is_some()
        {
            self.foreseen += 1;
            tracing::debug!(
                attempts = self.attempts,
                foreseen = self.foreseen,
                "a refusal foreseen: not counted against the attempts"
            );
        }
        let outcome = Outcome::Response {
            status: response.status(),
            headers: response.headers(),
            classification,
        };
        match self
            .shared
            .next_step(self.counted(), self.start, outcome, replayable)
        {
            Step::Retry(delay) => {
                self.last = Some(Box::new(response));
                Then::RetryAt(retry_at(delay))
            }
            Step::Stop(stopped) => {
                if self.attempts > 1 || stopped != StopReason::Success {
                    let info = RetryInfo::new(self.attempts, stopped);
                    response.extensions_mut().insert(info);
                }
                Then::Done(Ok(response))
            }
        }
    }

    /// After an error — the client's, or the limiter's refusal to admit the attempt: retry
    /// at the instant returned (the error is dropped), or return it. When the limiter
    /// refuses a retry, the caller gets the server's last response instead, as it was sent,
    /// with a [`RetryInfo`] saying [`StopReason::LimiterRefused`].
    pub(crate) fn error<E: 'static>(
        &mut self,
        error: E,
        replayable: bool,
    ) -> Then<Result<http::Response<B>, E>>
    where
        D: Decide<E>,
    {
        if self.last.is_some() && is_limiter_refusal(&error) {
            let sent = self.attempts - 1;
            return Then::Done(Ok(self.give_back(sent, StopReason::LimiterRefused)));
        }
        let outcome = Outcome::Error(&error);
        match self
            .shared
            .next_step(self.counted(), self.start, outcome, replayable)
        {
            Step::Retry(delay) => Then::RetryAt(retry_at(delay)),
            Step::Stop(_) => Then::Done(Err(error)),
        }
    }

    /// Before a retry is sent, when the request's body can no longer be sent whole (an
    /// earlier attempt read it past the replay cap): the server's last response, which the
    /// caller then gets. `None` when there is none (the retry follows an error, which was
    /// returned already... or never: a retry after an error needs a replayable body).
    pub(crate) fn cannot_replay(&mut self) -> Option<http::Response<B>> {
        self.last.as_ref()?;
        Some(self.give_back(self.attempts, StopReason::NotReplayable))
    }

    /// The held response, marked with why retrying stopped.
    fn give_back(&mut self, attempts: u32, stopped: StopReason) -> http::Response<B> {
        let mut response = *self.last.take().expect("a held response");
        response
            .extensions_mut()
            .insert(RetryInfo::new(attempts, stopped));
        tracing::debug!(attempts, reason = stopped.as_str(), "not retrying");
        response
    }
}

/// What "wait forever" means for a delay no `Instant` can hold: 30 years.
const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// When to send the next attempt, `delay` from now; a delay past what an `Instant` can hold
/// waits "forever" (30 years), never panics.
pub(crate) fn retry_at(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryAfterLayer;

    fn attempts(max: u32) -> Attempts<crate::retry::Standard, ()> {
        Attempts::new(RetryAfterLayer::new().with_max_attempts(max).shared())
    }

    fn status(code: u16) -> http::Response<()> {
        http::Response::builder().status(code).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn success_returns_at_once_without_info() {
        let mut a = attempts(3);
        assert!(!a.begin());
        match a.response::<std::io::Error>(status(200), true) {
            Then::Done(Ok(r)) => assert!(r.extensions().get::<RetryInfo>().is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_retry_returns_the_held_response() {
        let mut a = attempts(3);
        a.begin();
        let Then::RetryAt(_) = a.response::<tower::BoxError>(status(503), true) else {
            panic!("a 503 is retried")
        };
        a.begin();
        let refusal: tower::BoxError = Box::new(crate::limit::RateLimited {
            key: crate::limit::Key::of("k"),
            tier: crate::Tier::new("t"),
            reason: crate::limit::Reason::MaxWait,
            available_at: None,
            retry_after: None,
        });
        match a.error(refusal, true) {
            Then::Done(Ok(r)) => {
                assert_eq!(r.status(), 503);
                let info = RetryInfo::get(r.extensions());
                assert_eq!(
                    (info.attempts, info.stopped),
                    (1, StopReason::LimiterRefused)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_is_known_and_bounds_retries() {
        let mut a = attempts(2);
        assert!(a.may_retry());
        assert!(!a.begin());
        assert!(matches!(
            a.response::<std::io::Error>(status(503), true),
            Then::RetryAt(_)
        ));
        assert!(a.begin());
        match a.response::<std::io::Error>(status(503), true) {
            Then::Done(Ok(r)) => {
                let info = RetryInfo::get(r.extensions());
                assert_eq!((info.attempts, info.stopped), (2, StopReason::MaxAttempts));
            }
            other => panic!("{other:?}"),
        }
        assert!(!attempts(1).may_retry());
    }

    /// The `RetryInfo` of a response returned.
    fn returned(then: Then<Result<http::Response<()>, std::io::Error>>) -> (u32, StopReason) {
        match then {
            Then::Done(Ok(r)) => {
                let info = RetryInfo::get(r.extensions());
                (info.attempts, info.stopped)
            }
            other => panic!("{other:?}"),
        }
    }

    fn foreseen(code: u16) -> http::Response<()> {
        let mut r = status(code);
        r.extensions_mut().insert(Foreseen);
        r
    }

    #[tokio::test(start_paused = true)]
    async fn foreseen_refusals_are_let_off_up_to_the_bound_again_but_never_the_last() {
        let mut a = attempts(2);
        // Two foreseen refusals are let off: the third attempt is still the first counted.
        for _ in 0..2 {
            assert!(!a.begin());
            let Then::RetryAt(_) = a.response::<std::io::Error>(foreseen(429), true) else {
                panic!("a foreseen refusal is retried")
            };
        }
        // The bound again is reached: a third foreseen refusal counts.
        assert!(!a.begin());
        let Then::RetryAt(_) = a.response::<std::io::Error>(foreseen(429), true) else {
            panic!("one counted attempt of two")
        };
        // The last attempt: counted whatever it gets.
        assert!(a.begin());
        let then = a.response(foreseen(429), true);
        assert_eq!(returned(then), (4, StopReason::MaxAttempts));
    }

    #[tokio::test(start_paused = true)]
    async fn a_foreseen_refusal_of_the_last_attempt_is_not_let_off() {
        let mut a = attempts(2);
        assert!(!a.begin());
        let Then::RetryAt(_) = a.response::<std::io::Error>(status(429), true) else {
            panic!("retried")
        };
        // The last attempt was sent without a copy kept: nothing could be sent again.
        assert!(a.begin());
        let then = a.response(foreseen(429), true);
        assert_eq!(returned(then), (2, StopReason::MaxAttempts));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_cap_returns_the_held_response() {
        let mut a = attempts(3);
        a.begin();
        assert!(matches!(
            a.response::<std::io::Error>(status(429), true),
            Then::RetryAt(_)
        ));
        let r = a.cannot_replay().expect("held");
        let info = RetryInfo::get(r.extensions());
        assert_eq!(
            (info.attempts, info.stopped),
            (1, StopReason::NotReplayable)
        );
        assert!(a.cannot_replay().is_none());
    }

    #[test]
    fn absurd_delays_do_not_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let at = retry_at(Duration::MAX);
            assert!(at > Instant::now() + Duration::from_secs(86_400 * 365));
        });
    }
}
