//! The pacing benchmark's scenarios, strategies and figures, shared by `benches/pacing.rs`
//! (which prints and writes the report) and `tests/pacing.rs` (which asserts tower-quota's
//! targets on exactly the same runs).
//!
//! Every in-process run builds its own [`Simulator`] and drives it through one strategy's
//! client with a fixed number of workers; under paused tokio time (a `current_thread`
//! runtime with `start_paused(true)`) a run is deterministic and takes no real time. The
//! simulator is the oracle: what it saw ([`Simulator::stats`]) gives the 429s, the wasted
//! calls and the admission timeline; the client side gives latencies and outcomes.

#![allow(dead_code)] // each includer uses its own part

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_quota::classify::{Classification, QuotaClass};
use tower_quota::clock::WallClock;
use tower_quota::headers::Dimension;
use tower_quota::limit::{KeyBy, Model, RateLimited, Reconcile};
use tower_quota::sim::{
    Completions, Counting, Delay, Faults, Limit, Models, Network, Outcome, Period, Record,
    Simulator, Style, Tier as SimTier, TokenKind, TokenLimit,
};
use tower_quota::{tiers, Quota, QuotaClassifyLayer, RateLimitLayer, RetryAfterLayer, Tier};

/// The API key every run uses.
pub const KEY: &str = "sk-or-v1-pacing-bench";
/// The model every run asks for (a `:free` variant: the platform limits apply).
pub const MODEL: &str = "meta-llama/llama-3.3-70b-instruct:free";

/// 2026-11-22 10:00:00 UTC: the simulator's wall clock at the start of every run (far from a
/// UTC midnight, so a daily cap does not reset during a run).
pub fn start_wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600)
}

// === Scenario ===

/// Which scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Id {
    /// Free tier, 20 per rolling minute.
    A,
    /// 20 per minute and a daily cap that runs out midway.
    B,
    /// Limits unknown to the client.
    C,
    /// Upstream-provider 429s with delays in the body.
    D,
    /// Bursts of 503s.
    E,
    /// 10 per second on a near network.
    F,
    /// The tier unknown: an empty `Tier`, OpenRouter's headers only.
    G,
    /// A fixed clock-minute server, `rpm: 20` admitting 19.
    H,
    /// A fixed window anchored at the first request, `retry-after` = the window.
    I,
    /// Tokens per minute: OpenAI's 30 000 TPM and 500 RPM, prompts of 200–3 000 tokens.
    J,
    /// The same workload on a server that counts the real usage when each answer is done.
    K,
}

/// The requests of a token scenario: prompts of a seeded size, `max_tokens`, half streamed.
#[derive(Clone, Copy, Debug)]
pub struct TokenWorkload {
    /// Prompt sizes, in tokens of four bytes, uniform in this range (drawn per request from
    /// the scenario's seed).
    pub prompt_tokens: (u64, u64),
    /// Every request's `max_tokens`.
    pub max_tokens: u64,
}

/// The default network of every scenario: 300 ms round trip, split in half, plus 0–200 ms of
/// uniform jitter on each leg (a client far from the provider).
pub fn far_network() -> Network {
    Network::symmetric(Delay::new(
        Duration::from_millis(150),
        Duration::from_millis(200),
    ))
}

/// A near network: 15 ms each way, plus 0–20 ms of jitter.
pub fn near_network() -> Network {
    Network::symmetric(Delay::new(
        Duration::from_millis(15),
        Duration::from_millis(20),
    ))
}

/// `d` in a world where a minute lasts `minute`.
pub fn scale(d: Duration, minute: Duration) -> Duration {
    let nanos = d.as_nanos() * minute.as_nanos() / 60_000_000_000;
    Duration::from_nanos(nanos as u64)
}

/// `x mod m`, for durations.
fn rem(x: Duration, m: Duration) -> Duration {
    Duration::from_nanos((x.as_nanos() % m.as_nanos().max(1)) as u64)
}

/// Describes a delay: `150 ms + 0–200 ms`.
fn describe(d: Delay) -> String {
    let ms = |d: Duration| d.as_millis();
    if d.jitter().is_zero() {
        format!("{} ms", ms(d.base()))
    } else {
        format!("{} ms + 0–{} ms", ms(d.base()), ms(d.jitter()))
    }
}

/// One workload against one simulated account.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Which.
    pub id: Id,
    /// A one-line description for the report.
    pub title: &'static str,
    /// Requests to send.
    pub requests: usize,
    /// Workers sending them (each sends its next request when the last one is done).
    pub concurrency: usize,
    /// The account's tier on the simulator.
    pub sim_tier: SimTier,
    /// How long a minute lasts on the simulator (60 s in process; shorter over loopback).
    pub minute: Duration,
    /// Upstream latency range (the model's time, after the decision).
    pub latency: (Duration, Duration),
    /// The network between the client and the simulator.
    pub network: Network,
    /// Injected faults.
    pub faults: Faults,
    /// The simulator's seed.
    pub seed: u64,
    /// Completions the account already used today before the run (sent before it starts).
    pub prior_use: usize,
    /// The tier tower-quota's client is configured with.
    pub client_tier: Tier,
    /// Whether tower-quota's client adopts the limits the server announces: `None` leaves
    /// the default.
    pub learn_limits: Option<bool>,
    /// The limit the peers are configured with, N per W on the scenario's clock (what a user
    /// would type in).
    pub peer_limit: (u32, Duration),
    /// How much faster the real-time loopback run goes.
    pub loopback_factor: u32,
    /// Completions that can succeed at all (the daily cap may allow fewer than `requests`).
    pub possible: usize,
    /// For a token scenario: what the requests ask for (the others send one short prompt).
    pub workload: Option<TokenWorkload>,
    /// How long the simulator's completions are (default uniform in 50..=`max_tokens`).
    pub completions: Completions,
}

