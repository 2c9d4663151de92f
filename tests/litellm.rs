//! A real LiteLLM proxy between the three layers and a fake upstream of our own.
//!
//! Two proxies run side by side, offline (`LITELLM_LOCAL_MODEL_COST_MAP=True`, telemetry off,
//! no database), in front of a hyper server in this test that answers as OpenAI and Anthropic
//! do, errors included:
//!
//! - **A**: the router's default strategy with `enable_pre_call_checks` (a deployment's `rpm`
//!   counted per UTC clock minute), a two-deployment group that cools down after upstream 429s,
//!   the current key limiter (`parallel_request_limiter_v3`: windows anchored at a key's first
//!   request), budgets (a key's `max_budget`, a key's `model_max_budget`, a deployment's
//!   `max_budget`), and upstream errors relayed with `num_retries: 0`;
//! - **B**: `usage-based-routing-v2` (a deployment's `rpm: N` admits N − 1 per clock minute;
//!   when a refusal slips past its routing filter into its pre-call check, it also cools the
//!   deployment down for 5 s, which a test cannot provoke at will) and the legacy key limiter
//!   (`LEGACY_MULTI_INSTANCE_RATE_LIMITING=true`: windows per clock minute).
//!
//! A custom-auth hook (`tests/support/litellm_custom_auth.py`) gives each test key its limits.
//!
//! Every answer captured is held to the expectation of its fixture
//! (`tests/fixtures/litellm/<name>.json`, which `tests/classify_litellm.rs` replays without
//! Python); `TOWER_QUOTA_LITELLM_RECORD=1` rewrites the fixtures' answers from this run (keeping
//! their reviewed expectations). Meanwhile the three layers pace a burst through each rpm and
//! key limit: at most one 429 each.
//!
//! Runs when `TOWER_QUOTA_LITELLM` names the `litellm` executable (`.ci/run` installs the
//! pinned `litellm[proxy]` in a virtualenv and sets it); otherwise the test says why it skipped
//! and passes. When it is set, a proxy that does not start fails the test.

#[path = "support/litellm_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_quota::classify::{Auto, Classification, Classify};
use tower_quota::limit::{KeyBy, Model};
use tower_quota::retry::ReplayBody;
use tower_quota::{Quota, QuotaLayer, Tier};

use fixture::Fixture;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

/// How long a proxy may take to start on a loaded machine.
const STARTUP: Duration = Duration::from_secs(150);

