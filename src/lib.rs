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
//!   JSON error body ([`classify`]) — and attaches the [`Classification`](classify::Classification)
//!   to the response. The body is handed on intact.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_quota::classify::{Classification, QuotaClass, Scope};
//! use tower_quota::QuotaClassifyLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Any tower HTTP service: hyper-util's client, a tonic channel, a test double.
//! let upstream = tower::service_fn(|_req: http::Request<()>| async {
//!     let body = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day","code":429}}"#;
//!     Ok::<_, std::convert::Infallible>(
//!         http::Response::builder()
//!             .status(429)
//!             .body(http_body_util::Full::new(bytes::Bytes::from(body)))
//!             .unwrap(),
//!     )
//! });
//! let client = ServiceBuilder::new()
//!     .layer(QuotaClassifyLayer::default())
//!     .service(upstream);
//!
//! let response = client.oneshot(http::Request::new(())).await.unwrap();
//! let verdict = response.extensions().get::<Classification>().unwrap();
//! assert_eq!(verdict.class(), QuotaClass::QuotaExhausted); // not a one-minute rate limit
//! assert_eq!(verdict.scope(), Scope::Account);
//! assert!(!verdict.should_retry()); // it resets at the next UTC midnight:
//! assert!(verdict.reset_after().unwrap() <= Duration::from_secs(86_400));
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
//! feature `serde`, [`Tier`], [`Quota`] and [`KeyBy`](limit::KeyBy) read from configuration
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
//! | `rate limit: request not admitted` | INFO | `key`, `tier`, `reason` (`rejected`, `max_wait`), `retry_after_ms` |
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
#[cfg(feature = "reqwest-middleware")]
pub mod reqwest;
pub mod retry;
#[cfg(feature = "sim")]
pub mod sim;
mod stack;
pub mod tiers;

pub use classify::QuotaClassifyLayer;
pub use limit::{Quota, RateLimitLayer, Tier};
pub use retry::RetryAfterLayer;
pub use stack::{QuotaLayer, QuotaStack};
