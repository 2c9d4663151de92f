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
use super::config::{fmt_secs, Account, Faults, Limit, Period};
use super::network::Network;
use super::rng::SplitMix64;
use super::state::{next_utc_midnight_ms, utc_day, AccountState, Entry, Verdict};
use super::stats::{check_limit, Admission, InvariantViolation, Outcome, Record, Stats};

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
    Completion { model: Result<String, String> },
    KeyInfo,
    NotFound,
}

/// A completion request as it arrived.
struct Arrival<'a> {
    seq: u64,
    key: &'a str,
    model: &'a str,
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
    delay: Duration,
}

impl Answer {
    fn new(status: StatusCode, body: Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body,
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
        let mut builder = Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(self.body.to_string())))
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

    /// What the simulator saw so far.
    pub fn stats(&self) -> Stats {
        let state = self.lock();
        Stats::from_records(state.records.clone(), state.admissions.clone())
    }

    /// Checks from the log of arrivals that no limit of any account was ever broken, counting
    /// as each limit counts: never more than N admissions in any interval of length W (rolling),
    /// in one clock-aligned window (clock), in one window opened by an arrival (anchored —
    /// the windows rebuilt from every arrival that reached the limit check), or in one UTC day.
    /// Times are arrival times, when the simulator saw each request, after the network's
    /// inbound delay. An oracle for tests and benchmarks (it also guards the simulator itself).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let state = self.lock();
        for account in &self.inner.accounts {
            for limit in &account.tier.limits {
                check_limit(&account.label, limit, &state.admissions, &state.records)?;
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
            (&Method::POST, "/api/v1/chat/completions") => {
                let model = match Limited::new(body, MAX_BODY).collect().await {
                    Ok(collected) => parse_model(&collected.to_bytes()),
                    Err(_) => Err("Could not read the request body".to_string()),
                };
                Route::Completion { model }
            }
            (&Method::GET, "/api/v1/key") | (&Method::GET, "/api/v1/auth/key") => Route::KeyInfo,
            _ => Route::NotFound,
        };
        let key = bearer(&parts.headers);
        let (answer, record) = self.decide(&parts.method, path, key, route, legs);
        let delay = answer.delay + legs.outbound;
        let mut response = answer.into_response();
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
                    model: Err(message),
                },
                Some(_),
            ) => (
                Answer::error(StatusCode::BAD_REQUEST, &message),
                Outcome::BadRequest,
            ),
            (Route::Completion { model: Ok(m) }, Some(i)) => {
                let arrival = Arrival {
                    seq,
                    key: key.as_deref().unwrap_or(""),
                    model: &m,
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
                    Period::Rolling(_) | Period::UtcDay => {
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
        state.admissions.push(Admission {
            seq,
            at: now,
            wall,
            account: account.label.clone(),
            key: key.to_string(),
            model: model.to_string(),
            free,
        });
        let created = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = json!({
            "id": format!("gen-sim-{seq}"),
            "provider": inner.provider,
            "model": model,
            "object": "chat.completion",
            "created": created,
            "choices": [{
                "logprobs": null,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": format!("Simulated reply #{seq}."),
                    "refusal": null,
                    "reasoning": null,
                },
            }],
            "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
        });
        let mut answer = Answer::new(StatusCode::OK, body);
        answer.delay = delay;
        answer.headers = self.litellm_success_headers(&state.accounts[i], limits, free, wall);
        (answer, Outcome::Completed)
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
                Period::Rolling(_) | Period::UtcDay => {}
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
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
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
fn parse_model(body: &[u8]) -> Result<String, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    match value.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => Err("Missing required field: model".to_string()),
    }
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
    }
}
