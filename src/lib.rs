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
//! Token quotas (OpenAI's TPM, Anthropic's input and output tokens, LiteLLM's `tpm`) cost
//! each request from its JSON body, read once, and are corrected to the `usage` the answer
//! reports as its body streams through ([`tokens`], [`limit::Cost`], [`limit::Reconcile`]).
//! The same stack drives reqwest (`tower_quota::reqwest`, feature `reqwest-middleware`) and async-openai
//! (`tower_quota::openai`, feature `async-openai`), through one per-attempt core. All of it
//! is set through one builder, [`QuotaLayer`].
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
//!
//! # The whole stack in one line
//!
//! [`QuotaLayer::new(tier)`](QuotaLayer) composes [`RetryAfterLayer`] (outermost: every
//! attempt goes through the limiter again) → [`RateLimitLayer`] → [`QuotaClassifyLayer`] with
//! the [`Auto`](classify::Auto) classifier; its example runs against the bundled simulator
//! (`tower_quota::sim`, feature `sim`). With the feature `reqwest-middleware`, `tower_quota::reqwest`
//! brings the same pacing, classification and retries to a
//! `reqwest_middleware::ClientWithMiddleware`, configured by the same `QuotaLayer`. With the
//! feature `serde`, [`Tier`], [`Quota`] and [`KeyBy`] read from configuration
//! files (`{ name = "free", quotas = [{ limit = 20, window = "1m" }, { limit = 50, per =
//! "utc-day" }] }`).
//!
//! # Observability
//!
//! **Metrics**: [`Limiter::snapshot`](limit::Limiter::snapshot) gives, per key, each window's
//! limit, used and remaining units, whether the key is blocked and until when, and how many
//! requests wait; its example feeds gauges. Each response says what happened to it in its
//! extensions: its [`Classification`](classify::Classification) and, after a retry or a
//! refusal to retry, a [`RetryInfo`](retry::RetryInfo).
//!
//! **Events**: every layer speaks through `tracing`, with the same field names and values
//! everywhere: durations in whole milliseconds (`*_ms`), `class`, `scope` and `reason` as the
//! short names of [`QuotaClass::as_str`](classify::QuotaClass::as_str),
//! [`Scope::as_str`](classify::Scope::as_str), [`StopReason::as_str`](retry::StopReason::as_str)
//! and [`Reason::as_str`](limit::Reason::as_str), `key` as the hash (never the API key) and
//! `tier` as the tier's name.
//!
//! | message | level | fields |
//! |---|---|---|
//! | `classified response` (every non-success) | DEBUG | `status`, `class`, `scope`, `retry_after_ms`, `code` |
//! | `rate limit: waiting` | DEBUG | `key`, `tier`, `wait_ms` |
//! | `rate limit: request not admitted` | DEBUG (one per refused request: a gateway refuses many) | `key`, `tier`, `reason` (`rejected`, `max_wait`), `retry_after_ms` |
//! | `rate limit: cooling down` | INFO | `key`, `tier`, `class`, `delay_ms` |
//! | `rate limit: window exhausted, pausing until reset` | INFO | `key`, `tier`, `reset_ms` |
//! | `rate limit: adopting the server's limit` | INFO | `key`, `tier`, `quota`, `limit` |
//! | `rate limit: not cooling the key down for a model- or upstream-scoped limit` | DEBUG | `key`, `tier`, `scope` |
//! | `retrying` | DEBUG | `attempts` (made so far), `class` (`transport_error` for an error), `delay_ms`, `server_delay_ms` |
//! | `not retrying` (any stop but a plain success) | DEBUG | `attempts`, `class`, `reason`, `server_delay_ms` |
//! | `rate limit: could not record what a response taught` | WARN | `error` |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod clock;
pub mod headers;
pub mod limit;
#[cfg(feature = "async-openai")]
pub mod openai;
#[cfg(feature = "reqwest-middleware")]
pub mod reqwest;
pub mod retry;
#[cfg(feature = "sim")]
pub mod sim;
mod stack;
pub mod tiers;
pub mod tokens;

pub use classify::QuotaClassifyLayer;
pub use limit::{KeyBy, Quota, RateLimitLayer, Tier};
pub use retry::RetryAfterLayer;
pub use stack::{QuotaLayer, QuotaStack};

/// Every Rust snippet of the README compiles (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