impl Scenario {
    /// Every scenario, in process (a minute lasts 60 s of virtual time).
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario::a(),
            Scenario::b(),
            Scenario::c(),
            Scenario::d(),
            Scenario::e(),
            Scenario::f(),
            Scenario::g(),
            Scenario::h(),
            Scenario::i(),
            Scenario::j(),
            Scenario::k(),
        ]
    }

    /// The strategies this scenario runs in process.
    pub fn strategies(&self) -> &'static [Strategy] {
        if self.workload.is_some() {
            &Strategy::TOKENS
        } else {
            &Strategy::IN_PROCESS
        }
    }

    /// (j) Issue 15's token scenario: an OpenAI tier of 30 000 tokens and 500 requests per
    /// rolling minute, tokens reserved on arrival as OpenAI counts them (the prompt by the
    /// server's tokenizer plus `max_tokens`); 300 requests with prompts of 200–3 000 tokens,
    /// `max_tokens` 800, real completions 50–800, every other one streamed (SSE, usage in the
    /// last chunk), 16 at a time. The peers pace requests at the rate the token budget allows
    /// on average — 30 000 / (1 600 + 800) ≈ 12 per minute, what a user who knows the mean
    /// request would type; at 500/min they would only add 429s.
    pub fn j() -> Scenario {
        Scenario {
            requests: 300,
            possible: 300,
            sim_tier: SimTier::openai(500, 30_000),
            client_tier: Tier::new("rpm-500").with_quota(Quota::per_minute(500)),
            peer_limit: (12, Duration::from_secs(60)),
            workload: Some(TokenWorkload {
                prompt_tokens: (200, 3_000),
                max_tokens: 800,
            }),
            ..Scenario::base(
                Id::J,
                "tokens: 30 000 TPM + 500 RPM (OpenAI, reserved on arrival), 300 requests, prompts 200–3 000 tokens, `max_tokens` 800, completions 50–800, half streamed",
            )
        }
    }

    /// (k) The workload of (j) on a server that counts the **real usage**: 30 000 tokens and
    /// 500 requests per rolling minute, the tokens counted as LiteLLM counts a key's `tpm`
    /// (`usage.total_tokens` added when the answer is done, a request refused once the
    /// window's count has reached the limit: [`Counting::AfterResponse`]) — but on a rolling
    /// minute rather than LiteLLM's clock minute — answered with OpenAI's headers. What a
    /// reservation holds beyond the usage is room the server would give: reconciliation
    /// gives it back. The peers pace at the rate the mean request's real usage allows:
    /// 30 000 / (1 600 + 425) ≈ 14 per minute.
    pub fn k() -> Scenario {
        Scenario {
            id: Id::K,
            title: "tokens, real usage: 30 000 TPM + 500 RPM counted when each answer is done (LiteLLM-style `tpm`, rolling minute), the workload of (j)",
            sim_tier: SimTier::new("usage-tpm")
                .with_limit(Limit::rolling(Models::All, 500, Duration::from_secs(60)))
                .with_token_limit(
                    TokenLimit::per_minute(TokenKind::Total, 30_000)
                        .counting_as(Counting::AfterResponse),
                )
                .with_style(Style::OpenAi),
            peer_limit: (14, Duration::from_secs(60)),
            ..Scenario::j()
        }
    }

    /// Whether the server counts the reservation (prompt + `max_tokens`, never adjusted), as
    /// OpenAI does; else it counts the real usage.
    pub fn counts_reservation(&self) -> bool {
        self.sim_tier
            .token_limits()
            .first()
            .is_some_and(|l| l.counting() == Counting::Reserve)
    }

    /// The reconciliation that fits the server: [`Reconcile::KeepMaxTokens`] for one that counts
    /// the reservation, [`Reconcile::Usage`] for one that counts the real usage.
    pub fn fitting_reconcile(&self) -> Reconcile {
        if self.counts_reservation() {
            Reconcile::KeepMaxTokens
        } else {
            Reconcile::Usage
        }
    }

    /// The body of request `index`: for a token scenario, a prompt of a seeded size, its
    /// `max_tokens`, and every other one streamed with usage; otherwise one short prompt.
    pub fn body(&self, index: usize) -> String {
        let Some(w) = self.workload else {
            return format!(
                r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#
            );
        };
        // Four bytes a token: "lore" "m ip" "sum " …
        let text: String = "lorem ipsum dolor sit amet "
            .chars()
            .cycle()
            .take(self.prompt_bytes(index) as usize)
            .collect();
        let stream = if index % 2 == 1 {
            r#","stream":true,"stream_options":{"include_usage":true}"#
        } else {
            ""
        };
        format!(
            r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{text}"}}],"max_tokens":{}{stream}}}"#,
            w.max_tokens
        )
    }

    /// The bytes of request `index`'s prompt, four a token, the size drawn from the seed.
    pub fn prompt_bytes(&self, index: usize) -> u64 {
        let Some(w) = self.workload else {
            return 2;
        };
        let mut x = self.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let (lo, hi) = w.prompt_tokens;
        4 * (lo + x % (hi - lo + 1))
    }

    /// Request `index` of the run, with [`KEY`] and the model in the extensions. Nothing else:
    /// tower-quota's token arms read the prompt and `max_tokens` from the body.
    pub fn request(&self, index: usize) -> Request<Full<Bytes>> {
        let body = self.body(index);
        let mut req = Request::post("/api/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        req.extensions_mut().insert(Model::new(MODEL));
        req
    }

    /// For a token scenario, the tokens the server will charge for the whole run on its
    /// (first) token limit: the prompts as its tokenizer counts them plus, on a server that
    /// counts the reservation, `max_tokens` each (OpenAI reserves them, whatever the
    /// completion); on one that counts the real usage, the completions' expected length (the
    /// simulator draws them uniform in 50..=`max_tokens`, per admission: a run's own total is
    /// [`Figures::tokens_counted`], from which [`Run::figures`] takes its optimum).
    pub fn token_charge(&self) -> Option<u64> {
        let w = self.workload?;
        let sim = self.simulator();
        let output = if self.counts_reservation() {
            w.max_tokens
        } else {
            (50 + w.max_tokens) / 2
        };
        Some(
            (0..self.requests)
                .map(|i| sim.prompt_tokens(self.body(i).as_bytes()).unwrap() + output)
                .sum(),
        )
    }

    /// The least time a server's token limit allows for `charge` tokens: ⌈charge / L⌉
    /// windows, the last admission opening the last one (a lower bound: it ignores what whole
    /// requests leave unused in each), after the first arrival; then the shortest latency and
    /// the outbound base.
    pub fn token_optimum(&self, charge: u64) -> Option<Duration> {
        let limit = self.sim_tier.token_limits().first()?;
        let windows = charge.div_ceil(limit.tokens()).max(1) - 1;
        let w = scale(limit.window(), self.minute);
        Some(
            self.network.inbound().base()
                + w * windows as u32
                + self.latency.0
                + self.network.outbound().base(),
        )
    }

    fn base(id: Id, title: &'static str) -> Scenario {
        Scenario {
            id,
            title,
            requests: 200,
            concurrency: 16,
            sim_tier: SimTier::openrouter_credited(),
            minute: Duration::from_secs(60),
            latency: (Duration::from_millis(200), Duration::from_millis(800)),
            network: far_network(),
            faults: Faults::none(),
            seed: 7,
            prior_use: 0,
            client_tier: tiers::openrouter::free_with_credits(),
            learn_limits: None,
            peer_limit: (20, Duration::from_secs(60)),
            loopback_factor: 30,
            possible: 200,
            workload: None,
            completions: Completions::default(),
        }
    }

    /// (a) 200 requests at concurrency 16 on 20 per rolling minute, the tier known, on the
    /// far network (0–200 ms of jitter each way).
    pub fn a() -> Scenario {
        Scenario::base(
            Id::A,
            "tier known, jitter: 200 requests, 16 at a time, 20/min rolling",
        )
    }

    /// (b) 80 requests on 20/min and 50/day, of which 10 were used earlier today: the cap
    /// runs out after 40, unknown to the client (it only knows the tier says 50).
    pub fn b() -> Scenario {
        Scenario {
            requests: 80,
            sim_tier: SimTier::openrouter_free(),
            prior_use: 10,
            client_tier: tiers::openrouter::free(),
            possible: 40,
            ..Scenario::base(
                Id::B,
                "daily cap runs out midway: 20/min + 50/day, 10 used earlier today, 80 requests",
            )
        }
    }

    /// (c) As (a), but the client is configured with a loose tier (1000/min) and learns
    /// the real one from the server's 429 and `X-RateLimit-*` headers.
    pub fn c() -> Scenario {
        Scenario {
            client_tier: Tier::new("unknown").with_quota(Quota::per_minute(1000)),
            learn_limits: Some(true),
            peer_limit: (1000, Duration::from_secs(60)),
            ..Scenario::base(
                Id::C,
                "limits unknown to the client (configured 1000/min), learned from 429s",
            )
        }
    }

    /// (d) 100 requests on 20/min; the upstream provider rate-limits 10 % of them with a
    /// delay of 5–30 s in the body. No upstream latency (the network stays): the fewer
    /// requests in flight when an upstream 429 is decided, the fewer that reach the
    /// simulator inside its delay — which it does not count as early, as it knows they were
    /// sent before the client could know.
    pub fn d() -> Scenario {
        Scenario {
            requests: 100,
            possible: 100,
            latency: (Duration::ZERO, Duration::ZERO),
            faults: Faults::none().with_upstream_429(0.1, 5, 30),
            ..Scenario::base(
                Id::D,
                "upstream 429s: 10 % rate-limited upstream, delay 5-30 s in the body, 100 requests",
            )
        }
    }

    /// (e) 100 requests on 20/min; 2 % of them start a 2-second burst of 503s.
    pub fn e() -> Scenario {
        Scenario {
            requests: 100,
            possible: 100,
            faults: Faults::none().with_unavailable_bursts(0.02, Duration::from_secs(2)),
            ..Scenario::base(
                Id::E,
                "bursts of 503s: 2 % of requests start a 2 s burst, 100 requests",
            )
        }
    }

    /// (f) 200 requests on 10 per rolling second, on a near network (15 ms each way, 0–20 ms
    /// of jitter): short windows, where a large fixed margin would waste throughput.
    pub fn f() -> Scenario {
        Scenario {
            sim_tier: SimTier::new("ten-per-second").with_limit(Limit::rolling(
                Models::All,
                10,
                Duration::from_secs(1),
            )),
            network: near_network(),
            client_tier: Tier::new("ten-per-second").with_quota(Quota::per_second(10)),
            peer_limit: (10, Duration::from_secs(1)),
            loopback_factor: 2,
            ..Scenario::base(
                Id::F,
                "10 per second, near network: 200 requests, 16 at a time, 10/s rolling",
            )
        }
    }

    /// (g) As (a), but the client knows nothing: an empty `Tier` (tower-quota's defaults),
    /// the server telling only what OpenRouter tells — on a 429 `X-RateLimit-Limit`,
    /// `-Remaining: 0`, `-Reset` in epoch ms and `Retry-After` in seconds; nothing on a 200.
    /// The peers, who must type a number, type a loose 1000/min.
    pub fn g() -> Scenario {
        Scenario {
            client_tier: Tier::new("unknown"),
            peer_limit: (1000, Duration::from_secs(60)),
            ..Scenario::base(
                Id::G,
                "tier unknown (empty `Tier`), OpenRouter's headers only, 20/min rolling",
            )
        }
    }

    /// (h) A LiteLLM router deployment with `rpm: 20`: fixed windows per UTC clock minute,
    /// admitting 19 (its off-by-one); the client configured with 20/min.
    pub fn h() -> Scenario {
        Scenario {
            sim_tier: SimTier::litellm_router(20),
            client_tier: Tier::new("rpm-20").with_quota(Quota::per_minute(20)),
            ..Scenario::base(
                Id::H,
                "fixed clock-minute server, `rpm: 20` (19 admitted a minute), tier configured as 20/min",
            )
        }
    }

    /// (i) LiteLLM's current key limiter, `rpm_limit: 20`: a 60 s window anchored at the first
    /// request, `retry-after: 60` on every 429; the client configured with 20/min.
    pub fn i() -> Scenario {
        Scenario {
            sim_tier: SimTier::litellm_anchored(20),
            client_tier: Tier::new("rpm-20").with_quota(Quota::per_minute(20)),
            ..Scenario::base(
                Id::I,
                "fixed window anchored at the first request, `retry-after` = window (60 s), 20/min",
            )
        }
    }

    /// The same scenario in a world `factor` times faster, for the real-time loopback run:
    /// windows, latency, the network and 503 bursts shrink; upstream delays (whole seconds on
    /// the wire) become 1–2 s.
    pub fn scaled(&self, factor: u32) -> Scenario {
        let mut s = self.clone();
        s.minute = self.minute / factor;
        s.latency = (self.latency.0 / factor, self.latency.1 / factor);
        s.network = self.network.scaled_down(factor);
        s.faults = Faults::none();
        match self.id {
            Id::D => s.faults = s.faults.with_upstream_429(0.1, 1, 2),
            Id::E => {
                s.faults = s
                    .faults
                    .with_unavailable_bursts(0.02, Duration::from_secs(2) / factor)
            }
            _ => {}
        }
        s
    }

    /// The binding windowed limit as the simulator enforces it: how it counts (its window
    /// scaled by `minute`) and how many it admits per window.
    pub fn binding(&self) -> (Period, usize) {
        let limit = self
            .sim_tier
            .limits()
            .iter()
            .find(|l| l.period().window().is_some())
            .expect("a windowed limit");
        let period = match limit.period() {
            Period::Rolling(w) => Period::Rolling(scale(w, self.minute)),
            Period::Clock(w) => Period::Clock(scale(w, self.minute)),
            Period::Anchored(w) => Period::Anchored(scale(w, self.minute)),
            other => other,
        };
        (period, limit.admits() as usize)
    }

    /// The window of the binding limit, as the simulator enforces it.
    pub fn window(&self) -> Duration {
        self.binding().0.window().expect("a windowed limit")
    }

    /// The peers' limit as they enforce it: N per W, W scaled by `minute`.
    pub fn peer_limit(&self) -> (u32, Duration) {
        (self.peer_limit.0, scale(self.peer_limit.1, self.minute))
    }

    /// [`optimum_at`](Self::optimum_at) for a run that starts at [`start_wall`].
    pub fn optimum(&self) -> Duration {
        self.optimum_at(start_wall())
    }

    /// The theoretical optimum makespan of a run that starts when the simulator's wall clock
    /// reads `wall0`: the first request cannot arrive before the inbound delay's base; at N
    /// per window, `possible` completions need `ceil(possible / N) - 1` more windows — after
    /// the first arrival (rolling), after the start of the clock window it falls in (clock),
    /// or after the start of the window it opens, truncated to the second (anchored); the
    /// last answer then takes the shortest latency and the outbound base. When the daily cap
    /// leaves fewer than `requests`, the first refused request cannot be answered before the
    /// window after the last success, and the rest can fail at once then.
    pub fn optimum_at(&self, wall0: SystemTime) -> Duration {
        let first = self.network.inbound().base();
        let back = self.network.outbound().base();
        if let Some(optimum) = self.token_charge().and_then(|c| self.token_optimum(c)) {
            return optimum;
        }
        let (period, n) = self.binding();
        let since_epoch = (wall0 + first).duration_since(UNIX_EPOCH).unwrap();
        let second = scale(Duration::from_secs(1), self.minute);
        // The first window's start, relative to the run's start (it may precede it).
        let ns = |d: Duration| d.as_nanos() as i128;
        let window_start = match period {
            Period::Clock(w) => ns(first) - ns(rem(since_epoch, w)),
            Period::Anchored(_) => ns(first) - ns(rem(since_epoch, second)),
            _ => ns(first),
        };
        let admission = |k: usize| -> Duration {
            let windows = k.div_ceil(n).saturating_sub(1) as i128;
            let at = window_start + ns(self.window()) * windows;
            Duration::from_nanos(at.max(ns(first)) as u64)
        };
        let done = admission(self.possible) + self.latency.0 + back;
        if self.possible < self.requests {
            done.max(admission(self.possible + 1) + back)
        } else {
            done
        }
    }

    /// The simulator for one run: the scenario's account, clock, latency, faults and seed.
    pub fn simulator(&self) -> Simulator {
        Simulator::builder()
            .key(KEY, self.sim_tier.clone())
            .minute(self.minute)
            .latency(self.latency.0, self.latency.1)
            .network(self.network)
            .faults(self.faults.clone())
            .completions(self.completions)
            .seed(self.seed)
            .start_wall_time(start_wall())
            .build()
    }

    /// Uses up the account's `prior_use` completions, then waits out the rolling window, so
    /// the run starts with a clean minute and a partly used day. Returns how many records
    /// the simulator has before the run.
    pub async fn prepare(&self, sim: &Simulator) -> u64 {
        for _ in 0..self.prior_use {
            let resp = sim.clone().oneshot(completion()).await.unwrap();
            assert_eq!(resp.status(), 200, "prior use");
        }
        if self.prior_use > 0 {
            tokio::time::sleep(self.window() + self.latency.1 + Duration::from_millis(1)).await;
        }
        sim.stats().requests
    }
}

