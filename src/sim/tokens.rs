//! Token quotas as servers count them: what a request is charged, when, and the check on
//! arrival. Plain on purpose, like the request check: a log of charges per limit, summed. It is
//! the ground truth the crate's token pacing is judged against and shares nothing with it.
//!
//! The providers' own words are on [`Counting`].

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::config::{fmt_secs, scale, Period};
use super::rng::SplitMix64;
use super::state::clock_window;

/// Which tokens a [`TokenLimit`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// Prompt and completion together (OpenAI's `TPM`, LiteLLM's `tpm`).
    Total,
    /// The prompt (Anthropic's `ITPM`, LiteLLM's `itpm`).
    Input,
    /// The completion (Anthropic's `OTPM`, LiteLLM's `otpm`).
    Output,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            TokenKind::Total => "tokens",
            TokenKind::Input => "input-tokens",
            TokenKind::Output => "output-tokens",
        }
    }

    /// `input` and `output` as this kind counts them.
    pub fn of(self, input: u64, output: u64) -> u64 {
        match self {
            TokenKind::Total => input + output,
            TokenKind::Input => input,
            TokenKind::Output => output,
        }
    }
}

/// When a [`TokenLimit`] charges a request, and what.
///
/// # What the providers document
///
/// - **OpenAI** (`TPM`, one total): "Your rate limit is calculated as the maximum of
///   `max_tokens` and the estimated number of tokens based on the character count of your
///   request" (platform.openai.com/docs/guides/rate-limits, *Reduce the `max_tokens` to match
///   the size of your completions*). Read in practice — and by OpenAI's own cookbook
///   (`api_request_parallel_processor.py`: prompt tokens + `max_tokens × n`) — as the prompt
///   plus `max_tokens`, charged when the request arrives, whatever the completion turns out
///   to be: [`Counting::Reserve`], the default.
/// - **Anthropic** (`ITPM`, `OTPM`): input tokens are counted when the request arrives;
///   "OTPM rate limits are estimated based on `max_tokens` at the beginning of each request,
///   and adjusted at the end of the request to reflect the actual number of output tokens
///   used" (docs.anthropic.com, *Rate limits*): [`Counting::ReserveThenAdjust`]. (Anthropic
///   refills its token limits as buckets; the simulator counts them in a rolling window,
///   which is stricter: a client that never trips it never trips the bucket. Its request
///   limit is a bucket, [`Limit::bucket`](super::Limit::bucket).)
/// - **LiteLLM** (`tpm` of a key, user, team or deployment): the pre-call hook refuses a
///   request when the tokens already counted in the window reach the limit
///   (`current_tpm >= tpm_limit`, `parallel_request_limiter.py`), and the success callback
///   adds the response's `usage.total_tokens` when the call is done:
///   [`Counting::AfterResponse`]. The request that crosses the limit is admitted; the next
///   ones are refused. (Its `itpm`/`otpm` deployment checks reserve and reconcile instead:
///   model them with [`Counting::ReserveThenAdjust`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counting {
    /// OpenAI: on arrival, the prompt (as the server's tokenizer counts it) and the
    /// request's `max_tokens` for the completion, never adjusted. Refused when the window's
    /// charges and this one would pass the limit. The default.
    #[default]
    Reserve,
    /// Anthropic: on arrival as [`Reserve`](Self::Reserve); when the answer is done the
    /// completion's charge drops from `max_tokens` to the tokens really generated (in the
    /// window of the arrival).
    ReserveThenAdjust,
    /// LiteLLM: on arrival the request is refused only when the window's count has already
    /// reached the limit; the real usage (prompt and completion) is counted when the answer
    /// is done, in the window of that moment. One request may carry the count past the limit.
    AfterResponse,
}

