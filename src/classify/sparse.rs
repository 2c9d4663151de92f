//! [`Sparse`]: a classifier that attaches nothing to a plain success.

use std::time::SystemTime;

use http::response::Parts;

use super::{Auto, Classification, Classify};

/// Classifies with `C`, and has [`QuotaClassifyLayer`](crate::QuotaClassifyLayer) attach the
/// [`Classification`] only when there is something to report: a 1xx–3xx response that `C`
/// calls a plain success ([`Classification::is_plain_success`]: no rate-limit headers, no
/// delay, no code) passes the layer untouched and without an allocation.
///
/// The retry and rate-limit layers read a 1xx–3xx response without a classification as a
/// plain success, so they decide exactly as they would with one. Code of your own that reads
/// the classification of a success takes `None` for a plain success. (The reqwest middleware
/// attaches one to every response whatever the classifier.)
///
/// ```
/// use std::convert::Infallible;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_quota::classify::{Auto, Classification, QuotaClass, Sparse};
/// use tower_quota::QuotaClassifyLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(QuotaClassifyLayer::new(Sparse(Auto)))
///     .service_fn(|req: http::Request<u16>| async move {
///         let status = *req.body();
///         Ok::<_, Infallible>(http::Response::builder().status(status).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap())
///     });
/// let ok = svc.clone().oneshot(http::Request::new(200)).await.unwrap();
/// assert!(ok.extensions().get::<Classification>().is_none()); // a plain success
/// let limited = svc.oneshot(http::Request::new(429)).await.unwrap();
/// let c = limited.extensions().get::<Classification>().unwrap();
/// assert_eq!(c.class(), QuotaClass::RateLimited);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Sparse<C = Auto>(pub C);

impl<C: Classify> Classify for Sparse<C> {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.0.classify(parts, body)
    }

    fn classify_at(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Classification {
        self.0.classify_at(parts, body, now)
    }

    fn wants_body(&self, parts: &Parts) -> bool {
        self.0.wants_body(parts)
    }

    fn attach_plain_success(&self) -> bool {
        false
    }

    fn is_plain_success(&self, parts: &Parts) -> bool {
        self.0.is_plain_success(parts)
    }
}