/// A chat completion request for [`MODEL`] with [`KEY`], the model in the extensions (for
/// limiters keyed by model).
pub fn completion() -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let mut req = Request::post("/api/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    req.extensions_mut().insert(Model::new(MODEL));
    req
}

// === Strategy ===

/// A client configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The simulator called directly, each request once.
    Plain,
    /// `tower::limit::RateLimit` (20 per minute, behind a `Buffer` so that the workers share
    /// it) + `tower::retry::Retry` with a hand-written exponential-backoff policy.
    TowerRetry,
    /// A `governor` limiter (20 per minute) awaited before each attempt + the same retry.
    Governor,
    /// `reqwest-retry` defaults over loopback HTTP, in real time (bench only).
    ReqwestRetry,
    /// tower-quota's three layers.
    TowerQuota,
    /// tower-quota's three layers, a token quota beside the request quota, no cost function:
    /// the built-in cost from the body (the prompt's estimated tokens and `max_tokens`), the
    /// reservation corrected to the response's usage as this [`Reconcile`] says.
    TowerQuotaTokens(Reconcile),
}

impl Strategy {
    /// The strategies that run in process, in virtual time.
    pub const IN_PROCESS: [Strategy; 4] = [
        Strategy::Plain,
        Strategy::TowerRetry,
        Strategy::Governor,
        Strategy::TowerQuota,
    ];

