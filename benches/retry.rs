//! The success path (a 200 with a tiny body) through `RetryAfter`, through tower's own
//! `Retry` with a trivial policy (clone the request, never retry), and through the bare
//! service, in the same run.
//!
//! Two more pairs separate the cost of the retry budget: `RetryAfter` without a budget
//! (`NoBudget`), and tower's `Retry` with a policy that deposits into a `TpsBudget` on each
//! success, as tower's docs suggest. `RetryAfter` without reading the JSON request's facts
//! for a rate limit below (`with_request_facts(false)`) shows what that reading costs.
//!
//! The futures complete on their first poll, so they are polled by hand with a no-op waker
//! instead of paying a `block_on` per iteration that would drown the difference. No runtime
//! is entered: the dev-dependencies turn on tokio's `test-util`, under which
//! `tokio::time::Instant::now()` inside a runtime reads the mockable clock behind a mutex —
//! a cost release builds do not have. Outside a runtime it is the plain monotonic clock.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::Service;
use tower_layer::Layer;
use tower_quota::retry::NoBudget;
use tower_quota::RetryAfterLayer;

/// The inner "client": reads the request body, answers 200 with a tiny body.
fn server<B>() -> impl Service<
    http::Request<B>,
    Response = http::Response<Full<Bytes>>,
    Error = std::convert::Infallible,
> + Clone
where
    B: Body + Unpin,
{
    tower::service_fn(|req: http::Request<B>| async move {
        let mut body = req.into_body();
        let mut n = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                n += bytes::Buf::remaining(&data);
            }
        }
        black_box(n);
        let mut resp = http::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        Ok(resp)
    })
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::post("https://openrouter.ai/api/v1/chat/completions")
        .header("authorization", "Bearer sk-or-v1-0000000000000000")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"model\":\"meta-llama/llama-3.3-70b-instruct:free\",\"messages\":[]}",
        )))
        .unwrap()
}

/// tower's `Retry` with the most trivial policy that can retry at all: it clones the request
/// and never retries.
#[derive(Clone)]
struct Trivial;

impl<ResB, E> Policy<http::Request<Full<Bytes>>, http::Response<ResB>, E> for Trivial {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut http::Request<Full<Bytes>>,
        _: &mut Result<http::Response<ResB>, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(
        &mut self,
        req: &http::Request<Full<Bytes>>,
    ) -> Option<http::Request<Full<Bytes>>> {
        let mut r = http::Request::new(req.body().clone());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        *r.extensions_mut() = req.extensions().clone();
        Some(r)
    }
}

/// tower's `Retry` with the trivial policy plus a `TpsBudget` deposit per success.
#[derive(Clone)]
struct Budgeted(Arc<TpsBudget>);

impl<ResB, E> Policy<http::Request<Full<Bytes>>, http::Response<ResB>, E> for Budgeted {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut http::Request<Full<Bytes>>,
        result: &mut Result<http::Response<ResB>, E>,
    ) -> Option<Self::Future> {
        if result.is_ok() {
            self.0.deposit();
        }
        None
    }

    fn clone_request(
        &mut self,
        req: &http::Request<Full<Bytes>>,
    ) -> Option<http::Request<Full<Bytes>>> {
        <Trivial as Policy<_, http::Response<ResB>, E>>::clone_request(&mut Trivial, req)
    }
}

/// Sends one request, polling the (immediately ready) futures by hand.
fn once<S, ResB>(svc: &mut S, cx: &mut Context<'_>) -> http::Response<ResB>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<ResB>>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let fut = pin!(svc.call(request()));
    match fut.poll(cx) {
        Poll::Ready(Ok(resp)) => resp,
        _ => panic!("not ready"),
    }
}

fn success_path(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = server::<Full<Bytes>>();
    let mut tower_retry = Retry::new(Trivial, server::<Full<Bytes>>());
    let mut retry_after = RetryAfterLayer::new().layer(server());
    let mut tower_retry_budget = Retry::new(
        Budgeted(Arc::new(TpsBudget::default())),
        server::<Full<Bytes>>(),
    );
    let mut retry_after_no_budget = RetryAfterLayer::new().with_budget(NoBudget).layer(server());
    // Without reading the JSON body's facts for a rate limit below (the model, the token
    // estimate): what a stack with no such limit pays.
    let mut retry_after_no_facts = RetryAfterLayer::new()
        .with_request_facts(false)
        .layer(server());

    let mut group = c.benchmark_group("success_path");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60);
    group.bench_function("bare", |b| b.iter(|| black_box(once(&mut bare, &mut cx))));
    group.bench_function("tower_retry", |b| {
        b.iter(|| black_box(once(&mut tower_retry, &mut cx)))
    });
    group.bench_function("retry_after", |b| {
        b.iter(|| black_box(once(&mut retry_after, &mut cx)))
    });
    group.bench_function("tower_retry_budget", |b| {
        b.iter(|| black_box(once(&mut tower_retry_budget, &mut cx)))
    });
    group.bench_function("retry_after_no_budget", |b| {
        b.iter(|| black_box(once(&mut retry_after_no_budget, &mut cx)))
    });
    group.bench_function("retry_after_no_facts", |b| {
        b.iter(|| black_box(once(&mut retry_after_no_facts, &mut cx)))
    });
    group.finish();
}

criterion_group!(benches, success_path);
criterion_main!(benches);
