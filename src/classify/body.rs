//! [`PeekBody`]: a response body whose first bytes were read for classification and are
//! yielded again ahead of the rest.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::limit::InFlightSlot;
use crate::tokens::{OnUsage, UsageBody, UsageScanner};

pin_project! {
    /// The body of a response that passed through
    /// [`QuotaClassifyLayer`](crate::QuotaClassifyLayer).
    ///
    /// When the classifier read nothing (every success response), it is the inner body with
    /// no extra work, and hardly larger. When it read a prefix of an error body, the frames it
    /// read (data, trailers, or the error the stream ended with) come first, exactly as the
    /// inner body produced them, then the rest of the inner body: the bytes out are the bytes
    /// in.
    pub struct PeekBody<B: Body> {
        #[pin]
        inner: Inner<B>,
        // The request's place among its key's requests in flight: freed when the body ends
        // (its last frame or an error polled) or is dropped.
        place: Option<InFlightSlot>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B: Body> {
        Direct { #[pin] body: B },
        // A success whose usage corrects a token reservation: read as it streams through.
        // Boxed, as the peeked state: the common case, a body passed through, stays the size
        // of the inner body (a response is moved several times on its way out).
        Tapped { body: Pin<Box<UsageBody<B, OnUsage>>> },
        // Read during the peek.
        Peeked { peeked: Box<Peeked<B>> },
    }
}

/// What the peek read, and the rest.
struct Peeked<B: Body> {
    buffered: VecDeque<Frame<B::Data>>,
    error: Option<B::Error>,
    /// The rest of the body (polled in place during the peek, so pinned without `Unpin`);
    /// `None` once it has ended.
    body: Option<Pin<Box<B>>>,
}

impl<B: Body> PeekBody<B> {
    /// A body that yields `body` unchanged.
    pub fn new(body: B) -> Self {
        PeekBody {
            inner: Inner::Direct { body },
            place: None,
        }
    }

    /// A body that yields `body` unchanged while `scanner` reads the usage it reports, which
    /// `on_usage` gets at its end.
    pub(crate) fn tapped(body: B, scanner: UsageScanner, on_usage: OnUsage) -> Self {
        PeekBody {
            inner: Inner::Tapped {
                body: Box::pin(UsageBody::new(body, scanner, on_usage)),
            },
            place: None,
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
            inner: Inner::Peeked {
                peeked: Box::new(Peeked {
                    buffered,
                    error,
                    body: (!ended).then_some(body),
                }),
            },
            place: None,
        }
    }

    /// Holds `place` until the body ends or is dropped.
    pub(crate) fn holding(mut self, place: Option<InFlightSlot>) -> Self {
        self.place = place;
        self
    }
}

impl<B: Body> Body for PeekBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = match this.inner.project() {
            InnerProj::Direct { body } => body.poll_frame(cx),
            InnerProj::Tapped { body } => body.as_mut().poll_frame(cx),
            InnerProj::Peeked { peeked } => {
                if let Some(frame) = peeked.buffered.pop_front() {
                    Poll::Ready(Some(Ok(frame)))
                } else if let Some(err) = peeked.error.take() {
                    peeked.body = None;
                    Poll::Ready(Some(Err(err)))
                } else {
                    match &mut peeked.body {
                        Some(body) => body.as_mut().poll_frame(cx),
                        None => Poll::Ready(None),
                    }
                }
            }
        };
        if this.place.is_some() && matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            *this.place = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Direct { body } => body.is_end_stream(),
            Inner::Tapped { body } => body.is_end_stream(),
            Inner::Peeked { peeked } => {
                peeked.buffered.is_empty()
                    && peeked.error.is_none()
                    && peeked.body.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Direct { body } => body.size_hint(),
            Inner::Tapped { body } => body.size_hint(),
            Inner::Peeked { peeked } => {
                let buffered: u64 = peeked
                    .buffered
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|d| d.remaining() as u64)
                    .sum();
                let inner = match &peeked.body {
                    Some(body) => body.size_hint(),
                    None => SizeHint::with_exact(0),
                };
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(buffered));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for PeekBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (buffered, error) = match &self.inner {
            Inner::Peeked { peeked } => (peeked.buffered.len(), peeked.error.is_some()),
            _ => (0, false),
        };
        f.debug_struct("PeekBody")
            .field("buffered_frames", &buffered)
            .field("error", &error)
            .finish_non_exhaustive()
    }
}
