//! QuotaClassifyLayer: the verdict is attached, and the body handed on is the body received.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass, Scope};
use tower_quota::QuotaClassifyLayer;

/// A body that yields scripted frames and counts how many were polled.
struct Script {
    frames: VecDeque<Result<Frame<Bytes>, io::Error>>,
    polled: Arc<AtomicUsize>,
    exact: bool,
}

impl Script {
    fn new(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> (Self, Arc<AtomicUsize>) {
        let polled = Arc::new(AtomicUsize::new(0));
        let body = Script {
            frames: frames.into(),
            polled: polled.clone(),
            exact: false,
        };
        (body, polled)
    }

    fn chunks(data: &[u8], chunk: usize) -> Vec<Result<Frame<Bytes>, io::Error>> {
        data.chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect()
    }
}

impl Body for Script {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(self.frames.pop_front())
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if !self.exact {
            return SizeHint::default();
        }
        let left = self
            .frames
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        SizeHint::with_exact(left)
    }
}

/// What a body yielded: its bytes, its trailers, and the error it ended with.
#[derive(Debug, Default)]
struct Drained {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    error: Option<String>,
    frames: usize,
}

async fn drain<B>(mut body: B) -> Drained
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Drained::default();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                out.frames += 1;
                match frame.into_data() {
                    Ok(d) => out.data.extend_from_slice(&d),
                    Err(f) => out.trailers = f.into_trailers().ok(),
                }
            }
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        }
    }
    out
}

/// A service that answers its one call with `status` and `body`.
fn respond_with<B>(
    status: u16,
    body: B,
) -> impl tower::Service<
    Request<()>,
    Response = Response<B>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<B>, Infallible>>,
> + Clone {
    let slot = Arc::new(std::sync::Mutex::new(Some(body)));
    service_fn(move |_req: Request<()>| {
        let body = slot.lock().unwrap().take().expect("one call");
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(resp))
    })
}

fn classification<B>(resp: &Response<B>) -> &Classification {
    resp.extensions()
        .get::<Classification>()
        .expect("a classification is attached")
}

#[tokio::test]
async fn success_body_is_not_read_before_the_response_is_returned() {
    let (body, polled) = Script::new(Script::chunks(b"data: {\"choices\":[]}\n\n", 4));
    let svc = QuotaClassifyLayer::default().layer(respond_with(200, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        polled.load(Ordering::SeqCst),
        0,
        "a 2xx body must not be touched"
    );
    assert_eq!(classification(&resp).class(), QuotaClass::Success);
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data, b"data: {\"choices\":[]}\n\n");
}