    /// The strategies of a token scenario: the peers, tower-quota's request quota only, then
    /// the built-in token cost without reconciliation, and with each reconciliation.
    pub const TOKENS: [Strategy; 7] = [
        Strategy::Plain,
        Strategy::TowerRetry,
        Strategy::Governor,
        Strategy::TowerQuota,
        Strategy::TowerQuotaTokens(Reconcile::Off),
        Strategy::TowerQuotaTokens(Reconcile::KeepMaxTokens),
        Strategy::TowerQuotaTokens(Reconcile::Usage),
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Plain => "no middleware",
            Strategy::TowerRetry => "tower RateLimit + Retry (exp. backoff)",
            Strategy::Governor => "governor until_ready + tower Retry",
            Strategy::ReqwestRetry => "reqwest-retry defaults (loopback)",
            Strategy::TowerQuota => "tower-quota (3 layers)",
            Strategy::TowerQuotaTokens(Reconcile::Off) => {
                "tower-quota + token quota, built-in cost, no reconciliation"
            }
            Strategy::TowerQuotaTokens(Reconcile::KeepMaxTokens) => {
                "tower-quota + token quota, built-in cost, reconciled `KeepMaxTokens`"
            }
            Strategy::TowerQuotaTokens(_) => {
                "tower-quota + token quota, built-in cost, reconciled `Usage`"
            }
        }
    }

    /// Its colour in the SVG.
    pub fn colour(self) -> &'static str {
        match self {
            Strategy::Plain => "#9e9e9e",
            Strategy::TowerRetry => "#e53935",
            Strategy::Governor => "#fb8c00",
            Strategy::ReqwestRetry => "#8e24aa",
            Strategy::TowerQuota => "#1e88e5",
            Strategy::TowerQuotaTokens(Reconcile::Off) => "#00897b",
            Strategy::TowerQuotaTokens(Reconcile::KeepMaxTokens) => "#43a047",
            Strategy::TowerQuotaTokens(_) => "#3949ab",
        }
    }
}