/// One token quota of a [`Tier`](super::Tier): at most `tokens` of a [`TokenKind`] per window,
/// counted on arrival as [`Counting`] says. Token limits count every model.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::{Counting, TokenKind, TokenLimit};
///
/// let tpm = TokenLimit::per_minute(TokenKind::Total, 30_000);
/// assert_eq!(tpm.counting(), Counting::Reserve);
/// assert_eq!(tpm.name(), "tokens-per-min");
/// let otpm = TokenLimit::per_minute(TokenKind::Output, 8_000).counting_as(Counting::ReserveThenAdjust);
/// assert_eq!(otpm.tokens(), 8_000);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLimit {
    pub(crate) kind: TokenKind,
    pub(crate) tokens: u64,
    pub(crate) period: Period,
    pub(crate) counting: Counting,
    pub(crate) name: String,
}

impl TokenLimit {
    /// At most `tokens` per rolling minute, [`Counting::Reserve`].
    pub fn per_minute(kind: TokenKind, tokens: u64) -> Self {
        TokenLimit::rolling(kind, tokens, Duration::from_secs(60))
    }

    /// At most `tokens` in any interval of length `window` (a sliding log of charges).
    pub fn rolling(kind: TokenKind, tokens: u64, window: Duration) -> Self {
        TokenLimit::with_period(kind, tokens, Period::Rolling(window))
    }

    /// At most `tokens` per fixed window aligned to the wall clock (per UTC minute for 60 s,
    /// as LiteLLM's router counts a deployment's `tpm`).
    pub fn fixed_clock(kind: TokenKind, tokens: u64, window: Duration) -> Self {
        TokenLimit::with_period(kind, tokens, Period::Clock(window))
    }

    fn with_period(kind: TokenKind, tokens: u64, period: Period) -> Self {
        let w = period.window().unwrap_or(Duration::from_secs(60));
        let per = if w == Duration::from_secs(60) {
            "min".to_string()
        } else {
            format!("{}s", fmt_secs(w))
        };
        let clock = if matches!(period, Period::Clock(_)) {
            "clock-"
        } else {
            ""
        };
        TokenLimit {
            kind,
            tokens,
            period,
            counting: Counting::default(),
            name: format!("{}-per-{clock}{per}", kind.label()),
        }
    }

    /// Sets how it counts (default [`Counting::Reserve`]).
    pub fn counting_as(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Replaces its name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// What it counts.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The most tokens per window.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Its window: [`Period::Rolling`] or [`Period::Clock`].
    pub fn period(&self) -> Period {
        self.period
    }

    /// How it counts.
    pub fn counting(&self) -> Counting {
        self.counting
    }

    /// Its name (`tokens-per-min`, `input-tokens-per-min`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.period.window().unwrap_or(Duration::from_secs(86_400))
    }

    /// The most it lets through over `span`: `tokens × ⌈span / window⌉` (at least one
    /// window) — the denominator of a token utilisation.
    pub fn allowed_over(&self, span: Duration) -> u64 {
        let w = self.window().as_nanos().max(1);
        let windows = span.as_nanos().div_ceil(w).max(1);
        self.tokens.saturating_mul(windows as u64)
    }

    /// What a request is charged on arrival (`reserved`), what it is charged once its answer
    /// is done (`settled`), and whether the settled charge counts from the end of the answer
    /// rather than from the arrival.
    pub(crate) fn charge(&self, t: &Tokens) -> (u64, u64) {
        let k = self.kind;
        match self.counting {
            Counting::Reserve => {
                let c = k.of(t.input, t.max_output);
                (c, c)
            }
            Counting::ReserveThenAdjust => (k.of(t.input, t.max_output), k.of(t.input, t.output)),
            Counting::AfterResponse => (0, k.of(t.input, t.output)),
        }
    }

    pub(crate) fn scaled(mut self, minute: Duration) -> Self {
        self.period = match self.period {
            Period::Rolling(w) => Period::Rolling(scale(w, minute)),
            Period::Clock(w) => Period::Clock(scale(w, minute)),
            other => other,
        };
        self
    }
}

/// The tokens of one admitted completion, as the server counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Tokens {
    /// The prompt, by the server's tokenizer (`usage.prompt_tokens`).
    pub input: u64,
    /// The completion generated (`usage.completion_tokens`).
    pub output: u64,
    /// The request's `max_tokens` (or `max_completion_tokens`; the simulator's default
    /// when absent): what a reservation holds for the completion.
    pub max_output: u64,
}