#[tokio::test]
async fn litellm_proxy() {
    let Some(bin) = litellm_bin() else {
        eprintln!(
            "skipped: TOWER_QUOTA_LITELLM is not set (the path of a `litellm` executable from \
             `pip install 'litellm[proxy]'`; .ci/run installs the pinned version and sets it)"
        );
        return;
    };
    let started = Instant::now();
    let upstream = Upstream::start().await;
    let dir = TempDir::new();
    let a = Proxy::spawn(&bin, &dir.0, "a", &config_a(&upstream.base), &[]);
    let b = Proxy::spawn(
        &bin,
        &dir.0,
        "b",
        &config_b(&upstream.base),
        &[("LEGACY_MULTI_INSTANCE_RATE_LIMITING", "true")],
    );
    let raw = raw_client();
    tokio::join!(a.ready(&raw), b.ready(&raw));
    let startup = started.elapsed();
    eprintln!(
        "litellm: both proxies up after {:.1} s",
        startup.as_secs_f64()
    );

    let (captures, paced, in_flight) = tokio::join!(
        capture_all(&raw, &a, &b),
        pace_all(&a, &b),
        in_flight_all(&a, &b)
    );
    let version = captures
        .iter()
        .flat_map(|c| &c.headers)
        .find(|(k, _)| k == "x-litellm-version")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "unknown".into());

    // === the captured answers against their fixtures ===
    let record = std::env::var_os("TOWER_QUOTA_LITELLM_RECORD").is_some();
    let mut errors = Vec::new();
    for c in &captures {
        let live_json = c.to_fixture(&version);
        if record {
            c.record(&version);
        }
        match Fixture::load(&c.name) {
            None => errors.push(format!(
                "[{}] has no fixture: run with TOWER_QUOTA_LITELLM_RECORD=1 and review it",
                c.name
            )),
            Some(committed) => match committed.expect() {
                Some(expect) => {
                    let mut live = Fixture::from_json(&c.name, live_json);
                    live.json["expect"] = expect.clone();
                    errors.extend(live.mismatches());
                }
                None => errors.push(format!("[{}] has no reviewed `expect`", c.name)),
            },
        }
    }
    let hits = upstream.hits();
    eprintln!("litellm {version}: {} answers captured", captures.len());
    for c in &captures {
        let verdict = Auto.classify_at(&c.parts(), c.body.as_bytes(), c.captured_at);
        eprintln!("  {:<32} {} {}", c.name, c.status.as_u16(), verdict);
    }
    eprintln!("upstream calls: {hits:?}");
    for p in paced.iter().chain(&in_flight) {
        eprintln!(
            "pacing {:<22} {} requests: {:?} in {:.1} s",
            p.name,
            p.sent,
            p.statuses,
            p.elapsed.as_secs_f64()
        );
    }
    eprintln!(
        "litellm test: {:.1} s (startup {:.1} s)",
        started.elapsed().as_secs_f64(),
        startup.as_secs_f64()
    );

    // `num_retries: 0`: one upstream call per relayed answer.
    for mode in RELAYED {
        let prefix = format!("/{mode}/");
        let calls: u32 = hits
            .iter()
            // Not the `GET …/models` the proxy sends after an OpenAI deployment's error.
            .filter(|(path, _)| path.starts_with(&prefix) && !path.ends_with("/models"))
            .map(|(_, n)| n)
            .sum();
        let want = 2; // /v1/chat/completions and /v1/messages
        if calls != want {
            errors.push(format!(
                "upstream mode {mode} was called {calls} times, want {want}"
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    for p in &paced {
        let limited = p.statuses.get(&429).copied().unwrap_or(0);
        assert!(limited <= 1, "{}: {limited} 429s", p.name);
        assert_eq!(
            p.ok, p.burst,
            "{}: every request of the burst succeeds in the end",
            p.name
        );
        assert!(
            p.elapsed >= Duration::from_secs(60),
            "{}: the burst crossed a window ({:?})",
            p.name,
            p.elapsed
        );
    }
    for p in &in_flight {
        assert_eq!(
            p.ok, p.burst,
            "{}: every request succeeds in the end",
            p.name
        );
        assert!(
            p.statuses.get(&429).copied().unwrap_or(0) >= 1,
            "{}: the proxy refused none ({:?}): the test proves nothing",
            p.name,
            p.statuses
        );
        // Serially, 3 × 1.5 s upstream; the backoff's steps on top. A key blocked for the
        // `retry-after: 60` would take a minute.
        assert!(
            p.elapsed < Duration::from_secs(40),
            "{}: {:?}: the parallel limit held the key for its window",
            p.name,
            p.elapsed
        );
    }
}

/// The `litellm` executable, when the environment names one.
fn litellm_bin() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("TOWER_QUOTA_LITELLM")?);
    assert!(
        path.is_file(),
        "TOWER_QUOTA_LITELLM={} is not a file",
        path.display()
    );
    Some(path)
}

// === the fake upstream ===

/// Upstream behaviours, by the first segment of the path a deployment's `api_base` points at.
const RELAYED: &[&str] = &[
    "oai429",
    "oaiquota",
    "oai503",
    "oai529",
    "ant429",
    "ant529",
    "antcredit",
];

struct Upstream {
    base: String,
    hits: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(BTreeMap::new()));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let counter = counter.clone();
                        async move { Ok::<_, Infallible>(answer(req, &counter).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            base: format!("http://{addr}"),
            hits,
        }
    }

    fn hits(&self) -> BTreeMap<String, u32> {
        self.hits.lock().unwrap().clone()
    }
}

