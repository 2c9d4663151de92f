//! [`Simulator`]: the state, the request handling, and the in-process tower service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower_service::Service;

use super::builder::SimulatorBuilder;
use super::config::{fmt_secs, Account, Faults, Limit, Period, Style};
use super::network::Network;
use super::rng::SplitMix64;
use super::state::{next_utc_midnight_ms, utc_day, AccountState, Entry, Verdict};
use super::stats::{
    check_limit, check_token_limit, Admission, InvariantViolation, Outcome, Record, Stats,
};
use super::tokens::{prompt_tokens, Charge, Completions, TokenKind, TokenLimit, TokenLog, Tokens};

/// The largest request body read, in bytes.
const MAX_BODY: usize = 1 << 20;

/// A simulated OpenRouter-compatible provider. Cheap to clone; clones share one state.
///
/// Use it as an in-process tower [`Service`] (virtual time works: the rolling windows run on
/// the tokio clock) or over loopback HTTP with [`serve`](Simulator::serve). See the
/// [module docs](super) for the endpoints and the responses.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    accounts: Vec<Account>,
    keys: HashMap<String, usize>,
    price: f64,
    latency: (Duration, Duration),
    network: Network,
    faults: Faults,
    seed: u64,
    provider: String,
    start_wall: SystemTime,
    base: Instant,
    completions: Completions,
    deviation: f64,
    default_max_tokens: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: Vec<AccountState>,
    /// Requests sent so far: the index of the next one's network draws.
    sent: u64,
    upstream_draws: u64,
    burst_until: Option<Instant>,
    records: Vec<Record>,
    admissions: Vec<Admission>,
}

/// What a request asked, once its body was read.
enum Route {
    Completion { asked: Result<Asked, String> },
    KeyInfo,
    NotFound,
}

/// What a completion request's JSON body asks for.
#[derive(Clone, Debug)]
struct Asked {
    model: String,
    /// The prompt, by the server's tokenizer.
    input: u64,
    /// `max_tokens` (or `max_completion_tokens`, `max_output_tokens`), if set.
    max_tokens: Option<u64>,
    /// `"stream": true`.
    stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    include_usage: bool,
}

/// A completion request as it arrived.
struct Arrival<'a> {
    seq: u64,
    key: &'a str,
    model: &'a str,
    asked: &'a Asked,
    now: Instant,
    wall: SystemTime,
    /// The network's delays for this request: it was sent `inbound` before `now`; its
    /// answer takes `outbound` to reach the client.
    inbound: Duration,
    outbound: Duration,
}

/// The network's delays of one request, drawn when it is sent.
#[derive(Clone, Copy, Debug)]
struct Legs {
    sent: Instant,
    inbound: Duration,
    outbound: Duration,
}

/// A decided answer: status, extra headers, JSON body, latency before it is sent.
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
    /// A `text/event-stream` body instead of the JSON one.
    sse: Option<String>,
    delay: Duration,
}

impl Answer {
    fn new(status: StatusCode, body: Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body,
            sse: None,
            delay: Duration::ZERO,
        }
    }

    fn error(status: StatusCode, message: &str) -> Self {
        Answer::new(
            status,
            json!({"error": {"message": message, "code": status.as_u16()}}),
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (content_type, body) = match self.sse {
            Some(events) => ("text/event-stream", events),
            None => ("application/json", self.body.to_string()),
        };
        let mut builder = Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, content_type);
        if content_type == "text/event-stream" {
            builder = builder.header(http::header::CACHE_CONTROL, "no-cache");
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .expect("static header names and ASCII values")
    }
}

// === impl Simulator ===

