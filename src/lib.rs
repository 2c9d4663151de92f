//! Tower middleware for calling rate-limited LLM routers — OpenRouter, a LiteLLM proxy,
//! OpenAI- and Anthropic-compatible APIs — without tripping their limits, and recovering
//! exactly as the server asks when a limit is tripped anyway.
//!
//! ```text
//! request ─▶ RetryAfter ─▶ RateLimit ─▶ QuotaClassify ─▶ inner client ─▶ server
//! response ◀─ RetryAfter ◀─ RateLimit ◀─ QuotaClassify ◀─ inner client ◀─┘
//!            decides:       learns:       attaches a Classification
//!            retry/return   cooldown,     to the response's extensions
//!                           remaining
//! ```
//!
//! - [`QuotaClassifyLayer`] tells rate-limited from quota-exhausted from provider-down from
//!   auth and bad requests — from the status, the headers ([`headers`]) and the provider's
//!   JSON error body ([`classify`]) — and attaches the
//!   [`Classification`](classify::Classification) to the response. The body is handed on
//!   intact.
//! - [`RateLimitLayer`] paces requests to every window of a [`Tier`] at once (20/min *and*
//!   50/day), keyed per API key or model, never more than N admissions in any window of
//!   length W; it waits rather than fails (or rejects, for gateways), and learns from what
//!   the server says: cooldowns on 429, `remaining`/`reset` headers ([`limit`], [`tiers`]).
//! - [`RetryAfterLayer`] retries exactly as the server asks — `Retry-After` in every form,
//!   `retry-after-ms`, gRPC pushback, vendor reset headers, body hints — else with jittered
//!   exponential backoff; bounded by attempts, deadline and a retry budget; never retries
//!   what cannot succeed ([`retry`]).
//!
//! The simulated OpenRouter-compatible provider that the examples and tests run against is
//! `tower_quota::sim` (feature `sim`).
//!
//! # Example
//!
//! The stack of the design, in paused tokio time: a server that answers one 429 with
//! `Retry-After: 2`, then succeeds; and a daily cap that is never retried.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_quota::classify::{Classification, QuotaClass};
//! use tower_quota::retry::{ReplayBody, RetryInfo};
//! use tower_quota::{tiers, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // Any tower HTTP service: hyper-util's client, a tonic channel, a test double.
//! let upstream = tower::service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let (status, retry_after, body) = match (req.uri().path(), n) {
//!             ("/daily", _) => (429, None, r#"{"error":{"message":"Rate limit exceeded: free-models-per-day","code":429}}"#),
//!             (_, 0) => (429, Some("2"), r#"{"error":{"message":"Rate limit exceeded: free-models-per-min","code":429}}"#),
//!             _ => (200, None, r#"{"choices":[]}"#),
//!         };
//!         let mut resp = http::Response::builder().status(status);
//!         if let Some(delay) = retry_after {
//!             resp = resp.header("retry-after", delay);
//!         }
//!         Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(RetryAfterLayer::new())                        // outermost: each attempt re-enters the limiter
//!     .layer(RateLimitLayer::new(tiers::openrouter::free())) // 20/min rolling + 50/UTC day
//!     .layer(QuotaClassifyLayer::default())                 // recognises OpenRouter's error shape
//!     .service(upstream);
//!
//! let start = tokio::time::Instant::now();
//! let resp = client.clone().oneshot(http::Request::new(Full::from("{}"))).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert!(start.elapsed() >= Duration::from_secs(2)); // waited as the server asked
//! assert_eq!(RetryInfo::get(resp.extensions()).attempts, 2);
//!
//! let resp = client
//!     .oneshot(http::Request::get("/daily").body(Full::from("{}")).unwrap())
//!     .await
//!     .unwrap();
//! let verdict = resp.extensions().get::<Classification>().unwrap();
//! assert_eq!(verdict.class(), QuotaClass::QuotaExhausted); // not a one-minute rate limit:
//! assert!(verdict.reset_after().is_some()); // it comes back at the next UTC midnight
//! assert_eq!(RetryInfo::get(resp.extensions()).attempts, 1); // and is not retried
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod clock;
pub mod headers;
pub mod limit;
pub mod retry;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tiers;

pub use classify::QuotaClassifyLayer;
pub use limit::{Quota, RateLimitLayer, Tier};
pub use retry::RetryAfterLayer;
