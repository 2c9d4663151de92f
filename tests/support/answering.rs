//! [`Answering`]: a reqwest middleware, placed last, that answers without a network — the
//! scripted server of the tests that drive the reqwest middleware (and async-openai through
//! it) in paused tokio time.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};

/// What the `n`th call (from 0) is answered with: a response, or a transport error.
pub type Script = dyn Fn(usize) -> Result<http::Response<Bytes>, io::Error> + Send + Sync;

/// Answers each call from its script, counting the calls.
#[derive(Clone)]
pub struct Answering {
    script: Arc<Script>,
    calls: Arc<AtomicUsize>,
}

impl Answering {
    pub fn new(
        script: impl Fn(usize) -> Result<http::Response<Bytes>, io::Error> + Send + Sync + 'static,
    ) -> Answering {
        Answering {
            script: Arc::new(script),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The calls answered so far.
    #[allow(dead_code)] // not every test that includes this file needs it
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A response of `status` with `headers` and `body`.
#[allow(dead_code)] // not every test that includes this file needs it
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    body: &'static str,
) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::from_static(body.as_bytes())).unwrap()
}

#[async_trait::async_trait]
impl Middleware for Answering {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match (self.script)(n) {
            Ok(response) => Ok(reqwest::Response::from(response)),
            Err(e) => Err(reqwest_middleware::Error::middleware(e)),
        }
    }
}
