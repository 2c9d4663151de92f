//! What the simulator enforces: limits, tiers, accounts and faults.

use std::fmt;
use std::time::Duration;

use super::tokens::{Counting, TokenKind, TokenLimit};

/// Whose headers and error bodies a [`Tier`] answers with, for its rolling request limits
/// and its token limits (clock-aligned and anchored request limits always answer as LiteLLM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Style {
    /// OpenRouter: `X-RateLimit-{Limit,Remaining,Reset}` (reset in epoch ms) and
    /// `Retry-After` on its own 429s only, nothing on a 200. The default.
    #[default]
    OpenRouter,
    /// OpenAI: on every answer to a completion `x-ratelimit-{limit,remaining,reset}-requests`
    /// (the first rolling request limit) and `-tokens` (the first total token limit), the
    /// resets as Go durations (`1s`, `6m0s`, `12ms`) = the time until the window is fully
    /// replenished; a 429 `{"error":{"message":"Rate limit reached for <model> in
    /// organization org-sim on tokens per min (TPM): Limit …, Used …, Requested …. Please
    /// try again in 1.2s. …","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
    /// with `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
    OpenAi,
    /// Anthropic: on every answer to a completion
    /// `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`
    /// for the limits the tier has, the resets as RFC 3339 times (when the window is fully
    /// replenished); a 429 `{"type":"error","error":{"type":"rate_limit_error","message":…},
    /// "request_id":…}` with `retry-after` in whole seconds, rounded up.
    Anthropic,
}

/// Which models a [`Limit`] counts: OpenRouter's `:free` variants, paid models, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Models {
    /// Model ids ending in `:free`.
    Free,
    /// Every other model id.
    Paid,
    /// Every model.
    All,
}

impl Models {
    /// Whether a request for a model (free or not) counts against this limit.
    pub fn matches(self, free: bool) -> bool {
        match self {
            Models::Free => free,
            Models::Paid => !free,
            Models::All => true,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Models::Free => "free-models",
            Models::Paid => "paid-models",
            Models::All => "requests",
        }
    }
}

/// How a [`Limit`] counts time. Every count is of **arrivals**: a request is counted when it
/// reaches the simulator, after the [network](super::Network)'s inbound delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Period {
    /// At most N admissions in *any* interval of this length (a sliding log, not a bucket):
    /// OpenRouter.
    Rolling(Duration),
    /// At most N admissions per UTC calendar day; the count resets at UTC midnight.
    UtcDay,
    /// At most N admissions per fixed window aligned to the wall clock: `[k·W, (k+1)·W)` from
    /// the Unix epoch, so per UTC clock minute for a 60 s window (LiteLLM's router and its
    /// legacy key limiter, keys `…:rpm:HH-MM`). Refused requests do not count.
    Clock(Duration),
    /// At most N requests per fixed window that the first request opens, when no window is
    /// open, and that closes one length later (LiteLLM's current key limiter: the window
    /// starts at the opener's arrival truncated to a whole second — of the scaled clock —,
    /// and every request that reaches the check counts, refused ones too).
    Anchored(Duration),
    /// A token bucket of N that refills continuously, N per this length, and starts full
    /// (Anthropic): a request takes one token, and is refused when none is left. It admits
    /// up to 2N in the first length, and never more than N plus the refill in any interval.
    Bucket(Duration),
}

impl Period {
    /// The window's length; `None` for a calendar day.
    pub fn window(&self) -> Option<Duration> {
        match *self {
            Period::Rolling(w) | Period::Clock(w) | Period::Anchored(w) | Period::Bucket(w) => {
                Some(w)
            }
            Period::UtcDay => None,
        }
    }
}

/// One limit of a [`Tier`]: at most `requests` admissions of `models` per `period`.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::{Limit, Models};
///
/// let per_min = Limit::rolling(Models::Free, 20, Duration::from_secs(60));
/// assert_eq!(per_min.name(), "free-models-per-min");
/// assert_eq!(Limit::daily(Models::Free, 50).name(), "free-models-per-day");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub(crate) models: Models,
    pub(crate) requests: u32,
    pub(crate) admits: u32,
    pub(crate) period: Period,
    /// What a "whole second" is, for anchored windows (a second of the scaled clock).
    pub(crate) second: Duration,
    pub(crate) name: String,
    pub(crate) message: Option<String>,
    /// For a token bucket: how many tokens it holds when full (`None`: `admits`).
    pub(crate) burst: Option<u32>,
}

