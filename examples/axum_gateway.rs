//! An axum gateway in front of an LLM router: it limits its own clients per API key, and
//! calls the router (the bundled OpenRouter simulator, on loopback) through the three layers.
//!
//! What it shows:
//!
//! - **inbound, reject mode**: each client API key has a tier (`sk-gw-free`: 3 requests per
//!   minute, `sk-gw-pro`: 30). [`RateLimitLayer`] in reject mode fails an over-quota request
//!   at once, and the error handler answers `429` with `Retry-After` and the IETF
//!   `RateLimit-Policy` / `RateLimit` fields, built by [`RateLimited::to_response`] from the
//!   typed error and the key's limiter snapshot;
//! - **outbound, pacing**: the gateway's one upstream key is on OpenRouter's free tier (20
//!   per minute; the simulator's minute lasts one second here). 25 concurrent requests of
//!   the pro client all succeed: 20 go at once, 5 wait for the upstream window, and the
//!   router never answers 429.
//!
//! A hyper-util client drives the gateway and checks every answer: the example exits non-zero
//! if one is wrong. Run it with `cargo run --example axum_gateway` (about two seconds).

use std::time::{Duration, Instant};
use tower_quota::limit::Mode;

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, HeaderMap, Request, Response, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_quota::classify;
use tower_quota::limit::{KeyBy, Limiter, RateLimited};
use tower_quota::retry::ReplayBody;
use tower_quota::sim::{Simulator, Stats};
use tower_quota::{sim, Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

const FREE_MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";
const UPSTREAM_KEY: &str = "sk-or-v1-gateway";
/// The simulated router's minute.
const UPSTREAM_MINUTE: Duration = Duration::from_secs(1);

/// The tier of a client API key, `None` for an unknown key.
fn client_tier(headers: &HeaderMap) -> Option<Tier> {
    match headers.get(header::AUTHORIZATION)?.to_str().ok()? {
        "Bearer sk-gw-free" => Some(Tier::new("free").with_quota(Quota::per_minute(3))),
        "Bearer sk-gw-pro" => Some(Tier::new("pro").with_quota(Quota::per_minute(30))),
        _ => None,
    }
}

/// Answers the inbound limiter's errors: a 429 with `Retry-After`, `RateLimit-Policy` and
/// `RateLimit`, and an OpenAI-style JSON body.
async fn over_quota(limiter: Limiter, err: BoxError) -> Response<Body> {
    let Some(limited) = err.downcast_ref::<RateLimited>() else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(err.to_string()))
            .unwrap();
    };
    let snapshot = limited.snapshot(&limiter).await.ok();
    let body = serde_json::json!({"error": {
        "code": 429,
        "type": "rate_limit_exceeded",
        "message": format!("Rate limit exceeded for tier {:?}", limited.tier()),
    }});
    let mut response = limited.to_response(snapshot.as_ref(), Body::from(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The router upstream: OpenRouter's free tier, with a one-second minute.
    let sim = Simulator::builder()
        .key(UPSTREAM_KEY, sim::Tier::openrouter_free())
        .minute(UPSTREAM_MINUTE)
        .latency(Duration::from_millis(5), Duration::from_millis(20))
        .build();
    let (sim_addr, sim_server) = sim.serve(([127, 0, 0, 1], 0)).await?;
    let upstream_uri = format!("http://{sim_addr}/api/v1/chat/completions");

    // Outbound: the three layers around a hyper-util client, paced on the upstream's tier.
    let upstream_tier = Tier::new("openrouter-free (1 s minute)")
        .with_quota(Quota::new(20, UPSTREAM_MINUTE))
        .with_quota(Quota::per_utc_day(50));
    let hyper_client: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let upstream = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        // The margin absorbs the time between our admission and the router's arrival.
        .layer(RateLimitLayer::new(upstream_tier).with_margin(Duration::from_millis(250)))
        .layer(QuotaClassifyLayer::new(classify::OpenRouter))
        .service(hyper_client);

    // Inbound: a tier per client API key, in reject mode.
    let inbound = RateLimitLayer::selecting(|head| client_tier(head.headers))
        .key_by(KeyBy::ApiKey)
        .with_mode(Mode::Reject);
    let limiter = inbound.limiter().clone();

    let forward = move |headers: HeaderMap, body: Bytes| {
        let upstream = upstream.clone();
        let uri = upstream_uri.clone();
        async move {
            if client_tier(&headers).is_none() {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(Body::from("unknown API key"))
                    .unwrap();
            }
            let req = Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {UPSTREAM_KEY}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .unwrap();
            match upstream.oneshot(req).await {
                Ok(resp) => resp.map(Body::new),
                Err(e) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::from(e.to_string()))
                    .unwrap(),
            }
        }
    };
    let app = Router::new()
        .route("/api/v1/chat/completions", post(forward))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |err: BoxError| {
                    over_quota(limiter.clone(), err)
                }))
                .layer(inbound),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let gateway = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // A client of the gateway.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = move |key: &str| {
        let body =
            format!(r#"{{"model":"{FREE_MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        Request::post(format!("http://{gateway}/api/v1/chat/completions"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    // 1. The free client sends 5 requests: 3 pass, 2 get the gateway's own 429 at once.
    println!("sk-gw-free, 5 requests (tier: 3 per minute):");
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let resp = client.request(request("sk-gw-free")).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        statuses.push(parts.status);
        if parts.status == StatusCode::TOO_MANY_REQUESTS {
            let h = &parts.headers;
            println!("  #{i}: {}", parts.status);
            for name in ["retry-after", "ratelimit-policy", "ratelimit"] {
                println!("      {name}: {}", h[name].to_str()?);
            }
            println!("      {}", String::from_utf8_lossy(&body));
            let retry_after: u64 = h["retry-after"].to_str()?.parse()?;
            assert!((55..=60).contains(&retry_after), "{retry_after}");
            assert_eq!(h["ratelimit-policy"], r#""minute";q=3;w=60"#);
            assert_eq!(
                h["ratelimit"].to_str()?,
                format!(r#""minute";r=0;t={retry_after}"#)
            );
        } else {
            println!("  #{i}: {}", parts.status);
        }
    }
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::OK,
            S::OK,
            S::OK,
            S::TOO_MANY_REQUESTS,
            S::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(sim.stats().requests, 3, "the 429s never reached the router");

    // An unknown key is not forwarded.
    let resp = client.request(request("sk-gw-nobody")).await?;
    println!("sk-gw-nobody: {}", resp.status());
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // 2. The pro client sends 25 requests at once: the gateway admits them all, and paces
    //    them upstream (20 per upstream minute). First let the free client's 3 leave the
    //    upstream window.
    tokio::time::sleep(UPSTREAM_MINUTE).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..25 {
        let fut = client.request(request("sk-gw-pro"));
        tasks.spawn(async move {
            let resp = fut.await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, BoxError>((status, start.elapsed()))
        });
    }
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        done.push(r??);
    }
    let ok = done.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let late = done.iter().filter(|(_, t)| *t >= UPSTREAM_MINUTE).count();
    let stats: Stats = sim.stats();
    println!("sk-gw-pro, 25 concurrent requests (tier: 30 per minute):");
    println!("  200s                      {ok}");
    println!("  held for the upstream     {late} (upstream: 20 per {UPSTREAM_MINUTE:?})");
    println!("  router's 429s             {}", stats.rate_limited);
    println!("  router's requests         {}", stats.requests);
    println!(
        "  elapsed                   {:.2}s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(ok, 25);
    assert!(late >= 5, "5 waited for the upstream window");
    // Real time on loopback: 0 on a quiet machine; a stall longer than the margin between an
    // admission and its arrival can shift one arrival into the previous window.
    assert!(
        stats.rate_limited <= 1,
        "the router (almost) never had to refuse"
    );
    assert!((28..=29).contains(&stats.requests));
    sim.check_invariants()?;

    let _ = stop.send(());
    server.await??;
    sim_server.shutdown().await;
    println!("ok");
    Ok(())
}
