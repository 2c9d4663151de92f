//! [`ResponseFuture`]: waits for admission, calls the inner service, learns from the response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use tokio::time::Instant;
use tower::util::Oneshot;

use super::in_flight::InFlightSlot;
use super::key::Key;
use super::layer::Policy;
use super::limiter::{Acquire, Foreseen, Learning, Limiter};
use super::quota::Tier;
use super::reconcile::UsageHook;
use super::BoxError;
use crate::classify::{Classification, Classify, Generic, QuotaClass, Scope};

/// What a front end needs to learn from an admitted attempt's response: made with the
/// admission (`Policy::admission`), used once by [`observe`](Learn::observe).
///
/// It holds one reference count (the layer's policy, which holds the limiter and its tier):
/// a tier is held only when a selector picked one.
pub(crate) struct Learn {
    pub(crate) policy: Arc<Policy>,
    pub(crate) key: Key,
    /// The tier a selector picked; `None`: the limiter's own.
    pub(crate) tier: Option<Tier>,
    /// For a token cost: the reservation to correct to the response's usage.
    pub(crate) hook: Option<UsageHook>,
    /// The number of the latest block learned when the attempt was admitted
    /// ([`Limiter::blocks_learned`]): whether its refusal was foreseen.
    pub(crate) blocks: u64,
}

impl Learn {
    /// The limiter.
    pub(crate) fn limiter(&self) -> &Limiter {
        &self.policy.limiter
    }

    /// Whether the time of admission matters: for the learned margin (round trips), or to
    /// correct a token reservation as of its admission.
    pub(crate) fn wants_time(&self) -> bool {
        self.hook.is_some() || self.policy.limiter.learns_margin()
    }

    fn tier(&self) -> &Tier {
        self.tier
            .as_ref()
            .unwrap_or_else(|| self.policy.limiter.tier())
    }

    /// The request was admitted at `at`.
    pub(crate) fn admitted(&self, at: Instant) {
        if let Some(hook) = &self.hook {
            hook.admitted(at);
        }
    }

    /// The request was admitted after a wait: what was learned while it waited held it
    /// back, and only what is learned from now on finds it on the wire.
    pub(crate) fn waited(&mut self) {
        self.blocks = self.limiter().blocks_learned();
    }
}

/// What a response taught: the store write still to finish, and whether the response was a
/// [`Foreseen`] refusal.
#[must_use]
pub(crate) struct Observed {
    learning: Option<Learning>,
    foreseen: bool,
}

impl Observed {
    /// Marks the response (its `extensions`) [`Foreseen`] when it was, and returns the store
    /// write still to finish: what every front end does with an observation.
    pub(crate) fn mark(self, extensions: &mut http::Extensions) -> Option<Learning> {
        if self.foreseen {
            extensions.insert(Foreseen);
        }
        self.learning
    }
}

