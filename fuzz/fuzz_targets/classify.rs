//! Every classifier (OpenRouter, OpenAi, Anthropic, LiteLlm, Grpc, Google, Generic, Auto) on an
//! arbitrary status, arbitrary headers (in every vendor format) and an arbitrary body (JSON in
//! the providers' vocabulary, possibly cut short, or raw bytes).
#![no_main]

use std::time::SystemTime;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tower_quota::classify::{
    Anthropic, Auto, Classification, Classify, Generic, Google, Grpc, LiteLlm, OpenAi, OpenRouter,
    QuotaClass,
};
use tower_quota::headers::MAX_DELAY;
use tower_quota_fuzz::{parse_text, text_now, ErrorBody, Headers, Now};

#[derive(Arbitrary, Debug)]
struct Input {
    status: u16,
    headers: Headers,
    body: ErrorBody,
    now: Now,
}

fn check(c: &Classification) {
    assert!(c.retry_after().is_none_or(|d| d <= MAX_DELAY), "{c:?}");
    assert!(c.reset_after().is_none_or(|d| d <= MAX_DELAY), "{c:?}");
    let _ = c.reset_at();
    assert!(c.message().is_none_or(|m| m.len() <= 256), "{c:?}");
    assert!(c.provider().is_none_or(|m| m.len() <= 64), "{c:?}");
    assert!(c.code().is_none_or(|m| m.len() <= 64), "{c:?}");
    let _ = (
        format!("{c:?}"),
        c.class().as_str(),
        c.scope().as_str(),
        c.should_retry(),
    );
}

fuzz_target!(|data: &[u8]| {
    // A response written as text (the seeds), or a structured input.
    if let Some(text) = parse_text(data) {
        let Ok(status) = http::StatusCode::from_u16(text.status) else {
            return;
        };
        let mut builder = http::Response::builder().status(status);
        *builder.headers_mut().expect("a builder") = text.headers;
        let (parts, ()) = builder.body(()).expect("a response").into_parts();
        run(&parts, &text.body, text_now());
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        let Ok(status) = http::StatusCode::from_u16(input.status) else {
            return;
        };
        let now = input.now.time();
        let mut builder = http::Response::builder().status(status);
        *builder.headers_mut().expect("a builder") = input.headers.map(now);
        let (parts, ()) = builder.body(()).expect("a response").into_parts();
        run(&parts, &input.body.bytes(), now);
    }
});

/// Each classifier as its `Default` makes it (the documented way to get one).
fn boxed<C: Classify + Default + 'static>() -> Box<dyn Classify> {
    Box::new(C::default())
}

fn run(parts: &http::response::Parts, body: &[u8], now: SystemTime) {
    let status = parts.status;
    let _ = QuotaClass::from_status(status);

    let classifiers: [Box<dyn Classify>; 8] = [
        boxed::<OpenRouter>(),
        boxed::<OpenAi>(),
        boxed::<Anthropic>(),
        boxed::<LiteLlm>(),
        boxed::<Grpc>(),
        boxed::<Google>(),
        boxed::<Generic>(),
        boxed::<Auto>(),
    ];
    for classifier in &classifiers {
        let _ = classifier.wants_body(parts);
        let c = classifier.classify_at(parts, body, now);
        check(&c);
        // Deterministic at a given time.
        let again = classifier.classify_at(parts, body, now);
        assert_eq!(format!("{c:?}"), format!("{again:?}"));
    }
}