/// What the caller got for one request.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// The final response's status, if there was a response.
    pub status: Option<u16>,
    /// The error, if there was no response.
    pub error: Option<String>,
    /// When the caller was told the quota comes back: a limiter error's `retry_after`, or
    /// the final response classification's `reset_after` (quota exhausted).
    pub reset_after: Option<Duration>,
}

impl Reply {
    /// From a tower service's result.
    pub fn from_result<B>(result: Result<Response<B>, BoxError>) -> Reply {
        Reply::from_ref(&result)
    }

    /// From a tower service's result, by reference (its body is read afterwards).
    pub fn from_ref<B>(result: &Result<Response<B>, BoxError>) -> Reply {
        match result {
            Ok(resp) => {
                let reset_after = resp
                    .extensions()
                    .get::<Classification>()
                    .filter(|c| c.class() == QuotaClass::QuotaExhausted)
                    .and_then(|c| c.reset_after());
                Reply {
                    status: Some(resp.status().as_u16()),
                    error: None,
                    reset_after,
                }
            }
            Err(e) => Reply {
                status: None,
                reset_after: e
                    .downcast_ref::<RateLimited>()
                    .and_then(|l| l.retry_after()),
                error: Some(e.to_string()),
            },
        }
    }

    /// Whether the request succeeded.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One request of a run, as the caller saw it.
#[derive(Clone, Debug)]
pub struct Done {
    /// Its number.
    pub index: usize,
    /// When the worker started it, from the run's start.
    pub start: Duration,
    /// When it was done.
    pub end: Duration,
    /// What came back.
    pub reply: Reply,
}

/// Runs `requests` requests with `concurrency` workers, each through `send(index)`; returns
/// them in order, timed from `t0`.
pub async fn drive<F, Fut>(requests: usize, concurrency: usize, t0: Instant, send: F) -> Vec<Done>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Reply> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let send = send.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests {
                    return done;
                }
                let start = t0.elapsed();
                let reply = send(index).await;
                done.push(Done {
                    index,
                    start,
                    end: t0.elapsed(),
                    reply,
                });
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker panicked"));
    }
    all.sort_by_key(|d| d.index);
    all
}

/// Drives a tower service. Every response body is read to its end, as a caller does: that
/// is when tower-quota's classification layer sees a response's usage and corrects the
/// token reservation.
async fn drive_service<S, B>(sc: &Scenario, t0: Instant, svc: S) -> Vec<Done>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let sc = Arc::new(sc.clone());
    drive(sc.requests, sc.concurrency, t0, move |index| {
        let (svc, sc) = (svc.clone(), sc.clone());
        async move {
            let result = svc.oneshot(sc.request(index)).await.map_err(Into::into);
            let reply = Reply::from_ref(&result);
            if let Ok(resp) = result {
                // What the body says is not the harness's business; that it is read is.
                let _ = resp.into_body().collect().await;
            }
            reply
        }
    })
    .await
}

/// One strategy's run of one scenario.
#[derive(Debug)]
pub struct Run {
    /// The scenario.
    pub scenario: Scenario,
    /// The strategy.
    pub strategy: Strategy,
    /// The simulator (its stats are the oracle).
    pub sim: Simulator,
    /// When the run started (after the prior use).
    pub t0: Instant,
    /// The simulator's records before the run (prior use).
    pub first_seq: u64,
    /// Every request, as the caller saw it.
    pub done: Vec<Done>,
    /// How many times faster than the scenario's clock the run went (1 in process).
    pub time_factor: u32,
}

