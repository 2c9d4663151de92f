//! The same pacing, classification and retries for reqwest (feature `reqwest-middleware`):
//! [`QuotaMiddleware`], a [`reqwest_middleware::Middleware`].
//!
//! It is configured like the tower stack — it is made from a [`QuotaLayer`] — and runs the
//! same code for each attempt of a request:
//!
//! 1. **Pacing**: the request's tier, key and cost come from the [`RateLimitLayer`] (keys
//!    read the request's method, URL and headers, and the *middleware* extensions — where
//!    `RequestBuilder::with_extension(Model::new(…))` puts a [`Model`](crate::limit::Model));
//!    the attempt waits on the shared [`Limiter`] before it is sent. A limiter failure
//!    ([`RateLimited`], [`CostExceedsLimit`], a store error) is returned at once as
//!    [`reqwest_middleware::Error::Middleware`], downcastable to its type; it is not retried.
//! 2. **Classification**: each response is classified by the [`QuotaClassifyLayer`]'s
//!    classifier ([`Auto`] by default) from its status, headers and — for the responses the
//!    classifier reads (4xx and 5xx by default) — at most the layer's `max_body` bytes of its
//!    body (64 KiB by default). Nothing past the cap is read ahead of time and nothing is
//!    lost: the response handed back streams the bytes read first, then the rest of the body
//!    from the connection (or the error the body failed with). A 2xx body is never read. The
//!    [`Classification`] is put in the response's extensions; the response keeps its status,
//!    headers, version, extensions and URL.
//! 3. **Learning**: the limiter learns from the classification (cooldowns after a 429,
//!    pauses until a reset, tightened counts), as [`Limiter::learn`] describes.
//! 4. **Retrying**: the [`RetryAfterLayer`]'s decision ([`Standard`] by default, or any
//!    [`Decide`] over [`reqwest_middleware::Error`]), bounds (attempts, `max_delay`, deadline,
//!    backoff) and retry budget decide whether and when to send the request again — the very
//!    code the tower service runs. The caller gets the last response unchanged, with a
//!    [`RetryInfo`] in its extensions after a retry or a refusal to retry.
//!
//! A request whose body cannot be cloned (a stream: `Request::try_clone()` is `None`) is sent
//! once: retrying stops with [`StopReason::NotReplayable`]. The layer's replay cap
//! (`with_max_replay_bytes`) does not apply: reqwest bodies are either in memory or streams.
//!
//! The `tracing` events are those of the tower layers: `"rate limit: waiting"`,
//! `"rate limit: cooling down"`, `"classified response"`, `"retrying"`, `"not retrying"`.
//!
//! Put the middleware first among your middlewares (outermost), so that every attempt also
//! goes through those after it.
//!
//! # Example
//!
//! Twenty-five requests to the simulated OpenRouter free tier served on loopback, with the
//! minute scaled down to half a second: the last five wait for the window, none gets a 429.
//!
//! ```
//! use std::time::Duration;
//! use reqwest_middleware::ClientBuilder;
//! use tower_quota::classify::{Classification, QuotaClass};
//! use tower_quota::reqwest::QuotaMiddleware;
//! use tower_quota::{sim, Quota, QuotaLayer, RateLimitLayer, Tier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let minute = Duration::from_millis(500);
//! let simulator = sim::Simulator::builder()
//!     .key("sk-or-v1-demo", sim::Tier::openrouter_free())
//!     .minute(minute)
//!     .build();
//! let (addr, server) = simulator.serve(([127, 0, 0, 1], 0)).await?;
//!
//! let tier = Tier::new("free").with_quota(Quota::new(20, minute));
//! let layer = QuotaLayer::new(tier)
//!     // On a real network, a small margin absorbs the latency differences between requests.
//!     .with_margin(Duration::from_millis(100));
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(QuotaMiddleware::from(layer))
//!     .build();
//!
//! for _ in 0..25 {
//!     let response = client
//!         .post(format!("http://{addr}/api/v1/chat/completions"))
//!         .bearer_auth("sk-or-v1-demo")
//!         .body(r#"{"model":"meta-llama/llama-3.3-70b-instruct:free"}"#)
//!         .send()
//!         .await?;
//!     assert_eq!(response.status(), 200);
//!     let verdict = response.extensions().get::<Classification>().unwrap();
//!     assert_eq!(verdict.class(), QuotaClass::Success);
//! }
//! assert_eq!(simulator.stats().rate_limited, 0);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`RetryAfterLayer`]: crate::RetryAfterLayer
//! [`Standard`]: crate::retry::Standard
//! [`Decide`]: crate::retry::Decide
//! [`RetryInfo`]: crate::retry::RetryInfo
//! [`StopReason::NotReplayable`]: crate::retry::StopReason::NotReplayable
//! [`RateLimited`]: crate::limit::RateLimited
//! [`CostExceedsLimit`]: crate::limit::CostExceedsLimit
//! [`Limiter::learn`]: crate::limit::Limiter::learn
//! [`Classification`]: crate::classify::Classification

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use ::reqwest::{Request, Response, ResponseBuilderExt};
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::classify::{self, Auto, Classification, Classify, PeekBody, QuotaClassifyLayer};
use crate::limit::{
    AcquireError, InFlightSlot, Limiter, RateLimitLayer, RequestHead, Tier, UsageHook,
};
use crate::retry::attempts::{Attempts, Then};
use crate::retry::{Decide, Shared, Standard};
use crate::QuotaLayer;