impl Tokens {
    /// `input + output`.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// How long completions are: a length drawn per admitted request, seeded, never above its
/// `max_tokens`.
///
/// ```
/// use tower_quota::sim::Completions;
///
/// let c = Completions::uniform(50);       // 50..=max_tokens, the default
/// let d = Completions::fraction(0.5, 1.0); // half max_tokens to max_tokens
/// # let _ = (c, d);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Completions {
    lo: f64,
    hi: f64,
    floor: u64,
}

impl Default for Completions {
    fn default() -> Self {
        Completions::uniform(50)
    }
}

impl Completions {
    /// Uniform in `min..=max_tokens` (`max_tokens` when it is below `min`).
    pub fn uniform(min: u64) -> Self {
        Completions {
            lo: 0.0,
            hi: 1.0,
            floor: min,
        }
    }

    /// Uniform between `lo × max_tokens` and `hi × max_tokens` (fractions in `[0, 1]`),
    /// at least one token.
    pub fn fraction(lo: f64, hi: f64) -> Self {
        let lo = lo.clamp(0.0, 1.0);
        Completions {
            lo,
            hi: hi.clamp(lo, 1.0),
            floor: 1,
        }
    }

    /// Always `max_tokens`.
    pub fn full() -> Self {
        Completions::fraction(1.0, 1.0)
    }

    /// One draw for a request allowing `max` tokens (always one number from `rng`).
    pub(crate) fn draw(&self, max: u64, rng: &mut SplitMix64) -> u64 {
        let lo = ((self.lo * max as f64).ceil() as u64)
            .max(self.floor)
            .min(max);
        let hi = ((self.hi * max as f64).floor() as u64).clamp(lo, max);
        rng.range_u64(lo, hi)
    }
}

/// The server's tokenizer, modelled: `⌈bytes / 4⌉` of the prompt's text, times a deviation
/// in `[1 − d, 1 + d]` drawn from the text itself (FNV-1a) and the simulator's seed, plus
/// 4 tokens per message (the chat format's own tokens). Deterministic: the same body always
/// counts the same (a retry is charged what the first attempt was), and a client estimating
/// bytes / 4 is close but not exact.
pub(crate) fn prompt_tokens(text_bytes: &[u8], messages: u64, deviation: f64, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text_bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix64::for_request(seed ^ 0x746f_6b65_6e69_7a65, h);
    let factor = 1.0 + deviation * (2.0 * rng.next_f64() - 1.0);
    let base = text_bytes.len().div_ceil(4) as f64;
    (base * factor).round().max(1.0) as u64 + 4 * messages
}

/// One request's charge on one token limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Charge {
    /// From when it counts (the arrival; the answer's end for [`Counting::AfterResponse`]).
    pub(crate) at: Instant,
    pub(crate) wall: SystemTime,
    /// When the answer is done: from then on the charge is `settled`.
    pub(crate) done: Instant,
    pub(crate) reserved: u64,
    pub(crate) settled: u64,
}

impl Charge {
    fn amount(&self, t: Instant) -> u64 {
        if t >= self.done {
            self.settled
        } else {
            self.reserved
        }
    }
}

/// The charges of one token limit, oldest first by `at` (AfterResponse charges are kept in
/// order of `at` too).
#[derive(Debug, Default)]
pub(crate) struct TokenLog {
    pub(crate) charges: VecDeque<Charge>,
}

/// Why a token limit refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenRefusal {
    /// Tokens the window holds now.
    pub(crate) used: u64,
    /// What the request would be charged.
    pub(crate) requested: u64,
    /// When it would be admitted, if nothing else arrives; `None` if never (larger than
    /// the limit).
    pub(crate) reset: Option<Instant>,
}