impl Limit {
    /// At most `requests` admissions of `models` in any interval of length `window`.
    ///
    /// Its name is `free-models-per-min` for `:free` models and a 60 s window (as OpenRouter
    /// says), `paid-models-…` or `requests-…` for the other scopes, `…-per-{secs}s` for other
    /// windows.
    ///
    /// Its 429 is OpenRouter's: `X-RateLimit-{Limit,Remaining,Reset}` (reset in epoch ms) and
    /// `Retry-After` in whole seconds; nothing on a 200.
    pub fn rolling(models: Models, requests: u32, window: Duration) -> Self {
        Limit::with_period(models, requests, Period::Rolling(window), "")
    }

    /// At most `requests` admissions of `models` per fixed window aligned to the wall clock —
    /// per UTC clock minute for a 60 s window — as LiteLLM counts a key's (legacy limiter) or
    /// a deployment's (router) `rpm`. Named `…-per-clock-min`.
    ///
    /// It answers as LiteLLM's key limiter does: a 429 with `retry-after` = the seconds left
    /// in the window (fractional, as Python prints them) and the proxy's JSON error
    /// (`"code": "429"`, a string; "Crossed TPM, RPM Limit. current rpm: …, rpm limit: …");
    /// every 200 carries `x-ratelimit-limit-requests` and `x-ratelimit-remaining-requests`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::sim::{Limit, Models, Period};
    ///
    /// // LiteLLM's router admits one fewer than its `rpm: 20` says.
    /// let rpm = Limit::fixed_clock(Models::All, 20, Duration::from_secs(60)).admitting(19);
    /// assert_eq!((rpm.requests(), rpm.admits()), (20, 19));
    /// assert_eq!(rpm.period(), Period::Clock(Duration::from_secs(60)));
    /// assert_eq!(rpm.name(), "requests-per-clock-min");
    /// ```
    pub fn fixed_clock(models: Models, requests: u32, window: Duration) -> Self {
        Limit::with_period(models, requests, Period::Clock(window), "clock-")
    }

    /// At most `requests` requests of `models` per fixed window opened by the first request
    /// when none is open, as LiteLLM's current key limiter counts (`LITELLM_RATE_LIMIT_WINDOW_SIZE`,
    /// 60 s by default). Named `…-per-min-anchored`.
    ///
    /// It answers as that limiter does: a 429 whose `retry-after` is the **whole window**,
    /// whatever is left of it, with `rate_limit_type: requests` and
    /// `reset_at: YYYY-MM-DD HH:MM:SS UTC` (now plus the window — LiteLLM's "conservative
    /// estimate", not the window's real end) and the proxy's JSON error; every 200 carries
    /// `x-ratelimit-api_key-limit-requests` and `x-ratelimit-api_key-remaining-requests`.
    pub fn fixed_anchored(models: Models, requests: u32, window: Duration) -> Self {
        let mut limit = Limit::with_period(models, requests, Period::Anchored(window), "");
        limit.name.push_str("-anchored");
        limit
    }

    /// A token bucket of `requests` that refills `requests` per `window` continuously, as
    /// Anthropic counts an organisation's requests. Named `…-per-bucket-min` for a 60 s
    /// window.
    ///
    /// Its 429 and its 200s carry the tier's style of headers (Anthropic's
    /// `anthropic-ratelimit-requests-{limit,remaining,reset}`, the reset being when the
    /// bucket is full again) and a `retry-after` in whole seconds until a token is back.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::sim::{Limit, Models, Period};
    ///
    /// let rpm = Limit::bucket(Models::All, 50, Duration::from_secs(60));
    /// assert_eq!(rpm.period(), Period::Bucket(Duration::from_secs(60)));
    /// assert_eq!(rpm.name(), "requests-per-bucket-min");
    /// ```
    pub fn bucket(models: Models, requests: u32, window: Duration) -> Self {
        Limit::with_period(models, requests, Period::Bucket(window), "bucket-")
    }

