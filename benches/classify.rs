//! Parsing and classification costs, and the overhead of `QuotaClassifyLayer` on the success
//! path against the bare service, measured in the same run.
//!
//! `cargo bench --bench classify`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_quota::classify::{Auto, Classify, OpenRouter, Sparse};
use tower_quota::headers::{retry_after, RateLimitInfo};
use tower_quota::QuotaClassifyLayer;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_732_226_400)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, v.parse().unwrap());
    }
    h
}

fn bench_retry_after(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_after");
    let forms = [
        ("delay-seconds", headers(&[("retry-after", "120")])),
        ("fractional", headers(&[("retry-after", "1.5")])),
        (
            "imf-fixdate",
            headers(&[("retry-after", "Thu, 21 Nov 2024 22:02:00 GMT")]),
        ),
        (
            "rfc850",
            headers(&[("retry-after", "Thursday, 21-Nov-24 22:02:00 GMT")]),
        ),
        (
            "asctime",
            headers(&[("retry-after", "Thu Nov 21 22:02:00 2024")]),
        ),
        ("retry-after-ms", headers(&[("retry-after-ms", "1500.5")])),
        (
            "grpc-pushback",
            headers(&[("grpc-retry-pushback-ms", "250")]),
        ),
        ("absent", headers(&[("content-type", "application/json")])),
    ];
    for (name, h) in &forms {
        g.bench_function(*name, |b| b.iter(|| retry_after(black_box(h), now())));
    }
    g.finish();

    let openai = headers(&[
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "29000"),
        ("x-ratelimit-reset-tokens", "2s"),
    ]);
    c.bench_function("rate_limit_info/openai", |b| {
        b.iter(|| RateLimitInfo::from_headers(black_box(&openai), now()))
    });
}

const OPENROUTER_429: &[u8] = br#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"deepseek/deepseek-chat-v3-0324:free is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations","provider_name":"Chutes","is_byok":false,"retry_after_seconds":29,"headers":{"Retry-After":"29"}}},"user_id":"user_2abc"}"#;

fn bench_classify(c: &mut Criterion) {
    let (parts, ()) = Response::builder()
        .status(429)
        .header("content-type", "application/json")
        .header("x-ratelimit-limit", "20")
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-reset", "1732226430000")
        .body(())
        .unwrap()
        .into_parts();
    let mut g = c.benchmark_group("classify_openrouter_429");
    g.bench_function("OpenRouter", |b| {
        b.iter(|| OpenRouter.classify_at(black_box(&parts), black_box(OPENROUTER_429), now()))
    });
    g.bench_function("Auto", |b| {
        b.iter(|| Auto.classify_at(black_box(&parts), black_box(OPENROUTER_429), now()))
    });
    g.finish();
}

/// Polls a future that is ready at once (the services here never wait).
fn ready_now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the bench services are always ready"),
    }
}

fn bench_layer(c: &mut Criterion) {
    let with_limits = || {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("x-request-id", "req_123")
            .header("x-ratelimit-limit-requests", "500")
            .header("x-ratelimit-remaining-requests", "499")
            .header("x-ratelimit-reset-requests", "120ms")
            .header("x-ratelimit-limit-tokens", "30000")
            .header("x-ratelimit-remaining-tokens", "29000")
            .header("x-ratelimit-reset-tokens", "2s")
            .body(Full::new(Bytes::from_static(b"{\"choices\":[]}")))
            .unwrap()
    };
    let plain = || {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("x-request-id", "req_123")
            .body(Full::new(Bytes::from_static(b"{\"choices\":[]}")))
            .unwrap()
    };
    for (name, make) in [
        (
            "2xx_plain",
            &plain as &(dyn Fn() -> Response<Full<Bytes>> + Sync),
        ),
        ("2xx_openai_ratelimit_headers", &with_limits),
    ] {
        let mut bare =
            service_fn(move |_: Request<()>| std::future::ready(Ok::<_, Infallible>(make())));
        let mut layered = QuotaClassifyLayer::default().layer(bare);
        let mut sparse = QuotaClassifyLayer::new(Sparse(Auto)).layer(bare);
        let mut g = c.benchmark_group(format!("success_path/{name}"));
        g.bench_function("bare", |b| {
            b.iter(|| ready_now(bare.call(Request::new(()))).unwrap())
        });
        g.bench_function("QuotaClassify", |b| {
            b.iter(|| ready_now(layered.call(Request::new(()))).unwrap())
        });
        g.bench_function("QuotaClassify_sparse", |b| {
            b.iter(|| ready_now(sparse.call(Request::new(()))).unwrap())
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_retry_after, bench_classify, bench_layer
}
criterion_main!(benches);