#[tokio::test]
async fn error_body_is_classified_and_handed_on_intact() {
    let json = br#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x is temporarily rate-limited upstream","provider_name":"Chutes","retry_after_seconds":29}}}"#;
    let (body, _) = Script::new(Script::chunks(json, 7));
    let svc = QuotaClassifyLayer::default().layer(respond_with(429, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    let c = classification(&resp);
    assert_eq!(c.class(), QuotaClass::RateLimited);
    assert_eq!(c.scope(), Scope::Upstream);
    assert_eq!(c.retry_after(), Some(std::time::Duration::from_secs(29)));
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data, json.to_vec());
    assert_eq!(
        out.frames,
        json.len().div_ceil(7),
        "frames are re-emitted as they came"
    );
}

#[tokio::test]
async fn ten_megabyte_error_body_reads_only_the_cap() {
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (body, polled) = Script::new(Script::chunks(&big, 16 * 1024));
    let svc = QuotaClassifyLayer::default().layer(respond_with(500, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    // 64 KiB cap / 16 KiB frames: exactly four frames read before the response is returned.
    assert_eq!(polled.load(Ordering::SeqCst), 4);
    assert_eq!(classification(&resp).class(), QuotaClass::ServerError);
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data.len(), big.len());
    assert!(out.data == big, "bytes out == bytes in");
}

#[tokio::test]
async fn one_huge_frame_is_passed_on_whole() {
    let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    let (body, _) = Script::new(vec![Ok(Frame::data(big.clone()))]);
    let svc = QuotaClassifyLayer::default().layer(respond_with(503, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(classification(&resp).class(), QuotaClass::Unavailable);
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data, big.to_vec());
}

#[tokio::test]
async fn json_cut_at_the_cap_falls_back_to_markers() {
    let mut json =
        br#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":""#
            .to_vec();
    json.extend(std::iter::repeat_n(b'a', 500));
    json.extend_from_slice(br#""}}"#);
    let (body, _) = Script::new(Script::chunks(&json, 64));
    let svc = QuotaClassifyLayer::default()
        .with_max_body(128)
        .layer(respond_with(429, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    let c = classification(&resp);
    assert_eq!(c.class(), QuotaClass::QuotaExhausted);
    assert!(!c.should_retry());
    assert_eq!(drain(resp.into_body()).await.data, json);
}

#[tokio::test]
async fn body_that_is_not_json_or_not_utf8() {
    for payload in [
        &b"<html><h1>502 Bad Gateway</h1></html>"[..],
        &b"\xff\xfe\x00{not json"[..],
        &b"{\"error\": "[..],
        &b"null"[..],
    ] {
        let (body, _) = Script::new(Script::chunks(payload, 5));
        let svc = QuotaClassifyLayer::default().layer(respond_with(502, body));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(classification(&resp).class(), QuotaClass::Unavailable);
        assert_eq!(drain(resp.into_body()).await.data, payload);
    }
}

#[tokio::test]
async fn stream_error_midway_is_passed_on_after_the_bytes() {
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"error\":"))),
        Ok(Frame::data(Bytes::from_static(b"{\"message\""))),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        )),
        Ok(Frame::data(Bytes::from_static(b"never"))),
    ];
    let (body, _) = Script::new(frames);
    let svc = QuotaClassifyLayer::default().layer(respond_with(429, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(classification(&resp).class(), QuotaClass::RateLimited);
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data, b"{\"error\":{\"message\"");
    assert_eq!(out.error.as_deref(), Some("reset by peer"));
}

#[tokio::test]
async fn stream_error_past_the_cap_is_passed_on_too() {
    let mut frames = Script::chunks(&[b'z'; 200], 50);
    frames.push(Err(io::Error::other("late failure")));
    let (body, _) = Script::new(frames);
    let svc = QuotaClassifyLayer::default()
        .with_max_body(60)
        .layer(respond_with(500, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    let out = drain(resp.into_body()).await;
    assert_eq!(out.data.len(), 200);
    assert_eq!(out.error.as_deref(), Some("late failure"));
}

#[tokio::test]
async fn trailers_are_kept_within_and_past_the_cap() {
    for cap in [1024, 4] {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "8".parse().unwrap());
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"0123456789"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let (body, _) = Script::new(frames);
        let svc = QuotaClassifyLayer::default()
            .with_max_body(cap)
            .layer(respond_with(500, body));
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        let out = drain(resp.into_body()).await;
        assert_eq!(out.data, b"0123456789");
        assert_eq!(out.trailers, Some(trailers), "cap {cap}");
    }
}

#[tokio::test]
async fn zero_cap_never_reads_the_body() {
    let (body, polled) = Script::new(Script::chunks(
        br#"{"error":{"type":"insufficient_quota"}}"#,
        8,
    ));
    let svc = QuotaClassifyLayer::default()
        .with_max_body(0)
        .layer(respond_with(429, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(polled.load(Ordering::SeqCst), 0);
    assert_eq!(classification(&resp).class(), QuotaClass::RateLimited);
}

#[tokio::test]
async fn size_hint_is_preserved_through_the_peek() {
    let json = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (mut body, _) = Script::new(Script::chunks(json, 10));
    body.exact = true;
    let svc = QuotaClassifyLayer::default()
        .with_max_body(20)
        .layer(respond_with(529, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(classification(&resp).class(), QuotaClass::Overloaded);
    // Two 10-byte frames were read ahead: they count in the hint, which stays exact.
    assert_eq!(resp.body().size_hint().exact(), Some(json.len() as u64));
    assert_eq!(drain(resp.into_body()).await.data, json);
}

#[tokio::test]
async fn empty_error_body_is_classified_from_the_head() {
    let (body, _) = Script::new(vec![]);
    let svc = QuotaClassifyLayer::default().layer(respond_with(401, body));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(classification(&resp).class(), QuotaClass::Auth);
    assert!(resp.body().is_end_stream());
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Refused(u32);
    let svc = QuotaClassifyLayer::default().layer(service_fn(|_: Request<()>| async {
        Err::<Response<Script>, _>(Refused(7))
    }));
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(err, Refused(7));
}

/// A body fed through a channel: pending until the test sends the next frame.
struct Channel {
    rx: tokio::sync::mpsc::UnboundedReceiver<Frame<Bytes>>,
    _alive: Arc<()>,
}

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A channel body, its sender, and a token that tells whether the body is still alive.
fn channel() -> (
    Channel,
    tokio::sync::mpsc::UnboundedSender<Frame<Bytes>>,
    Arc<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let alive = Arc::new(());
    let body = Channel {
        rx,
        _alive: alive.clone(),
    };
    (body, tx, alive)
}

#[tokio::test]
async fn a_body_arriving_slowly_is_waited_for() {
    let (body, tx, _) = channel();
    let svc = QuotaClassifyLayer::default().layer(respond_with(429, body));
    let mut fut = std::pin::pin!(svc.oneshot(Request::new(())));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "waits for the error body"
    );
    tx.send(Frame::data(Bytes::from_static(
        br#"{"error":{"type":"insufficient_quota","#,
    )))
    .unwrap();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    tx.send(Frame::data(Bytes::from_static(br#""message":"quota"}}"#)))
        .unwrap();
    drop(tx);
    let resp = fut.await.unwrap();
    assert_eq!(classification(&resp).class(), QuotaClass::QuotaExhausted);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        br#"{"error":{"type":"insufficient_quota","message":"quota"}}"#
    );
}

#[tokio::test]
async fn dropping_the_future_mid_peek_releases_the_body() {
    let (body, tx, alive) = channel();
    let svc = QuotaClassifyLayer::default().layer(respond_with(503, body));
    let mut fut = Box::pin(svc.oneshot(Request::new(())));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    tx.send(Frame::data(Bytes::from_static(b"partial")))
        .unwrap();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        Arc::strong_count(&alive),
        2,
        "the body is held while peeking"
    );
    drop(fut);
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "and released when the future is dropped"
    );
}
