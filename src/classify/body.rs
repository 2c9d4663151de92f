//! [`PeekBody`]: a response body whose first bytes were read for classification and are
//! yielded again ahead of the rest.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::tokens::{OnUsage, UsageBody, UsageScanner};

pin_project! {
    /// The body of a response that passed through
    /// [`QuotaClassifyLayer`](crate::QuotaClassifyLayer).
    ///
    /// When the classifier read nothing (every success response), it is the inner body with
    /// no extra work. When it read a prefix of an error body, the frames it read (data,
    /// trailers, or the error the stream ended with) come first, exactly as the inner body
    /// produced them, then the rest of the inner body: the bytes out are the bytes in.
    pub struct PeekBody<B: Body> {
        buffered: VecDeque<Frame<B::Data>>,
        error: Option<B::Error>,
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B: Body> {
        Direct { #[pin] body: B },
        // A success whose usage corrects a token reservation: read as it streams through.
        Tapped { #[pin] body: UsageBody<B, OnUsage> },
        // Read during the peek (polled in place, so it had to be pinned without `Unpin`).
        Boxed { body: Pin<Box<B>> },
        Done,
    }
}

impl<B: Body> PeekBody<B> {
    /// A body that yields `body` unchanged.
    pub fn new(body: B) -> Self {
        PeekBody {
            buffered: VecDeque::new(),
            error: None,
            inner: Inner::Direct { body },
        }
    }

    /// A body that yields `body` unchanged while `scanner` reads the usage it reports, which
    /// `on_usage` gets at its end.
    pub(crate) fn tapped(body: B, scanner: UsageScanner, on_usage: OnUsage) -> Self {
        PeekBody {
            buffered: VecDeque::new(),
            error: None,
            inner: Inner::Tapped {
                body: UsageBody::new(body, scanner, on_usage),
            },
        }
    }

    /// A body that yields the frames already read, then the error the inner body ended
    /// with, if any, then the rest of `body` unless it has ended.
    pub(crate) fn peeked(
        buffered: VecDeque<Frame<B::Data>>,
        error: Option<B::Error>,
        body: Pin<Box<B>>,
        ended: bool,
    ) -> Self {
        PeekBody {
            buffered,
            error,
            inner: if ended {
                Inner::Done
            } else {
                Inner::Boxed { body }
            },
        }
    }
}

impl<B: Body> Body for PeekBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(frame) = this.buffered.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(err) = this.error.take() {
            this.inner.set(Inner::Done);
            return Poll::Ready(Some(Err(err)));
        }
        match this.inner.project() {
            InnerProj::Direct { body } => body.poll_frame(cx),
            InnerProj::Tapped { body } => body.poll_frame(cx),
            InnerProj::Boxed { body } => body.as_mut().poll_frame(cx),
            InnerProj::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty()
            && self.error.is_none()
            && match &self.inner {
                Inner::Direct { body } => body.is_end_stream(),
                Inner::Tapped { body } => body.is_end_stream(),
                Inner::Boxed { body } => body.is_end_stream(),
                Inner::Done => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .buffered
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.remaining() as u64)
            .sum();
        let inner = match &self.inner {
            Inner::Direct { body } => body.size_hint(),
            Inner::Tapped { body } => body.size_hint(),
            Inner::Boxed { body } => body.size_hint(),
            Inner::Done => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(buffered));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

impl<B: Body> fmt::Debug for PeekBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeekBody")
            .field("buffered_frames", &self.buffered.len())
            .field("error", &self.error.is_some())
            .finish_non_exhaustive()
    }
}
