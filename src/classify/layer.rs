//! [`QuotaClassifyLayer`]: the config holder.

use tower_layer::Layer;

use super::{Auto, QuotaClassify};
use crate::clock::WallClock;

/// The default cap on the error-body prefix a classifier reads: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Classifies every response and attaches the [`Classification`](super::Classification) to
/// its extensions (with a [`Sparse`](super::Sparse) classifier, to every response but a plain
/// 1xx–3xx success, which then passes without an allocation).
///
/// For the responses the classifier asks to read (error statuses, by default), at most
/// [`max_body`](Self::with_max_body) bytes of the body are read first; the body handed on
/// yields every original byte and trailer, including those past the cap. Success bodies are
/// never touched: a streaming 200 flows through unbuffered.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_quota::QuotaClassifyLayer;
/// use tower_quota::classify::OpenRouter;
///
/// let layer = QuotaClassifyLayer::new(OpenRouter::default()).with_max_body(16 * 1024);
/// # let svc = tower::service_fn(|_: http::Request<()>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// # });
/// let client = ServiceBuilder::new().layer(layer).service(svc);
/// ```
#[derive(Debug, Clone)]
pub struct QuotaClassifyLayer<C = Auto> {
    pub(crate) classifier: C,
    pub(crate) max_body: usize,
    pub(crate) clock: WallClock,
}

impl<C> QuotaClassifyLayer<C> {
    /// A layer classifying with `classifier`, reading at most 64 KiB of an error body.
    pub fn new(classifier: C) -> Self {
        QuotaClassifyLayer {
            classifier,
            max_body: DEFAULT_MAX_BODY,
            clock: WallClock::system(),
        }
    }

    /// Sets the most bytes of an error body read before classifying (`0`: never read bodies).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the wall clock that HTTP-dates and epoch resets are measured against.
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The most bytes of an error body read before classifying.
    pub fn max_body(&self) -> usize {
        self.max_body
    }
}

impl Default for QuotaClassifyLayer<Auto> {
    fn default() -> Self {
        Self::new(Auto)
    }
}

impl<S, C: Clone> Layer<S> for QuotaClassifyLayer<C> {
    type Service = QuotaClassify<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaClassify::new(
            inner,
            self.classifier.clone(),
            self.max_body,
            self.clock.clone(),
        )
    }
}