impl Simulator {
    /// A builder with no accounts; see [`SimulatorBuilder`].
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::new()
    }

    pub(crate) fn from_builder(b: SimulatorBuilder) -> Self {
        let accounts: Vec<Account> = b
            .accounts
            .into_iter()
            .map(|mut a| {
                a.tier = a.tier.scaled(b.minute);
                a
            })
            .collect();
        let mut keys = HashMap::new();
        for (i, a) in accounts.iter().enumerate() {
            for k in &a.keys {
                keys.insert(k.clone(), i);
            }
        }
        let state = State {
            accounts: accounts.iter().map(|_| AccountState::default()).collect(),
            ..State::default()
        };
        Simulator {
            inner: Arc::new(Inner {
                accounts,
                keys,
                price: b.price,
                latency: b.latency,
                network: b.network,
                faults: b.faults,
                seed: b.seed,
                provider: b.provider,
                start_wall: b.start_wall.unwrap_or_else(SystemTime::now),
                base: Instant::now(),
                completions: b.completions,
                deviation: b.deviation,
                default_max_tokens: b.default_max_tokens,
                state: Mutex::new(state),
            }),
        }
    }

    /// The simulator's wall clock now: its start time plus the tokio time elapsed since it was
    /// built.
    pub fn now_wall(&self) -> SystemTime {
        self.wall_at(Instant::now())
    }

    /// The simulator's wall clock as a function, for a client that must read the same time
    /// (epoch resets, UTC midnights) — in paused tokio time the system clock would not move.
    ///
    /// ```
    /// # use tower_quota::sim::{Simulator, Tier};
    /// # let sim = Simulator::builder().build();
    /// let now = sim.wall_clock();
    /// let (a, b) = (now(), sim.now_wall());
    /// assert!(a <= b);
    /// ```
    pub fn wall_clock(&self) -> impl Fn() -> SystemTime + Send + Sync + 'static {
        let sim = self.clone();
        move || sim.now_wall()
    }

    /// The tokio instant the simulator was built: time zero of its timeline (its wall clock
    /// read [`start_wall_time`](SimulatorBuilder::start_wall_time) then).
    pub fn started_at(&self) -> Instant {
        self.inner.base
    }

    fn wall_at(&self, at: Instant) -> SystemTime {
        self.inner.start_wall + at.saturating_duration_since(self.inner.base)
    }

    /// The network between clients and the simulator (see [`Network`]).
    pub fn network(&self) -> Network {
        self.inner.network
    }

    /// The simulator's wall clock at a tokio instant (before its start: its start time).
    pub fn wall_time_at(&self, at: Instant) -> SystemTime {
        self.wall_at(at)
    }

    /// The accounts, with their windows as enforced (scaled by [`SimulatorBuilder::minute`]).
    pub fn accounts(&self) -> &[Account] {
        &self.inner.accounts
    }

    /// The prompt tokens the server counts for a completion request's JSON body (its
    /// `usage.prompt_tokens`): the text of every message's `content` (a string, or the
    /// `text` of each part) and of a top-level `system` or `prompt`, `⌈bytes / 4⌉` times a
    /// deviation drawn from the text and the seed (within
    /// [`tokenizer_deviation`](SimulatorBuilder::tokenizer_deviation), 15 % by default),
    /// plus 4 per message. `None` if the body is not a JSON object.
    ///
    /// ```
    /// # use tower_quota::sim::Simulator;
    /// let sim = Simulator::builder().seed(1).build();
    /// let text = "x".repeat(4_000);
    /// let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    /// let n = sim.prompt_tokens(body.as_bytes()).unwrap();
    /// assert!((850 + 4..=1_150 + 4).contains(&n));
    /// assert_eq!(sim.prompt_tokens(body.as_bytes()), Some(n)); // the same body, the same count
    /// ```
    pub fn prompt_tokens(&self, body: &[u8]) -> Option<u64> {
        let value: Value = serde_json::from_slice(body).ok()?;
        value.as_object()?;
        let (text, messages) = prompt_text(&value);
        Some(prompt_tokens(
            &text,
            messages,
            self.inner.deviation,
            self.inner.seed,
        ))
    }

    /// What the simulator saw so far.
    pub fn stats(&self) -> Stats {
        let state = self.lock();
        Stats::from_records(state.records.clone(), state.admissions.clone())
    }

    /// Checks from the log of arrivals that no limit of any account was ever broken, counting
    /// as each limit counts: never more than N admissions in any interval of length W (rolling),
    /// in one clock-aligned window (clock), in one window opened by an arrival (anchored —
    /// the windows rebuilt from every arrival that reached the limit check), or in one UTC day;
    /// for token limits, rebuilt from the admissions' [`Tokens`]: at each admission, the
    /// window's charges as they stood then, this one's included, within the limit
    /// ([`Counting::Reserve`](super::Counting::Reserve), `ReserveThenAdjust`), or the count
    /// before it below the limit ([`Counting::AfterResponse`](super::Counting::AfterResponse)).
    /// Times are arrival times, when the simulator saw each request, after the network's
    /// inbound delay. An oracle for tests and benchmarks (it also guards the simulator itself).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let state = self.lock();
        for account in &self.inner.accounts {
            for limit in &account.tier.limits {
                check_limit(&account.label, limit, &state.admissions, &state.records)?;
            }
            for limit in &account.tier.token_limits {
                check_token_limit(&account.label, limit, &state.admissions)?;
            }
        }
        Ok(())
    }

    /// Forgets every request, admission, credit spent, upstream delay and 503 burst, and
    /// restarts the fault streams; the configuration and the wall clock stay.
    pub fn reset(&self) {
        let mut state = self.lock();
        *state = State {
            accounts: self
                .inner
                .accounts
                .iter()
                .map(|_| AccountState::default())
                .collect(),
            ..State::default()
        };
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-updated in a way that matters here.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Draws the network's delays of the request being sent now.
    fn send(&self) -> Legs {
        let mut state = self.lock();
        let n = state.sent;
        state.sent += 1;
        drop(state);
        let (inbound, outbound) = self.inner.network.draw(self.inner.seed, n);
        Legs {
            sent: Instant::now(),
            inbound,
            outbound,
        }
    }

    /// Answers one request, as the in-process service and the HTTP server both do: it
    /// arrives after its inbound delay, is decided then, and its answer leaves after the
    /// upstream latency and reaches the client after its outbound delay.
    async fn handle<B>(self, req: Request<B>, legs: Legs) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !legs.inbound.is_zero() {
            tokio::time::sleep_until(legs.sent + legs.inbound).await;
        }
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let route = match (&parts.method, path.as_str()) {
            (&Method::POST, "/api/v1/chat/completions" | "/v1/chat/completions") => {
                let asked = match Limited::new(body, MAX_BODY).collect().await {
                    Ok(collected) => self.parse_completion(&collected.to_bytes()),
                    Err(_) => Err("Could not read the request body".to_string()),
                };
                Route::Completion { asked }
            }
            (&Method::GET, "/api/v1/key") | (&Method::GET, "/api/v1/auth/key") => Route::KeyInfo,
            _ => Route::NotFound,
        };
        let key = bearer(&parts.headers);
        let (answer, record) = self.decide(&parts.method, path, key, route, legs);
        let delay = answer.delay + legs.outbound;
        let mut response = answer.into_response();
        // The server's clock, as every HTTP server sends it (hyper's own would read the
        // system clock, not the simulation's): its absolute resets are on it.
        if let Ok(date) = http::HeaderValue::from_str(&httpdate::fmt_http_date(self.now_wall())) {
            response.headers_mut().insert(http::header::DATE, date);
        }
        response.extensions_mut().insert(record);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        response
    }

    /// Decides the answer and records the request, atomically.
    fn decide(
        &self,
        method: &Method,
        path: String,
        key: Option<String>,
        route: Route,
        legs: Legs,
    ) -> (Answer, Record) {
        let now = Instant::now();
        let wall = self.wall_at(now);
        // What the trip really took (the timer's tick, the body's transfer over loopback).
        let inbound = now.saturating_duration_since(legs.sent);
        let mut state = self.lock();
        let seq = state.records.len() as u64;
        let account = key.as_ref().and_then(|k| self.inner.keys.get(k).copied());
        let mut model = None;
        let (answer, outcome) = match (route, account) {
            (Route::NotFound, _) => (
                Answer::error(StatusCode::NOT_FOUND, "Not Found"),
                Outcome::NotFound,
            ),
            (_, None) => {
                let message = if key.is_none() {
                    "No auth credentials found"
                } else {
                    "User not found."
                };
                (
                    Answer::error(StatusCode::UNAUTHORIZED, message),
                    Outcome::Unauthorized,
                )
            }
            (Route::KeyInfo, Some(i)) => (self.key_info(&state, i, wall), Outcome::KeyInfo),
            (
                Route::Completion {
                    asked: Err(message),
                },
                Some(_),
            ) => (
                Answer::error(StatusCode::BAD_REQUEST, &message),
                Outcome::BadRequest,
            ),
            (Route::Completion { asked: Ok(asked) }, Some(i)) => {
                let m = asked.model.clone();
                let arrival = Arrival {
                    seq,
                    key: key.as_deref().unwrap_or(""),
                    model: &m,
                    asked: &asked,
                    now,
                    wall,
                    inbound,
                    outbound: legs.outbound,
                };
                let decided = self.complete(&mut state, i, arrival);
                model = Some(m);
                decided
            }
        };
        let record = Record {
            seq,
            at: now,
            wall,
            method: method.clone(),
            path,
            key,
            account: account.map(|i| self.inner.accounts[i].label.clone()),
            model,
            status: answer.status,
            outcome,
            inbound,
            outbound: legs.outbound,
        };
        state.records.push(record.clone());
        (answer, record)
    }

    /// A completion for account `i`: credits, limits, faults, then the admission.
    fn complete(&self, state: &mut State, i: usize, arrival: Arrival<'_>) -> (Answer, Outcome) {
        let Arrival {
            seq,
            key,
            model,
            asked,
            now,
            wall,
            inbound,
            outbound,
        } = arrival;
        let inner = &*self.inner;
        let account = &inner.accounts[i];
        let free = model.ends_with(":free");
        let price = if free { 0.0 } else { inner.price };

        // 402: the credits do not cover a paid request.
        if let Some(credits) = account.credits {
            if price > 0.0 && state.accounts[i].usage + price > credits + 1e-9 {
                let body = json!({"error": {
                    "code": 402,
                    "message": "Insufficient credits. Add more using https://openrouter.ai/credits",
                }});
                return (
                    Answer::new(StatusCode::PAYMENT_REQUIRED, body),
                    Outcome::InsufficientCredits,
                );
            }
        }

        // The platform's own limits, checked on arrival; anchored windows count every arrival.
        let today = utc_day(wall);
        let limits = &account.tier.limits;
        let verdict = state.accounts[i].check(limits, free, now, wall, today);
        state.accounts[i].arrive(limits, free, wall);
        match verdict {
            Verdict::Admit => {}
            Verdict::Window { limit: l, reset } => {
                let limit = &limits[l];
                let wait = reset - now;
                let answer = match limit.period {
                    Period::Clock(_) => {
                        let used = state.accounts[i].used_in_window(limits, l, wall);
                        self.litellm_clock_429(limit, used.unwrap_or(0), wait)
                    }
                    Period::Anchored(w) => self.litellm_anchored_429(key, limit, wall, w),
                    Period::Rolling(_) | Period::Bucket(_)
                        if account.tier.style != Style::OpenRouter =>
                    {
                        let (left, _) = state.accounts[i].requests_left(limits, l, now);
                        let whole = match limit.period {
                            Period::Bucket(_) => limit.burst(),
                            _ => limit.admits,
                        };
                        let used = u64::from(whole).saturating_sub(left);
                        let mut answer = self.styled_429(
                            account.tier.style,
                            model,
                            "requests",
                            u64::from(limit.requests),
                            used,
                            1,
                            Some(wait),
                        );
                        answer.headers.extend(self.style_headers(
                            &state.accounts[i],
                            &account.tier,
                            free,
                            now,
                            wall,
                        ));
                        answer
                    }
                    Period::Rolling(_) | Period::Bucket(_) | Period::UtcDay => {
                        let reset_ms = epoch_ms_ceil(wall + wait);
                        let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        let mut answer = self.platform_429(account, limit, reset_ms);
                        answer
                            .headers
                            .push(("Retry-After", retry_after.to_string()));
                        answer
                    }
                };
                let outcome = Outcome::RateLimited {
                    limit: limit.name.clone(),
                };
                return (answer, outcome);
            }
            Verdict::Daily { limit } => {
                let limit = &account.tier.limits[limit];
                let answer = self.platform_429(account, limit, next_utc_midnight_ms(wall));
                let outcome = Outcome::DailyCapReached {
                    limit: limit.name.clone(),
                };
                return (answer, outcome);
            }
        }

        // Token limits, checked on arrival after the request limits: the prompt as the
        // server counts it, the completion reserved as `max_tokens`.
        let max_output = asked.max_tokens.unwrap_or(inner.default_max_tokens);
        let mut tokens = Tokens {
            input: asked.input,
            output: 0,
            max_output,
        };
        let token_limits = &account.tier.token_limits;
        {
            let logs = &mut state.accounts[i].token_logs;
            if logs.len() < token_limits.len() {
                logs.resize_with(token_limits.len(), TokenLog::default);
            }
        }
        for (l, limit) in token_limits.iter().enumerate() {
            let requested = limit.charge(&tokens).0;
            let checked = state.accounts[i].token_logs[l].check(limit, requested, now, wall);
            if let Err(refused) = checked {
                let wait = refused.reset.map(|r| r - now);
                let answer = match limit.period {
                    Period::Clock(_) => self.litellm_tokens_429(limit, refused.used, wait),
                    _ => {
                        let mut answer = self.styled_429(
                            account.tier.style,
                            model,
                            kind_words(limit.kind),
                            limit.tokens,
                            refused.used,
                            refused.requested,
                            wait,
                        );
                        if account.tier.style == Style::OpenRouter {
                            answer = self.platform_token_429(account, limit, &refused, wall, now);
                        } else {
                            answer.headers.extend(self.style_headers(
                                &state.accounts[i],
                                &account.tier,
                                free,
                                now,
                                wall,
                            ));
                        }
                        answer
                    }
                };
                let outcome = Outcome::RateLimited {
                    limit: limit.name.clone(),
                };
                return (answer, outcome);
            }
        }

        // The upstream stage: latency and faults, from this request's own stream.
        let mut rng = SplitMix64::for_request(inner.seed, state.upstream_draws);
        state.upstream_draws += 1;
        let (lo, hi) = inner.latency;
        let delay = lo + Duration::from_nanos(rng.range_u64(0, (hi - lo).as_nanos() as u64));
        let faults = &inner.faults;
        let starts_burst = rng.chance(faults.unavailable);
        let upstream_429 = rng.chance(faults.upstream_429);
        let retry_after = rng.range_u64(faults.retry_after_min, faults.retry_after_max);
        let bad_gateway = rng.chance(faults.bad_gateway);
        tokens.output = inner.completions.draw(max_output, &mut rng);

        if let Some((until, delivered)) = state.accounts[i].cooldowns.get(model).copied() {
            if faults.enforce_retry_after && until > now {
                let wait = until - now;
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut answer = self.upstream_429(model, secs);
                answer.delay = delay;
                // Early only if sent once the client had the 429: a request already on the
                // wire when it was answered could not have known.
                let sent = now.checked_sub(inbound).unwrap_or(now);
                let outcome = Outcome::UpstreamRateLimited {
                    retry_after_secs: secs,
                    early: sent >= delivered,
                };
                return (answer, outcome);
            }
        }
        let in_burst = state.burst_until.is_some_and(|until| until > now);
        if in_burst || starts_burst {
            if !in_burst {
                state.burst_until = Some(now + faults.burst);
            }
            let body = json!({"error": {
                "code": 503,
                "message": "No allowed providers are available for the selected model.",
            }});
            return (
                Answer::new(StatusCode::SERVICE_UNAVAILABLE, body),
                Outcome::Unavailable,
            );
        }
        if upstream_429 {
            state.accounts[i].cooldowns.insert(
                model.to_string(),
                (
                    now + Duration::from_secs(retry_after),
                    now + delay + outbound,
                ),
            );
            let mut answer = self.upstream_429(model, retry_after);
            answer.delay = delay;
            let outcome = Outcome::UpstreamRateLimited {
                retry_after_secs: retry_after,
                early: false,
            };
            return (answer, outcome);
        }
        if bad_gateway {
            let mut answer = Answer::new(
                StatusCode::BAD_GATEWAY,
                json!({"error": {
                    "code": 502,
                    "message": format!("{model} is currently unavailable: the provider returned an invalid response"),
                    "metadata": {"provider_name": inner.provider},
                }}),
            );
            answer.delay = delay;
            return (answer, Outcome::BadGateway);
        }

        // Admitted.
        state.accounts[i].admit(
            limits,
            Entry {
                at: now,
                wall,
                day: today,
                free,
            },
        );
        state.accounts[i].usage += price;
        // The answer is done when it leaves, after the upstream latency: reservations settle
        // then, and LiteLLM counts the usage then.
        let done = now + delay;
        for (l, limit) in token_limits.iter().enumerate() {
            let (reserved, settled) = limit.charge(&tokens);
            let after = limit.counting == super::tokens::Counting::AfterResponse;
            let charge = Charge {
                at: if after { done } else { now },
                wall: if after { wall + delay } else { wall },
                done,
                reserved,
                settled,
            };
            state.accounts[i].token_logs[l].push(limit, charge);
        }
        state.admissions.push(Admission {
            seq,
            at: now,
            wall,
            account: account.label.clone(),
            key: key.to_string(),
            model: model.to_string(),
            free,
            tokens,
            done,
        });
        let created = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let content = "tok ".repeat(tokens.output as usize);
        let usage = json!({
            "prompt_tokens": tokens.input,
            "completion_tokens": tokens.output,
            "total_tokens": tokens.total(),
        });
        let finish = if tokens.output >= max_output {
            "length"
        } else {
            "stop"
        };
        let id = format!("gen-sim-{seq}");
        let body = json!({
            "id": id,
            "provider": inner.provider,
            "model": model,
            "object": "chat.completion",
            "created": created,
            "choices": [{
                "logprobs": null,
                "finish_reason": finish,
                "native_finish_reason": finish,
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": null,
                    "reasoning": null,
                },
            }],
            "usage": usage,
        });
        let mut answer = Answer::new(StatusCode::OK, body);
        if asked.stream {
            answer.sse = Some(sse_events(
                &id,
                &inner.provider,
                model,
                created,
                &content,
                finish,
                asked.include_usage.then_some(&usage),
            ));
        }
        answer.delay = delay;
        answer.headers = self.litellm_success_headers(&state.accounts[i], limits, free, wall);
        answer.headers.extend(self.style_headers(
            &state.accounts[i],
            &account.tier,
            free,
            now,
            wall,
        ));
        (answer, Outcome::Completed)
    }

    /// The parsed body of a completion request.
    fn parse_completion(&self, body: &[u8]) -> Result<Asked, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
        let model = match value.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return Err("Missing required field: model".to_string()),
        };
        let (text, messages) = prompt_text(&value);
        let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|f| value.get(*f).and_then(Value::as_u64));
        let stream = value.get("stream").and_then(Value::as_bool) == Some(true);
        let include_usage = value
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        Ok(Asked {
            model,
            input: prompt_tokens(&text, messages, self.inner.deviation, self.inner.seed),
            max_tokens,
            stream,
            include_usage,
        })
    }

    /// The rate-limit headers of OpenAI or Anthropic on an answer to a completion (none for
    /// OpenRouter), after this request's charges: the first rolling request limit that counts
    /// the model, and the token limits (OpenAI: the first total one).
    fn style_headers(
        &self,
        state: &AccountState,
        tier: &super::config::Tier,
        free: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        let requests = tier.limits.iter().position(|l| {
            matches!(l.period, Period::Rolling(_) | Period::Bucket(_)) && l.models.matches(free)
        });
        let request_state = requests.map(|i| {
            let (left, full) = state.requests_left(&tier.limits, i, now);
            (u64::from(tier.limits[i].requests), left, full)
        });
        let token_state = |l: usize| {
            let limit = &tier.token_limits[l];
            let log = state.token_logs.get(l);
            let used = log.map_or(0, |g| g.used(limit, now, wall));
            let full = log.map_or(now, |g| g.replenished(limit, now, wall));
            (limit.tokens, limit.tokens.saturating_sub(used), full - now)
        };
        match tier.style {
            Style::OpenRouter => {}
            Style::OpenAi => {
                if let Some((n, left, reset)) = request_state {
                    headers.push(("x-ratelimit-limit-requests", n.to_string()));
                    headers.push(("x-ratelimit-remaining-requests", left.to_string()));
                    headers.push(("x-ratelimit-reset-requests", go_duration(reset)));
                }
                let total = tier
                    .token_limits
                    .iter()
                    .position(|l| l.kind == TokenKind::Total);
                if let Some((n, left, reset)) = total.map(token_state) {
                    headers.push(("x-ratelimit-limit-tokens", n.to_string()));
                    headers.push(("x-ratelimit-remaining-tokens", left.to_string()));
                    headers.push(("x-ratelimit-reset-tokens", go_duration(reset)));
                }
            }
            Style::Anthropic => {
                if let Some((n, left, reset)) = request_state {
                    headers.push(("anthropic-ratelimit-requests-limit", n.to_string()));
                    headers.push(("anthropic-ratelimit-requests-remaining", left.to_string()));
                    headers.push((
                        "anthropic-ratelimit-requests-reset",
                        rfc3339_ceil(wall + reset),
                    ));
                }
                for (l, limit) in tier.token_limits.iter().enumerate() {
                    let names = match limit.kind {
                        TokenKind::Input => [
                            "anthropic-ratelimit-input-tokens-limit",
                            "anthropic-ratelimit-input-tokens-remaining",
                            "anthropic-ratelimit-input-tokens-reset",
                        ],
                        TokenKind::Output => [
                            "anthropic-ratelimit-output-tokens-limit",
                            "anthropic-ratelimit-output-tokens-remaining",
                            "anthropic-ratelimit-output-tokens-reset",
                        ],
                        TokenKind::Total => [
                            "anthropic-ratelimit-tokens-limit",
                            "anthropic-ratelimit-tokens-remaining",
                            "anthropic-ratelimit-tokens-reset",
                        ],
                    };
                    if headers.iter().any(|(h, _)| *h == names[0]) {
                        continue;
                    }
                    let (n, left, reset) = token_state(l);
                    headers.push((names[0], n.to_string()));
                    headers.push((names[1], left.to_string()));
                    headers.push((names[2], rfc3339_ceil(wall + reset)));
                }
            }
        }
        headers
    }

    /// OpenAI's or Anthropic's 429 for a full request or token window: its error body and
    /// `retry-after` (whole seconds, rounded up; OpenAI adds `retry-after-ms`). `wait` is
    /// `None` for a request larger than the limit itself.
    #[allow(clippy::too_many_arguments)]
    fn styled_429(
        &self,
        style: Style,
        model: &str,
        what: &str,
        limit: u64,
        used: u64,
        requested: u64,
        wait: Option<Duration>,
    ) -> Answer {
        let again = wait.map_or(String::new(), |w| {
            format!(" Please try again in {}.", go_duration(w))
        });
        let (short, unit) = match what {
            "requests" => ("RPM", "requests"),
            "input tokens" => ("ITPM", "input tokens"),
            "output tokens" => ("OTPM", "output tokens"),
            _ => ("TPM", "tokens"),
        };
        let body = match style {
            Style::Anthropic => json!({
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": format!(
                        "This request would exceed the rate limit for your organization (org-sim) of {limit} {unit} per minute. \
                         For details, refer to: https://docs.claude.com/en/api/rate-limits."
                    ),
                },
                "request_id": format!("req_sim{:016x}", fnv1a(format!("{model}{used}{requested}").as_bytes())),
            }),
            _ => {
                let (kind, message) = if wait.is_none() {
                    (
                        "tokens",
                        format!(
                            "Request too large for {model} in organization org-sim on {unit} per min ({short}): \
                             Limit {limit}, Requested {requested}. The input or output tokens must be reduced in order to run successfully."
                        ),
                    )
                } else {
                    (
                        if what == "requests" { "requests" } else { "tokens" },
                        format!(
                            "Rate limit reached for {model} in organization org-sim on {unit} per min ({short}): \
                             Limit {limit}, Used {used}, Requested {requested}.{again} \
                             Visit https://platform.openai.com/account/rate-limits to learn more."
                        ),
                    )
                };
                json!({"error": {
                    "message": message,
                    "type": kind,
                    "param": null,
                    "code": "rate_limit_exceeded",
                }})
            }
        };
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, body);
        if let Some(w) = wait {
            let secs = w.as_secs() + u64::from(w.subsec_nanos() > 0);
            answer.headers.push(("retry-after", secs.to_string()));
            if style == Style::OpenAi {
                let ms = w.as_nanos().div_ceil(1_000_000);
                answer.headers.push(("retry-after-ms", ms.to_string()));
            }
        }
        answer
    }

    /// A token window full on an OpenRouter-styled tier: OpenRouter's own 429 shape, named
    /// after the limit, `X-RateLimit-*` counting tokens and `Retry-After`.
    fn platform_token_429(
        &self,
        account: &Account,
        limit: &TokenLimit,
        refused: &super::tokens::TokenRefusal,
        wall: SystemTime,
        now: Instant,
    ) -> Answer {
        let n = limit.tokens.to_string();
        let left = limit.tokens.saturating_sub(refused.used).to_string();
        let reset = refused
            .reset
            .map(|r| epoch_ms_ceil(wall + (r - now)).to_string());
        let body = json!({
            "error": {
                "message": format!("Rate limit exceeded: {}. ", limit.name),
                "code": 429,
                "metadata": {
                    "headers": {
                        "X-RateLimit-Limit": n,
                        "X-RateLimit-Remaining": left,
                        "X-RateLimit-Reset": reset,
                    },
                    "provider_name": null,
                },
            },
            "user_id": user_id(account),
        });
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, body);
        answer.headers = vec![("X-RateLimit-Limit", n), ("X-RateLimit-Remaining", left)];
        if let (Some(reset), Some(r)) = (reset, refused.reset) {
            let wait = r - now;
            answer.headers.push(("X-RateLimit-Reset", reset));
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            answer.headers.push(("Retry-After", secs.to_string()));
        }
        answer
    }

    /// LiteLLM's key limiter refusing a request on its clock-minute `tpm`: the proxy's error,
    /// `retry-after` = the seconds to the next window.
    fn litellm_tokens_429(&self, limit: &TokenLimit, used: u64, wait: Option<Duration>) -> Answer {
        let message = format!(
            "LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM, RPM Limit. \
             current rpm: None, rpm limit: None, current tpm: {used}, tpm limit: {}",
            limit.tokens
        );
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, litellm_error(&message));
        if let Some(wait) = wait {
            let micros = wait.as_nanos().div_ceil(1_000);
            let retry_after = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
            answer.headers = vec![("retry-after", retry_after)];
        }
        answer
    }

    /// What LiteLLM adds to a 200 for each fixed-window limit that counts the model: the
    /// legacy limiter's `x-ratelimit-{limit,remaining}-requests`, v3's
    /// `x-ratelimit-api_key-{limit,remaining}-requests`. OpenRouter adds nothing.
    fn litellm_success_headers(
        &self,
        state: &AccountState,
        limits: &[Limit],
        free: bool,
        wall: SystemTime,
    ) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        for (l, limit) in limits.iter().enumerate() {
            if !limit.models.matches(free) {
                continue;
            }
            let used = state.used_in_window(limits, l, wall).unwrap_or(0);
            let n = u64::from(limit.requests);
            let remaining = n.saturating_sub(used).to_string();
            match limit.period {
                Period::Clock(_) => {
                    headers.push(("x-ratelimit-limit-requests", n.to_string()));
                    headers.push(("x-ratelimit-remaining-requests", remaining));
                }
                Period::Anchored(_) => {
                    headers.push(("x-ratelimit-api_key-limit-requests", n.to_string()));
                    headers.push(("x-ratelimit-api_key-remaining-requests", remaining));
                }
                Period::Rolling(_) | Period::UtcDay | Period::Bucket(_) => {}
            }
        }
        headers
    }

    /// LiteLLM's legacy key limiter refusing a request in a full clock window: `retry-after`
    /// is the time to the next window in seconds, fractional as Python prints a float (to the
    /// microsecond, rounded up here so that a client waiting that long is admitted).
    fn litellm_clock_429(&self, limit: &Limit, used: u64, wait: Duration) -> Answer {
        let micros = wait.as_nanos().div_ceil(1_000);
        let retry_after = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        let message = format!(
            "LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM, RPM Limit. \
             current rpm: {used}, rpm limit: {}, current tpm: 0, tpm limit: None",
            limit.requests
        );
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, litellm_error(&message));
        answer.headers = vec![("retry-after", retry_after)];
        answer
    }

    /// LiteLLM's current key limiter refusing a request: `retry-after` is the whole window, a
    /// constant; `reset_at` is now plus the window.
    fn litellm_anchored_429(
        &self,
        key: &str,
        limit: &Limit,
        wall: SystemTime,
        window: Duration,
    ) -> Answer {
        let reset_at = format!("{} UTC", utc_datetime(wall + window));
        let hashed = format!("{:016x}", fnv1a(key.as_bytes()));
        let message = format!(
            "Rate limit exceeded for api_key: {hashed}. Limit type: requests. Current limit: {}, \
             Remaining: 0. Limit resets at: {reset_at}",
            limit.requests
        );
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, litellm_error(&message));
        answer.headers = vec![
            ("retry-after", fmt_secs(window)),
            ("rate_limit_type", "requests".to_string()),
            ("reset_at", reset_at),
        ];
        answer
    }

    /// OpenRouter's own 429, with the `X-RateLimit-*` headers in the body and on the response.
    fn platform_429(&self, account: &Account, limit: &Limit, reset_ms: u64) -> Answer {
        let n = limit.requests.to_string();
        let reset = reset_ms.to_string();
        let body = json!({
            "error": {
                "message": limit.message(),
                "code": 429,
                "metadata": {
                    "headers": {
                        "X-RateLimit-Limit": n,
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": reset,
                    },
                    "provider_name": null,
                },
            },
            "user_id": user_id(account),
        });
        let mut answer = Answer::new(StatusCode::TOO_MANY_REQUESTS, body);
        answer.headers = vec![
            ("X-RateLimit-Limit", n),
            ("X-RateLimit-Remaining", "0".to_string()),
            ("X-RateLimit-Reset", reset),
        ];
        answer
    }

    /// The upstream provider's 429: the delay only in the body (as observed).
    fn upstream_429(&self, model: &str, secs: u64) -> Answer {
        let body = json!({"error": {
            "message": "Provider returned error",
            "code": 429,
            "metadata": {
                "raw": format!("{model} is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations"),
                "provider_name": self.inner.provider,
                "is_byok": false,
                "retry_after_seconds": secs,
                "headers": {"Retry-After": secs.to_string()},
            },
        }});
        Answer::new(StatusCode::TOO_MANY_REQUESTS, body)
    }

    /// `GET /api/v1/key` for account `i`.
    fn key_info(&self, state: &State, i: usize, wall: SystemTime) -> Answer {
        let account = &self.inner.accounts[i];
        let s = &state.accounts[i];
        let today = utc_day(wall);
        let daily = account
            .tier
            .limits
            .iter()
            .find(|l| l.period == Period::UtcDay && l.models.matches(true));
        let free_daily = match daily {
            Some(l) => {
                let used = s.used_today(l, today);
                json!({
                    "limit": l.requests,
                    "remaining": (l.requests as usize).saturating_sub(used),
                    "used": used,
                })
            }
            None => {
                let used = s.log.iter().filter(|e| e.free && e.day == today).count();
                json!({"limit": null, "remaining": null, "used": used})
            }
        };
        let rate_limit = match account.tier.limits.iter().find_map(|l| match l.period {
            Period::Rolling(w) if l.models.matches(true) => Some((l.requests, w)),
            _ => None,
        }) {
            Some((n, w)) => json!({"requests": n, "interval": format!("{}s", fmt_secs(w))}),
            None => json!({"requests": -1, "interval": null}),
        };
        let usage = round_credits(s.usage);
        let body = json!({"data": {
            "label": account.label,
            "limit": account.credits,
            "limit_remaining": account.credits.map(|c| round_credits((c - s.usage).max(0.0))),
            "limit_reset": null,
            "usage": usage,
            "is_free_tier": account.tier.free_tier,
            "free_model_daily_requests": free_daily,
            "rate_limit": rate_limit,
        }});
        Answer::new(StatusCode::OK, body)
    }
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("accounts", &self.inner.accounts)
            .field("faults", &self.inner.faults)
            .field("seed", &self.inner.seed)
            .finish_non_exhaustive()
    }
}

