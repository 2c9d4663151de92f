//! [`ReplayBody`]: a request body that records what it sends, up to a cap, so that the
//! request can be sent again byte-for-byte.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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
/// # One reader at a time
///
/// The caller's body has one owner at a time: the newest handle that has been polled. A
/// retry's handle takes the caller's body over when the retry is first polled — when the
/// inner client starts sending it, after the rate limiter admitted it — and from then on the
/// earlier attempt's handle, which a connection may still be streaming though the server
/// has already answered it, never polls the caller's body again. So the caller's body only
/// ever holds the owner's waker, and no reader waits on a wakeup that went to another. An
/// earlier handle that is polled on still gets the recorded bytes it had not sent yet, and
/// the trailers if the body has ended (so a body that was read to its end is sent whole);
/// where it would have to read on, it gets a [`ReplayError::Superseded`], and if it is
/// waiting for the caller's body when the newer handle takes over, it is woken to be told
/// so. No handle hangs or ends early: each yields every byte of the body, or a prefix and
/// an error.
///
/// (linkerd2-proxy's `ReplayBody`, which this follows, moves its state into the handle that
/// polls and back when that handle is dropped, and panics if another handle is polled
/// meanwhile. Here a connection that keeps streaming an answered request's body must neither
/// stall the retry nor be left waiting, so a newer handle takes the body over from an older
/// one instead of waiting for it to be dropped.)
///
/// # The cap
///
/// Past the cap the recording is dropped: the attempt that is reading still sends every byte,
/// intact, but the request is not retried. A body whose exact size is known to exceed the cap
/// is never recorded at all; an empty body costs nothing (no allocation, no lock).
///
/// Chunks are stored as [`Bytes`]: for a body whose chunks already are `Bytes` (as
/// `http_body_util::Full<Bytes>`'s are) recording is a reference-count increment, not a copy.
///
/// The data type is always [`Bytes`] and the error type [`BoxError`]: the caller's body's
/// error, boxed, or a [`ReplayError`] for an attempt that can no longer be served (an older
/// attempt's body polled after the recording was dropped, or after a newer attempt took the
/// caller's body over). A handle that has yielded an error yields one on every later poll.
///
/// The caller's body must be [`Unpin`] (box it with `Box::pin` if it is not).
pub struct ReplayBody<B> {
    /// `None` for a body that was empty from the start: nothing to share.
    shared: Option<Arc<Mutex<Shared<B>>>>,
    /// This handle's number: handles made later have higher ones (0 for an empty body).
    id: u64,
    /// Chunks this handle has yielded.
    pos: usize,
    /// Bytes this handle has yielded.
    consumed: u64,
    /// Whether this handle has yielded the trailers (or there are none).
    trailers_done: bool,
    /// Set once this handle has yielded an error: every later poll yields this one.
    failed: Option<ReplayError>,
}

struct Shared<B> {
    /// The caller's body, until it ends or fails.
    body: Option<B>,
    /// The number of the last handle made.
    handles: u64,
    /// The number of the newest handle that has been polled: the one handle that may poll
    /// the caller's body (0 before any).
    owner: u64,
    /// The owner's waker while the caller's body is pending, so that a newer handle taking
    /// the body over can wake it to learn so.
    parked: Option<Waker>,
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
                handles: 1,
                owner: 0,
                parked: None,
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
        ReplayBody::handle(shared, 1)
    }
}

impl<B> ReplayBody<B> {
    fn handle(shared: Option<Arc<Mutex<Shared<B>>>>, id: u64) -> Self {
        ReplayBody {
            shared,
            id,
            pos: 0,
            consumed: 0,
            trailers_done: false,
            failed: None,
        }
    }

    /// Whether the body can still be sent again from its start: it has not passed the cap
    /// nor failed.
    pub fn is_replayable(&self) -> bool {
        self.lock().is_none_or(|s| !s.capped && !s.failed)
    }

    /// A new handle that sends the body again from its start. It is newer than every
    /// handle made before it: once polled, it takes the caller's body over from them.
    pub(crate) fn replay(&self) -> Self {
        let Some(shared) = &self.shared else {
            return ReplayBody::handle(None, 0);
        };
        let id = {
            let mut s = lock(shared);
            s.handles += 1;
            s.handles
        };
        ReplayBody::handle(Some(Arc::clone(shared)), id)
    }

