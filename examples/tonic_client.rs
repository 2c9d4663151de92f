//! A tonic `Channel` behind the three layers, against a tonic server that pushes back.
//!
//! The server answers its first two calls `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms:
//! 250` (a rate limit, with the delay it wants), then answers; a call for the model
//! `quota-gone` always gets `RESOURCE_EXHAUSTED` *without* a pushback (a quota that is used
//! up). What it shows:
//!
//! - the client retries after the pushback — never earlier — and each attempt sends the very
//!   same request bytes (the retry layer's replay body, boxed back into a
//!   `tonic::body::Body` in front of the channel);
//! - a `RESOURCE_EXHAUSTED` without pushback is classified `quota_exhausted` and returned at
//!   once, after one attempt.
//!
//! No protoc: the messages are `prost::Message` derives written by hand, the calls go through
//! tonic's low-level `tonic::client::Grpc` / `tonic::server::Grpc` with tonic-prost's
//! `ProstCodec`. Any generated client works the same way: it is generic over the service.
//!
//! Run it with `cargo run --example tonic_client`; it exits non-zero if any of this fails.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{BoxError, Service, ServiceBuilder};
use tower_quota::classify::{self, Classification, PeekBody, QuotaClass};
use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
use tower_quota::{Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

// === the messages (what `prost-build` would generate from a .proto) ===

/// `llm.v1.CompleteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompleteRequest {
    #[prost(string, tag = "1")]
    pub model: String,
    #[prost(string, tag = "2")]
    pub prompt: String,
}

/// `llm.v1.CompleteReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompleteReply {
    #[prost(string, tag = "1")]
    pub text: String,
    /// Which call of the server this was (1-based).
    #[prost(uint32, tag = "2")]
    pub call: u32,
}

const COMPLETE: &str = "/llm.v1.Completions/Complete";
const PUSHBACK: Duration = Duration::from_millis(250);

// === the server ===

/// `llm.v1.Completions`: pushes back on its first two calls, and records every request.
#[derive(Clone, Default)]
struct Completions {
    seen: Arc<Mutex<Vec<CompleteRequest>>>,
}

impl Completions {
    fn complete(&self, req: CompleteRequest) -> Result<tonic::Response<CompleteReply>, Status> {
        let call = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(req.clone());
            seen.len() as u32
        };
        if req.model == "quota-gone" {
            return Err(Status::resource_exhausted("monthly token quota used up"));
        }
        if call <= 2 {
            let mut status = Status::resource_exhausted("too many requests, slow down");
            status.metadata_mut().insert(
                "grpc-retry-pushback-ms",
                PUSHBACK.as_millis().to_string().parse().unwrap(),
            );
            return Err(status);
        }
        Ok(tonic::Response::new(CompleteReply {
            text: format!("echo: {}", req.prompt),
            call,
        }))
    }
}

impl Service<http::Request<Body>> for Completions {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != COMPLETE {
                return Ok(Status::unimplemented(req.uri().path().to_string()).into_http());
            }
            let handler = tower::service_fn(move |r: tonic::Request<CompleteRequest>| {
                let result = this.complete(r.into_inner());
                async move { result }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<CompleteReply, _>::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

// === the client ===

/// What the retry layer returned last: its classification and retry record (a
/// `tonic::Status` keeps neither, so they are read off the HTTP response).
type Probe = Arc<Mutex<Option<(Classification, RetryInfo)>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let server = Completions::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Server::builder().serve_with_incoming_shutdown(
        server.clone(),
        TcpIncoming::from(listener),
        async {
            let _ = stopped.await;
        },
    ));

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let probe: Probe = Probe::default();
    let seen = probe.clone();
    let stack = ServiceBuilder::new()
        .map_response(move |resp: http::Response<PeekBody<Body>>| {
            let class = resp.extensions().get::<Classification>().cloned();
            let info = RetryInfo::get(resp.extensions());
            *seen.lock().unwrap() = class.map(|c| (c, info));
            resp
        })
        .layer(RetryAfterLayer::new())
        .layer(RateLimitLayer::new(
            Tier::new("grpc").with_quota(Quota::per_second(50)),
        ))
        .layer(QuotaClassifyLayer::new(classify::Grpc))
        // A `Channel` takes `tonic::body::Body` only: box the replay body back into one.
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel);
    let mut client = tonic::client::Grpc::new(stack);

    // 1. Pushed back twice, then answered.
    let request = CompleteRequest {
        model: "llama-3.3-70b".into(),
        prompt: "Say hi in five words.".into(),
    };
    let start = Instant::now();
    client.ready().await?;
    let reply = client
        .unary(
            tonic::Request::new(request.clone()),
            PathAndQuery::from_static(COMPLETE),
            ProstCodec::<CompleteRequest, CompleteReply>::default(),
        )
        .await?;
    let took = start.elapsed();
    let info = *reply.extensions().get::<RetryInfo>().unwrap();
    let reply = reply.into_inner();
    println!("pushback: {PUSHBACK:?} on the first two calls");
    println!(
        "  reply {:?} (server call #{}), attempts {}, after {:.0}ms",
        reply.text,
        reply.call,
        info.attempts,
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(reply.text, "echo: Say hi in five words.");
    assert_eq!((info.attempts, info.stopped), (3, StopReason::Success));
    assert!(took >= 2 * PUSHBACK, "each pushback was waited out");
    let sent = server.seen.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![request.clone(); 3],
        "every attempt sent the same request"
    );
    println!("  the server got the same request {} times", sent.len());

    // 2. A quota that is used up: returned at once.
    let start = Instant::now();
    client.ready().await?;
    let status = client
        .unary(
            tonic::Request::new(CompleteRequest {
                model: "quota-gone".into(),
                prompt: "hi".into(),
            }),
            PathAndQuery::from_static(COMPLETE),
            ProstCodec::<CompleteRequest, CompleteReply>::default(),
        )
        .await
        .unwrap_err();
    let took = start.elapsed();
    let (class, info) = probe.lock().unwrap().clone().unwrap();
    println!("quota used up:");
    println!(
        "  {:?} {:?}, class {}, attempts {}, stopped {:?}, after {:.0}ms",
        status.code(),
        status.message(),
        class.class().as_str(),
        info.attempts,
        info.stopped,
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(class.class(), QuotaClass::QuotaExhausted);
    assert_eq!((info.attempts, info.stopped), (1, StopReason::NotRetryable));
    assert_eq!(server.seen.lock().unwrap().len(), 4);

    let _ = stop.send(());
    serving.await??;
    println!("ok");
    Ok(())
}