/// The simulated user id of an account.
fn user_id(account: &Account) -> String {
    format!("user_sim{:016x}", fnv1a(account.label.as_bytes()))
}

/// FNV-1a, 64 bits: stable ids for keys and accounts.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The LiteLLM proxy's error body: `code` a string, `type` and `param` present.
fn litellm_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "None", "param": "None", "code": "429"}})
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (whole seconds, rounded down).
fn utc_datetime(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::headers::rfc3339::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn round_credits(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// A wall time in Unix epoch milliseconds, rounded up (a client that waits until then is
/// admitted).
fn epoch_ms_ceil(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    d.as_millis() as u64 + u64::from(!d.subsec_nanos().is_multiple_of(1_000_000))
}

/// The `Authorization: Bearer <key>` key, if any.
fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then(|| key.to_string())
}

/// The `model` of a completion request's JSON body.
#[cfg(test)]
fn parse_model(body: &[u8]) -> Result<String, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    match value.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => Err("Missing required field: model".to_string()),
    }
}

/// The prompt's text — every message's `content` (a string, or the `text` of each part),
/// a top-level `system` (Anthropic) or `prompt` (legacy completions) — and the number of
/// messages.
fn prompt_text(value: &Value) -> (Vec<u8>, u64) {
    fn push(text: &mut Vec<u8>, v: &Value) {
        match v {
            Value::String(s) => text.extend_from_slice(s.as_bytes()),
            Value::Array(parts) => {
                for p in parts {
                    match p {
                        Value::String(s) => text.extend_from_slice(s.as_bytes()),
                        _ => {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                text.extend_from_slice(t.as_bytes());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut text = Vec::new();
    let mut messages = 0;
    for field in ["system", "prompt"] {
        if let Some(v) = value.get(field) {
            push(&mut text, v);
        }
    }
    if let Some(list) = value.get("messages").and_then(Value::as_array) {
        for m in list {
            messages += 1;
            if let Some(c) = m.get("content") {
                push(&mut text, c);
            }
        }
    }
    (text, messages)
}

/// How a 429 names a token kind.
fn kind_words(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Input => "input tokens",
        TokenKind::Output => "output tokens",
        TokenKind::Total => "tokens",
    }
}

/// A duration as Go's `time.Duration.String()` prints it, to the millisecond (rounded up):
/// `12ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.5s`; `0s` for zero. OpenAI's reset format.
fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let secs = if rest % 1_000 == 0 {
        format!("{}s", rest / 1_000)
    } else {
        let frac = format!("{:03}", rest % 1_000);
        format!("{}.{}s", rest / 1_000, frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// A wall time as RFC 3339 in UTC, rounded up to the second: `2026-11-22T10:00:01Z`.
/// Anthropic's reset format.
fn rfc3339_ceil(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let up = UNIX_EPOCH + Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0));
    utc_datetime(up).replacen(' ', "T", 1) + "Z"
}

/// An OpenAI `chat.completion.chunk` stream: a first chunk with the role, the content in up
/// to eight deltas, a chunk with the finish reason, then — when the request set
/// `stream_options.include_usage` — a chunk with empty `choices` and the `usage` (every
/// earlier chunk then carries `"usage": null`), then `data: [DONE]`.
fn sse_events(
    id: &str,
    provider: &str,
    model: &str,
    created: u64,
    content: &str,
    finish: &str,
    usage: Option<&Value>,
) -> String {
    let chunk = |choices: Value| {
        let mut c = json!({
            "id": id,
            "provider": provider,
            "model": model,
            "object": "chat.completion.chunk",
            "created": created,
            "choices": choices,
        });
        if usage.is_some() {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = vec![chunk(json!([{
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": null,
    }]))];
    // Deltas cut at whitespace: "tok tok " … in up to eight pieces.
    let words: Vec<&str> = content.split_inclusive(' ').collect();
    let per = words.len().div_ceil(8).max(1);
    for piece in words.chunks(per) {
        events.push(chunk(json!([{
            "index": 0,
            "delta": {"content": piece.concat()},
            "finish_reason": null,
        }])));
    }
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    if let Some(usage) = usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage.clone();
        events.push(last);
    }
    let mut out = String::new();
    for e in events {
        out.push_str("data: ");
        out.push_str(&e.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out
}

// === impl Service ===

impl<B> Service<Request<B>> for Simulator
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Sent now: the network's delays are drawn in the order requests are sent.
        let legs = self.send();
        let sim = self.clone();
        ResponseFuture {
            inner: Box::pin(async move { Ok(sim.handle(req, legs).await) }),
        }
    }
}

/// The response future of [`Simulator`] as a service. Boxed: this is a test double, not a
/// hot path.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = ServiceResult> + Send>>,
}

type ServiceResult = Result<Response<Full<Bytes>>, Infallible>;

impl Future for ResponseFuture {
    type Output = ServiceResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer  sk-1 ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("sk-1"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn models_and_times() {
        assert_eq!(parse_model(br#"{"model":"m:free"}"#).unwrap(), "m:free");
        assert!(parse_model(b"{}").is_err());
        assert!(parse_model(b"nope").is_err());
        let t = UNIX_EPOCH + Duration::from_micros(1_500);
        assert_eq!(epoch_ms_ceil(t), 2);
        let ten_am = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        assert_eq!(utc_datetime(ten_am), "2026-11-22 10:00:00");
        assert_eq!(utc_datetime(UNIX_EPOCH), "1970-01-01 00:00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399); // 2000-02-29
        assert_eq!(utc_datetime(leap), "2000-02-29 23:59:59");
        assert_eq!(epoch_ms_ceil(UNIX_EPOCH + Duration::from_millis(7)), 7);
        assert_eq!(rfc3339_ceil(ten_am), "2026-11-22T10:00:00Z");
        assert_eq!(
            rfc3339_ceil(ten_am + Duration::from_millis(1)),
            "2026-11-22T10:00:01Z"
        );
    }

    #[test]
    fn go_durations_as_openai_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(go_duration(ms(12)), "12ms");
        assert_eq!(go_duration(ms(1_000)), "1s");
        assert_eq!(go_duration(ms(1_500)), "1.5s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(ms(59_999)), "59.999s");
    }

    #[test]
    fn prompt_text_reads_strings_and_parts() {
        let v: Value = serde_json::from_str(
            r#"{"system":"ab","messages":[{"role":"user","content":"cd"},{"role":"user","content":[{"type":"text","text":"ef"}]}]}"#,
        )
        .unwrap();
        assert_eq!(prompt_text(&v), (b"abcdef".to_vec(), 2));
    }
}
