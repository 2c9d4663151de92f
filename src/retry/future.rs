//! [`ResponseFuture`]: one request, through every attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::policy::{is_limiter_refusal, Decide, Outcome, RetryInfo, Step, StopReason};
use super::replay::ReplayBody;
use super::service::Shared;
use crate::classify::{Classification, Classify, Generic};

pin_project! {
    /// The response future of [`RetryAfter`](super::RetryAfter).
    ///
    /// Dropping it stops everything at once: the attempt in flight is dropped, and no
    /// further attempt is sent.
    pub struct ResponseFuture<S, ReqB, D, ResB>
    where
        S: Service<http::Request<ReplayBody<ReqB>>>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        shared: Arc<Shared<D>>,
        // The request's head and a handle on its body, for the next attempt; `None` when no
        // retry is possible.
        template: Option<(request::Parts, ReplayBody<ReqB>)>,
        // The next attempt's request, made as soon as the retry is decided.
        next: Option<http::Request<ReplayBody<ReqB>>>,
        // Allocated on the first retry only, and reused.
        sleep: Option<Pin<Box<Sleep>>>,
        // The response of the last attempt that reached the server, held while a retry is
        // pending: if the rate limiter then refuses the retry, the caller gets it.
        last: Option<http::Response<ResB>>,
        attempts: u32,
        // When the request entered the service; read only with a deadline.
        start: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called {
            #[pin]
            future: F,
        },
        // Waiting out the delay before the next attempt.
        Waiting,
        // Driving the service ready for the next attempt.
        Retrying,
    }
}

impl<S, ReqB, D, ResB> ResponseFuture<S, ReqB, D, ResB>
where
    S: Service<http::Request<ReplayBody<ReqB>>>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        shared: Arc<Shared<D>>,
        template: Option<(request::Parts, ReplayBody<ReqB>)>,
    ) -> Self {
        let start = shared.limits.deadline.map(|_| Instant::now());
        ResponseFuture {
            state: State::Called { future },
            service,
            shared,
            template,
            next: None,
            sleep: None,
            last: None,
            attempts: 1,
            start,
        }
    }
}

impl<S, ReqB, D, ResB> Future for ResponseFuture<S, ReqB, D, ResB>
where
    S: Service<http::Request<ReplayBody<ReqB>>, Response = http::Response<ResB>>,
    S::Error: 'static,
    ReqB: Body,
    D: Decide<S::Error>,
{
    type Output = Result<http::Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let (step, result) = match ready!(future.poll(cx)) {
                        Ok(mut response) => {
                            // A response without a classification and with an error status
                            // is classified from its head (taken apart for that, and only
                            // then: the success path moves nothing).
                            let derived = if response.status().as_u16() >= 400
                                && response.extensions().get::<Classification>().is_none()
                            {
                                let (parts, body) = response.into_parts();
                                let now = this.shared.clock.now();
                                let c = Generic.classify_at(&parts, &[], now);
                                response = http::Response::from_parts(parts, body);
                                Some(c)
                            } else {
                                None
                            };
                            let step = judge(
                                this.shared,
                                this.template,
                                *this.attempts,
                                *this.start,
                                &response,
                                derived.as_ref(),
                            );
                            if let Step::Stop(stopped) = step {
                                if *this.attempts > 1 || stopped != StopReason::Success {
                                    let info = RetryInfo::new(*this.attempts, stopped);
                                    response.extensions_mut().insert(info);
                                }
                                return Poll::Ready(Ok(response));
                            }
                            *this.last = Some(response);
                            (step, Ok(()))
                        }
                        Err(e) if this.last.is_some() && is_limiter_refusal(&e) => {
                            // The limiter will not admit the retry in time: the server's
                            // last answer is what the caller gets, as it was sent.
                            let mut response = this.last.take().expect("checked above");
                            let info =
                                RetryInfo::new(*this.attempts - 1, StopReason::LimiterRefused);
                            response.extensions_mut().insert(info);
                            tracing::debug!(
                                attempts = *this.attempts - 1,
                                reason = StopReason::LimiterRefused.as_str(),
                                "not retrying"
                            );
                            return Poll::Ready(Ok(response));
                        }
                        Err(e) => {
                            let outcome = Outcome::Error(&e);
                            let replayable = this
                                .template
                                .as_ref()
                                .is_some_and(|(_, b)| b.is_replayable());
                            let step = this.shared.next_step(
                                *this.attempts,
                                *this.start,
                                outcome,
                                replayable,
                            );
                            (step, Err(e))
                        }
                    };
                    let delay = match (step, result) {
                        (Step::Retry(delay), _) => delay,
                        (Step::Stop(_), Err(e)) => return Poll::Ready(Err(e)),
                        (Step::Stop(_), Ok(())) => unreachable!("returned above"),
                    };
                    // The next attempt's body is made now, not after the wait: it takes the
                    // caller's body over at once, so a connection still streaming the
                    // answered attempt's body stops reading it (and cannot push the
                    // recording past the cap while we wait).
                    let final_attempt = *this.attempts + 1 >= this.shared.limits.max_attempts;
                    let (parts, body) = if final_attempt {
                        let (parts, body) =
                            this.template.take().expect("a retry needs the request");
                        (parts, body.replay())
                    } else {
                        let (parts, body) =
                            this.template.as_ref().expect("a retry needs the request");
                        (parts.clone(), body.replay())
                    };
                    *this.next = Some(http::Request::from_parts(parts, body));
                    // An error of this attempt is dropped here; a response is held in `last`.
                    if delay.is_zero() {
                        this.state.set(State::Retrying);
                    } else {
                        // A delay past what `Instant` can hold waits "forever" (30 years).
                        let at = Instant::now()
                            .checked_add(delay)
                            .or_else(|| Instant::now().checked_add(FOREVER))
                            .unwrap_or_else(Instant::now);
                        match this.sleep {
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                        this.state.set(State::Waiting);
                    }
                }
                StateProj::Waiting => {
                    if let Some(sleep) = this.sleep {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(match this.last.take() {
                            Some(response) if is_limiter_refusal(&e) => Ok(response),
                            _ => Err(e),
                        });
                    }
                    *this.attempts += 1;
                    let request = this.next.take().expect("a retry has its request");
                    let future = this.service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// What "wait forever" means for a delay no `Instant` can hold.
const FOREVER: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

/// The next step after a response, from its classification: the one derived from its
/// head, else the one in its extensions, else (for a 1xx–3xx status that carries none) a
/// plain success.
fn judge<D, E, B, ResB>(
    shared: &Shared<D>,
    template: &Option<(request::Parts, ReplayBody<B>)>,
    attempts: u32,
    start: Option<Instant>,
    response: &http::Response<ResB>,
    derived: Option<&Classification>,
) -> Step
where
    D: Decide<E>,
{
    let classification = derived
        .or_else(|| response.extensions().get::<Classification>())
        .unwrap_or(&shared.success);
    let outcome = Outcome::Response {
        status: response.status(),
        headers: response.headers(),
        classification,
    };
    let replayable = template.as_ref().is_some_and(|(_, b)| b.is_replayable());
    shared.next_step(attempts, start, outcome, replayable)
}

impl<S, ReqB, D, ResB> fmt::Debug for ResponseFuture<S, ReqB, D, ResB>
where
    S: Service<http::Request<ReplayBody<ReqB>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Called { .. } => "called",
            State::Waiting => "waiting",
            State::Retrying => "retrying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
