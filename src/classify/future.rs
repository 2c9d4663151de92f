//! The response future of [`QuotaClassify`](super::QuotaClassify).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http::response::Parts;
use http::Response;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use super::{body::PeekBody, Classification, Classify, QuotaClass};
use crate::clock::WallClock;
use crate::limit::{InFlightSlot, UsageHook};
use crate::tokens::UsageScanner;

/// At most this many frames are held while peeking, whatever their size: a body trickling in
/// one byte per frame is classified on what arrived by then.
const MAX_PEEK_FRAMES: usize = 1024;

pin_project! {
    /// Waits for the inner response and, for the responses whose body the classifier reads,
    /// for the first bytes of the body; then attaches the [`Classification`].
    pub struct ResponseFuture<F, B: Body, C> {
        #[pin]
        state: State<F, B>,
        classifier: C,
        max_body: usize,
        clock: WallClock,
        // Whether a plain 1xx–3xx success gets its classification too.
        attach_plain: bool,
        // A token reservation to correct to the usage the response reports.
        usage: Option<UsageHook>,
        // The request's place among its key's requests in flight, for the body to hold.
        place: Option<InFlightSlot>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body> {
        Inner { #[pin] future: F },
        Peeking { peek: Option<Peek<B>> },
        Done,
    }
}

struct Peek<B: Body> {
    parts: Parts,
    body: Pin<Box<B>>,
    prefix: Vec<u8>,
    frames: VecDeque<Frame<B::Data>>,
}

impl<F, B: Body, C> ResponseFuture<F, B, C> {
    /// A future that attaches the classification of `future`'s response, reading at most
    /// `max_body` bytes of a body the classifier wants, on `clock`; a plain 1xx–3xx success
    /// gets one only if `attach_plain` (the reqwest middleware, which reads it back at once,
    /// always asks). `usage`, a token reservation, is corrected to the usage the response
    /// reports: a success's body is read for it as it streams through; a 4xx (refused before
    /// any generation) gives the whole reservation back; any other answer keeps it. `place`,
    /// the request's place among its key's requests in flight, is held by the body until it
    /// ends or is dropped. Built in one go: the future is moved once, not once per setting.
    pub(crate) fn new(
        future: F,
        classifier: C,
        max_body: usize,
        clock: WallClock,
        attach_plain: bool,
        usage: Option<UsageHook>,
        place: Option<InFlightSlot>,
    ) -> Self {
        ResponseFuture {
            state: State::Inner { future },
            classifier,
            max_body,
            clock,
            attach_plain,
            usage,
            place,
        }
    }
}

impl<F, B, C, E> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    C: Classify,
{
    type Output = Result<Response<PeekBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let (mut parts, body) = ready!(future.poll(cx))?.into_parts();
                    if let Some(hook) = this.usage.take() {
                        if parts.status.is_success() {
                            let c = this.classifier.classify_at(&parts, &[], this.clock.now());
                            attach(&mut parts, c, *this.attach_plain);
                            this.state.set(State::Done);
                            let scanner = UsageScanner::for_headers(&parts.headers);
                            let body = PeekBody::tapped(body, scanner, hook.on_usage())
                                .holding(this.place.take());
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                        if parts.status.is_client_error() {
                            hook.refused();
                        }
                    }
                    // A plain success: pass it on unclassified (no clock read, no
                    // classification built), or with the plain success the classifier would
                    // have made (the classifier's `is_plain_success` says so from the head).
                    if this.classifier.is_plain_success(&parts) {
                        if *this.attach_plain {
                            let c = Classification::new_at(QuotaClass::Success, this.clock.now());
                            parts.extensions.insert(c);
                        }
                        this.state.set(State::Done);
                        let body = PeekBody::new(body).holding(held(this.place, &parts));
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    if *this.max_body == 0
                        || body.is_end_stream()
                        || !this.classifier.wants_body(&parts)
                    {
                        let c = this.classifier.classify_at(&parts, &[], this.clock.now());
                        attach(&mut parts, c, *this.attach_plain);
                        this.state.set(State::Done);
                        let body = PeekBody::new(body).holding(held(this.place, &parts));
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    let peek = Peek {
                        parts,
                        body: Box::pin(body),
                        prefix: Vec::new(),
                        frames: VecDeque::new(),
                    };
                    this.state.set(State::Peeking { peek: Some(peek) });
                }
                StateProj::Peeking { peek: slot } => {
                    let peek = slot.as_mut().expect("polled after completion");
                    let (error, ended) = loop {
                        match ready!(peek.body.as_mut().poll_frame(cx)) {
                            None => break (None, true),
                            Some(Err(e)) => break (Some(e), true),
                            Some(Ok(frame)) => {
                                let is_trailers = frame.is_trailers();
                                if let Some(data) = frame.data_ref() {
                                    copy_prefix(&mut peek.prefix, data, *this.max_body);
                                }
                                peek.frames.push_back(frame);
                                if is_trailers {
                                    break (None, true);
                                }
                                if peek.prefix.len() >= *this.max_body
                                    || peek.frames.len() >= MAX_PEEK_FRAMES
                                {
                                    break (None, false);
                                }
                            }
                        }
                    };
                    let Peek {
                        mut parts,
                        body,
                        prefix,
                        frames,
                    } = slot.take().expect("polled after completion");
                    let c = this
                        .classifier
                        .classify_at(&parts, &prefix, this.clock.now());
                    attach(&mut parts, c, *this.attach_plain);
                    this.state.set(State::Done);
                    let body = PeekBody::peeked(frames, error, body, ended)
                        .holding(held(this.place, &parts));
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The request's place among its key's requests in flight, for the body of a response with
/// `parts` to hold until it ends: a success's (the server counts the request until it has
/// sent it all, a stream's last event included); an error answer frees it at once — the
/// server is done with the request, and a retry layer that keeps the refusal while it
/// retries must not wait on the place the refusal holds.
fn held(place: &mut Option<InFlightSlot>, parts: &Parts) -> Option<InFlightSlot> {
    place.take().filter(|_| parts.status.is_success())
}

/// Appends the start of `data` to `prefix`, up to `cap` bytes in all, without consuming it.
fn copy_prefix(prefix: &mut Vec<u8>, data: &impl Buf, cap: usize) {
    let mut left = cap.saturating_sub(prefix.len()).min(data.remaining());
    let chunk = data.chunk();
    if chunk.len() >= left {
        prefix.extend_from_slice(&chunk[..left]);
        return;
    }
    // A `Buf` of several chunks: read them without consuming it.
    let mut slices = [std::io::IoSlice::new(&[]); 64];
    let n = data.chunks_vectored(&mut slices);
    for slice in &slices[..n] {
        let take = slice.len().min(left);
        prefix.extend_from_slice(&slice[..take]);
        left -= take;
        if left == 0 {
            break;
        }
    }
}

/// Puts `c` in the extensions, unless it is a plain success of a 1xx–3xx response and
/// `attach_plain` is off: every layer reads a missing classification on such a response as a
/// plain success, and not inserting it spares the extensions map and the box.
fn attach(parts: &mut Parts, c: Classification, attach_plain: bool) {
    if !attach_plain && parts.status.as_u16() < 400 && c.is_plain_success() {
        return;
    }
    if !c.class().is_success() {
        tracing::debug!(
            status = parts.status.as_u16(),
            class = c.class().as_str(),
            scope = c.scope().as_str(),
            retry_after_ms = c.retry_after().map(|d| d.as_millis() as u64),
            code = c.code(),
            "classified response"
        );
    }
    parts.extensions.insert(c);
}

impl<F, B: Body, C: fmt::Debug> fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("classifier", &self.classifier)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}