    /// At most `requests` admissions of `models` per UTC day, reset at UTC midnight.
    pub fn daily(models: Models, requests: u32) -> Self {
        Limit {
            models,
            requests,
            admits: requests,
            period: Period::UtcDay,
            second: Duration::from_secs(1),
            name: format!("{}-per-day", models.prefix()),
            message: None,
            burst: None,
        }
    }

    fn with_period(models: Models, requests: u32, period: Period, kind: &str) -> Self {
        let window = period.window().unwrap_or(Duration::from_secs(86_400));
        let per = if window == Duration::from_secs(60) {
            "per-min".to_string()
        } else if window == Duration::from_secs(3600) {
            "per-hour".to_string()
        } else {
            format!("per-{}s", fmt_secs(window))
        };
        let per = match kind {
            "" => per,
            kind => per.replacen("per-", &format!("per-{kind}"), 1),
        };
        Limit {
            models,
            requests,
            admits: requests,
            period,
            second: Duration::from_secs(1),
            name: format!("{}-{}", models.prefix(), per),
            message: None,
            burst: None,
        }
    }

    /// Admits `admits` per period while still announcing [`requests`](Self::requests) in its
    /// messages and headers — LiteLLM's router admits N − 1 for `rpm: N`.
    pub fn admitting(mut self, admits: u32) -> Self {
        self.admits = admits;
        self
    }

    /// For a [token bucket](Self::bucket): holds at most `tokens` (refilling at the same
    /// rate), so that a burst larger than that is refused even when the minute's figure
    /// allows it — Anthropic's "a rate of 60 requests per minute may be enforced as 1
    /// request per second". Other limits ignore it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::sim::{Limit, Models};
    ///
    /// let rpm = Limit::bucket(Models::All, 60, Duration::from_secs(60)).with_burst(1);
    /// assert_eq!(rpm.burst(), 1);
    /// ```
    pub fn with_burst(mut self, tokens: u32) -> Self {
        self.burst = Some(tokens);
        self
    }

    /// The most tokens a token bucket holds ([`with_burst`](Self::with_burst), else what it
    /// admits per window).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.admits)
    }

    /// Replaces the name shown in the 429 message (`Rate limit exceeded: {name}. `).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces the whole 429 message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The limit's name, as in its 429 message.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The models it counts.
    pub fn models(&self) -> Models {
        self.models
    }

    /// How many admissions it announces per period (in its messages and headers).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// How many admissions it really allows per period: [`requests`](Self::requests) unless
    /// set by [`admitting`](Self::admitting).
    pub fn admits(&self) -> u32 {
        self.admits
    }

    /// Its period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The message of its 429.
    pub fn message(&self) -> String {
        match &self.message {
            Some(m) => m.clone(),
            None => format!("Rate limit exceeded: {}. ", self.name),
        }
    }

    /// The same limit in a world where a minute lasts `minute` (daily limits unchanged).
    pub(crate) fn scaled(mut self, minute: Duration) -> Self {
        self.period = match self.period {
            Period::Rolling(w) => Period::Rolling(scale(w, minute)),
            Period::Clock(w) => Period::Clock(scale(w, minute)),
            Period::Anchored(w) => Period::Anchored(scale(w, minute)),
            Period::Bucket(w) => Period::Bucket(scale(w, minute)),
            Period::UtcDay => Period::UtcDay,
        };
        self.second = scale(self.second, minute);
        self
    }
}

/// `d` when a minute lasts `minute`, to the nanosecond.
pub(crate) fn scale(d: Duration, minute: Duration) -> Duration {
    let nanos = d.as_nanos() * minute.as_nanos() / 60_000_000_000;
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

/// `60`, `2`, `1.5`: seconds without a trailing `.0`.
pub(crate) fn fmt_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

/// A set of limits enforced together on an [`Account`].
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::{Limit, Models, Tier};
///
/// let tier = Tier::new("tight")
///     .with_limit(Limit::rolling(Models::All, 5, Duration::from_secs(10)))
///     .with_limit(Limit::daily(Models::All, 100));
/// assert_eq!(tier.limits().len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    pub(crate) name: String,
    pub(crate) limits: Vec<Limit>,
    pub(crate) token_limits: Vec<TokenLimit>,
    pub(crate) style: Style,
    pub(crate) free_tier: bool,
}

