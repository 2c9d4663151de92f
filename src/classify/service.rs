//! [`QuotaClassify`]: the service.

use std::task::{Context, Poll};

use http::Response;
use http_body::Body;
use tower_service::Service;

use super::{future::ResponseFuture, Classify, PeekBody};
use crate::clock::WallClock;
use crate::limit::{InFlightSlot, UsageHook};

/// Classifies every response of the inner service; made by
/// [`QuotaClassifyLayer`](crate::QuotaClassifyLayer).
#[derive(Debug, Clone)]
pub struct QuotaClassify<S, C> {
    inner: S,
    classifier: C,
    max_body: usize,
    clock: WallClock,
}

impl<S, C> QuotaClassify<S, C> {
    pub(crate) fn new(inner: S, classifier: C, max_body: usize, clock: WallClock) -> Self {
        QuotaClassify {
            inner,
            classifier,
            max_body,
            clock,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, B, C> Service<http::Request<ReqB>> for QuotaClassify<S, C>
where
    S: Service<http::Request<ReqB>, Response = Response<B>>,
    B: Body,
    C: Classify + Clone,
{
    type Response = Response<PeekBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqB>) -> Self::Future {
        let attach_plain = self.classifier.attach_plain_success();
        // A token reservation the rate limiter above left for this layer (not for the client).
        let usage = request.extensions_mut().remove::<UsageHook>();
        // The request's place among its key's requests in flight, which the rate limiter
        // above left for the response body to hold until it ends.
        let place = request.extensions_mut().remove::<InFlightSlot>();
        ResponseFuture::new(
            self.inner.call(request),
            self.classifier.clone(),
            self.max_body,
            self.clock.clone(),
            attach_plain,
            usage,
            place,
        )
    }
}
