//! [`Paced`]: a request body whose chunks arrive over time, for the replay tests and the
//! `replay_body` fuzz target (which includes this file with `#[path]`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The caller's body: each chunk after its own delay (none: ready at once), then the
/// trailers. It keeps one waker, the last poller's, as a timer or a socket does.
pub struct Paced {
    chunks: VecDeque<(Duration, Bytes)>,
    trailers: Option<HeaderMap>,
    exact: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Paced {
    /// The chunks with their delays, then the trailers; `exact`: the size hint is exact
    /// (else unknown).
    pub fn new(chunks: Vec<(Duration, Bytes)>, trailers: Option<HeaderMap>, exact: bool) -> Self {
        Paced {
            chunks: chunks.into(),
            trailers,
            exact,
            sleep: None,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let Some(&(delay, _)) = this.chunks.front() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        if !delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let (_, chunk) = this.chunks.pop_front().expect("a chunk");
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if !self.exact {
            return SizeHint::new();
        }
        SizeHint::with_exact(self.chunks.iter().map(|(_, c)| c.len() as u64).sum())
    }
}
