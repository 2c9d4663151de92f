//! Retrying exactly as the server asks: [`RetryAfterLayer`].
//!
//! Each attempt's response is judged from its [`Classification`] — the one
//! [`QuotaClassifyLayer`](crate::classify) put in the response's extensions, or, when there is
//! none, the one the [`Generic`](crate::classify::Generic) classifier derives from status and
//! headers. Then:
//!
//! - **Whether** to retry ([`Standard`], replaceable with any [`Decide`], closures included):
//!   the server's explicit verdict when it gave one (`x-should-retry`, OpenRouter's
//!   `availability.retryable`, a negative gRPC pushback); else the class — `RateLimited`,
//!   `Overloaded`, `Unavailable`, `Timeout` and `ServerError` are retried; `QuotaExhausted`
//!   only when the server gave a delay; `Auth`, `Forbidden`, `InvalidRequest` and
//!   `ClientError` never. Transport errors from the inner service are retried too, when the
//!   request body can be replayed, and the last one is returned as it is — except the rate
//!   limiter's own refusals ([`RateLimited`](crate::limit::RateLimited): its wait would
//!   exceed `max_delay`), which go back to the caller at once.
//! - **When**: after the server's delay ([`Classification::retry_after`]: `retry-after-ms`,
//!   `Retry-After` in seconds or as an HTTP-date, `grpc-retry-pushback-ms`, a delay in the
//!   error body) — never earlier, plus an upward jitter uniform in `[0, min(10 %, 1 s)]` so
//!   that many clients told the same delay do not come back in the same millisecond. A server
//!   delay above `max_delay` (default 60 s) is not waited out: the response is returned at
//!   once. Without a server delay, after an exponential [`Backoff`] (0.5 s doubling to 8 s,
//!   equal jitter).
//! - **Bounds**: at most 5 attempts in all, an optional overall deadline, and a retry
//!   [`Budget`] (tower's own; [`TpsBudget`] by default) so that a failing upstream is not
//!   hammered.
//!
//! The caller gets the **last response unchanged** — status, headers, body and
//! classification — never a synthetic one. Its extensions carry a [`RetryInfo`]: how many
//! attempts were made and why retrying stopped ([`StopReason`]) — except after a success on
//! the first attempt, which has nothing to report ([`RetryInfo::get`] covers both). A bound
//! that stops retries also says so in a `tracing` event (level `DEBUG`, with `attempts`,
//! `class` and `reason` fields), and so does each retry. Dropping the response future stops
//! everything at once, mid-wait included: no further attempt is sent.
//!
//! Time is `tokio::time`, so under `tokio::time::pause()` the waits take no real time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_quota::classify::{Classification, QuotaClass};
//! use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
//! use tower_quota::RetryAfterLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A server that is rate limited once and asks for 2 seconds, then answers.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let server = tower::service_fn(move |_req: http::Request<ReplayBody<Full<Bytes>>>| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let mut resp = http::Response::new(());
//!         if n == 0 {
//!             *resp.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
//!             resp.headers_mut().insert("retry-after", "2".parse().unwrap());
//!             // What QuotaClassifyLayer would attach.
//!             resp.extensions_mut().insert(
//!                 Classification::new(QuotaClass::RateLimited)
//!                     .with_retry_after(Duration::from_secs(2)),
//!             );
//!         }
//!         Ok::<_, std::convert::Infallible>(resp)
//!     }
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(RetryAfterLayer::new().with_max_delay(Duration::from_secs(30)))
//!     .service(server);
//!
//! let start = tokio::time::Instant::now();
//! let req = http::Request::new(Full::new(Bytes::from_static(b"{\"model\":\"x\"}")));
//! let resp = client.ready().await.unwrap().call(req).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert!(start.elapsed() >= Duration::from_secs(2)); // as asked, plus at most 10 %
//! assert!(start.elapsed() <= Duration::from_millis(2200));
//! let info = resp.extensions().get::<RetryInfo>().unwrap();
//! assert_eq!((info.attempts, info.stopped), (2, StopReason::Success));
//! # }
//! ```
//!
//! # Request bodies, and what changes for hyper-util and tonic users
//!
//! A request is sent again with the very same bytes. The service wraps each request's body in
//! a [`ReplayBody`], which records the bytes as the first attempt streams them — up to a cap,
//! 2 MiB by default ([`with_max_replay_bytes`](RetryAfterLayer::with_max_replay_bytes)) — and
//! replays them (and the trailers) for later attempts. Cloneable bodies need nothing special:
//! recording a `Full<Bytes>` costs a reference count, not a copy. A body that passes the cap
//! is still sent whole by the attempt reading it, but not retried
//! ([`StopReason::NotReplayable`]); an exact size hint above the cap is known up front, and
//! nothing is recorded.
//!
//! So the **inner service sees `http::Request<ReplayBody<B>>`**, not `http::Request<B>`:
//!
//! - **hyper-util**: build the client for the wrapped body type; the outer service still
//!   takes your own body type.
//!
//!   ```ignore
//!   let client: Client<_, ReplayBody<Full<Bytes>>> =
//!       Client::builder(TokioExecutor::new()).build(connector);
//!   let svc = ServiceBuilder::new().layer(RetryAfterLayer::new()).service(client);
//!   // svc: Service<http::Request<Full<Bytes>>>
//!   ```
//!
//! - **tonic** (0.13 and later): a `Channel` takes `http::Request<tonic::body::Body>` only,
//!   so box the replay body back into one between the layer and the channel, and give the
//!   generated client the resulting service (it is generic over any `GrpcService`):
//!
//!   ```ignore
//!   let svc = ServiceBuilder::new()
//!       .layer(RetryAfterLayer::new())
//!       .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
//!           req.map(tonic::body::Body::new)
//!       })
//!       .service(channel);
//!   let client = MyServiceClient::new(svc);
//!   ```
//!
//!   The inner service must be `Clone` (a `Channel` is); the `map_request` stage is.
//!
//! The body must be `Unpin` (most are; `Box::pin` one that is not), its data a `bytes::Buf`
//! and its error convertible into `tower::BoxError`. The `ReplayBody`'s data is `Bytes` and
//! its error a `BoxError`.
//!
//! # Stacking
//!
//! Put this layer outermost, so that every attempt goes through the rate limiter again:
//! `RetryAfterLayer` → `RateLimitLayer` → `QuotaClassifyLayer` → the client.
//!
//! [`Classification`]: crate::classify::Classification
//! [`Classification::retry_after`]: crate::classify::Classification::retry_after

pub(crate) mod attempts;
mod backoff;
mod budget;
mod error;
mod future;
mod layer;
mod policy;
mod replay;
mod service;

pub use backoff::{Backoff, Jitter};
pub use budget::{Budget, NoBudget, TpsBudget};
pub use error::ReplayError;
pub use future::ResponseFuture;
pub use layer::RetryAfterLayer;
pub use policy::{
    is_not_sent, Attempt, Decide, Idempotent, NotSent, Outcome, RetryInfo, Standard, StopReason,
    Verdict,
};
pub use replay::{ReplayBody, DEFAULT_MAX_REPLAY_BYTES};
pub use service::RetryAfter;

#[cfg(feature = "reqwest-middleware")]
pub(crate) use service::Shared;
