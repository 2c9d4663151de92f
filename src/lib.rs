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