    fn lock(&self) -> Option<MutexGuard<'_, Shared<B>>> {
        self.shared.as_deref().map(lock)
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads the caller's body to its end now, if it is ready now (an in-memory body is),
    /// and returns a handle that sends it from its start, with the data read when the whole
    /// body was. Nothing is lost: what was read is recorded, and the handle returned replays
    /// it (a body that failed fails again, as it did). The caller must have checked that the
    /// body fits the cap, or the handle cannot send it whole.
    pub(crate) fn read_ready(mut self) -> (Self, Option<Vec<Bytes>>) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunks = Vec::new();
        let complete = loop {
            match Pin::new(&mut self).poll_frame(&mut cx) {
                Poll::Ready(None) => break true,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        chunks.push(data);
                    }
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => break false,
            }
        };
        let replay = self.replay();
        (replay, complete.then_some(chunks))
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
        if let Some(e) = this.failed {
            return Poll::Ready(Some(Err(e.into())));
        }
        let mut guard = lock(shared);
        if guard.owner < this.id {
            // The newest handle polled so far: it takes the caller's body over. The old
            // owner, if waiting for the body (whose waker is about to be this one's), is
            // woken to learn so.
            guard.owner = this.id;
            if let Some(waker) = guard.parked.take() {
                drop(guard);
                waker.wake();
                guard = lock(shared);
            }
        }
        let s = &mut *guard;
        loop {
            // Replay what was recorded.
            if this.pos < s.read {
                if s.failed {
                    return fail(&mut this.failed, ReplayError::Failed);
                }
                if s.capped {
                    return fail(&mut this.failed, ReplayError::Capped);
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
                return fail(&mut this.failed, ReplayError::Failed);
            };
            // Only the owner reads on.
            if s.owner != this.id {
                return fail(&mut this.failed, ReplayError::Superseded);
            }
            // Read on from the caller's body.
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // Kept for a newer handle to wake: the caller's body holds this
                    // handle's waker, and will not wake any other.
                    match &mut s.parked {
                        Some(w) => w.clone_from(cx.waker()),
                        None => s.parked = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    s.ended = true;
                    s.body = None;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    s.failed = true;
                    s.body = None;
                    s.chunks = Chunks::default();
                    this.failed = Some(ReplayError::Failed);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
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
        if self.failed.is_some() {
            return false;
        }
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

/// Yields `e`, and has the handle whose `failed` this is yield it again on every later poll.
fn fail(
    failed: &mut Option<ReplayError>,
    e: ReplayError,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    *failed = Some(e);
    Poll::Ready(Some(Err(e.into())))
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
                .field("owner", &(s.owner == self.id))
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

    async fn data<B>(b: &mut ReplayBody<B>) -> Result<Bytes, BoxError>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let f = b.frame().await.expect("a frame")?;
        Ok(f.into_data().expect("data"))
    }

    fn superseded(r: Result<Bytes, BoxError>) -> bool {
        r.unwrap_err().downcast_ref::<ReplayError>() == Some(&ReplayError::Superseded)
    }

    #[test]
    fn newer_attempt_takes_the_body_over() {
        block_on(async {
            let t = ReplayBody::new(Chunks::new(&[b"ab", b"cd", b"ef"], None), 1024);
            let mut first = t.replay();
            assert_eq!(data(&mut first).await.unwrap(), "ab");
            // A connection still holds the first attempt's body when the retry is made.
            let mut second = t.replay();
            assert_eq!(data(&mut second).await.unwrap(), "ab");
            assert_eq!(data(&mut second).await.unwrap(), "cd");
            // The first still gets what was recorded, then an error where it would read on,
            // on every poll from then on; never an early end.
            assert_eq!(data(&mut first).await.unwrap(), "cd");
            assert!(superseded(data(&mut first).await));
            assert!(superseded(data(&mut first).await));
            assert!(!first.is_end_stream());
            // The second reads on to the end.
            assert_eq!(data(&mut second).await.unwrap(), "ef");
            assert!(second.frame().await.is_none());
        });
    }

    #[test]
    fn older_attempt_ends_cleanly_from_a_complete_recording() {
        block_on(async {
            let t = ReplayBody::new(Chunks::new(&[b"ab", b"cd"], Some(trailers())), 1024);
            let mut first = t.replay();
            assert_eq!(data(&mut first).await.unwrap(), "ab");
            let (all, _) = collect(t.replay()).await.unwrap();
            assert_eq!(&all[..], b"abcd");
            // The body was read to its end: the first attempt can send all of it.
            let (rest, trailers_seen) = collect(first).await.unwrap();
            assert_eq!(&rest[..], b"cd");
            assert_eq!(trailers_seen, Some(trailers()));
        });
    }

    /// A body that never has a frame ready, and counts the wakers it was given.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn waiting_older_attempt_is_woken_when_taken_over() {
        let t = ReplayBody::new(Silent, 1024);
        let mut first = t.replay();
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut first).poll_frame(&mut cx).is_pending());
        let mut second = t.replay();
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        let noop = Waker::from(Arc::new(CountWakes::default()));
        let mut other = Context::from_waker(&noop);
        assert!(Pin::new(&mut second).poll_frame(&mut other).is_pending());
        // Woken when the second takes over, and told at once rather than left waiting on a
        // body that now wakes the second only.
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        match Pin::new(&mut first).poll_frame(&mut cx) {
            Poll::Ready(Some(Err(e))) => {
                assert_eq!(e.downcast_ref(), Some(&ReplayError::Superseded));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn older_handle_polled_late_does_not_take_over() {
        block_on(async {
            let t = ReplayBody::new(Chunks::new(&[b"ab", b"cd"], None), 1024);
            // Made first, but its client had not started sending when the retry did.
            let mut first = t.replay();
            let mut second = t.replay();
            assert_eq!(data(&mut second).await.unwrap(), "ab");
            assert_eq!(data(&mut first).await.unwrap(), "ab");
            assert!(superseded(data(&mut first).await));
            assert_eq!(data(&mut second).await.unwrap(), "cd");
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

    proptest::proptest! {
        /// Whatever the chunking, the cap, and how far each of several attempts read before
        /// it was dropped or left behind, still held, by a newer one: every handle yields a
        /// prefix of the body and then either all of it or an error; an attempt made while
        /// the body is replayable, read to the end, yields exactly the body and its trailers
        /// (reading on past the cap if it must). A body within the cap stays replayable.
        #[test]
        fn held_attempts_end_whole_or_with_an_error(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..40), 0..12),
            with_trailers in proptest::bool::ANY,
            cap in 0usize..300,
            attempts in proptest::collection::vec((0usize..14, proptest::bool::ANY), 0..5),
        ) {
            block_on(async {
                let total: usize = chunks.iter().map(Vec::len).sum();
                let expected: Vec<u8> = chunks.concat();
                let body = Chunks {
                    chunks: chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
                    trailers: with_trailers.then(trailers),
                };
                let template = ReplayBody::new(body, cap);
                // Attempts that were not dropped: what each yielded so far.
                let mut held: Vec<(ReplayBody<Chunks>, Vec<u8>)> = Vec::new();
                for (reads, keep) in attempts {
                    let mut b = template.replay();
                    let mut sent = Vec::new();
                    for _ in 0..reads {
                        match b.frame().await {
                            Some(Ok(f)) => {
                                if let Ok(d) = f.into_data() {
                                    sent.extend_from_slice(&d);
                                }
                            }
                            _ => break,
                        }
                    }
                    assert!(expected.starts_with(&sent));
                    if keep {
                        held.push((b, sent));
                    }
                }
                if total <= cap {
                    assert!(template.is_replayable());
                }
                if template.is_replayable() {
                    let (all, t) = collect(template.replay()).await.unwrap();
                    assert_eq!(&all[..], &expected[..]);
                    assert_eq!(t, with_trailers.then(trailers));
                }
                // The attempts left behind: read on, each ends whole or with an error.
                for (b, mut sent) in held {
                    let mut b = b;
                    loop {
                        match b.frame().await {
                            Some(Ok(f)) => {
                                if let Ok(d) = f.into_data() {
                                    sent.extend_from_slice(&d);
                                }
                            }
                            Some(Err(_)) => {
                                assert!(expected.starts_with(&sent));
                                break;
                            }
                            None => {
                                assert_eq!(sent, expected);
                                break;
                            }
                        }
                    }
                }
            });
        }
    }
}