impl Tier {
    /// A tier with no limits yet; not a free tier.
    pub fn new(name: impl Into<String>) -> Self {
        Tier {
            name: name.into(),
            limits: Vec::new(),
            token_limits: Vec::new(),
            style: Style::default(),
            free_tier: false,
        }
    }

    /// An OpenAI organisation's limits for one model: `rpm` requests and `tpm` tokens per
    /// rolling minute, tokens reserved on arrival as OpenAI counts them (the prompt plus
    /// `max_tokens`, [`Counting::Reserve`]), answered with OpenAI's headers ([`Style::OpenAi`]).
    pub fn openai(rpm: u32, tpm: u64) -> Self {
        Tier::new("openai")
            .with_limit(Limit::rolling(Models::All, rpm, Duration::from_secs(60)))
            .with_token_limit(TokenLimit::per_minute(TokenKind::Total, tpm))
            .with_style(Style::OpenAi)
    }

    /// An Anthropic organisation's limits for one model class: `rpm` requests in a token
    /// bucket that refills continuously ([`Limit::bucket`], as Anthropic counts), `itpm`
    /// input tokens (counted on arrival) and `otpm` output tokens (estimated from
    /// `max_tokens` on arrival, adjusted to the real count at the end,
    /// [`Counting::ReserveThenAdjust`]) per rolling minute, answered with Anthropic's
    /// headers ([`Style::Anthropic`]).
    pub fn anthropic(rpm: u32, itpm: u64, otpm: u64) -> Self {
        Tier::new("anthropic")
            .with_limit(Limit::bucket(Models::All, rpm, Duration::from_secs(60)))
            .with_token_limit(TokenLimit::per_minute(TokenKind::Input, itpm))
            .with_token_limit(
                TokenLimit::per_minute(TokenKind::Output, otpm)
                    .counting_as(Counting::ReserveThenAdjust),
            )
            .with_style(Style::Anthropic)
    }

    /// A LiteLLM proxy key with `tpm_limit: tpm`: the real usage counted per UTC clock
    /// minute when each answer is done, a request refused once the minute's count reached
    /// the limit ([`Counting::AfterResponse`]).
    pub fn litellm_tpm(tpm: u64) -> Self {
        Tier::new("litellm-tpm").with_token_limit(
            TokenLimit::fixed_clock(TokenKind::Total, tpm, Duration::from_secs(60))
                .counting_as(Counting::AfterResponse),
        )
    }

    /// Adds a token limit; every limit of the tier must admit a request.
    pub fn with_token_limit(mut self, limit: TokenLimit) -> Self {
        self.token_limits.push(limit);
        self
    }

    /// Sets whose headers and error bodies it answers with (default [`Style::OpenRouter`]).
    pub fn with_style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Its token limits.
    pub fn token_limits(&self) -> &[TokenLimit] {
        &self.token_limits
    }

    /// Whose headers it answers with.
    pub fn style(&self) -> Style {
        self.style
    }

    /// OpenRouter for an account that never bought 10 credits: `:free` models at 20 requests
    /// per rolling minute and 50 per UTC day; paid models without a platform cap.
    pub fn openrouter_free() -> Self {
        Tier::new("openrouter-free")
            .with_limit(Limit::rolling(Models::Free, 20, Duration::from_secs(60)))
            .with_limit(Limit::daily(Models::Free, 50).with_message(
                "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
            ))
            .with_free_tier(true)
    }

    /// OpenRouter for an account that bought at least 10 credits: `:free` models at 20
    /// requests per rolling minute and 1000 per UTC day.
    pub fn openrouter_credited() -> Self {
        Tier::new("openrouter-credited")
            .with_limit(Limit::rolling(Models::Free, 20, Duration::from_secs(60)))
            .with_limit(Limit::daily(Models::Free, 1000))
    }

