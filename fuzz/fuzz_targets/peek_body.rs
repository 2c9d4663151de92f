//! `QuotaClassifyLayer`'s body peek (`PeekBody`): a response whose body arrives in arbitrary
//! chunks (non-contiguous buffers, `Pending` between them, trailers, or an error at the end)
//! passes through the layer, with an arbitrary peek cap, and comes out with exactly the
//! bytes, trailers and error that went in, honouring the body contract on the way.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service};
use tower_quota::classify::{Auto, Classification, DEFAULT_MAX_BODY};
use tower_quota::QuotaClassifyLayer;
use tower_quota_fuzz::{block_on, drain, parse_text, Headers, Now, Stream};

#[derive(Arbitrary, Debug)]
struct Input {
    status: u16,
    headers: Headers,
    body: Stream,
    max_body: u16,
    now: Now,
}

fuzz_target!(|data: &[u8]| {
    // A response written as text (the seeds; its body in 7-byte chunks with a `Pending`
    // before each), or a structured input.
    if let Some(text) = parse_text(data) {
        let body = Stream::seeded(&text.body);
        run(text.status, text.headers, body, DEFAULT_MAX_BODY);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        let headers = input.headers.map(input.now.time());
        run(
            input.status,
            headers,
            input.body,
            usize::from(input.max_body),
        );
    }
});

fn run(status: u16, headers: HeaderMap, stream: Stream, max_body: usize) {
    let Ok(status) = http::StatusCode::from_u16(status) else {
        return;
    };
    let mut resp = http::Response::new(stream.body());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    let mut resp = Some(resp);
    let inner = tower::service_fn(move |_: http::Request<()>| {
        let resp = resp.take().expect("one call");
        std::future::ready(Ok::<_, std::convert::Infallible>(resp))
    });
    let mut svc = QuotaClassifyLayer::new(Auto)
        .with_max_body(max_body)
        .layer(inner);

    let polls = 64 + 8 * stream.pieces.len();
    let resp = block_on(svc.call(http::Request::new(())), polls).expect("infallible");
    assert!(resp.extensions().get::<Classification>().is_some());
    assert_eq!(resp.status(), status);

    let expected = stream.bytes();
    let total = (!stream.fails).then_some(expected.len() as u64);
    let mut body = resp.into_body();
    let out = drain(std::pin::Pin::new(&mut body), total, polls);
    assert_eq!(out.bytes, expected, "bytes out differ from bytes in");
    assert_eq!(out.error.is_some(), stream.fails, "{out:?}");
    assert_eq!(out.trailers, stream.trailer_map(), "{out:?}");
}
