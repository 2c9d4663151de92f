//! A tonic `Channel` behind the three layers, against a tonic server, in paused tokio time.
//!
//! Client and server are tonic's own (HTTP/2, `tonic::client::Grpc` / `tonic::server::Grpc`
//! with hand-written prost messages: no protoc); the channel's connector hands it an
//! in-memory duplex stream that a `tonic::transport::Server` serves, so paused time stays
//! deterministic.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{BoxError, Service, ServiceBuilder};
use tower_quota::classify::{self, Classification, PeekBody, QuotaClass};
use tower_quota::retry::{ReplayBody, RetryInfo, StopReason};
use tower_quota::{Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

#[derive(Clone, PartialEq, prost::Message)]
struct CompleteRequest {
    #[prost(string, tag = "1")]
    model: String,
    #[prost(string, tag = "2")]
    prompt: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CompleteReply {
    #[prost(string, tag = "1")]
    text: String,
}

const COMPLETE: &str = "/llm.v1.Completions/Complete";

// === the server ===

/// How the server answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// The first calls get `RESOURCE_EXHAUSTED` with this `grpc-retry-pushback-ms` value.
    pushbacks: Vec<&'static str>,
    /// At most this many calls per rolling window; more get `RESOURCE_EXHAUSTED` with the
    /// pushback until the oldest leaves.
    limit: Option<(usize, Duration)>,
}

/// A unary `Complete` that answers per its [`Behaviour`] and records every call.
#[derive(Clone)]
struct Completions {
    behaviour: Behaviour,
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    requests: Vec<CompleteRequest>,
    admitted: Vec<Instant>,
    refused: usize,
}

impl Completions {
    fn new(behaviour: Behaviour) -> Self {
        Completions {
            behaviour,
            log: Arc::default(),
        }
    }

    fn requests(&self) -> Vec<CompleteRequest> {
        self.log.lock().unwrap().requests.clone()
    }

    fn complete(&self, req: CompleteRequest) -> Result<CompleteReply, Status> {
        let mut log = self.log.lock().unwrap();
        log.requests.push(req.clone());
        let call = log.requests.len();
        if req.model == "quota-gone" {
            log.refused += 1;
            return Err(Status::resource_exhausted("monthly token quota used up"));
        }
        if let Some(pushback) = self.behaviour.pushbacks.get(call - 1) {
            log.refused += 1;
            return Err(pushed_back(pushback));
        }
        if let Some((n, window)) = self.behaviour.limit {
            let now = Instant::now();
            let recent: Vec<Instant> = log
                .admitted
                .iter()
                .copied()
                .filter(|&t| now < t + window)
                .collect();
            if recent.len() >= n {
                log.refused += 1;
                let wait = recent[recent.len() - n] + window - now;
                return Err(pushed_back(&wait.as_millis().to_string()));
            }
        }
        log.admitted.push(Instant::now());
        Ok(CompleteReply {
            text: format!("echo: {}", req.prompt),
        })
    }
}

fn pushed_back(ms: &str) -> Status {
    let mut status = Status::resource_exhausted("slow down");
    status
        .metadata_mut()
        .insert("grpc-retry-pushback-ms", ms.parse().unwrap());
    status
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
                let result = this.complete(r.into_inner()).map(tonic::Response::new);
                async move { result }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<CompleteReply, _>::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// A channel to `server` over in-memory duplex streams, one per connection.
async fn channel(server: &Completions) -> Channel {
    let server = server.clone();
    Endpoint::from_static("http://grpc.test")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (client, io) = tokio::io::duplex(64 * 1024);
            let server = server.clone();
            tokio::spawn(
                Server::builder()
                    .serve_with_incoming(server, tokio_stream::once(Ok::<_, io::Error>(io))),
            );
            async move { Ok::<_, io::Error>(TokioIo::new(client)) }
        }))
        .await
        .unwrap()
}

// === the client ===

type Probe = Arc<Mutex<Option<(Classification, RetryInfo)>>>;

/// A `tonic::client::Grpc` over the three layers around `channel`, limited to `tier`, and a
/// probe that keeps the last response's classification and retry record (a `Status` keeps
/// neither).
fn client(
    channel: Channel,
    tier: Tier,
) -> (
    tonic::client::Grpc<
        impl tonic::client::GrpcService<
                Body,
                ResponseBody = PeekBody<Body>,
                Error = BoxError,
                Future: Send,
            > + Clone
            + Send
            + 'static,
    >,
    Probe,
) {
    let probe = Probe::default();
    let seen = probe.clone();
    let stack = ServiceBuilder::new()
        .map_response(move |resp: http::Response<PeekBody<Body>>| {
            let class = resp.extensions().get::<Classification>().cloned();
            *seen.lock().unwrap() = class.map(|c| (c, RetryInfo::get(resp.extensions())));
            resp
        })
        .layer(RetryAfterLayer::new())
        .layer(RateLimitLayer::new(tier))
        .layer(QuotaClassifyLayer::new(classify::Grpc))
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel);
    (tonic::client::Grpc::new(stack), probe)
}