    /// A LiteLLM proxy key with `rpm_limit: rpm` under its legacy limiter: every model,
    /// counted per UTC clock minute (see [`Limit::fixed_clock`]).
    pub fn litellm_clock_minute(rpm: u32) -> Self {
        Tier::new("litellm-clock-minute").with_limit(Limit::fixed_clock(
            Models::All,
            rpm,
            Duration::from_secs(60),
        ))
    }

    /// A LiteLLM router deployment with `rpm: rpm`: per UTC clock minute, admitting
    /// `rpm − 1` (its off-by-one), answered as [`Limit::fixed_clock`] describes.
    pub fn litellm_router(rpm: u32) -> Self {
        Tier::new("litellm-router").with_limit(
            Limit::fixed_clock(Models::All, rpm, Duration::from_secs(60))
                .admitting(rpm.saturating_sub(1)),
        )
    }

    /// A LiteLLM proxy key with `rpm_limit: rpm` under its current (v3) limiter: every model,
    /// a 60 s window anchored at the first request (see [`Limit::fixed_anchored`]).
    pub fn litellm_anchored(rpm: u32) -> Self {
        Tier::new("litellm-anchored").with_limit(Limit::fixed_anchored(
            Models::All,
            rpm,
            Duration::from_secs(60),
        ))
    }

    /// No limits at all (the default for paid models on OpenRouter).
    pub fn unlimited() -> Self {
        Tier::new("unlimited")
    }

    /// Adds a limit; every limit of the tier must admit a request.
    pub fn with_limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Sets what `/api/v1/key` reports as `is_free_tier`.
    pub fn with_free_tier(mut self, free_tier: bool) -> Self {
        self.free_tier = free_tier;
        self
    }

    /// The tier's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its limits.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// Whether `/api/v1/key` reports it as a free tier.
    pub fn is_free_tier(&self) -> bool {
        self.free_tier
    }

    /// The same tier in a world where a minute lasts `minute`.
    pub(crate) fn scaled(mut self, minute: Duration) -> Self {
        self.limits = self.limits.into_iter().map(|l| l.scaled(minute)).collect();
        self.token_limits = self
            .token_limits
            .into_iter()
            .map(|l| l.scaled(minute))
            .collect();
        self
    }
}

/// An account: one or more API keys that share one [`Tier`] and one credit balance, as on
/// OpenRouter, where limits are account-wide (more keys do not help).
///
/// ```
/// use tower_quota::sim::{Account, Tier};
///
/// let account = Account::new("sk-or-v1-alice")
///     .with_key("sk-or-v1-alice-2")
///     .with_tier(Tier::openrouter_credited())
///     .with_credits(10.0);
/// assert_eq!(account.keys().len(), 2);
/// ```
#[derive(Clone, PartialEq)]
pub struct Account {
    pub(crate) label: String,
    pub(crate) keys: Vec<String>,
    pub(crate) tier: Tier,
    pub(crate) credits: Option<f64>,
}

impl Account {
    /// An account with one key, the [`Tier::openrouter_free`] tier and unlimited credits. Its
    /// label (shown by `/api/v1/key`) is the key, shortened.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let label = if key.chars().count() > 14 {
            let head: String = key.chars().take(10).collect();
            let tail: String = key
                .chars()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{head}...{tail}")
        } else {
            key.clone()
        };
        Account {
            label,
            keys: vec![key],
            tier: Tier::openrouter_free(),
            credits: None,
        }
    }

    /// Adds another key to the same account.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Sets the label `/api/v1/key` shows.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the tier.
    pub fn with_tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets a credit limit: paid-model requests cost the simulator's price each, and a request
    /// that would go past the limit gets a 402. `:free` models cost nothing.
    pub fn with_credits(mut self, credits: f64) -> Self {
        self.credits = Some(credits);
        self
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The tier.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// The credit limit, if any.
    pub fn credits(&self) -> Option<f64> {
        self.credits
    }
}