/// Runs one in-process strategy on one scenario; call under paused tokio time.
pub async fn run(sc: &Scenario, strategy: Strategy) -> Run {
    let sim = sc.simulator();
    let first_seq = sc.prepare(&sim).await;
    let wall = WallClock::from_fn(sim.wall_clock());
    let t0 = Instant::now();
    let done = match strategy {
        Strategy::Plain => drive_service(sc, t0, sim.clone()).await,
        Strategy::TowerRetry => {
            let (n, w) = sc.peer_limit();
            let svc = ServiceBuilder::new()
                .retry(Backoff::new(sc.seed))
                .buffer(1024)
                .rate_limit(u64::from(n), w)
                .service(sim.clone());
            drive_service(sc, t0, svc).await
        }
        Strategy::Governor => {
            let (n, w) = sc.peer_limit();
            let svc = ServiceBuilder::new()
                .retry(Backoff::new(sc.seed))
                .service(Paced::new(sim.clone(), n, w));
            drive_service(sc, t0, svc).await
        }
        Strategy::TowerQuota => {
            let mut rate_limit = RateLimitLayer::new(sc.client_tier.clone())
                .key_by(KeyBy::Model)
                .with_wall_clock(wall.clone());
            if let Some(learn) = sc.learn_limits {
                rate_limit = rate_limit.learn_limits(learn);
            }
            let svc = ServiceBuilder::new()
                .layer(
                    RetryAfterLayer::new()
                        .with_clock(wall.clone())
                        .with_seed(sc.seed),
                )
                .layer(rate_limit)
                .layer(QuotaClassifyLayer::default().with_clock(wall))
                .service(sim.clone());
            drive_service(sc, t0, svc).await
        }
        Strategy::TowerQuotaTokens(reconcile) => {
            // The client's token quota mirrors the server's (30 000 per minute). No cost
            // function: the RetryAfterLayer reads each JSON body once, the limiter reserves
            // the built-in estimate (prompt bytes / 3.5 + per-message overhead, and
            // `max_tokens`), and the classification layer reads the usage as the body streams
            // through to the harness, which reads every body to its end.
            let tpm = sc.sim_tier.token_limits().first().map_or(0, |l| l.tokens());
            let tier = sc.client_tier.clone().with_quota(
                Quota::new(tpm, scale(Duration::from_secs(60), sc.minute))
                    .with_dimension(Dimension::Tokens),
            );
            let svc = ServiceBuilder::new()
                .layer(
                    RetryAfterLayer::new()
                        .with_clock(wall.clone())
                        .with_seed(sc.seed),
                )
                .layer(
                    RateLimitLayer::new(tier)
                        .key_by(KeyBy::Model)
                        .with_wall_clock(wall.clone())
                        .with_reconcile(reconcile),
                )
                .layer(QuotaClassifyLayer::default().with_clock(wall))
                .service(sim.clone());
            drive_service(sc, t0, svc).await
        }
        Strategy::ReqwestRetry => panic!("reqwest-retry runs over loopback: see benches/pacing.rs"),
    };
    Run {
        scenario: sc.clone(),
        strategy,
        sim,
        t0,
        first_seq,
        done,
        time_factor: 1,
    }
}

// === Peers ===

/// The retry policy a user writes for `tower::retry::Retry`: 429s, 5xx and transport errors,
/// up to 5 attempts, exponential backoff (0.5 s doubling to 8 s) with equal jitter. It does
/// not read `Retry-After` (tower's `Retry` does not hand the policy a parsed delay, and few
/// users write one).
#[derive(Clone, Debug)]
pub struct Backoff {
    attempts: u32,
    rng: Arc<AtomicU64>,
}

impl Backoff {
    /// A policy whose jitter is drawn from `seed`.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempts: 1,
            rng: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// A uniformly random number in `[0, 1)`.
    fn unit(&self) -> f64 {
        let x = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<B, E> tower::retry::Policy<Request<Full<Bytes>>, Response<B>, E> for Backoff {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let retry = match result {
            Ok(resp) => resp.status() == 429 || resp.status().is_server_error(),
            Err(_) => true,
        };
        if !retry || self.attempts >= 5 {
            return None;
        }
        let base = (0.5 * f64::from(1u32 << (self.attempts - 1))).min(8.0);
        self.attempts += 1;
        let delay = base / 2.0 + base / 2.0 * self.unit();
        Some(tokio::time::sleep(Duration::from_secs_f64(delay)))
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// governor's clock on tokio's (paused) time: nanoseconds since a base instant.
#[derive(Clone, Debug)]
pub struct TokioClock(Instant);

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Governor = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// Waits for a `governor` direct limiter before calling the simulator: `until_ready`'s loop
/// (`check`, then sleep for `wait_time_from(now)`), with tokio's timer instead of
/// `futures_timer` so that it runs in virtual time.
#[derive(Clone)]
pub struct Paced {
    inner: Simulator,
    limiter: Arc<Governor>,
    clock: TokioClock,
}

impl Paced {
    /// `per_window` requests per `window`, governor's GCRA with a burst of `per_window`.
    pub fn new(inner: Simulator, per_window: u32, window: Duration) -> Paced {
        let n = NonZeroU32::new(per_window).unwrap();
        let quota = governor::Quota::with_period(window / per_window)
            .unwrap()
            .allow_burst(n);
        let clock = TokioClock(Instant::now());
        Paced {
            inner,
            limiter: Arc::new(Governor::direct_with_clock(quota, clock.clone())),
            clock,
        }
    }
}

impl Service<Request<Full<Bytes>>> for Paced {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let (sim, limiter, clock) = (self.inner.clone(), self.limiter.clone(), self.clock.clone());
        Box::pin(async move {
            while let Err(not_until) = limiter.check() {
                use governor::clock::Clock;
                tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
            }
            sim.oneshot(req).await
        })
    }
}

// === Figures ===

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Requests sent by the caller.
    pub requests: usize,
    /// Requests that ended in a 2xx for the caller.
    pub succeeded: usize,
    /// 429s the simulator answered.
    pub rate_limited: u64,
    /// 429s to requests sent once the first 429 had reached the client (by the network
    /// model: the earliest arrival plus outbound delay of one): those its learning did not
    /// prevent. The others were on the wire before it could know.
    pub rate_limited_after_known: u64,
    /// Non-2xx answers the simulator gave: calls that could have been saved.
    pub wasted: u64,
    /// Requests sent before an upstream 429's delay had passed.
    pub early: u64,
    /// From the start to the last request done.
    pub makespan: Duration,
    /// The theoretical optimum of the scenario.
    pub optimum: Duration,
    /// Median request latency (caller side, waits included).
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
    /// Scenario (b): calls sent after the client had a "daily cap" answer (by the network
    /// model: the earliest arrival plus outbound delay of one).
    pub after_cap: Option<u64>,
    /// Scenario (b): the longest time, from when the client had the first daily-cap answer
    /// and every call already on the wire then had its own (or from its own
    /// start, if later), that a failed request took to fail.
    pub fail_fast: Option<Duration>,
    /// Scenario (b): failed requests that were told when the quota comes back.
    pub told_reset: Option<usize>,
    /// A token scenario: tokens the server counted on its token limit ÷ the most its window
    /// allowed over the makespan ([`TokenLimit::allowed_over`](tower_quota::sim::TokenLimit::allowed_over)).
    pub token_use: Option<f64>,
    /// A token scenario: tokens the server counted (its charges, as it counts them).
    pub tokens_counted: Option<u64>,
}

impl Figures {
    /// Makespan ÷ optimum.
    pub fn ratio(&self) -> f64 {
        self.makespan.as_secs_f64() / self.optimum.as_secs_f64()
    }
}

impl Run {
    /// The simulator's records of the run (prior use excluded).
    pub fn records(&self) -> Vec<Record> {
        let stats = self.sim.stats();
        stats
            .records
            .into_iter()
            .filter(|r| r.seq >= self.first_seq)
            .collect()
    }

