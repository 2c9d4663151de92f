//! Tier-aware pacing that never trips a rolling window.
//!
//! A server's "20 requests per minute" is a *rolling* window: never more than 20 in any
//! 60 seconds. A token bucket or GCRA with a burst of 20 admits about 39 in the first minute,
//! and the server answers 429. [`RateLimitLayer`] keeps the server's invariant for every
//! [`Quota`] of a [`Tier`] at once — **never more than N (weighted) admissions in any
//! interval of length W** (calendar quotas: in any calendar period) — and admits each request
//! as soon as that allows. It keys requests ([`KeyBy`]: global, API key — hashed —, header,
//! model, custom), serves the waiters of a key in FIFO order, fails fast with a typed
//! [`RateLimited`] when a wait would exceed `max_wait` (or at once in [`Mode::Reject`]),
//! and learns from each response's [`Classification`](crate::classify::Classification):
//! cooldowns after a 429, pauses until a reset, tightened counts, and (when asked) the
//! server's own limits.
//!
//! All clones of the layer and its services share one [`Limiter`], which can also be used
//! directly. Its state lives behind the async [`Store`](store::Store) trait (in memory by
//! default).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_quota::{tiers, RateLimitLayer};
//! use tower_quota::limit::KeyBy;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = RateLimitLayer::new(tiers::openrouter::free())   // 20/min + 50/UTC day
//!     .key_by(KeyBy::ApiKey)
//!     .with_max_wait(Duration::from_secs(120));
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, Infallible>(http::Response::new(()))
//!     }));
//!
//! let start = tokio::time::Instant::now();
//! for _ in 0..21 {
//!     let req = http::Request::builder()
//!         .header("authorization", "Bearer sk-or-v1-secret")
//!         .body(())
//!         .unwrap();
//!     svc.clone().oneshot(req).await.unwrap();
//! }
//! // The 21st request waited for the first to leave the rolling minute.
//! assert!(start.elapsed() >= Duration::from_secs(60));
//! # }
//! ```

mod error;
mod future;
mod gate;
mod key;
mod layer;
mod limiter;
mod quota;
mod service;
pub mod store;
mod window;

pub use error::{AcquireError, CostExceedsLimit, RateLimited, Reason};
pub use future::ResponseFuture;
pub use key::{Key, KeyBy, Model, RequestHead};
pub use layer::RateLimitLayer;
pub use limiter::{
    Acquire, LearnOptions, Limiter, Mode, Snapshot, WindowSnapshot, DEFAULT_MAX_WAIT,
};
pub use quota::{Quota, Tier, Window};
pub use service::RateLimit;

/// The error type of the service: the inner service's error, or one of this module's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