/// Faults the simulator injects into requests that passed the platform's own checks, drawn
/// from the simulator's seed (see [`SimulatorBuilder::seed`](super::SimulatorBuilder::seed)).
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::Faults;
///
/// let faults = Faults::none()
///     .with_upstream_429(0.1, 5, 30)
///     .with_unavailable_bursts(0.02, Duration::from_secs(3))
///     .with_bad_gateway(0.01);
/// # let _ = faults;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    pub(crate) upstream_429: f64,
    pub(crate) retry_after_min: u64,
    pub(crate) retry_after_max: u64,
    pub(crate) unavailable: f64,
    pub(crate) burst: Duration,
    pub(crate) bad_gateway: f64,
    pub(crate) enforce_retry_after: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::none()
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Faults {
            upstream_429: 0.0,
            retry_after_min: 0,
            retry_after_max: 0,
            unavailable: 0.0,
            burst: Duration::ZERO,
            bad_gateway: 0.0,
            enforce_retry_after: true,
        }
    }

    /// With probability `p`, the upstream provider rate-limits the request: a 429 whose body
    /// carries `metadata.retry_after_seconds` and `metadata.headers.Retry-After`, a whole
    /// number of seconds drawn in `[min_secs, max_secs]` (no HTTP `Retry-After` header, as
    /// observed on OpenRouter). Until that delay has passed, the same account's requests for
    /// that model get the same 429 again with the delay left (turn off with
    /// [`with_enforced_retry_after`](Self::with_enforced_retry_after)).
    pub fn with_upstream_429(mut self, p: f64, min_secs: u64, max_secs: u64) -> Self {
        self.upstream_429 = p;
        self.retry_after_min = min_secs;
        self.retry_after_max = max_secs.max(min_secs);
        self
    }

    /// With probability `p` a request starts a burst of 503 "No allowed providers are
    /// available for the selected model." that lasts `length`: every request arriving during
    /// the burst gets the 503.
    pub fn with_unavailable_bursts(mut self, p: f64, length: Duration) -> Self {
        self.unavailable = p;
        self.burst = length;
        self
    }

    /// With probability `p`, a 502 (the model is down or answered garbage).
    pub fn with_bad_gateway(mut self, p: f64) -> Self {
        self.bad_gateway = p;
        self
    }

    /// Whether requests sent before an upstream 429's delay has passed get a 429 again
    /// (default `true`).
    pub fn with_enforced_retry_after(mut self, enforce: bool) -> Self {
        self.enforce_retry_after = enforce;
        self
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short key's label is the key itself: shown redacted, like the keys.
        let label: &dyn fmt::Debug = if self.keys.contains(&self.label) {
            &format_args!("<redacted>")
        } else {
            &self.label
        };
        f.debug_struct("Account")
            .field("label", label)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("tier", &self.tier)
            .field("credits", &self.credits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            Limit::rolling(Models::Free, 20, Duration::from_secs(60)).message(),
            "Rate limit exceeded: free-models-per-min. "
        );
        assert_eq!(
            Limit::rolling(Models::All, 5, Duration::from_millis(1500)).name(),
            "requests-per-1.5s"
        );
        assert_eq!(Limit::daily(Models::Paid, 5).name(), "paid-models-per-day");
        let scaled = Tier::openrouter_free().scaled(Duration::from_secs(2));
        assert_eq!(
            scaled.limits()[0].period(),
            Period::Rolling(Duration::from_secs(2))
        );
        assert_eq!(scaled.limits()[1].period(), Period::UtcDay);
        let anchored = Tier::litellm_anchored(20).scaled(Duration::from_secs(2));
        assert_eq!(
            anchored.limits()[0].period(),
            Period::Anchored(Duration::from_secs(2))
        );
        assert_eq!(anchored.limits()[0].name(), "requests-per-min-anchored");
        assert_eq!(Tier::litellm_router(20).limits()[0].admits(), 19);
        assert_eq!(
            Limit::fixed_clock(Models::Free, 5, Duration::from_secs(10)).name(),
            "free-models-per-clock-10s"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(Account::new("short").label(), "short");
        assert_eq!(
            Account::new("sk-or-v1-0123456789abcdef").label(),
            "sk-or-v1-0...def"
        );
    }
}