/// What the upstream answers: OpenAI's shapes on `/v1/chat/completions` and `/v1/responses`,
/// Anthropic's on `/v1/messages`.
async fn answer(
    req: Request<Incoming>,
    hits: &Mutex<BTreeMap<String, u32>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let mode = path.trim_start_matches('/').split('/').next().unwrap_or("");
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let anthropic = path.ends_with("/messages");
    let responses = path.ends_with("/responses");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, headers, body): (u16, Vec<(&str, String)>, Value) = match mode {
        "ok" | "slow" => {
            if mode == "slow" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            if anthropic {
                (
                    200,
                    vec![],
                    json!({
                        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                        "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}
                    }),
                )
            } else if responses {
                (
                    200,
                    vec![],
                    json!({
                        "id": "resp_1", "object": "response", "created_at": now, "status": "completed",
                        "model": "gpt-x", "output": [{"type": "message", "id": "msg_1",
                        "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
                        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}
                    }),
                )
            } else {
                (
                    200,
                    vec![
                        ("x-ratelimit-limit-requests", "500".into()),
                        ("x-ratelimit-remaining-requests", "499".into()),
                        ("x-ratelimit-reset-requests", "120ms".into()),
                    ],
                    json!({
                        "id": "c1", "object": "chat.completion", "created": now, "model": "gpt-x",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
                    }),
                )
            }
        }
        "oai429" | "cool429" => (
            429,
            vec![
                ("retry-after", "7".into()),
                ("retry-after-ms", "6500".into()),
                ("x-ratelimit-limit-requests", "60".into()),
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "6.5s".into()),
            ],
            json!({"error": {
            "message": "Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 6.5s.",
            "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        ),
        "oaiquota" => (
            429,
            vec![],
            json!({"error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        ),
        "oai503" => (
            503,
            vec![("retry-after", "3".into())],
            json!({"error": {
            "message": "The server is temporarily unable to handle the request.",
            "type": "server_error", "param": null, "code": null}}),
        ),
        "oai529" => (
            529,
            vec![],
            json!({"error": {
            "message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}}),
        ),
        "ant429" => {
            let reset = rfc3339_utc(now + 11);
            (
                429,
                vec![
                    ("retry-after", "11".into()),
                    ("anthropic-ratelimit-requests-limit", "50".into()),
                    ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ("anthropic-ratelimit-requests-reset", reset),
                ],
                json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "This request would exceed the rate limit for your organization of 50 requests per minute."}}),
            )
        }
        "ant529" => (
            529,
            vec![],
            json!({"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}}),
        ),
        "antcredit" => (
            400,
            vec![],
            json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}),
        ),
        _ => (
            404,
            vec![],
            json!({"error": {"message": format!("no mode {mode}"), "type": "not_found"}}),
        ),
    };
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// An RFC 3339 UTC timestamp of a Unix time (Anthropic's reset format).
fn rfc3339_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// === the proxies ===

/// A strong master key (the proxy refuses to start with custom auth and none).
const MASTER_KEY: &str = "sk-tower-quota-test-0f3c9a7e5b1d";

fn deployment(name: &str, model: &str, api_base: &str, extra: &str) -> String {
    format!(
        "  - model_name: {name}\n    litellm_params: {{model: {model}, api_base: \"{api_base}\", api_key: sk-upstream{extra}}}\n"
    )
}

fn general(extra: &str) -> String {
    format!(
        "general_settings:\n  master_key: {MASTER_KEY}\n  custom_auth: custom_auth.user_api_key_auth\n{extra}"
    )
}

/// Proxy A: the default router with pre-call checks, cooldowns, the current key limiter,
/// budgets, relayed upstream errors.
fn config_a(up: &str) -> String {
    let mut c = String::from("model_list:\n");
    for mode in ["oai429", "oaiquota", "oai503", "oai529"] {
        c += &deployment(mode, "openai/gpt-x", &format!("{up}/{mode}/v1"), "");
    }
    for mode in ["ant429", "ant529", "antcredit"] {
        c += &deployment(mode, "anthropic/claude-x", &format!("{up}/{mode}"), "");
    }
    c += &deployment("ok", "anthropic/claude-x", &format!("{up}/ok"), "");
    c += &deployment("slow", "anthropic/claude-x", &format!("{up}/slow"), "");
    c += &deployment(
        "rpm-cap",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        ", rpm: 2",
    );
    c += &deployment(
        "rpm-pace",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        ", rpm: 5",
    );
    c += &deployment("cool", "openai/gpt-x", &format!("{up}/cool429/v1"), "");
    c += &deployment("cool", "openai/gpt-y", &format!("{up}/cool429/v1"), "");
    let priced = ", input_cost_per_token: 0.001, output_cost_per_token: 0.001";
    c += &deployment("priced", "anthropic/claude-x", &format!("{up}/ok"), priced);
    c += &deployment(
        "dbudget",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        &format!("{priced}, max_budget: 0.000001, budget_duration: 1d"),
    );
    c += "litellm_settings:\n  num_retries: 0\n  telemetry: false\n  enable_post_custom_auth_checks: true\n";
    c += "router_settings:\n  num_retries: 0\n  enable_pre_call_checks: true\n";
    c += &general("  custom_auth_run_common_checks: true\n");
    c
}

/// Proxy B: usage-based-routing-v2 and the legacy key limiter.
fn config_b(up: &str) -> String {
    let mut c = String::from("model_list:\n");
    c += &deployment("ok", "anthropic/claude-x", &format!("{up}/ok"), "");
    c += &deployment("slow", "anthropic/claude-x", &format!("{up}/slow"), "");
    c += &deployment(
        "rpm-cap",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        ", rpm: 3",
    );
    c += &deployment(
        "rpm-pace",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        ", rpm: 6",
    );
    c += &deployment(
        "tpm-cap",
        "anthropic/claude-x",
        &format!("{up}/ok"),
        ", tpm: 10",
    );
    c += "litellm_settings:\n  num_retries: 0\n  telemetry: false\n";
    c += "router_settings:\n  num_retries: 0\n  routing_strategy: usage-based-routing-v2\n  enable_pre_call_checks: true\n";
    c += &general("");
    c
}

/// A directory of our own for configs and logs, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("tower-quota-litellm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("custom_auth.py"),
            include_str!("support/litellm_custom_auth.py"),
        )
        .unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running proxy, killed when dropped.
struct Proxy {
    name: &'static str,
    base: String,
    log: PathBuf,
    child: Mutex<Child>,
}

impl Proxy {
    fn spawn(
        bin: &Path,
        dir: &Path,
        name: &'static str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.join(format!("config-{name}.yaml"));
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join(format!("proxy-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&cfg)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOG", "ERROR")
            .env("PYTHONPATH", dir)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_HOST")
            .env_remove("REDIS_URL")
            .env_remove("LITELLM_MASTER_KEY")
            .env_remove("LEGACY_MULTI_INSTANCE_RATE_LIMITING")
            .env_remove("LITELLM_RATE_LIMIT_WINDOW_SIZE")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        Proxy {
            name,
            base: format!("http://127.0.0.1:{port}"),
            log,
            child: Mutex::new(child),
        }
    }

    /// Waits for `/health/liveliness`; fails the test (with the proxy's log) if it exits or
    /// takes too long.
    async fn ready(&self, raw: &RawClient) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "proxy {} exited ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let req = Request::get(format!("{}/health/liveliness", self.base))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(5), raw.request(req)).await
            {
                if resp.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                start.elapsed() < STARTUP,
                "proxy {} not up after {STARTUP:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

// === capturing answers ===

type RawClient = Client<HttpConnector, Full<Bytes>>;

fn raw_client() -> RawClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request_body(endpoint: &str, model: &str) -> String {
    if endpoint == MESSAGES {
        format!(
            r#"{{"model":"{model}","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    } else {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    }
}

fn request<B: From<Bytes>>(base: &str, endpoint: &str, key: &str, model: &str) -> Request<B> {
    Request::post(format!("{base}{endpoint}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .extension(Model::new(model))
        .body(B::from(Bytes::from(request_body(endpoint, model))))
        .unwrap()
}

/// One answer, as it came.
struct Capture {
    name: String,
    config: String,
    endpoint: &'static str,
    model: String,
    key: String,
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
    captured_at: SystemTime,
}

/// Headers that say nothing about limits and change on every run.
const NOISE: &[&str] = &[
    "date",
    "server",
    "vary",
    "content-length",
    "x-frame-options",
    "content-security-policy",
    "x-content-type-options",
    "x-litellm-call-id",
    "x-litellm-model-id",
    "x-litellm-model-api-base",
    "x-litellm-response-duration-ms",
    "x-litellm-overhead-duration-ms",
    "x-litellm-callback-duration-ms",
    "llm_provider-date",
    "llm_provider-server",
    "llm_provider-content-length",
    "llm_provider-request-id",
];

impl Capture {
    fn parts(&self) -> http::response::Parts {
        let mut b = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(()).unwrap().into_parts().0
    }

    fn to_fixture(&self, version: &str) -> Value {
        json!({
            "source": format!("LiteLLM proxy {version} (litellm[proxy] from PyPI), offline, captured by tests/litellm.rs"),
            "config": self.config,
            "request": {"endpoint": self.endpoint, "model": self.model, "key": self.key},
            "captured_at": self.captured_at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            "answer": {
                "status": self.status.as_u16(),
                "headers": self.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
                "body": self.body,
            },
        })
    }

    /// Writes the fixture, keeping a reviewed expectation; proposes one (unreviewed) for a
    /// new fixture.
    fn record(&self, version: &str) {
        let mut v = self.to_fixture(version);
        match Fixture::load(&self.name).and_then(|f| f.expect().cloned()) {
            Some(expect) => v["expect"] = expect,
            None => {
                let c = Auto.classify_at(&self.parts(), self.body.as_bytes(), self.captured_at);
                v["proposed"] = fixture::describe(&c);
            }
        }
        let path = fixture::dir().join(format!("{}.json", self.name));
        std::fs::create_dir_all(fixture::dir()).unwrap();
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
}

/// What to ask a proxy.
#[derive(Clone, Copy)]
struct Ask<'a> {
    proxy: &'a Proxy,
    /// The configuration, for the fixture.
    config: &'a str,
    endpoint: &'static str,
    key: &'a str,
    model: &'a str,
}

impl<'a> Ask<'a> {
    fn new(proxy: &'a Proxy, config: &'a str) -> Ask<'a> {
        Ask {
            proxy,
            config,
            endpoint: CHAT,
            key: "sk-free",
            model: "ok",
        }
    }
    fn on(self, endpoint: &'static str) -> Ask<'a> {
        Ask { endpoint, ..self }
    }
    fn key(self, key: &'a str) -> Ask<'a> {
        Ask { key, ..self }
    }
    fn model(self, model: &'a str) -> Ask<'a> {
        Ask { model, ..self }
    }
}

async fn call(raw: &RawClient, ask: Ask<'_>) -> Capture {
    let proxy = ask.proxy;
    let req = request(&proxy.base, ask.endpoint, ask.key, ask.model);
    let resp = tokio::time::timeout(Duration::from_secs(60), raw.request(req))
        .await
        .unwrap_or_else(|_| panic!("proxy {} did not answer in 60 s", proxy.name))
        .unwrap_or_else(|e| panic!("proxy {}: {e}\n{}", proxy.name, proxy.log_tail()));
    let captured_at = SystemTime::now();
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| !NOISE.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Capture {
        name: String::new(),
        config: format!("proxy {}: {}", proxy.name, ask.config),
        endpoint: ask.endpoint,
        model: ask.model.to_owned(),
        key: ask.key.to_owned(),
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        captured_at,
    }
}

fn named(mut c: Capture, name: impl Into<String>) -> Capture {
    c.name = name.into();
    c
}

/// Sends until an answer is not a 200 (at most `max` requests, `pause` apart); the last 200
/// and the first other answer.
async fn until_refused(
    raw: &RawClient,
    ask: Ask<'_>,
    max: usize,
    pause: Duration,
) -> (Option<Capture>, Capture) {
    let mut last_ok = None;
    for _ in 0..max {
        let c = call(raw, ask).await;
        if c.status != StatusCode::OK {
            return (last_ok, c);
        }
        last_ok = Some(c);
        tokio::time::sleep(pause).await;
    }
    panic!(
        "proxy {}: {max} requests of {} to {} on {}, never refused",
        ask.proxy.name, ask.key, ask.model, ask.endpoint
    );
}

async fn capture_all(raw: &RawClient, a: &Proxy, b: &Proxy) -> Vec<Capture> {
    let (mut from_a, from_b) = tokio::join!(capture_a(raw, a), capture_b(raw, b));
    from_a.extend(from_b);
    from_a
}

async fn capture_a(raw: &RawClient, a: &Proxy) -> Vec<Capture> {
    let mut out = Vec::new();
    let (none, short) = (Duration::ZERO, Duration::from_millis(300));

    // Upstream errors relayed, num_retries: 0.
    let relay = Ask::new(
        a,
        "upstream errors relayed, num_retries: 0, one deployment per group",
    );
    for mode in RELAYED {
        for (endpoint, tag) in [(CHAT, "chat"), (MESSAGES, "messages")] {
            let c = call(raw, relay.on(endpoint).model(mode)).await;
            out.push(named(c, format!("relay_{mode}_{tag}")));
        }
    }

    // The router: a deployment's rpm, pre-call checks, per UTC clock minute.
    let rpm = Ask::new(
        a,
        "router (simple-shuffle), enable_pre_call_checks, deployment rpm: 2",
    )
    .model("rpm-cap");
    let (ok, refused) = until_refused(raw, rpm, 6, none).await;
    out.push(named(ok.expect("a 200 first"), "router_rpm_ok_chat"));
    out.push(named(refused, "router_rpm_chat"));
    // Until refused: a new clock minute may have begun since.
    let (_, refused) = until_refused(raw, rpm.on(MESSAGES), 6, none).await;
    out.push(named(refused, "router_rpm_messages"));

    // Cooldown: both deployments of a group answer 429 upstream, then the group is cooling.
    let cool = Ask::new(
        a,
        "router (simple-shuffle), two deployments, both 429 upstream (Retry-After: 7, retry-after-ms: 6500)",
    )
    .model("cool");
    for i in 1..=2 {
        out.push(named(
            call(raw, cool).await,
            format!("cooldown_upstream_{i}_chat"),
        ));
    }
    out.push(named(call(raw, cool).await, "cooldown_chat"));
    out.push(named(
        call(raw, cool.on(MESSAGES)).await,
        "cooldown_messages",
    ));

    // The key limiter (v3): rpm, tpm, parallel requests.
    let rpm = Ask::new(
        a,
        "key limiter v3 (parallel_request_limiter_v3), custom-auth key with rpm_limit: 2",
    );
    let (ok, refused) = until_refused(raw, rpm.key("sk-rpm"), 6, none).await;
    out.push(named(ok.expect("a 200 first"), "key_rpm_ok_chat"));
    out.push(named(refused, "key_rpm_chat"));
    let (_, refused) = until_refused(raw, rpm.key("sk-rpm-messages").on(MESSAGES), 6, none).await;
    out.push(named(refused, "key_rpm_messages"));
    let tpm = Ask::new(
        a,
        "key limiter v3 (parallel_request_limiter_v3), custom-auth key with tpm_limit: 10",
    )
    .key("sk-tpm");
    let (ok, refused) = until_refused(raw, tpm, 6, none).await;
    out.push(named(ok.expect("a 200 first"), "key_tpm_ok_chat"));
    out.push(named(refused, "key_tpm_chat"));
    let parallel_ask = Ask::new(a, "key limiter v3 (parallel_request_limiter_v3), custom-auth key with max_parallel_requests: 1");
    out.push(named(
        parallel(raw, parallel_ask).await,
        "key_parallel_chat",
    ));

    // Budgets.
    let budget = Ask::new(
        a,
        "custom-auth key with max_budget: 0.001 and spend: 1.0, a model with a cost",
    )
    .key("sk-budget")
    .model("priced");
    let (_, refused) = until_refused(raw, budget, 4, short).await;
    out.push(named(refused, "budget_key_chat"));
    out.push(named(
        call(raw, budget.on(MESSAGES)).await,
        "budget_key_messages",
    ));
    let model_budget = Ask::new(
        a,
        "custom-auth key with model_max_budget {priced: 0.000001 per 1d}, enable_post_custom_auth_checks",
    )
    .key("sk-model-budget")
    .model("priced");
    let (_, refused) = until_refused(raw, model_budget, 10, short).await;
    out.push(named(refused, "budget_key_model_chat"));
    let deployment_budget =
        Ask::new(a, "deployment max_budget: 0.000001, budget_duration: 1d").model("dbudget");
    let (_, refused) = until_refused(raw, deployment_budget, 10, short).await;
    out.push(named(refused, "budget_deployment_chat"));
    out
}

async fn capture_b(raw: &RawClient, b: &Proxy) -> Vec<Capture> {
    let mut out = Vec::new();
    let none = Duration::ZERO;

    // usage-based-routing-v2: rpm: 3 admits 2 per clock minute, then cools the deployment.
    let v2 = Ask::new(
        b,
        "router usage-based-routing-v2, enable_pre_call_checks, deployment rpm: 3",
    )
    .model("rpm-cap");
    let (_, refused) = until_refused(raw, v2, 8, none).await;
    out.push(named(refused, "router_v2_rpm_chat"));
    // Until refused: a new clock minute may have begun since.
    let (_, refused) = until_refused(raw, v2.on(MESSAGES), 6, none).await;
    out.push(named(refused, "router_v2_rpm_messages"));

    // usage-based-routing-v2: a deployment's tpm, counted from the usage of the answers (6
    // tokens each) in the clock minute.
    let v2_tpm = Ask::new(
        b,
        "router usage-based-routing-v2, enable_pre_call_checks, deployment tpm: 10",
    )
    .model("tpm-cap");
    let (_, refused) = until_refused(raw, v2_tpm, 8, Duration::from_millis(300)).await;
    out.push(named(refused, "router_v2_tpm_chat"));

    // The legacy key limiter: per clock minute.
    let rpm = Ask::new(b, "legacy key limiter (LEGACY_MULTI_INSTANCE_RATE_LIMITING=true), custom-auth key with rpm_limit: 2");
    let (ok, refused) = until_refused(raw, rpm.key("sk-rpm"), 8, none).await;
    out.push(named(ok.expect("a 200 first"), "legacy_rpm_ok_chat"));
    out.push(named(refused, "legacy_rpm_chat"));
    let (_, refused) = until_refused(raw, rpm.key("sk-rpm-messages").on(MESSAGES), 8, none).await;
    out.push(named(refused, "legacy_rpm_messages"));
    let tpm = Ask::new(b, "legacy key limiter (LEGACY_MULTI_INSTANCE_RATE_LIMITING=true), custom-auth key with tpm_limit: 10")
        .key("sk-tpm");
    let (ok, refused) = until_refused(raw, tpm, 8, none).await;
    out.push(named(ok.expect("a 200 first"), "legacy_tpm_ok_chat"));
    out.push(named(refused, "legacy_tpm_chat"));
    let parallel_ask = Ask::new(b, "legacy key limiter (LEGACY_MULTI_INSTANCE_RATE_LIMITING=true), custom-auth key with max_parallel_requests: 1");
    out.push(named(
        parallel(raw, parallel_ask).await,
        "legacy_parallel_chat",
    ));
    out
}

/// Two requests at once to a deployment that takes 1.5 s: one of them is over the key's one
/// parallel request (which one depends on which the proxy reached first). Tried again, a few
/// times, should a loaded machine let them both through one after the other.
async fn parallel(raw: &RawClient, ask: Ask<'_>) -> Capture {
    let ask = ask.key("sk-parallel").model("slow");
    for _ in 0..3 {
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            call(raw, ask).await
        };
        let (first, second) = tokio::join!(call(raw, ask), second);
        match (first.status, second.status) {
            (StatusCode::OK, StatusCode::OK) => continue,
            (StatusCode::OK, _) => return second,
            (_, StatusCode::OK) => return first,
            _ => panic!(
                "proxy {}: both refused: {} / {}",
                ask.proxy.name, first.body, second.body
            ),
        }
    }
    panic!(
        "proxy {}: two requests at once never over max_parallel_requests: 1",
        ask.proxy.name
    );
}

// === pacing through the limits ===

struct Paced {
    name: &'static str,
    burst: usize,
    sent: usize,
    ok: usize,
    statuses: BTreeMap<u16, usize>,
    elapsed: Duration,
}

/// Sends a burst of `burst` requests at once through the three layers over hyper-util's
/// client, limited by `tier` per API key and model; counts every status the proxy answered.
async fn pace(
    name: &'static str,
    proxy: &Proxy,
    key: &str,
    model: &str,
    tier: Tier,
    burst: usize,
) -> Paced {
    let layer = QuotaLayer::new(tier)
        .key_by(KeyBy::ApiKeyAndModel)
        .with_margin(Duration::from_secs(1))
        .with_max_wait(Duration::from_secs(120))
        .with_max_delay(Duration::from_secs(70));
    burst_through(name, proxy, key, model, layer, burst).await
}

/// Sends a burst of `burst` requests at once through `layer` over hyper-util's client;
/// counts every status the proxy answered.
async fn burst_through(
    name: &'static str,
    proxy: &Proxy,
    key: &str,
    model: &str,
    layer: QuotaLayer,
    burst: usize,
) -> Paced {
    let statuses: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
    let seen = statuses.clone();
    let hyper_client: Client<HttpConnector, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let counted = ServiceBuilder::new()
        .map_response(move |resp: Response<Incoming>| {
            *seen
                .lock()
                .unwrap()
                .entry(resp.status().as_u16())
                .or_default() += 1;
            resp
        })
        .service(hyper_client);
    let client = ServiceBuilder::new().layer(layer).service(counted);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..burst {
        let req: Request<Full<Bytes>> = request(&proxy.base, CHAT, key, model);
        set.spawn(client.clone().oneshot(req));
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok(resp) => {
                let c = resp.extensions().get::<Classification>().cloned();
                if resp.status() == StatusCode::OK {
                    ok += 1;
                } else {
                    eprintln!("pacing {name}: {} {:?}", resp.status(), c);
                }
                let _ = resp.into_body().collect().await;
            }
            Err(e) => eprintln!("pacing {name}: {e}"),
        }
    }
    let statuses = statuses.lock().unwrap().clone();
    Paced {
        name,
        burst,
        sent: statuses.values().sum(),
        ok,
        statuses,
        elapsed: start.elapsed(),
    }
}

/// The tiers: one under what the server admits per window, so that a request of the next
/// window that arrives early (the proxy's own latency varies by more than the margin on a
/// loaded machine) still finds a free slot in the server's fixed window. Rolling windows of
/// the client never put more in any clock minute, nor in any window anchored at a first
/// request, than they hold.
async fn pace_all(a: &Proxy, b: &Proxy) -> Vec<Paced> {
    let per_minute =
        |n| Tier::new(format!("litellm-{n}-per-minute")).with_quota(Quota::per_minute(n));
    let (router_a, router_b, key_a, key_b) = tokio::join!(
        // rpm: 5 admits 5 per clock minute.
        pace(
            "router rpm 5 (A)",
            a,
            "sk-free",
            "rpm-pace",
            per_minute(4),
            6
        ),
        // rpm: 6 admits 5 per clock minute under usage-based-routing-v2.
        pace(
            "router v2 rpm 6 (B)",
            b,
            "sk-free",
            "rpm-pace",
            per_minute(4),
            6
        ),
        // rpm_limit: 5 in a window anchored at the key's first request.
        pace("key v3 rpm 5 (A)", a, "sk-pace", "ok", per_minute(4), 6),
        // rpm_limit: 5 per clock minute.
        pace("key legacy rpm 5 (B)", b, "sk-pace", "ok", per_minute(4), 6),
    );
    vec![router_a, router_b, key_a, key_b]
}

/// Three slow requests (1.5 s upstream) at once on a key with `max_parallel_requests: 1`,
/// through the stack with a tier of 60 a minute, on each limiter: the proxy refuses the
/// ones over its parallel limit with `retry-after: 60` (its window, not when a slot frees).
/// They are retried after the backoff, and the key is not blocked for that minute.
async fn in_flight_all(a: &Proxy, b: &Proxy) -> Vec<Paced> {
    let layer = || {
        QuotaLayer::new(Tier::new("litellm-60-per-minute").with_quota(Quota::per_minute(60)))
            .key_by(KeyBy::ApiKeyAndModel)
            .with_max_attempts(8)
            .with_max_delay(Duration::from_secs(70))
    };
    let (v3, legacy) = tokio::join!(
        burst_through(
            "key v3 parallel 1 (A)",
            a,
            "sk-parallel-pace",
            "slow",
            layer(),
            3
        ),
        burst_through(
            "key legacy parallel 1 (B)",
            b,
            "sk-parallel-pace",
            "slow",
            layer(),
            3
        ),
    );
    vec![v3, legacy]
}
