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
//! A gateway that limits its own clients in [`Mode::Reject`] answers the error with
//! [`RateLimited::to_response`]: a 429 with `Retry-After` and the IETF `RateLimit-Policy` /
//! `RateLimit` fields, from the error and the key's [`Snapshot`] ([`RateLimited::snapshot`]).
//!
//! All clones of the layer and its services share one [`Limiter`], which can also be used
//! directly ([`Limiter::acquire`], [`Limiter::try_acquire`], [`Limiter::snapshot`]). Its
//! state lives behind the async [`Store`](store::Store) trait (in memory by default).
//!
//! # How it works
//!
//! - **Windows.** A rolling quota with a limit up to 1024 keeps an exact log of admissions;
//!   the earliest admissible time of a request is computed exactly (when enough old entries
//!   have left *every* window), so a waiter sleeps once, until then. Above 1024 (token
//!   quotas), admissions are grouped in 256 buckets per window, each counted until its newest
//!   entry expires: it never over-admits, and loses at most 1/256 of throughput. Calendar
//!   quotas ([`Quota::per_utc_day`], [`Quota::per_utc_hour`]) count per UTC period.
//! - **Time.** Waits and rolling windows read `tokio::time::Instant` (paused-time tests run
//!   instantly). Calendar windows read the wall clock as it is at each decision
//!   ([`Limiter::with_wall_clock`]; [`WallClock::starting_at`](crate::clock::WallClock::starting_at)
//!   follows paused time), and roll over only once the margin has passed the boundary.
//! - **Readiness.** The layer's `poll_ready` is always ready; a request waits in its response
//!   future and drives the inner service ready only once admitted, so a waiting request never
//!   holds a `Buffer` slot, a tonic `Channel` or a pooled connection that other keys need.
//!   The backlog is [`Limiter::waiting`].
//! - **Fairness.** A key without waiters is asked about directly (concurrently, with a
//!   network store). The waiters of a key in one process queue in FIFO order; only the head
//!   asks the store, sleeps until the time it names, and on admission wakes the next. No
//!   polling: about two polls per admission. A dropped future leaves the queue and records
//!   nothing.
//! - **Wait bounds.** The head fails at once when its wait would exceed `max_wait` (the error
//!   says when it could go). A waiter further back fails at once when its place alone puts it
//!   past `max_wait` — N per W admits at most N in any W, so k units ahead need at least
//!   ⌊(k + cost − 1)/N⌋ windows after the head — with that lower bound as its `retry_after`;
//!   and at most `max_queue` requests of a key wait (default 1024), past which a request
//!   fails at once with [`Reason::QueueFull`].
//! - **Learning.** See [`Limiter::learn`]: cooldowns (whole key for account-scoped or unscoped
//!   limits; only a model-keyed key for model- or upstream-scoped ones), pauses until a
//!   reset, tightening, and with [`RateLimitLayer::learn_limits`] the server's limits.
//!   Learned state lives in the store with the windows and goes when the key is evicted.
//! - **Keys** are SipHash-ed as soon as they are read, with a per-process random seed or, for
//!   a store shared by several processes, a configured [`KeySecret`]; logs, errors and
//!   `Debug` output show the hash only.
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

mod cost;
mod error;
mod future;
mod gate;
mod in_flight;
mod key;
mod layer;
mod limiter;
mod margin;
mod quota;
mod reconcile;
mod response;
mod service;
pub mod store;
mod window;

pub use cost::{Cost, DEFAULT_MAX_TOKENS};
pub use error::{AcquireError, CostExceedsLimit, RateLimited, Reason};
pub use future::ResponseFuture;
pub(crate) use in_flight::InFlightSlot;
pub use key::{Key, KeyBy, KeySecret, Model, RequestHead, ShortSecret};
pub use layer::RateLimitLayer;
pub use limiter::{
    Acquire, Foreseen, LearnOptions, Learning, Limiter, Mode, Snapshot, WindowSnapshot,
    DEFAULT_LEARN_TIMEOUT, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT,
};
pub use quota::{Quota, Tier, Window};
pub use reconcile::Reconcile;
pub(crate) use reconcile::UsageHook;
pub use service::RateLimit;

/// The error type of the service: the inner service's error, or one of this module's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
