//! [`ReplayBody`]: a request body that records what it sends, up to a cap, so that the
//! request can be sent again byte-for-byte.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

use super::error::ReplayError;

/// The default replay cap: 2 MiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 2 * 1024 * 1024;

/// A request body that can be sent more than once.
///
/// [`RetryAfter`](super::RetryAfter) wraps each request's body in one. The first attempt reads
/// the caller's body and, as it streams, records the bytes (and the trailers) up to a cap; a
/// later attempt replays the recorded bytes, then — if the first attempt had not read the whole
/// body when it got its response — goes on reading the caller's body where the first left off.
/// So every attempt sends the same bytes, and the caller's body is read once.
///
/// Past the cap the recording is dropped: the attempt that is reading still sends every byte,
/// intact, but the request is not retried. A body whose exact size is known to exceed the cap
/// is never recorded at all; an empty body costs nothing.
///
/// Chunks are stored as [`Bytes`]: for a body whose chunks already are `Bytes` (as
/// `http_body_util::Full<Bytes>`'s are) recording is a reference-count increment, not a copy.
///
/// The data type is always [`Bytes`] and the error type [`BoxError`]: the caller's body's
/// error, boxed, or a [`ReplayError`] for an attempt that can no longer be served (an older
/// attempt's body polled after the recording was dropped).
///
/// The caller's body must be [`Unpin`] (box it with `Box::pin` if it is not).
pub struct ReplayBody<B> {
    /// `None` for a body that was empty from the start: nothing to share.
    shared: Option<Arc<Mutex<Shared<B>>>>,
    /// Chunks this handle has yielded.
    pos: usize,
    /// Bytes this handle has yielded.
    consumed: u64,
    /// Whether this handle has yielded the trailers (or there are none).
    trailers_done: bool,
}

struct Shared<B> {
    /// The caller's body, until it ends or fails.
    body: Option<B>,
    /// The recorded chunks; emptied once the cap is passed.
    chunks: Chunks,
    /// Chunks read from the caller's body so far.
    read: usize,
    /// Bytes read from the caller's body so far.
    bytes: u64,
    /// The trailers, once read (boxed: most bodies have none).
    trailers: Option<Box<HeaderMap>>,
    /// Whether the caller's body has ended.
    ended: bool,
    /// Whether the cap was passed (the recording is gone).
    capped: bool,
    /// Whether the caller's body failed.
    failed: bool,
    /// The replay cap in bytes.
    cap: u64,
    /// The caller's body's size hint when it was wrapped.
    hint: SizeHint,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, recording at most `max_replay_bytes` of it.
    pub fn new(body: B, max_replay_bytes: usize) -> Self {
        let hint = body.size_hint();
        let cap = max_replay_bytes as u64;
        let shared = if body.is_end_stream() {
            None
        } else {
            Some(Arc::new(Mutex::new(Shared {
                body: Some(body),
                chunks: Chunks::default(),
                read: 0,
                bytes: 0,
                trailers: None,
                ended: false,
                capped: hint.lower() > cap,
                failed: false,
                cap,
                hint,
            })))
        };
        ReplayBody {
            shared,
            pos: 0,
            consumed: 0,
            trailers_done: false,
        }
    }
}

impl<B> ReplayBody<B> {
    /// Whether the body can still be sent again from its start: it has not passed the cap
    /// nor failed.
    pub fn is_replayable(&self) -> bool {
        self.lock().is_none_or(|s| !s.capped && !s.failed)
    }

