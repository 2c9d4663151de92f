//! A simulated OpenRouter-compatible provider, for tests, examples and benchmarks
//! (feature `sim`).
//!
//! It enforces limits the way OpenRouter does — rolling per-minute windows and UTC-daily caps,
//! account-wide, on `:free` models — and answers with OpenRouter's exact statuses, headers and
//! JSON error bodies, so a client can be judged on what matters: all requests succeed, no call
//! is wasted, in the least time. Its own limit check is deliberately plain and separate from
//! the crate's limiter (a log of admission times per account, counted), so it can serve as the
//! ground truth for it.
//!
//! # The network
//!
//! A real server counts a request when it **arrives**, after a one-way delay that varies; the
//! client only knows when it sent it. The simulator models that with a [`Network`]: an inbound
//! [`Delay`] before a request is decided and an outbound one before its answer reaches the
//! client, each a base plus uniform jitter drawn from the seed
//! ([`SimulatorBuilder::network`]). Two requests sent exactly a window apart may arrive less
//! than a window apart, and the second is then refused, as a real server would. Every count,
//! the admission log and [`Simulator::check_invariants`] are in arrival time; a [`Record`]
//! says when its request was sent ([`Record::sent`]). The upstream
//! [latency](SimulatorBuilder::latency) is the model's time after the decision. The default
//! is no network: a request is decided the instant it is sent.
//!
//! # Servers that count differently
//!
//! A [`Limit`] counts the way one real server does ([`Period`]):
//!
//! - [`Limit::rolling`]: at most N in any interval of length W — OpenRouter;
//! - [`Limit::fixed_clock`]: at most N per window aligned to the clock (per UTC minute) —
//!   LiteLLM's router (`rpm` of a deployment; [`Tier::litellm_router`] admits N − 1 for
//!   `rpm: N`, as it does) and its legacy key limiter ([`Tier::litellm_clock_minute`]);
//! - [`Limit::fixed_anchored`]: at most N per window opened by the first request, answering
//!   `retry-after` = the whole window — LiteLLM's current key limiter
//!   ([`Tier::litellm_anchored`]);
//! - [`Limit::daily`]: per UTC day.
//!
//! # Tokens
//!
//! A [`Tier`] may also hold [`TokenLimit`]s — total, input or output tokens per window
//! ([`TokenKind`]) — enforced on arrival beside the request limits, each counting as one real
//! server does ([`Counting`], which cites the providers' docs):
//! OpenAI reserves the prompt plus `max_tokens` on arrival ([`Counting::Reserve`], the
//! default); Anthropic counts input on arrival and reserves output as `max_tokens`, adjusted to
//! the real count when the answer is done ([`Counting::ReserveThenAdjust`]); LiteLLM counts the
//! real usage after the response and refuses once the window's count reached the limit
//! ([`Counting::AfterResponse`]). Presets: [`Tier::openai`], [`Tier::anthropic`],
//! [`Tier::litellm_tpm`].
//!
//! The server counts the prompt with its own tokenizer, modelled as `⌈bytes / 4⌉` of the
//! messages' text times a deviation of up to ±15 % drawn from the text and the seed, plus 4
//! per message ([`Simulator::prompt_tokens`]): deterministic per body, close to a client's
//! bytes / 4 but not equal. Completions are drawn below the request's `max_tokens`
//! ([`Completions`], default uniform in `50..=max_tokens`); every answer carries `usage`
//! (`prompt_tokens`, `completion_tokens`, `total_tokens`), and a request with `"stream": true`
//! gets `text/event-stream`: `chat.completion.chunk` events (the role, up to eight content
//! deltas, the finish reason), then — with `stream_options.include_usage` — a chunk with empty
//! `choices` and the `usage`, then `data: [DONE]` (sent whole, after the latency). The
//! tier's [`Style`] picks the headers: OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//! (resets as Go durations, `6m0s`) or Anthropic's `anthropic-ratelimit-*` (RFC 3339), on
//! every answer to a completion, and the provider's 429 body with `retry-after`. Each
//! [`Admission`] carries its [`Tokens`]; [`Stats::tokens`] sums them,
//! [`Stats::tokens_counted`] and [`TokenLimit::allowed_over`] give a token utilisation, and
//! [`Simulator::check_invariants`] checks the token windows too. There is no Anthropic-shaped
//! `/v1/messages` endpoint yet: `POST /v1/chat/completions` is an alias of OpenRouter's path.
//!
//! Two ways to run it:
//!
//! - **in process**, as a tower [`Service`](tower_service::Service) of `http::Request<B>` for
//!   any body `B`: the rolling windows run on the tokio clock, so a test under
//!   `#[tokio::test(start_paused = true)]` runs in virtual time, instantly and
//!   deterministically; the wall clock (UTC-daily caps, epoch resets) is
//!   [a configurable start](SimulatorBuilder::start_wall_time) plus the tokio time elapsed;
//! - **over HTTP/1.1 on loopback** with [`Simulator::serve`] (hyper), for real clients.
//!
//! # Endpoints
//!
//! - `POST /api/v1/chat/completions` (and OpenAI's `/v1/chat/completions`) reads the JSON
//!   body's `model`, prompt, `max_tokens` and `stream`, and answers an OpenAI-style
//!   `chat.completion` (or its SSE chunks), or one of the errors below.
//! - `GET /api/v1/key` (and the older `/api/v1/auth/key`) reports the account:
//!   `{"data": {"label", "limit", "limit_remaining", "limit_reset", "usage", "is_free_tier",
//!   "free_model_daily_requests": {"limit", "remaining", "used"}, "rate_limit": {"requests",
//!   "interval"}}}`.
//!
//! Accounts are found by the `Authorization: Bearer <key>` header; one [`Account`] may hold
//! several keys that share its limits.
//!
//! # Answers
//!
//! Checked in this order (a request that gets any error is not admitted and counts against
//! nothing):
//!
//! | status | when | body and headers |
//! |---|---|---|
//! | 404 | unknown endpoint | `{"error":{"message":"Not Found","code":404}}` |
//! | 401 | no key, or an unknown key | `{"error":{"message":"No auth credentials found","code":401}}`, or `"User not found."` for an unknown key |
//! | 400 | no JSON `model` | `{"error":{"message":…,"code":400}}` |
//! | 402 | a paid model and the [credits](Account::with_credits) do not cover the [price](SimulatorBuilder::price_per_request) | `{"error":{"code":402,"message":"Insufficient credits…"}}`, no `Retry-After` |
//! | 429 | a UTC-daily cap is used up | `Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day`; `X-RateLimit-Limit`, `-Remaining: 0`, `-Reset` = the next UTC midnight in epoch ms, in the headers and in `error.metadata.headers`; no `Retry-After` |
//! | 429 | a rolling window is full | `Rate limit exceeded: free-models-per-min. `, the same `X-RateLimit-*` with `-Reset` = when the oldest admission leaves the window (epoch ms, rounded up), and `Retry-After` in whole seconds, rounded up; the body also carries `user_id` |
//! | 429 | a clock-aligned window is full | LiteLLM's `{"error":{"message":"LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM, RPM Limit. current rpm: …, rpm limit: N, …","type":"None","param":"None","code":"429"}}`, `retry-after` = the seconds to the next window (`7.500000`) |
//! | 429 | an anchored window is full | LiteLLM's error, `Rate limit exceeded for api_key: <hash>. Limit type: requests. Current limit: N, Remaining: 0. Limit resets at: …`; `retry-after` = the whole window, `rate_limit_type: requests`, `reset_at: YYYY-MM-DD HH:MM:SS UTC` (now plus the window) |
//! | 429 | upstream fault, or a request before an upstream delay has passed | `{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"<model> is temporarily rate-limited upstream. Please retry shortly…","provider_name":…,"is_byok":false,"retry_after_seconds":N,"headers":{"Retry-After":"N"}}}}`, no HTTP `Retry-After` |
//! | 503 | inside an injected burst | `{"error":{"code":503,"message":"No allowed providers are available for the selected model."}}` |
//! | 502 | injected | `{"error":{"code":502,"message":…,"metadata":{"provider_name":…}}}` |
//! | 429 | a token window is full ([`TokenLimit`]) | in the tier's [`Style`]: OpenAI's `rate_limit_exceeded` on `tokens per min (TPM)` with `retry-after`, `retry-after-ms`; Anthropic's `rate_limit_error` with `retry-after`; OpenRouter's shape named after the limit; LiteLLM's "Crossed TPM, RPM Limit. … current tpm: …" for a clock-minute limit |
//! | 200 | admitted | an OpenAI-style completion with `usage`; the [`Style`]'s rate-limit headers; with a clock-aligned limit `x-ratelimit-{limit,remaining}-requests`, with an anchored one `x-ratelimit-api_key-{limit,remaining}-requests` (the announced N less the window's count) |
//!
//! # Observing a run
//!
//! [`Simulator::stats`] returns every [`Record`] (arrival on both clocks, key, model, status,
//! [`Outcome`]), every [`Admission`], counts by status, the 429s and the wasted calls (every
//! non-2xx). Responses of the in-process service carry their [`Record`] in their extensions
//! (HTTP drops it). A client that reads epoch resets should read the simulator's clock,
//! [`Simulator::wall_clock`]: in paused time the system clock does not follow. [`Simulator::check_invariants`] verifies from the admission log that no limit was
//! ever broken, and [`Stats::max_admissions_in`] measures any window you like — the oracle
//! for "never more than N requests in any W". [`Simulator::reset`] starts over.
//!
//! # Example
//!
//! Twenty requests per minute on `:free` models; the twenty-first waits for the first to be a
//! minute old. In paused tokio time this runs instantly.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceExt;
//! use tower_quota::sim::{Simulator, Tier};
//!
//! fn completion() -> http::Request<Full<Bytes>> {
//!     http::Request::post("/api/v1/chat/completions")
//!         .header("authorization", "Bearer sk-test")
//!         .body(Full::new(Bytes::from(r#"{"model":"meta-llama/llama-3.3-70b-instruct:free"}"#)))
//!         .unwrap()
//! }
//!
//! # fn main() {
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let sim = Simulator::builder().key("sk-test", Tier::openrouter_free()).build();
//!
//! for _ in 0..20 {
//!     let response = sim.clone().oneshot(completion()).await.unwrap();
//!     assert_eq!(response.status(), 200);
//! }
//! let refused = sim.clone().oneshot(completion()).await.unwrap();
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["retry-after"], "60");
//!
//! tokio::time::sleep(Duration::from_secs(60)).await;
//! assert_eq!(sim.clone().oneshot(completion()).await.unwrap().status(), 200);
//!
//! let stats = sim.stats();
//! assert_eq!((stats.succeeded, stats.rate_limited, stats.wasted), (21, 1, 1));
//! sim.check_invariants().unwrap();
//! # });
//! # }
//! ```
//!
//! Over loopback, for a real HTTP client:
//!
//! ```no_run
//! # use tower_quota::sim::{Simulator, Tier};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let sim = Simulator::builder().key("sk-test", Tier::openrouter_free()).build();
//! let (addr, server) = sim.serve(([127, 0, 0, 1], 0)).await?;
//! println!("POST http://{addr}/api/v1/chat/completions");
//! // … run the client …
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod builder;
mod config;
mod network;
mod rng;
mod server;
mod simulator;
mod state;
mod stats;
mod tokens;

pub use builder::SimulatorBuilder;
pub use config::{Account, Faults, Limit, Models, Period, Style, Tier};
pub use network::{Delay, Network};
pub use server::ServerHandle;
pub use simulator::{ResponseFuture, Simulator};
pub use stats::{Admission, InvariantViolation, Outcome, Record, Stats, TokenCount};
pub use tokens::{Completions, Counting, TokenKind, TokenLimit, Tokens};
