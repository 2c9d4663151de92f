//! The same pacing, classification, retries and token reconciliation for
//! [async-openai](https://docs.rs/async-openai) clients (feature `async-openai`):
//! [`QuotaHttpService`], the HTTP service an `async_openai::Client` sends its requests
//! through (`Client::with_http_service`, async-openai's `middleware` feature).
//!
//! It is a thin adapter: each request async-openai builds goes through the
//! [reqwest middleware](crate::reqwest) — the crate's one per-attempt core — so it is paced
//! by the [`QuotaLayer`]'s limiter, classified, retried exactly as the server asks, and, for
//! a tier with token quotas, reserved from its JSON body and corrected to the `usage` the
//! answer reports (streamed answers too, as async-openai reads them). Give it the retries:
//! async-openai's own retry layer is not in the path of a custom service.
//!
//! Errors come back as async-openai's: a transport error as `OpenAIError::Reqwest`, the
//! limiter's refusal ([`RateLimited`]) as `OpenAIError::Boxed`,
//! downcastable; a server's error answer is what async-openai makes of it (its
//! `ApiError`), after the retries the classification allowed.
//!
//! # Example
//!
//! ```
//! use async_openai::{config::OpenAIConfig, Client};
//! use tower_quota::openai::QuotaHttpService;
//! use tower_quota::{tiers, QuotaLayer};
//!
//! let layer = QuotaLayer::new(tiers::openrouter::free());
//! let limiter = layer.limiter().clone(); // for snapshots and metrics
//! let config = OpenAIConfig::new()
//!     .with_api_base("https://openrouter.ai/api/v1")
//!     .with_api_key("sk-or-v1-…");
//! let client = Client::with_config(config).with_http_service(QuotaHttpService::from(layer));
//! # let _ = (client, limiter);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower_service::Service;

use crate::classify::Classify;
use crate::limit::store::StoreError;
use crate::limit::{CostExceedsLimit, Limiter, RateLimited, Tier};
use crate::reqwest::QuotaMiddleware;
use crate::retry::Decide;
use crate::QuotaLayer;

/// The HTTP service of an `async_openai::Client` that paces, classifies, retries and
/// reconciles its requests: see the [module docs](self).
///
/// Made from a [`QuotaLayer`] (`QuotaHttpService::from(layer)`) or a [`Tier`]
/// ([`QuotaHttpService::new`]). Clones share the limiter (and with it every tower or reqwest
/// client made from the same layer).
#[derive(Clone)]
pub struct QuotaHttpService {
    client: ClientWithMiddleware,
    limiter: Limiter,
}

impl QuotaHttpService {
    /// The service of `QuotaLayer::new(tier)`, over a default `reqwest::Client`.
    pub fn new(tier: Tier) -> QuotaHttpService {
        QuotaHttpService::from(QuotaLayer::new(tier))
    }

    /// The service of `layer`, over `http_client` (its timeouts, proxies, TLS settings).
    pub fn with_http_client<C, D>(layer: QuotaLayer<C, D>, http_client: reqwest::Client) -> Self
    where
        C: Classify + Clone + Send + Sync + 'static,
        D: Decide<reqwest_middleware::Error> + Clone + Send + Sync + 'static,
    {
        let limiter = layer.limiter().clone();
        let client = ClientBuilder::new(http_client)
            .with(QuotaMiddleware::from(layer))
            .build();
        QuotaHttpService { client, limiter }
    }

    /// A service over a reqwest-middleware client you built yourself: put a
    /// [`QuotaMiddleware`] first among its middlewares; `limiter` is its limiter.
    pub fn from_client(client: ClientWithMiddleware, limiter: Limiter) -> QuotaHttpService {
        QuotaHttpService { client, limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<C, D> From<QuotaLayer<C, D>> for QuotaHttpService
where
    C: Classify + Clone + Send + Sync + 'static,
    D: Decide<reqwest_middleware::Error> + Clone + Send + Sync + 'static,
{
    fn from(layer: QuotaLayer<C, D>) -> Self {
        QuotaHttpService::with_http_client(layer, reqwest::Client::new())
    }
}

impl Service<HttpRequestFactory> for QuotaHttpService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        // Waiting for the limiter happens per request, in the future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            client.execute(request).await.map_err(openai_error)
        })
    }
}

/// A reqwest-middleware error as async-openai's: the limiter's own errors boxed as
/// themselves, so that callers can downcast them.
fn openai_error(e: reqwest_middleware::Error) -> OpenAIError {
    let e = match e {
        reqwest_middleware::Error::Reqwest(e) => return OpenAIError::Reqwest(e),
        reqwest_middleware::Error::Middleware(e) => e,
    };
    let e = match e.downcast::<RateLimited>() {
        Ok(limited) => return OpenAIError::Boxed(Box::new(limited)),
        Err(e) => e,
    };
    let e = match e.downcast::<CostExceedsLimit>() {
        Ok(cost) => return OpenAIError::Boxed(Box::new(cost)),
        Err(e) => e,
    };
    match e.downcast::<StoreError>() {
        Ok(store) => OpenAIError::Boxed(Box::new(store)),
        Err(e) => OpenAIError::Boxed(e.into()),
    }
}

impl fmt::Debug for QuotaHttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaHttpService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