fn request(model: &str, prompt: &str) -> CompleteRequest {
    CompleteRequest {
        model: model.into(),
        prompt: prompt.into(),
    }
}

async fn complete<T>(
    grpc: &mut tonic::client::Grpc<T>,
    req: CompleteRequest,
) -> Result<tonic::Response<CompleteReply>, Status>
where
    T: tonic::client::GrpcService<Body, ResponseBody = PeekBody<Body>, Error = BoxError>,
{
    grpc.ready().await.map_err(Status::from_error)?;
    grpc.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(COMPLETE),
        ProstCodec::<CompleteRequest, CompleteReply>::default(),
    )
    .await
}

fn generous() -> Tier {
    Tier::new("generous").with_quota(Quota::per_second(100))
}

// === the tests ===

#[tokio::test(start_paused = true)]
async fn the_pushback_is_honoured_and_the_body_replayed() {
    let server = Completions::new(Behaviour {
        pushbacks: vec!["1500", "1500"],
        ..Behaviour::default()
    });
    let (mut grpc, _) = client(channel(&server).await, generous());
    let req = request("llama-3.3-70b", "Say hi in five words.");

    let start = Instant::now();
    let reply = complete(&mut grpc, req.clone()).await.unwrap();
    let took = start.elapsed();

    let info = *reply.extensions().get::<RetryInfo>().unwrap();
    assert_eq!(info, RetryInfo::new(3, StopReason::Success));
    assert_eq!(reply.into_inner().text, "echo: Say hi in five words.");
    // Twice 1.5 s, never earlier, plus at most 10 % of upward jitter.
    assert!(took >= Duration::from_millis(3000), "{took:?}");
    assert!(took <= Duration::from_millis(3300), "{took:?}");
    assert_eq!(
        server.requests(),
        vec![req; 3],
        "the same request every time"
    );
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_without_pushback_arrives_at_once_classified() {
    let server = Completions::new(Behaviour::default());
    let (mut grpc, probe) = client(channel(&server).await, generous());

    let start = Instant::now();
    let status = complete(&mut grpc, request("quota-gone", "hi"))
        .await
        .unwrap_err();

    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "monthly token quota used up");
    let (class, info) = probe.lock().unwrap().clone().unwrap();
    assert_eq!(class.class(), QuotaClass::QuotaExhausted);
    assert_eq!(class.code(), Some("RESOURCE_EXHAUSTED"));
    assert!(!class.should_retry());
    assert_eq!(info, RetryInfo::new(1, StopReason::NotRetryable));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_negative_pushback_means_do_not_retry() {
    let server = Completions::new(Behaviour {
        pushbacks: vec!["-1"],
        ..Behaviour::default()
    });
    let (mut grpc, probe) = client(channel(&server).await, generous());

    let status = complete(&mut grpc, request("m", "hi")).await.unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted);
    let (_, info) = probe.lock().unwrap().clone().unwrap();
    assert_eq!(info, RetryInfo::new(1, StopReason::NotRetryable));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_paced_tier_never_meets_resource_exhausted() {
    // The server allows 5 calls per rolling 10 s; the client's tier says the same.
    let window = Duration::from_secs(10);
    let server = Completions::new(Behaviour {
        limit: Some((5, window)),
        ..Behaviour::default()
    });
    let tier = Tier::new("5 per 10 s").with_quota(Quota::new(5, window));
    let (grpc, _) = client(channel(&server).await, tier);

    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let mut grpc = grpc.clone();
        calls.spawn(async move {
            let reply = complete(&mut grpc, request("m", &format!("#{i}"))).await;
            (
                reply.map(|r| {
                    *r.extensions()
                        .get::<RetryInfo>()
                        .unwrap_or(&RetryInfo::new(1, StopReason::Success))
                }),
                start.elapsed(),
            )
        });
    }
    let mut done = Vec::new();
    while let Some(r) = calls.join_next().await {
        done.push(r.unwrap());
    }

    assert!(done
        .iter()
        .all(|(r, _)| matches!(r, Ok(i) if i.attempts == 1)));
    assert_eq!(server.log.lock().unwrap().refused, 0, "never refused");
    // 5 at once, 5 after 10 s, 2 after 20 s.
    let at = |s: u64| {
        done.iter()
            .filter(|(_, t)| *t == Duration::from_secs(s))
            .count()
    };
    assert_eq!((at(0), at(10), at(20)), (5, 5, 2));
}