    /// Admission times from the start, in scenario time.
    pub fn admissions(&self) -> Vec<Duration> {
        let stats = self.sim.stats();
        stats
            .admissions
            .iter()
            .filter(|a| a.seq >= self.first_seq)
            .map(|a| a.at.saturating_duration_since(self.t0) * self.time_factor)
            .collect()
    }

    /// The figures.
    pub fn figures(&self) -> Figures {
        let f = self.time_factor;
        let records = self.records();
        let rate_limited = records.iter().filter(|r| r.status == 429).count() as u64;
        let wasted = records.iter().filter(|r| !r.status.is_success()).count() as u64;
        let early = records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::UpstreamRateLimited { early: true, .. }))
            .count() as u64;
        let mut latencies: Vec<Duration> =
            self.done.iter().map(|d| (d.end - d.start) * f).collect();
        latencies.sort();
        let pct = |p: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
            latencies[i - 1]
        };
        let makespan = self.done.iter().map(|d| d.end).max().unwrap_or_default() * f;
        let (mut after_cap, mut fail_fast, mut told_reset) = (None, None, None);
        if self.scenario.id == Id::B {
            // The client knows the cap when the first "daily cap" answer reaches it (not
            // necessarily the first decided: the network reorders).
            let known_at = records
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::DailyCapReached { .. }))
                .map(|r| r.at + r.outbound)
                .min();
            if let Some(known_at) = known_at {
                let known = known_at.saturating_duration_since(self.t0);
                after_cap = Some(records.iter().filter(|r| r.sent() >= known_at).count() as u64);
                let failed: Vec<&Done> = self
                    .done
                    .iter()
                    .filter(|d| !d.reply.ok() && d.end >= known)
                    .collect();
                // Calls already on the wire when the cap became known come back a network
                // trip later; fail fast counts from when the last of them had its answer.
                let settled = records
                    .iter()
                    .filter(|r| r.sent() < known_at)
                    .map(|r| (r.at + r.outbound).saturating_duration_since(self.t0))
                    .max()
                    .unwrap_or(known)
                    .max(known);
                fail_fast = failed
                    .iter()
                    .map(|d| d.end.saturating_sub(d.start.max(settled)) * f)
                    .max();
                // Every failed request, also those the client refused on its own before a
                // "daily cap" answer reached it.
                told_reset = Some(
                    self.done
                        .iter()
                        .filter(|d| !d.reply.ok() && d.reply.reset_after.is_some())
                        .count(),
                );
            }
        }
        // The requests a 429 refused although they were sent after a 429 (the client's own
        // limit's) had reached the client: what its learning did not prevent. Those sent
        // before were on the wire before the client could know anything.
        let rate_limited_after_known = records
            .iter()
            .filter(|r| r.status == 429)
            .map(|r| r.at + r.outbound)
            .min()
            .map_or(0, |known_at| {
                records
                    .iter()
                    .filter(|r| r.status == 429 && r.sent() >= known_at)
                    .count() as u64
            });
        let mut optimum = self.scenario.optimum_at(self.sim.wall_time_at(self.t0));
        let (mut token_use, mut tokens_counted) = (None, None);
        if self.scenario.workload.is_some() {
            if let Some(limit) = self.sim.accounts()[0].tier().token_limits().first() {
                let counted = self.sim.stats().tokens_counted(limit, self.first_seq);
                let span = self.done.iter().map(|d| d.end).max().unwrap_or_default();
                tokens_counted = Some(counted);
                token_use = Some(counted as f64 / limit.allowed_over(span) as f64);
                // A server that counts the real usage: the least time for what it counted in
                // this run (the completions' lengths are drawn per admission).
                if !self.scenario.counts_reservation() && counted > 0 {
                    optimum = self.scenario.token_optimum(counted).unwrap_or(optimum);
                }
            }
        }
        Figures {
            requests: self.done.len(),
            succeeded: self.done.iter().filter(|d| d.reply.ok()).count(),
            rate_limited,
            rate_limited_after_known,
            wasted,
            early,
            makespan,
            optimum: optimum * f,
            p50: pct(0.50),
            p99: pct(0.99),
            after_cap,
            fail_fast,
            told_reset,
            token_use,
            tokens_counted,
        }
    }
}

// === Report ===

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else if s >= 0.001 {
        format!("{:.0} ms", s * 1000.0)
    } else if d.is_zero() {
        "0".to_string()
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// The Markdown report: one table, rows grouped by scenario.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | strategy | succeeded | 429s | wasted calls | makespan ÷ optimum | p50 | p99 | calls after cap known | fail fast after cap |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs.iter().filter(|r| r.scenario.workload.is_none()) {
        let f = r.figures();
        let id = format!("{:?}", r.scenario.id).to_lowercase();
        let dagger = if r.time_factor > 1 { " †" } else { "" };
        let (after, fast) = match r.scenario.id {
            Id::B => (
                f.after_cap.map_or("–".into(), |n| n.to_string()),
                f.fail_fast.map_or("–".into(), secs),
            ),
            _ => ("".into(), "".into()),
        };
        let wasted = if f.early > 0 {
            format!("{} ({} early)", f.wasted, f.early)
        } else {
            f.wasted.to_string()
        };
        out.push_str(&format!(
            "| ({id}) | {}{dagger} | {}/{} | {} | {} | {:.3} ({} / {}) | {} | {} | {} | {} |\n",
            r.strategy.name(),
            f.succeeded,
            f.requests,
            f.rate_limited,
            wasted,
            f.ratio(),
            secs(f.makespan),
            secs(f.optimum),
            secs(f.p50),
            secs(f.p99),
            after,
            fast,
        ));
    }
    out
}

