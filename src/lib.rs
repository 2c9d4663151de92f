//! tower-quota: tower middleware for rate-limited LLM routers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
pub mod clock;
pub mod headers;
pub mod retry;

pub use retry::RetryAfterLayer;
