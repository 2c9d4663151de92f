//! Allocations on the success path of `QuotaClassifyLayer`, counted by a global allocator
//! (one test binary of its own: the allocator counts every allocation of this thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_quota::classify::{Auto, Classification, OpenAi, QuotaClass, Sparse};
use tower_quota::QuotaClassifyLayer;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Polls `f` once (the services here answer at once) and counts the allocations it made.
fn count<F: Future>(f: F) -> (F::Output, u64) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = pin!(f);
    let before = allocations();
    let out = match f.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the service answers at once"),
    };
    (out, allocations() - before)
}

/// A 200 with a JSON body and the headers every response has, none about rate limits.
fn plain_ok() -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-request-id", "req_123")
        .body(Full::new(Bytes::from_static(b"{\"choices\":[]}")))
        .unwrap()
}

#[test]
fn a_plain_2xx_through_a_sparse_classifier_allocates_nothing() {
    let inner = service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(plain_ok())));
    let mut svc = QuotaClassifyLayer::new(Sparse(Auto)).layer(inner);
    for _ in 0..3 {
        let (resp, n) = count(svc.call(Request::new(())));
        let resp = resp.unwrap();
        assert_eq!(n, 0, "allocations while polling the 2xx through the layer");
        assert_eq!(resp.status(), 200);
        assert!(resp.extensions().get::<Classification>().is_none());
    }
    // The same with a provider classifier.
    let mut svc = QuotaClassifyLayer::new(Sparse(OpenAi)).layer(inner);
    let (_, n) = count(svc.call(Request::new(())));
    assert_eq!(n, 0);
}

#[test]
fn what_there_is_to_report_is_still_attached() {
    // A 2xx with rate-limit headers: the limiter learns from it.
    let inner = service_fn(|_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(
            Response::builder()
                .status(200)
                .header("x-ratelimit-limit-requests", "500")
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "2s")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ))
    });
    let mut svc = QuotaClassifyLayer::new(Sparse(Auto)).layer(inner);
    let (resp, _) = count(svc.call(Request::new(())));
    let resp = resp.unwrap();
    let c = resp.extensions().get::<Classification>().unwrap();
    assert_eq!(c.class(), QuotaClass::Success);
    assert!(!c.rate_limit().is_empty());
    // An error status always carries one.
    let inner = service_fn(|_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ))
    });
    let mut svc = QuotaClassifyLayer::new(Sparse(Auto)).layer(inner);
    let (resp, _) = count(svc.call(Request::new(())));
    let resp = resp.unwrap();
    let c = resp.extensions().get::<Classification>().unwrap();
    assert_eq!(c.class(), QuotaClass::Unavailable);
}

#[test]
fn the_default_classifier_attaches_one_to_every_response() {
    // The documented default: every response carries a classification, which costs the
    // extensions map and the box.
    let inner = service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(plain_ok())));
    let mut svc = QuotaClassifyLayer::new(Auto).layer(inner);
    let (resp, n) = count(svc.call(Request::new(())));
    let resp = resp.unwrap();
    assert!(n > 0);
    assert!(resp
        .extensions()
        .get::<Classification>()
        .is_some_and(Classification::is_plain_success));
}