/// Paces, classifies and retries the requests of a
/// [`reqwest_middleware::ClientWithMiddleware`]: see the [module docs](self).
///
/// Made from a [`QuotaLayer`] (`QuotaMiddleware::from(layer)`) or a [`Tier`]
/// ([`QuotaMiddleware::new`]). Clones share the limiter, the retry budget and the jitter
/// source; so do a `QuotaLayer` and the middleware made from it (or from its clones), so a
/// tower client and a reqwest client can share one limit.
pub struct QuotaMiddleware<C = Auto, D = Standard> {
    retry: Arc<Shared<D>>,
    rate_limit: RateLimitLayer,
    classify: QuotaClassifyLayer<C>,
}

impl QuotaMiddleware {
    /// The middleware of `QuotaLayer::new(tier)`: pacing `tier` under one global key, the
    /// [`Auto`] classifier, the default retries.
    pub fn new(tier: Tier) -> QuotaMiddleware {
        QuotaMiddleware::from(QuotaLayer::new(tier))
    }
}

impl<C: Clone, D: Clone> From<QuotaLayer<C, D>> for QuotaMiddleware<C, D> {
    fn from(layer: QuotaLayer<C, D>) -> Self {
        let (retry, rate_limit, classify) = layer.parts();
        QuotaMiddleware {
            retry: retry.shared(),
            rate_limit,
            classify,
        }
    }
}

impl<C, D> QuotaMiddleware<C, D> {
    /// The shared limiter (for [`Limiter::snapshot`], or to share it with a tower client).
    pub fn limiter(&self) -> &Limiter {
        self.rate_limit.limiter()
    }
}

