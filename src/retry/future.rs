//! [`ResponseFuture`]: one request, through every attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::request;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::attempts::{Attempts, Then};
use super::policy::Decide;
use super::replay::ReplayBody;

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
        // The decisions: the crate's one per-attempt core.
        attempts: Attempts<D, ResB>,
        // The request's head and a handle on its body, for the next attempt; `None` when no
        // retry is possible.
        template: Option<(request::Parts, ReplayBody<ReqB>)>,
        // Allocated on the first retry only, and reused.
        sleep: Option<Pin<Box<Sleep>>>,
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
    /// The first attempt, `future`, was sent (and counted in `attempts`) by `service`.
    pub(crate) fn new(
        future: S::Future,
        service: S,
        attempts: Attempts<D, ResB>,
        template: Option<(request::Parts, ReplayBody<ReqB>)>,
    ) -> Self {
        ResponseFuture {
            state: State::Called { future },
            service,
            attempts,
            template,
            sleep: None,
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
            let replayable = this
                .template
                .as_ref()
                .is_some_and(|(_, b)| b.is_replayable());
            let next = match this.state.as_mut().project() {
                StateProj::Called { future } => match ready!(future.poll(cx)) {
                    Ok(response) => this.attempts.response(response, replayable),
                    Err(e) => this.attempts.error(e, replayable),
                },
                StateProj::Waiting => {
                    if let Some(sleep) = this.sleep {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    this.state.set(State::Retrying);
                    continue;
                }
                StateProj::Retrying => {
                    // An earlier attempt's connection may have read the caller's body past
                    // the replay cap while we waited: the request can no longer be sent
                    // whole, and the server's last answer is what the caller gets.
                    if !replayable {
                        if let Some(response) = this.attempts.cannot_replay() {
                            return Poll::Ready(Ok(response));
                        }
                    }
                    match ready!(this.service.poll_ready(cx)) {
                        // An attempt that failed before it was sent: counted, so that the
                        // bounds hold whatever the decision.
                        Err(e) => {
                            this.attempts.begin();
                            this.attempts.error(e, replayable)
                        }
                        Ok(()) => {
                            let last = this.attempts.begin();
                            // Every attempt sends a new replay (the template's own handle is
                            // older than the attempts before it, and may not read on).
                            let (parts, body) = if last {
                                let (parts, body) =
                                    this.template.take().expect("a retry needs the request");
                                (parts, body.replay())
                            } else {
                                let (parts, body) =
                                    this.template.as_ref().expect("a retry needs the request");
                                (parts.clone(), body.replay())
                            };
                            let future = this.service.call(http::Request::from_parts(parts, body));
                            this.state.set(State::Called { future });
                            continue;
                        }
                    }
                }
            };
            match next {
                Then::Done(result) => return Poll::Ready(result),
                Then::RetryAt(at) => {
                    // An error of this attempt is dropped here; a response is held.
                    if at <= tokio::time::Instant::now() {
                        this.state.set(State::Retrying);
                    } else {
                        match this.sleep {
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                        this.state.set(State::Waiting);
                    }
                }
            }
        }
    }
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
            .field("attempts", &self.attempts.attempts())
            .finish_non_exhaustive()
    }
}
