//! [`UsageBody`]: a response body that reports the usage it carried when it ends.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Usage, UsageScanner};

/// How a [`UsageBody`] ended, told to its callback with the usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyEnd {
    /// The inner body ended: it yielded its last frame (`is_end_stream`), or `None`. The
    /// usage is what the whole body reported.
    Complete,
    /// The inner body yielded an error. The usage is what the body had reported before it:
    /// partial, or `None`.
    Error,
    /// The body was dropped before its end (the caller stopped reading). The usage is what the
    /// body had reported so far: partial, or `None`.
    Dropped,
}

/// A boxed usage callback, for a [`UsageBody`] whose type must be named.
pub type OnUsage = Box<dyn FnOnce(Option<Usage>, BodyEnd) + Send + Sync + 'static>;

pin_project! {
    /// A response body that yields every frame of the inner body unchanged and unbuffered —
    /// the same data, the same trailers, the same error, with the inner `size_hint` and
    /// `is_end_stream` — while a [`UsageScanner`] reads its data frames, and that calls
    /// `on_usage` exactly once with the [`Usage`] found and how the body ended ([`BodyEnd`]):
    ///
    /// - when the inner body ends (its `None`, or a frame after which it says
    ///   `is_end_stream`): what it reported, [`BodyEnd::Complete`];
    /// - when it yields an error: what it had reported before, [`BodyEnd::Error`];
    /// - when the `UsageBody` is dropped before either: what it had reported so far,
    ///   [`BodyEnd::Dropped`] (or [`BodyEnd::Complete`] if the inner body says it has ended).
    ///
    /// After an early end the usage may be partial — Anthropic's `message_start` counts
    /// without the final output count of `message_delta` — or `None` (OpenAI sends its usage
    /// only in the last chunk). A server that stopped generating when the connection closed
    /// may still count more than was reported; treat an early report as a lower bound.
    ///
    /// The callback runs inside `poll_frame` (or `drop`): keep it short and non-blocking.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_quota::tokens::{BodyEnd, Format, Usage, UsageBody, UsageScanner};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let json = r#"{"id":"chatcmpl-1","choices":[{"message":{"content":"Hi!"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let body = UsageBody::new(
    ///     Full::new(Bytes::from(json)),
    ///     UsageScanner::new(Format::Json),
    ///     move |usage, end| log.lock().unwrap().push((usage, end)),
    /// );
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(bytes, json.as_bytes()); // unchanged
    /// assert_eq!(*seen.lock().unwrap(), [(Some(Usage::new(9, 3)), BodyEnd::Complete)]);
    /// # }
    /// ```
    pub struct UsageBody<B, F>
    where
        B: Body,
        F: FnOnce(Option<Usage>, BodyEnd),
    {
        #[pin]
        inner: B,
        pending: Option<(UsageScanner, F)>,
    }

    impl<B, F> PinnedDrop for UsageBody<B, F>
    where
        B: Body,
        F: FnOnce(Option<Usage>, BodyEnd),
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let end = if this.inner.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Dropped
            };
            report(this.pending, end);
        }
    }
}

fn report<F: FnOnce(Option<Usage>, BodyEnd)>(
    pending: &mut Option<(UsageScanner, F)>,
    end: BodyEnd,
) {
    if let Some((scanner, on_usage)) = pending.take() {
        on_usage(scanner.finish(), end);
    }
}

impl<B, F> UsageBody<B, F>
where
    B: Body,
    F: FnOnce(Option<Usage>, BodyEnd),
{
    /// Wraps `inner`, reading it with `scanner` (made for the response's format:
    /// [`UsageScanner::for_headers`]), and calling `on_usage` once at its end.
    pub fn new(inner: B, scanner: UsageScanner, on_usage: F) -> Self {
        UsageBody {
            inner,
            pending: Some((scanner, on_usage)),
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// What the body has reported so far ([`UsageScanner::usage`]); `None` also once the
    /// callback has been called.
    pub fn usage(&self) -> Option<Usage> {
        self.pending
            .as_ref()
            .and_then(|(scanner, _)| scanner.usage())
    }

    /// Whether the callback has been called.
    pub fn is_reported(&self) -> bool {
        self.pending.is_none()
    }
}

impl<B, F> Body for UsageBody<B, F>
where
    B: Body,
    F: FnOnce(Option<Usage>, BodyEnd),
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some((scanner, _))) = (frame.data_ref(), this.pending.as_mut())
                {
                    scanner.feed_buf(data);
                }
                if this.inner.is_end_stream() {
                    report(this.pending, BodyEnd::Complete);
                }
            }
            Some(Err(_)) => report(this.pending, BodyEnd::Error),
            None => report(this.pending, BodyEnd::Complete),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, F> fmt::Debug for UsageBody<B, F>
where
    B: Body + fmt::Debug,
    F: FnOnce(Option<Usage>, BodyEnd),
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageBody")
            .field("inner", &self.inner)
            .field(
                "scanner",
                &self.pending.as_ref().map(|(scanner, _)| scanner),
            )
            .finish_non_exhaustive()
    }
}