impl<C: Clone, D> Clone for QuotaMiddleware<C, D> {
    fn clone(&self) -> Self {
        QuotaMiddleware {
            retry: Arc::clone(&self.retry),
            rate_limit: self.rate_limit.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<C: fmt::Debug, D> fmt::Debug for QuotaMiddleware<C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaMiddleware")
            .field("max_attempts", &self.retry.limits.max_attempts)
            .field("max_delay", &self.retry.limits.max_delay)
            .field("deadline", &self.retry.limits.deadline)
            .field("rate_limit", &self.rate_limit)
            .field("classify", &self.classify)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<C, D> Middleware for QuotaMiddleware<C, D>
where
    C: Classify + Send + Sync + 'static,
    D: Decide<reqwest_middleware::Error> + Send + Sync + 'static,
{
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // The crate's per-attempt core decides; this only translates reqwest's types.
        let mut run = Attempts::new(Arc::clone(&self.retry));
        // A JSON body in memory is read for the limiter (its model and token costs), as the
        // tower stack does.
        let read_facts = run.shared().read_facts;
        if let Some(bytes) = req
            .body()
            .and_then(::reqwest::Body::as_bytes)
            .filter(|_| read_facts)
        {
            let hint = http_body::SizeHint::with_exact(bytes.len() as u64);
            let cap = crate::tokens::extract::MAX_FACTS_BYTES;
            if crate::tokens::extract::worth_reading(req.headers(), &hint, cap) {
                crate::tokens::extract::note_facts(extensions, &[bytes]);
            }
        }
        // The URL as an `http::Uri`, for keys, tier selectors and cost functions.
        let uri: http::Uri = req.url().as_str().parse().unwrap_or_default();
        let mut template = if run.may_retry() {
            req.try_clone()
        } else {
            None
        };
        let replayable = template.is_some();
        let mut first = Some(req);
        // The URL of the last response (the one `run` may hold and hand back).
        let mut url = None;
        loop {
            let last = run.begin();
            let req = match first.take() {
                Some(req) => req,
                // A retry happens only when the template exists (`replayable`), and a
                // clone of a clone-able request is clone-able.
                None if last => template.take().expect("a retry needs a cloneable request"),
                None => template
                    .as_ref()
                    .and_then(Request::try_clone)
                    .expect("a retry needs a cloneable request"),
            };
            let head = RequestHead {
                method: req.method(),
                uri: &uri,
                headers: req.headers(),
                extensions,
            };
            let then = 'attempt: {
                let (learn, place) = match self.rate_limit.policy.admission(&head) {
                    Some((admit, mut learn)) => match admit.decide().await {
                        Ok(place) => {
                            if let Some(learn) = &mut learn {
                                learn.waited();
                            }
                            (learn, place)
                        }
                        Err(e) => break 'attempt run.error(acquire_error(e), replayable),
                    },
                    None => (None, None),
                };
                let admitted = Instant::now();
                if let Some(learn) = &learn {
                    learn.admitted(admitted);
                }
                let response = match next.clone().run(req, &mut *extensions).await {
                    Ok(response) => response,
                    Err(e) => break 'attempt run.error(e, replayable),
                };
                let hook = learn.as_ref().and_then(|l| l.hook.clone());
                let placed = place.is_some();
                // The body holds the request's place in flight until it ends.
                let (mut response, at) = self.classify(response, hook, place).await;
                url = Some(at);
                if let Some(learn) = learn {
                    let classification = response
                        .extensions()
                        .get::<Classification>()
                        .expect("the classifier attached one");
                    let observed = learn.observe(Some(admitted), classification, placed);
                    if let Some(pending) = observed.mark(response.extensions_mut()) {
                        pending.await;
                    }
                }
                run.response(response, replayable)
            };
            match then {
                Then::RetryAt(at) => tokio::time::sleep_until(at).await,
                Then::Done(result) => {
                    return result.map(|response| {
                        into_reqwest(response, url.take().expect("a response has a URL"))
                    })
                }
            }
        }
    }
}

impl<C: Classify, D> QuotaMiddleware<C, D> {
    /// Classifies `response` with the code of [`QuotaClassifyLayer`]: the body prefix is
    /// read through a [`PeekBody`], which hands every byte on.
    async fn classify(
        &self,
        response: Response,
        usage: Option<UsageHook>,
        place: Option<InFlightSlot>,
    ) -> (http::Response<PeekBody<::reqwest::Body>>, ::reqwest::Url) {
        let url = response.url().clone();
        let response = http::Response::<::reqwest::Body>::from(response);
        let layer = &self.classify;
        let classified = classify::ResponseFuture::new(
            std::future::ready(Ok::<_, Infallible>(response)),
            &layer.classifier,
            layer.max_body,
            layer.clock.clone(),
            true,
            usage,
            place,
        );
        match classified.await {
            Ok(response) => (response, url),
            Err(never) => match never {},
        }
    }
}

/// Back to a `reqwest::Response`, with the URL the conversion to `http` dropped.
fn into_reqwest(
    response: http::Response<PeekBody<::reqwest::Body>>,
    url: ::reqwest::Url,
) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Ok(with_url) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(with_url.into_parts().0.extensions);
    }
    Response::from(http::Response::from_parts(
        parts,
        ::reqwest::Body::wrap(body),
    ))
}

/// The limiter's typed error, as `reqwest_middleware::Error::Middleware`.
fn acquire_error(e: AcquireError) -> reqwest_middleware::Error {
    match e {
        AcquireError::RateLimited(e) => reqwest_middleware::Error::middleware(e),
        AcquireError::CostExceedsLimit(e) => reqwest_middleware::Error::middleware(e),
        AcquireError::Store(e) => reqwest_middleware::Error::middleware(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_middleware() {
        fn check<M: Middleware + Clone>(_: &M) {}
        let m = QuotaMiddleware::new(Tier::new("t"));
        check(&m);
        assert!(format!("{m:?}").contains("max_attempts: 5"));
    }
}