impl Learn {
    /// The attempt admitted at `admitted` (when its time was read) was answered with
    /// `classification`: the round trip feeds the learned margin, the classification the
    /// key's cooldowns, pauses and learned limits. The returned [`Learning`], when there is
    /// one, finishes writing to the store (bounded by the limiter's learn timeout); a front
    /// end awaits it before it returns the response or retries.
    ///
    /// A rate-limited response is first checked against what was learned while it was on
    /// the wire (before it teaches anything itself): a [`Foreseen`] refusal, which
    /// [`Observed::mark`] marks.
    ///
    /// An attempt that held no place among its key's requests in flight (`placed` false)
    /// gives back, answered, a place of a cap learned while it was on the wire.
    pub(crate) fn observe(
        self,
        admitted: Option<Instant>,
        classification: &Classification,
        placed: bool,
    ) -> Observed {
        if let Some(at) = admitted {
            self.limiter().observe_round_trip(at);
        }
        let refused_in_flight = classification.class() == QuotaClass::RateLimited
            && classification.scope() == Scope::InFlight;
        if !placed && !refused_in_flight {
            self.limiter().in_flight().repay(self.key);
        }
        let foreseen = classification.class() == QuotaClass::RateLimited
            && self.limiter().foresaw(self.key, self.tier(), self.blocks);
        let learning = self.limiter().learn_answer(
            self.key,
            self.tier(),
            classification,
            self.policy.learn_options(),
            foreseen,
        );
        Observed { learning, foreseen }
    }
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        learn: Option<Learn>,
        // When the request was admitted: the round trip feeds the learned margin.
        admitted: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Waiting for admission: the slow path, boxed, so that the future of a request
        // admitted at once does not carry the request and the inner service.
        Waiting {
            waiting: Option<Box<Waiting<S, B>>>,
        },
        // Admitted; a clone of the inner service that was not ready at once is driven ready
        // (boxed: it holds the request). The request's place among its key's requests in
        // flight (a capped key's) is held here and in `Calling` until the response's head;
        // the body holds it on when a classification layer below took the clone in the
        // request's extensions. (In the variants, not beside them: the future of an
        // uncapped request stays the size it was.)
        Readying {
            fut: Pin<Box<Oneshot<S, Request<B>>>>,
            place: Option<InFlightSlot>,
        },
        // The inner service called.
        Calling {
            #[pin]
            fut: S::Future,
            place: Option<InFlightSlot>,
        },
        Learning {
            #[pin]
            fut: Learning,
            out: Option<S::Response>,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

/// A request waiting for admission, with the clone of the inner service it will call.
struct Waiting<S, B> {
    acquire: Acquire,
    inner: S,
    req: Request<B>,
}

impl<S, B> State<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    /// Calls `inner` (a clone of the layer's inner service) with `req` if it is ready at
    /// once (a poll with a no-op waker: a clone not ready registers the real waker when the
    /// response future drives it), else drives it ready in the response future.
    fn call(mut inner: S, mut req: Request<B>, place: Option<InFlightSlot>) -> Self {
        hold(&mut req, &place);
        match inner.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => State::Calling {
                fut: inner.call(req),
                place,
            },
            Poll::Ready(Err(e)) => State::Failed {
                err: Some(e.into()),
            },
            Poll::Pending => State::Readying {
                fut: Box::pin(Oneshot::new(inner, req)),
                place,
            },
        }
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    /// Admitted (at `admitted`, when the clock was read for it): calls a clone of the inner
    /// service, driving it ready first if it is not.
    pub(crate) fn calling(
        inner: S,
        req: Request<B>,
        learn: Option<Learn>,
        admitted: Option<Instant>,
        place: Option<InFlightSlot>,
    ) -> Self {
        // The clock is read only for what needs the time of admission, and only if the
        // admission did not read it.
        let now = learn
            .as_ref()
            .filter(|l| l.wants_time())
            .map(|_| admitted.unwrap_or_else(Instant::now));
        if let (Some(l), Some(now)) = (&learn, now) {
            l.admitted(now);
        }
        ResponseFuture {
            state: State::call(inner, req, place),
            learn,
            admitted: now,
        }
    }

    pub(crate) fn waiting(
        acquire: Acquire,
        inner: S,
        req: Request<B>,
        learn: Option<Learn>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiting: Some(Box::new(Waiting {
                    acquire,
                    inner,
                    req,
                })),
            },
            learn,
            admitted: None,
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { err: Some(err) },
            learn: None,
            admitted: None,
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (resp, placed) = match this.state.as_mut().project() {
                StateProj::Waiting { waiting } => {
                    let w = waiting.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(Pin::new(&mut w.acquire).poll(cx)) {
                        return Poll::Ready(Err(e.into_box()));
                    }

                    let now = Instant::now();
                    *this.admitted = Some(now);
                    if let Some(l) = this.learn.as_mut() {
                        l.admitted(now);
                        l.waited();
                    }
                    // Only now, admitted, does the request reserve the inner service's
                    // readiness: a wait never holds a slot of a `Buffer` or a pool.
                    let Waiting {
                        mut acquire,
                        inner,
                        mut req,
                    } = *waiting.take().expect("checked above");
                    let place = acquire.take_place();
                    hold(&mut req, &place);
                    let fut = Box::pin(Oneshot::new(inner, req));
                    this.state.set(State::Readying { fut, place });
                    continue;
                }
                // The head is here (or the call failed): the state moves on and its place
                // goes with it; the body holds its own clone on.
                StateProj::Readying { fut, place } => {
                    let resp = ready!(fut.as_mut().poll(cx)).map_err(Into::into)?;
                    (resp, place.is_some())
                }
                StateProj::Calling { fut, place } => {
                    (ready!(fut.poll(cx)).map_err(Into::into)?, place.is_some())
                }
                StateProj::Learning { fut, out } => {
                    ready!(fut.poll(cx));
                    return Poll::Ready(Ok(out.take().expect("polled after completion")));
                }
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().expect("polled after completion")));
                }
            };
            let Some(learn) = this.learn.take() else {
                return Poll::Ready(Ok(resp));
            };
            let (resp, pending) = learn_from(learn, *this.admitted, resp, placed);
            match pending {
                None => return Poll::Ready(Ok(resp)),
                Some(fut) => this.state.set(State::Learning {
                    fut,
                    out: Some(resp),
                }),
            }
        }
    }
}

/// Reads the response's [`Classification`] (deriving one from status and headers when none
/// is attached) and hands it to the limiter.
fn learn_from<RB>(
    learn: Learn,
    admitted: Option<Instant>,
    mut resp: Response<RB>,
    placed: bool,
) -> (Response<RB>, Option<Learning>) {
    if let Some(c) = resp.extensions().get::<Classification>() {
        let pending = learn
            .observe(admitted, c, placed)
            .mark(resp.extensions_mut());
        return (resp, pending);
    }
    // Nothing to learn from a success that carries no rate-limit header (the common case):
    // skip classifying it.
    if resp.status().is_success()
        && !crate::classify::generic::has_rate_limit_header(resp.headers())
    {
        if let Some(at) = admitted {
            learn.limiter().observe_round_trip(at);
        }
        return (resp, None);
    }
    let (mut parts, body) = resp.into_parts();
    let c = Generic.classify_at(&parts, &[], learn.limiter().now_wall());
    let pending = learn
        .observe(admitted, &c, placed)
        .mark(&mut parts.extensions);
    (Response::from_parts(parts, body), pending)
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Hands a clone of the request's place among its key's requests in flight to the
/// classification layer below (in the request's extensions), which keeps it in the response
/// body until the body ends; the response future keeps its own until the response's head.
#[inline]
fn hold<B>(req: &mut Request<B>, place: &Option<InFlightSlot>) {
    if let Some(place) = place {
        req.extensions_mut().insert(place.clone());
    }
}