    /// A new handle that sends the body again from its start.
    pub(crate) fn replay(&self) -> Self {
        ReplayBody {
            shared: self.shared.clone(),
            pos: 0,
            consumed: 0,
            trailers_done: false,
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Shared<B>>> {
        self.shared.as_deref().map(lock)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(shared) = this.shared.as_deref() else {
            return Poll::Ready(None);
        };
        let mut guard = lock(shared);
        let s = &mut *guard;
        loop {
            // Replay what was recorded.
            if this.pos < s.read {
                if s.failed {
                    return Poll::Ready(Some(Err(ReplayError::Failed.into())));
                }
                if s.capped {
                    return Poll::Ready(Some(Err(ReplayError::Capped.into())));
                }
                let chunk = s.chunks.get(this.pos).clone();
                this.pos += 1;
                this.consumed += chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if s.ended {
                if !this.trailers_done {
                    this.trailers_done = true;
                    if let Some(t) = &s.trailers {
                        return Poll::Ready(Some(Ok(Frame::trailers(HeaderMap::clone(t)))));
                    }
                }
                return Poll::Ready(None);
            }
            let Some(body) = s.body.as_mut() else {
                // Neither ended nor readable: the caller's body failed.
                return Poll::Ready(Some(Err(ReplayError::Failed.into())));
            };
            // Read on from the caller's body.
            let frame = match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    s.ended = true;
                    s.body = None;
                    continue;
                }
                Some(Err(e)) => {
                    s.failed = true;
                    s.body = None;
                    s.chunks = Chunks::default();
                    return Poll::Ready(Some(Err(e.into())));
                }
                Some(Ok(frame)) => frame,
            };
            let frame = match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    let len = chunk.len() as u64;
                    s.read += 1;
                    s.bytes += len;
                    if !s.capped {
                        if s.bytes > s.cap {
                            s.capped = true;
                            s.chunks = Chunks::default();
                        } else {
                            s.chunks.push(chunk.clone());
                        }
                    }
                    this.pos = s.read;
                    this.consumed += len;
                    // Say the end as soon as the caller's body does, so that an HTTP/2
                    // client can mark the last DATA frame END_STREAM.
                    if s.body.as_ref().is_some_and(Body::is_end_stream) {
                        s.ended = true;
                        s.body = None;
                    }
                    Frame::data(chunk)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        s.trailers = Some(Box::new(trailers.clone()));
                        s.ended = true;
                        s.body = None;
                        this.trailers_done = true;
                        Frame::trailers(trailers)
                    }
                    // A kind of frame http-body does not know yet: skip it.
                    Err(_) => continue,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lock().is_none_or(|s| {
            s.ended && self.pos == s.read && (self.trailers_done || s.trailers.is_none())
        })
    }

    fn size_hint(&self) -> SizeHint {
        let Some(s) = self.lock() else {
            return SizeHint::with_exact(0);
        };
        if s.ended {
            return SizeHint::with_exact(s.bytes.saturating_sub(self.consumed));
        }
        let lower = s.hint.lower().saturating_sub(self.consumed);
        let mut hint = SizeHint::new();
        match s.hint.upper() {
            Some(upper) => {
                let upper = upper.saturating_sub(self.consumed);
                hint.set_lower(lower.min(upper));
                hint.set_upper(upper);
            }
            None => hint.set_lower(lower),
        }
        hint
    }
}

fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    // A panic while polling the caller's body leaves consistent state behind: every field is
    // updated after the poll returns.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The recorded chunks, the first kept inline: a body sent in one chunk (as `Full` bodies
/// are) is recorded without an allocation.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push(chunk);
        }
    }

    /// The `i`th chunk; `i` is below the number pushed.
    fn get(&self, i: usize) -> &Bytes {
        match i {
            0 => self.first.as_ref().expect("a recorded chunk"),
            i => &self.rest[i - 1],
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ReplayBody");
        d.field("pos", &self.pos).field("consumed", &self.consumed);
        match self.lock() {
            None => d.field("empty", &true),
            Some(s) => d
                .field("read_bytes", &s.bytes)
                .field("ended", &s.ended)
                .field("capped", &s.capped)
                .field("failed", &s.failed),
        };
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::collections::VecDeque;

    /// A body yielding the given chunks one per poll, then the trailers.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    }

    impl Chunks {
        fn new(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> Self {
            Chunks {
                chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(),
                trailers,
            }
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if let Some(c) = self.chunks.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(c))));
            }
            Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    async fn collect<B>(b: ReplayBody<B>) -> Result<(Bytes, Option<HeaderMap>), BoxError>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let c = b.collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes(), trailers))
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t
    }

    #[test]
    fn replays_chunks_and_trailers() {
        block_on(async {
            let b = ReplayBody::new(Chunks::new(&[b"ab", b"cd", b"e"], Some(trailers())), 1024);
            let again = b.replay();
            let (first, t1) = collect(b).await.unwrap();
            assert!(again.is_replayable());
            assert_eq!(again.size_hint().exact(), Some(5));
            let (second, t2) = collect(again).await.unwrap();
            assert_eq!(&first[..], b"abcde");
            assert_eq!(first, second);
            assert_eq!(t1, Some(trailers()));
            assert_eq!(t2, Some(trailers()));
        });
    }

    #[test]
    fn second_attempt_continues_a_partly_read_body() {
        block_on(async {
            let mut first = ReplayBody::new(Chunks::new(&[b"ab", b"cd", b"ef"], None), 1024);
            let again = first.replay();
            // The first attempt reads one chunk, then gives up (the server answered early).
            let f = first.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "ab");
            drop(first);
            let (second, _) = collect(again).await.unwrap();
            assert_eq!(&second[..], b"abcdef");
        });
    }

    #[test]
    fn over_cap_is_sent_intact_and_not_replayable() {
        block_on(async {
            let b = ReplayBody::new(Chunks::new(&[b"0123", b"4567", b"89"], None), 6);
            let again = b.replay();
            assert!(b.is_replayable());
            let (all, _) = collect(b).await.unwrap();
            assert_eq!(&all[..], b"0123456789");
            assert!(!again.is_replayable());
            let err = collect(again).await.unwrap_err();
            assert!(err.downcast_ref::<ReplayError>().is_some(), "{err}");
        });
    }

    #[test]
    fn known_large_body_is_never_recorded() {
        let b = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 100])), 99);
        assert!(!b.is_replayable());
        assert_eq!(b.size_hint().exact(), Some(100));
        let b = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 99])), 99);
        assert!(b.is_replayable());
    }

    #[test]
    fn empty_body_is_at_end() {
        let b = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(b.is_end_stream());
        assert!(b.replay().is_end_stream());
        assert!(b.is_replayable());
        assert_eq!(b.size_hint().exact(), Some(0));
    }

    #[test]
    fn full_body_keeps_exact_size_hint_on_replay() {
        block_on(async {
            let mut b = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 1024);
            assert_eq!(b.size_hint().exact(), Some(5));
            let again = b.replay();
            assert_eq!(again.size_hint().exact(), Some(5));
            let first = b.frame().await.unwrap().unwrap();
            assert_eq!(first.into_data().unwrap(), "hello");
            // The end is known with the last chunk, for every handle.
            assert!(b.is_end_stream());
            assert_eq!(b.size_hint().exact(), Some(0));
            assert!(!again.is_end_stream());
            let one = Bytes::from_static(b"hello");
            let mut again = again;
            let two = again.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(again.is_end_stream());
            assert_eq!(one, two);
        });
    }

    /// A body yielding one chunk, then an error.
    struct Failing(bool);

    impl Body for Failing {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(Some(Err(std::io::Error::other("boom"))));
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"ab")))))
        }
    }

    #[test]
    fn failing_body_is_not_replayable() {
        block_on(async {
            let b = ReplayBody::new(Failing(false), 1024);
            let again = b.replay();
            let err = collect(b).await.unwrap_err();
            assert_eq!(err.to_string(), "boom");
            assert!(!again.is_replayable());
            let err = collect(again).await.unwrap_err();
            assert!(err.downcast_ref::<ReplayError>().is_some(), "{err}");
        });
    }

    proptest::proptest! {
        /// Whatever the chunking, the cap and how far the first attempt read before it gave
        /// up: a body that is still replayable is replayed byte-for-byte (the replaying
        /// attempt reading on past the cap if it must), and a body within the cap always is.
        #[test]
        fn replay_is_byte_for_byte(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..40), 0..12),
            cap in 0usize..300,
            read_first in 0usize..14,
        ) {
            block_on(async {
                let total: usize = chunks.iter().map(Vec::len).sum();
                let expected: Vec<u8> = chunks.concat();
                let body = Chunks {
                    chunks: chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
                    trailers: None,
                };
                let mut first = ReplayBody::new(body, cap);
                let again = first.replay();
                let mut sent = Vec::new();
                for _ in 0..read_first {
                    match first.frame().await {
                        Some(Ok(f)) => sent.extend_from_slice(&f.into_data().unwrap()),
                        _ => break,
                    }
                }
                assert!(expected.starts_with(&sent));
                drop(first);
                if total <= cap {
                    assert!(again.is_replayable());
                }
                if again.is_replayable() {
                    let (all, _) = collect(again).await.unwrap();
                    assert_eq!(&all[..], &expected[..]);
                }
            });
        }
    }
}