impl TokenLog {
    /// Tokens the window that holds `t` (`wall` on the wall clock) counts at `t`.
    pub(crate) fn used(&self, limit: &TokenLimit, t: Instant, wall: SystemTime) -> u64 {
        self.charges
            .iter()
            .filter(|c| c.at <= t && in_window(limit.period, c, t, wall))
            .map(|c| c.amount(t))
            .sum()
    }

    /// When the window is fully replenished — the last charge counted now leaves it — and
    /// nothing is pending (`now` if it is empty).
    pub(crate) fn replenished(
        &self,
        limit: &TokenLimit,
        now: Instant,
        wall: SystemTime,
    ) -> Instant {
        match limit.period {
            Period::Clock(w) => {
                if self.used(limit, now, wall) == 0 {
                    now
                } else {
                    now + to_next_window(wall, w)
                }
            }
            _ => {
                let w = limit.window();
                self.charges
                    .iter()
                    .filter(|c| c.at <= now && now - c.at < w)
                    .map(|c| c.at + w)
                    .max()
                    .unwrap_or(now)
            }
        }
    }

    /// Whether a request charged `reserved` now (0 for [`Counting::AfterResponse`]) is
    /// admitted at `now`.
    pub(crate) fn check(
        &self,
        limit: &TokenLimit,
        requested: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), TokenRefusal> {
        let fits = |used: u64| match limit.counting {
            Counting::AfterResponse => used < limit.tokens,
            _ => used + requested <= limit.tokens,
        };
        let used = self.used(limit, now, wall);
        if fits(used) {
            return Ok(());
        }
        let never = limit.counting != Counting::AfterResponse && requested > limit.tokens;
        let reset = if never {
            None
        } else {
            match limit.period {
                Period::Clock(w) => Some(now + to_next_window(wall, w)),
                _ => {
                    // The moments the count can drop: a charge leaves the window, or settles.
                    let w = limit.window();
                    let mut times: Vec<Instant> = self
                        .charges
                        .iter()
                        .flat_map(|c| [c.at + w, c.done])
                        .filter(|t| *t > now)
                        .collect();
                    times.sort();
                    times
                        .into_iter()
                        .find(|t| fits(self.used(limit, *t, wall + (*t - now))))
                }
            }
        };
        Err(TokenRefusal {
            used,
            requested,
            reset,
        })
    }

    /// Records a charge and forgets those no window can count any more.
    pub(crate) fn push(&mut self, limit: &TokenLimit, charge: Charge) {
        // Keep the log ordered by `at` (an AfterResponse charge may count later than one
        // recorded after it).
        let i = self
            .charges
            .iter()
            .rposition(|c| c.at <= charge.at)
            .map_or(0, |i| i + 1);
        self.charges.insert(i, charge);
        let horizon = 2 * limit.window();
        let now = charge.at.min(charge.done);
        while let Some(old) = self.charges.front() {
            if old.at + horizon < now && old.done + horizon < now {
                self.charges.pop_front();
            } else {
                break;
            }
        }
    }
}

fn in_window(period: Period, c: &Charge, t: Instant, wall: SystemTime) -> bool {
    match period {
        Period::Clock(w) => clock_window(c.wall, w) == clock_window(wall, w),
        _ => t - c.at < period.window().unwrap_or(Duration::MAX),
    }
}