/// The Markdown table of the token scenarios: 429s, makespan ÷ optimum and the share of the
/// token quota the server counted.
pub fn markdown_tokens(runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | strategy | succeeded | 429s | makespan ÷ optimum | tokens counted | token utilisation | p50 | p99 |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs.iter().filter(|r| r.scenario.workload.is_some()) {
        let f = r.figures();
        out.push_str(&format!(
            "| ({}) | {} | {}/{} | {} | {:.3} ({} / {}) | {} | {:.1} % | {} | {} |\n",
            format!("{:?}", r.scenario.id).to_lowercase(),
            r.strategy.name(),
            f.succeeded,
            f.requests,
            f.rate_limited,
            f.ratio(),
            secs(f.makespan),
            secs(f.optimum),
            f.tokens_counted.unwrap_or(0),
            f.token_use.unwrap_or(0.0) * 100.0,
            secs(f.p50),
            secs(f.p99),
        ));
    }
    out
}

/// The scenarios' descriptions, for the report.
pub fn legend(scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    for s in scenarios {
        out.push_str(&format!(
            "- **({})** {}; network {}; optimum {}.\n",
            format!("{:?}", s.id).to_lowercase(),
            s.title,
            network_model(s.network),
            secs(s.optimum())
        ));
    }
    out
}

/// Describes a network: `150 ms + 0–200 ms each way`.
pub fn network_model(n: Network) -> String {
    if n.inbound() == n.outbound() {
        format!("{} each way", describe(n.inbound()))
    } else {
        format!(
            "{} in, {} out",
            describe(n.inbound()),
            describe(n.outbound())
        )
    }
}

/// The SVG timeline of scenario (a): cumulative admissions over time, one polyline per run,
/// against the most a rolling window allows (`20 × (⌊t / 60 s⌋ + 1)`).
pub fn svg(runs: &[&Run]) -> String {
    let (w, h) = (900.0, 480.0);
    let (left, right, top, bottom) = (60.0, 20.0, 30.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let series: Vec<(Strategy, Vec<Duration>)> =
        runs.iter().map(|r| (r.strategy, r.admissions())).collect();
    let total = runs.first().map_or(200, |r| r.scenario.requests) as f64;
    let window = runs
        .first()
        .map_or(Duration::from_secs(60), |r| r.scenario.window());
    let t_max = series
        .iter()
        .filter_map(|(_, a)| a.last().copied())
        .max()
        .unwrap_or(window)
        .max(window)
        .as_secs_f64()
        * 1.05;
    let x = |t: f64| left + t / t_max * pw;
    let y = |n: f64| top + ph - n / total * ph;
    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    s.push_str(&format!(
        "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">Scenario (a): admissions over time, 200 requests on 20 per rolling minute</text>\n"
    ));
    // Axes and grid.
    let mut t = 0.0;
    let step = window.as_secs_f64();
    while t <= t_max {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\n<text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3:.0}</text>\n",
            x(t),
            top + ph,
            top + ph + 16.0,
            t / 60.0
        ));
        t += step;
    }
    let mut n = 0.0;
    while n <= total {
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/>\n<text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{n}</text>\n",
            y(n),
            left + pw,
            left - 6.0,
            y(n) + 4.0
        ));
        n += 20.0;
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">minutes</text>\n<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">admissions (cumulative)</text>\n",
        left + pw / 2.0,
        h - 10.0,
        top + ph / 2.0,
        top + ph / 2.0
    ));
    // One polyline per strategy: a step per admission.
    for (strategy, adm) in &series {
        let mut pts = vec![format!("{:.1},{:.1}", x(0.0), y(0.0))];
        for (i, t) in adm.iter().enumerate() {
            let t = t.as_secs_f64();
            pts.push(format!("{:.1},{:.1}", x(t), y(i as f64)));
            pts.push(format!("{:.1},{:.1}", x(t), y(i as f64 + 1.0)));
        }
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
            strategy.colour(),
            pts.join(" ")
        ));
    }
    // The limit: at most 20 more per window.
    let mut pts = Vec::new();
    let mut k = 0.0;
    while k * step <= t_max {
        let n = (20.0 * (k + 1.0)).min(total);
        pts.push(format!("{:.1},{:.1}", x(k * step), y(n)));
        let next = ((k + 1.0) * step).min(t_max);
        pts.push(format!("{:.1},{:.1}", x(next), y(n)));
        k += 1.0;
    }
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"black\" stroke-dasharray=\"5,4\" stroke-width=\"1.2\" points=\"{}\"/>\n",
        pts.join(" ")
    ));
    // Legend, in the empty lower right of the plot.
    let lx = left + pw - 430.0;
    let mut ly = top + ph - 20.0 * (runs.len() as f64 + 1.0) - 10.0;
    s.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"430\" height=\"{:.1}\" fill=\"white\" stroke=\"#ccc\"/>\n",
        lx - 10.0,
        ly - 14.0,
        20.0 * (runs.len() as f64 + 1.0) + 8.0
    ));
    s.push_str(&format!(
        "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"black\" stroke-dasharray=\"5,4\" stroke-width=\"1.5\"/><text x=\"{:.1}\" y=\"{:.1}\">most a rolling window allows</text>\n",
        lx + 24.0,
        lx + 30.0,
        ly + 4.0
    ));
    for r in runs {
        ly += 20.0;
        let f = r.figures();
        let dagger = if r.time_factor > 1 { " †" } else { "" };
        let label = format!(
            "{}{dagger}: {}/{} ok, {} × 429",
            r.strategy.name(),
            f.succeeded,
            f.requests,
            f.rate_limited
        );
        s.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            lx + 24.0,
            r.strategy.colour(),
            lx + 30.0,
            ly + 4.0,
            label.replace('&', "&amp;")
        ));
    }
    s.push_str("</svg>\n");
    s
}
