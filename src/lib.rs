//! tower-quota: tower middleware for rate-limited LLM routers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod clock;
pub mod headers;
pub mod limit;
pub mod tiers;

pub use limit::{Quota, RateLimitLayer, Tier};