fn to_next_window(wall: SystemTime, w: Duration) -> Duration {
    let k = clock_window(wall, w);
    let next = (k + 1) * w.as_nanos();
    let left = next.saturating_sub(super::state::epoch_nanos(wall));
    Duration::from_nanos(left as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: u64, output: u64, max_output: u64) -> Tokens {
        Tokens {
            input,
            output,
            max_output,
        }
    }

    #[test]
    fn charges_by_style() {
        let t = tokens(1000, 200, 800);
        let total = TokenLimit::per_minute(TokenKind::Total, 10_000);
        assert_eq!(total.charge(&t), (1800, 1800));
        let adjust = total.clone().counting_as(Counting::ReserveThenAdjust);
        assert_eq!(adjust.charge(&t), (1800, 1200));
        let after = total.counting_as(Counting::AfterResponse);
        assert_eq!(after.charge(&t), (0, 1200));
        let input = TokenLimit::per_minute(TokenKind::Input, 10_000);
        assert_eq!(input.charge(&t), (1000, 1000));
        let output = TokenLimit::per_minute(TokenKind::Output, 10_000)
            .counting_as(Counting::ReserveThenAdjust);
        assert_eq!(output.charge(&t), (800, 200));
        assert_eq!(output.name(), "output-tokens-per-min");
        assert_eq!(
            TokenLimit::fixed_clock(TokenKind::Total, 5, Duration::from_secs(10)).name(),
            "tokens-per-clock-10s"
        );
    }

    #[test]
    fn prompt_tokens_are_deterministic_and_near_a_quarter_of_the_bytes() {
        let text = vec![b'a'; 4_000];
        let n = prompt_tokens(&text, 1, 0.15, 7);
        assert_eq!(n, prompt_tokens(&text, 1, 0.15, 7));
        assert!((850 + 4..=1150 + 4).contains(&n), "{n}");
        assert_eq!(prompt_tokens(&text, 2, 0.0, 7), 1_008);
        let mut spread = std::collections::BTreeSet::new();
        for i in 0..50u8 {
            let mut t = text.clone();
            t[0] = i;
            spread.insert(prompt_tokens(&t, 0, 0.15, 7));
        }
        assert!(spread.len() > 20);
    }

    #[test]
    fn completions_stay_below_max_tokens() {
        let mut rng = SplitMix64::new(3);
        for max in [1, 10, 49, 50, 800] {
            for _ in 0..200 {
                let n = Completions::uniform(50).draw(max, &mut rng);
                assert!(n <= max && n >= 50.min(max), "{n} of {max}");
            }
        }
        assert_eq!(Completions::full().draw(800, &mut rng), 800);
    }

    #[test]
    fn rolling_reserve_refuses_and_says_when() {
        let limit = TokenLimit::rolling(TokenKind::Total, 1_000, Duration::from_secs(10));
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut log = TokenLog::default();
        log.push(
            &limit,
            Charge {
                at: t0,
                wall,
                done: t0,
                reserved: 700,
                settled: 700,
            },
        );
        assert!(log.check(&limit, 300, t0, wall).is_ok());
        let refused = log.check(&limit, 301, t0, wall).unwrap_err();
        assert_eq!(refused.used, 700);
        assert_eq!(refused.reset, Some(t0 + Duration::from_secs(10)));
        assert_eq!(log.check(&limit, 1_001, t0, wall).unwrap_err().reset, None);
        assert_eq!(
            log.replenished(&limit, t0, wall),
            t0 + Duration::from_secs(10)
        );
    }

    #[test]
    fn adjusted_charges_drop_when_done_and_after_response_counts_late() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let s = Duration::from_secs(1);
        let adjust = TokenLimit::rolling(TokenKind::Output, 1_000, Duration::from_secs(10))
            .counting_as(Counting::ReserveThenAdjust);
        let mut log = TokenLog::default();
        log.push(
            &adjust,
            Charge {
                at: t0,
                wall,
                done: t0 + s,
                reserved: 800,
                settled: 100,
            },
        );
        let refused = log.check(&adjust, 800, t0, wall).unwrap_err();
        assert_eq!(refused.reset, Some(t0 + s));
        assert!(log.check(&adjust, 800, t0 + s, wall).is_ok());

        let after = TokenLimit::rolling(TokenKind::Total, 1_000, Duration::from_secs(10))
            .counting_as(Counting::AfterResponse);
        let mut log = TokenLog::default();
        log.push(
            &after,
            Charge {
                at: t0 + s,
                wall,
                done: t0 + s,
                reserved: 0,
                settled: 5_000,
            },
        );
        // Not counted until the answer is done; then the window is over the limit.
        assert!(log.check(&after, 0, t0, wall).is_ok());
        let refused = log.check(&after, 0, t0 + s, wall).unwrap_err();
        assert_eq!(refused.used, 5_000);
        assert_eq!(refused.reset, Some(t0 + s + Duration::from_secs(10)));
    }
}
