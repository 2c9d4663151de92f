//! [`ResponseFuture`]: waits for admission, calls the inner service, learns from the response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use tokio::time::Instant;
use tower::util::Oneshot;

use super::key::Key;
use super::layer::Policy;
use super::limiter::{Acquire, Learning, Limiter};
use super::quota::Tier;
use super::reconcile::UsageHook;
use super::BoxError;
use crate::classify::{Classification, Classify, Generic};

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
}

impl Learn {
    /// The attempt admitted at `admitted` (when its time was read) was answered with
    /// `classification`: the round trip feeds the learned margin, the classification the
    /// key's cooldowns, pauses and learned limits. The returned [`Learning`], when there is
    /// one, finishes writing to the store (bounded by the limiter's learn timeout); a front
    /// end awaits it before it returns the response or retries.
    pub(crate) fn observe(
        self,
        admitted: Option<Instant>,
        classification: &Classification,
    ) -> Option<Learning> {
        if let Some(at) = admitted {
            self.limiter().observe_round_trip(at);
        }
        self.limiter().learn(
            self.key,
            self.tier(),
            classification,
            self.policy.learn_options(),
        )
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
        Waiting {
            acquire: Acquire,
            inner: Option<S>,
            req: Option<Request<B>>,
        },
        Calling {
            #[pin]
            fut: Oneshot<S, Request<B>>,
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

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// Admitted (at `admitted`, when the clock was read for it): drives a clone of the inner
    /// service ready, then calls it.
    pub(crate) fn calling(
        inner: S,
        req: Request<B>,
        learn: Option<Learn>,
        admitted: Option<Instant>,
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
            state: State::Calling {
                fut: Oneshot::new(inner, req),
            },
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
                acquire,
                inner: Some(inner),
                req: Some(req),
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
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    acquire,
                    inner,
                    req,
                } => {
                    if let Err(e) = ready!(Pin::new(acquire).poll(cx)) {
                        return Poll::Ready(Err(e.into_box()));
                    }
                    let inner = inner.take().expect("polled after completion");
                    let req = req.take().expect("polled after completion");
                    let now = Instant::now();
                    *this.admitted = Some(now);
                    if let Some(l) = this.learn.as_ref() {
                        l.admitted(now);
                    }
                    // Only now, admitted, does the request reserve the inner service's
                    // readiness: a wait never holds a slot of a `Buffer` or a pool.
                    this.state.set(State::Calling {
                        fut: Oneshot::new(inner, req),
                    });
                }
                StateProj::Calling { fut } => {
                    let resp = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let Some(learn) = this.learn.take() else {
                        return Poll::Ready(Ok(resp));
                    };
                    let (resp, pending) = learn_from(learn, *this.admitted, resp);
                    match pending {
                        None => return Poll::Ready(Ok(resp)),
                        Some(fut) => this.state.set(State::Learning {
                            fut,
                            out: Some(resp),
                        }),
                    }
                }
                StateProj::Learning { fut, out } => {
                    ready!(fut.poll(cx));
                    return Poll::Ready(Ok(out.take().expect("polled after completion")));
                }
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err.take().expect("polled after completion")));
                }
            }
        }
    }
}

/// Reads the response's [`Classification`] (deriving one from status and headers when none
/// is attached) and hands it to the limiter.
fn learn_from<RB>(
    learn: Learn,
    admitted: Option<Instant>,
    resp: Response<RB>,
) -> (Response<RB>, Option<Learning>) {
    if let Some(c) = resp.extensions().get::<Classification>() {
        let pending = learn.observe(admitted, c);
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
    let (parts, body) = resp.into_parts();
    let c = Generic.classify_at(&parts, &[], learn.limiter().now_wall());
    let pending = learn.observe(admitted, &c);
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
