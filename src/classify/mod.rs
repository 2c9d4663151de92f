//! Telling rate-limited from quota-exhausted from provider-down from auth and bad requests.
//!
//! A classifier ([`Classify`]) reads a response's status, headers and — for error statuses
//! only — a bounded prefix of its body, and returns a [`Classification`].
//! [`QuotaClassifyLayer`] runs one on every response and attaches
//! the verdict to the response's extensions. Wrapped in [`Sparse`], a classifier leaves a
//! plain success (a 1xx–3xx with nothing else to report) without one, and that response
//! passes the layer without allocating: every layer of the crate reads a missing
//! classification on a 1xx–3xx as a plain success.
//!
//! | classifier | reads |
//! |---|---|
//! | [`Auto`] (the layer's default) | every shape below, recognised from the body and headers |
//! | [`OpenRouter`] | `error.code`, `metadata.{error_type, limit_source, provider_name, raw, retry_after_seconds, headers}`, `error.availability` |
//! | [`OpenAi`] | `error.{type, code, message}` (`insufficient_quota`, `rate_limit_exceeded`, …) |
//! | [`Anthropic`] | `error.type`, `error.details.error_code` |
//! | [`LiteLlm`] | `error.{type, code, message}` in OpenAI's or Anthropic's shape (budgets, the key limiter, the router, upstream errors relayed in the message), `llm_provider-*` headers |
//! | [`Google`] | `error.status` (gRPC code names), `RetryInfo.retryDelay`, per-day `QuotaFailure` |
//! | [`Grpc`] | `grpc-status`, `grpc-message`, `grpc-retry-pushback-ms`, `RetryInfo` |
//! | [`Generic`] | status and headers only |
//!
//! What is not seen, because the body of a success is never read (a streaming answer passes
//! untouched) and nothing is read after the head:
//!
//! - an error OpenRouter sends *after* generation started: an HTTP 200 whose body holds an
//!   `error` object, or an SSE chunk with `finish_reason: "error"` — classified a success.
//!   Given such a body (a classifier called with it, or one whose
//!   [`wants_body`](Classify::wants_body) selects JSON successes), every classifier reads
//!   the error's `code` as the status: `{"error": {"code": 502, …}}` in a 200 is
//!   [`QuotaClass::Unavailable`];
//! - a gRPC status sent in the trailers of a streamed response (only a trailers-only
//!   response carries `grpc-status` in its head) — classified from the head.
//!
//! The retry layer cannot retry such an answer anyway (its body is already on its way to the
//! caller); read the stream's own error to handle it.
//!
//! Every classifier reads the headers the same way: the delay from
//! [`headers::retry_after`](crate::headers::retry_after), the explicit verdict from
//! `x-should-retry`, the rate-limit state from [`RateLimitInfo`](crate::headers::RateLimitInfo),
//! absolute times (HTTP-dates, epoch and RFC 3339 resets) from the server's clock when its
//! `Date` is more than 2 s from ours ([`headers::server_now`](crate::headers::server_now)).
//!
//! A classifier of your own refines one of these:
//!
//! ```
//! use http::response::Parts;
//! use tower_quota::classify::{Auto, Classification, Classify, QuotaClass};
//!
//! /// Our gateway answers 418 when a tenant's monthly allowance is gone.
//! #[derive(Clone, Default)]
//! struct MyGateway;
//!
//! impl Classify for MyGateway {
//!     fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
//!         let c = Auto.classify(parts, body);
//!         if parts.status == 418 {
//!             return c.with_class(QuotaClass::QuotaExhausted);
//!         }
//!         c
//!     }
//! }
//!
//! let (parts, ()) = http::Response::builder().status(418).body(()).unwrap().into_parts();
//! assert_eq!(MyGateway.classify(&parts, b"").class(), QuotaClass::QuotaExhausted);
//! let layer = tower_quota::QuotaClassifyLayer::new(MyGateway);
//! ```

mod anthropic;
mod auto;
mod body;
mod class;
mod future;
pub(crate) mod generic;
mod google;
pub mod grpc;
mod json;
mod layer;
mod litellm;
mod openai;
mod openrouter;
mod service;
mod sparse;

pub use anthropic::Anthropic;
pub use auto::Auto;
pub use body::PeekBody;
pub use class::{Classification, QuotaClass, Scope};
pub use future::ResponseFuture;
pub use generic::Generic;
pub use google::Google;
pub use grpc::Grpc;
pub use layer::{QuotaClassifyLayer, DEFAULT_MAX_BODY};
pub use litellm::LiteLlm;
pub use openai::OpenAi;
pub use openrouter::OpenRouter;
pub use service::QuotaClassify;
pub use sparse::Sparse;

pub(crate) use json::until_next_utc_midnight;

use std::time::SystemTime;

use http::response::Parts;
use serde_json::Value;

/// The body-reading classifiers share this: generic base, provider refinement of a JSON body
/// (or the text markers when it is not JSON or not the provider's shape), then what follows
/// from the final class.
fn classify_with(
    parts: &Parts,
    body: &[u8],
    now: SystemTime,
    refine: fn(&mut Classification, &Parts, &Value) -> bool,
) -> Classification {
    let mut c = generic::base(parts, now);
    let recognised = json::parse(body).is_some_and(|v| {
        generic::rebase_on_body_status(&mut c, parts, &v, now);
        refine(&mut c, parts, &v)
    });
    if !recognised {
        auto::refine_text(&mut c, body);
    }
    generic::finish(c)
}

/// Decides what a response means for quotas and retries.
///
/// Implement [`classify`](Classify::classify); override [`classify_at`](Classify::classify_at)
/// when the verdict depends on the wall-clock time (HTTP-dates, epoch resets), so that the
/// layer's injectable clock reaches it; override [`wants_body`](Classify::wants_body) to change
/// which responses have their body read (by default error statuses only: a 2xx body is never
/// buffered).
pub trait Classify {
    /// Classifies a response from its head and (for the responses [`wants_body`] selects) a
    /// prefix of its body, at most the layer's cap; empty otherwise.
    ///
    /// [`wants_body`]: Classify::wants_body
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification;

    /// Like [`classify`](Classify::classify), at the wall-clock time `now`.
    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        let _ = now;
        self.classify(parts, body)
    }

    /// Whether the classifier needs to read the body of this response. By default: 4xx and 5xx.
    fn wants_body(&self, parts: &Parts) -> bool {
        parts.status.is_client_error() || parts.status.is_server_error()
    }

    /// Whether [`QuotaClassifyLayer`] attaches a classification to a 1xx–3xx response that it
    /// says nothing about but success ([`Classification::is_plain_success`]). By default
    /// `true`: every response carries one. [`Sparse`] answers `false`, so that such a
    /// response passes the layer without an allocation (an extensions map and a boxed
    /// classification otherwise).
    fn attach_plain_success(&self) -> bool {
        true
    }

    /// Whether the head alone shows a plain success to this classifier — what
    /// [`classify`](Classify::classify) would call [`Classification::is_plain_success`] —
    /// decided without the body or the clock. A layer that does not attach plain successes
    /// ([`attach_plain_success`](Classify::attach_plain_success) `false`) then passes the
    /// response on without classifying it. By default `false`: always classify. [`Auto`] and
    /// [`Generic`] answer `true` for a 1xx–3xx without a rate-limit header that is not gRPC.
    ///
    /// ```
    /// use tower_quota::classify::{Auto, Classify};
    ///
    /// let (plain, _) = http::Response::new(()).into_parts();
    /// assert!(Auto.is_plain_success(&plain));
    /// let (limits, _) = http::Response::builder()
    ///     .header("x-ratelimit-remaining-requests", "4")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// assert!(!Auto.is_plain_success(&limits));
    /// ```
    fn is_plain_success(&self, parts: &Parts) -> bool {
        let _ = parts;
        false
    }
}

impl<C: Classify + ?Sized> Classify for &C {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        (**self).classify(parts, body)
    }
    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        (**self).classify_at(parts, body, now)
    }
    fn wants_body(&self, parts: &Parts) -> bool {
        (**self).wants_body(parts)
    }
    fn attach_plain_success(&self) -> bool {
        (**self).attach_plain_success()
    }
    fn is_plain_success(&self, parts: &Parts) -> bool {
        (**self).is_plain_success(parts)
    }
}

impl<C: Classify + ?Sized> Classify for std::sync::Arc<C> {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        (**self).classify(parts, body)
    }
    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        (**self).classify_at(parts, body, now)
    }
    fn wants_body(&self, parts: &Parts) -> bool {
        (**self).wants_body(parts)
    }
    fn attach_plain_success(&self) -> bool {
        (**self).attach_plain_success()
    }
    fn is_plain_success(&self, parts: &Parts) -> bool {
        (**self).is_plain_success(parts)
    }
}

impl<C: Classify + ?Sized> Classify for Box<C> {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        (**self).classify(parts, body)
    }
    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        (**self).classify_at(parts, body, now)
    }
    fn wants_body(&self, parts: &Parts) -> bool {
        (**self).wants_body(parts)
    }
    fn attach_plain_success(&self) -> bool {
        (**self).attach_plain_success()
    }
    fn is_plain_success(&self, parts: &Parts) -> bool {
        (**self).is_plain_success(parts)
    }
}
