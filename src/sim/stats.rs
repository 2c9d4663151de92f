//! What the simulator saw: every request, every admission, and the oracle over them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::time::Instant;

use super::config::{Limit, Models, Period};
use super::tokens::{Counting, TokenLimit, Tokens};

/// What the simulator answered to one request, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// 200: a completion, admitted (it counts against the limits).
    Completed,
    /// 200: the `/api/v1/key` report.
    KeyInfo,
    /// 401: no key, or a key no account holds.
    Unauthorized,
    /// 400: the body is not JSON with a string `model`.
    BadRequest,
    /// 404: no such endpoint.
    NotFound,
    /// 402: the account's credits do not cover the request.
    InsufficientCredits,
    /// 429 from one of the platform's own windows — rolling (e.g. `free-models-per-min`),
    /// clock-aligned or anchored.
    RateLimited {
        /// The limit's name.
        limit: String,
    },
    /// 429 from a UTC-daily cap (e.g. `free-models-per-day`).
    DailyCapReached {
        /// The limit's name.
        limit: String,
    },
    /// 429 from the upstream provider, with a delay in the body.
    UpstreamRateLimited {
        /// The delay the body asks for, in whole seconds.
        retry_after_secs: u64,
        /// Whether it was sent — after the client had the earlier upstream 429, by the
        /// network model — and arrived before that 429's delay had passed (a retry sent too
        /// early; a request already on the wire when the 429 was answered is not).
        early: bool,
    },
    /// 503: no provider available (an injected burst).
    Unavailable,
    /// 502: an injected upstream failure.
    BadGateway,
}

/// One request the simulator received. Responses of the in-process service also carry theirs
/// in their extensions: `response.extensions().get::<Record>()`. Its `Debug` output leaves
/// the key out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Its number since the simulator started (or was [reset](super::Simulator::reset)), from 0,
    /// in the order of arrival.
    pub seq: u64,
    /// When it arrived (after the network's inbound delay) and was decided, on the tokio
    /// clock.
    pub at: Instant,
    /// When it arrived, on the simulator's wall clock.
    pub wall: SystemTime,
    /// Its method.
    pub method: http::Method,
    /// Its path.
    pub path: String,
    /// The bearer key it carried, if any.
    pub key: Option<String>,
    /// The label of the account that key belongs to, if any.
    pub account: Option<String>,
    /// The `model` of its JSON body, for completions.
    pub model: Option<String>,
    /// The status answered.
    pub status: StatusCode,
    /// Why.
    pub outcome: Outcome,
    /// How long it took to arrive: it was sent this long before [`at`](Self::at) (the
    /// network's inbound delay, to the timer's millisecond; over loopback, from when the
    /// server had its head).
    pub inbound: Duration,
    /// The network's outbound delay of its answer (after the upstream latency).
    pub outbound: Duration,
}

impl Record {
    /// When it was sent, by the network model: [`at`](Self::at) less the inbound delay.
    pub fn sent(&self) -> Instant {
        self.at.checked_sub(self.inbound).unwrap_or(self.at)
    }

    /// Whether it reached the platform's limit check (a completion for a known account with
    /// a model and the credits for it): what an anchored window counts.
    pub fn reached_limits(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Completed
                | Outcome::RateLimited { .. }
                | Outcome::DailyCapReached { .. }
                | Outcome::UpstreamRateLimited { .. }
                | Outcome::Unavailable
                | Outcome::BadGateway
        )
    }
}

/// One admission: a completion that counted against the account's limits. Its `Debug`
/// output leaves the key out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admission {
    /// The request's number (see [`Record::seq`]).
    pub seq: u64,
    /// When it was admitted — on arrival, after the network's inbound delay — on the tokio
    /// clock.
    pub at: Instant,
    /// The same instant on the simulator's wall clock.
    pub wall: SystemTime,
    /// The account's label.
    pub account: String,
    /// The key used.
    pub key: String,
    /// The model.
    pub model: String,
    /// Whether it was a `:free` model.
    pub free: bool,
    /// Its tokens as the server counted them: the prompt, the completion generated, and the
    /// `max_tokens` reserved for it.
    pub tokens: Tokens,
    /// When its answer was done and left the server (after the upstream latency, before the
    /// network's outbound delay): reservations settle and LiteLLM counts usage then.
    pub done: Instant,
}

/// Tokens the server counted, summed over admissions (the real usage it reported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenCount {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Both.
    pub total: u64,
}

/// A snapshot of what the simulator saw, from [`Simulator::stats`](super::Simulator::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests received, on every endpoint.
    pub requests: u64,
    /// Requests answered 2xx.
    pub succeeded: u64,
    /// Requests answered 429, whoever the limit belonged to.
    pub rate_limited: u64,
    /// Requests answered anything but 2xx: calls the client could have saved.
    pub wasted: u64,
    /// Requests per status code.
    pub by_status: BTreeMap<u16, u64>,
    /// The tokens of every admission, as reported in `usage`.
    pub tokens: TokenCount,
    /// Every admission, in order.
    pub admissions: Vec<Admission>,
    /// Every request, in order.
    pub records: Vec<Record>,
}

impl Stats {
    pub(crate) fn from_records(records: Vec<Record>, admissions: Vec<Admission>) -> Self {
        let mut stats = Stats {
            requests: records.len() as u64,
            ..Stats::default()
        };
        for r in &records {
            *stats.by_status.entry(r.status.as_u16()).or_default() += 1;
            if r.status.is_success() {
                stats.succeeded += 1;
            } else {
                stats.wasted += 1;
            }
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                stats.rate_limited += 1;
            }
        }
        for a in &admissions {
            stats.tokens.input += a.tokens.input;
            stats.tokens.output += a.tokens.output;
            stats.tokens.total += a.tokens.total();
        }
        stats.records = records;
        stats.admissions = admissions;
        stats
    }

    /// How many requests were sent before an upstream 429's delay had passed (see
    /// [`Outcome::UpstreamRateLimited`]).
    pub fn early_retries(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::UpstreamRateLimited { early: true, .. }))
            .count() as u64
    }

    /// How many requests got `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The largest number of admissions of `models` by one account in any interval of length
    /// `window`: the oracle for "never more than N per W", whatever the simulator enforced.
    pub fn max_admissions_in(&self, models: Models, window: Duration) -> usize {
        let mut per_account: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
        for a in self.admissions.iter().filter(|a| models.matches(a.free)) {
            per_account.entry(&a.account).or_default().push(a.at);
        }
        per_account
            .values()
            .map(|times| max_in_window(times, window))
            .max()
            .unwrap_or(0)
    }

    /// What a token limit finally counted for the admissions from `first_seq` on (all with
    /// 0): the settled charges — the prompt and `max_tokens` for
    /// [`Counting::Reserve`], the real usage for the others. The numerator of a token
    /// utilisation; divide by [`TokenLimit::allowed_over`] the run's span.
    pub fn tokens_counted(&self, limit: &TokenLimit, first_seq: u64) -> u64 {
        self.admissions
            .iter()
            .filter(|a| a.seq >= first_seq)
            .map(|a| limit.charge(&a.tokens).1)
            .sum()
    }

    /// The most tokens a limit's windows held, as it counts, over the admissions: for
    /// [`Counting::Reserve`] and `ReserveThenAdjust`, at each admission the window's charges
    /// as they stood then, this one's included; for `AfterResponse`, the count each
    /// admission found before it (which must stay below the limit). Per account, the largest.
    pub fn max_tokens_in(&self, limit: &TokenLimit) -> u64 {
        let mut per_account: BTreeMap<&str, Vec<&Admission>> = BTreeMap::new();
        for a in &self.admissions {
            per_account.entry(&a.account).or_default().push(a);
        }
        per_account
            .values()
            .map(|adm| token_peak(limit, adm))
            .max()
            .unwrap_or(0)
    }

    /// The time from the first admission to the last (zero with fewer than two).
    pub fn admission_span(&self) -> Duration {
        match (self.admissions.first(), self.admissions.last()) {
            (Some(first), Some(last)) => last.at - first.at,
            _ => Duration::ZERO,
        }
    }
}

/// The most admissions in any half-open interval `[t, t + window)` of the sorted `times`.
pub(crate) fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, &t) in times.iter().enumerate() {
        while t - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A limit that the admission log shows was broken, from
/// [`Simulator::check_invariants`](super::Simulator::check_invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvariantViolation {
    /// The account's label.
    pub account: String,
    /// The limit's name.
    pub limit: String,
    /// The most it admits per period.
    pub allowed: u32,
    /// How many were admitted in one period.
    pub admitted: usize,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "account {} admitted {} requests within one period of {} (allows {})",
            self.account, self.admitted, self.limit, self.allowed
        )
    }
}

impl std::error::Error for InvariantViolation {}

/// Checks one account's admissions against one limit, counting as the limit counts; the
/// records (every arrival) rebuild anchored windows.
pub(crate) fn check_limit(
    account: &str,
    limit: &Limit,
    admissions: &[Admission],
    records: &[Record],
) -> Result<(), InvariantViolation> {
    let matching = admissions
        .iter()
        .filter(|a| a.account == account && limit.models.matches(a.free));
    let per_bucket = |buckets: BTreeMap<u128, usize>| buckets.values().copied().max().unwrap_or(0);
    let admitted = match limit.period {
        Period::Rolling(window) => {
            let times: Vec<Instant> = matching.map(|a| a.at).collect();
            max_in_window(&times, window)
        }
        Period::UtcDay => {
            let mut per_day: BTreeMap<u128, usize> = BTreeMap::new();
            for a in matching {
                *per_day
                    .entry(u128::from(super::state::utc_day(a.wall)))
                    .or_default() += 1;
            }
            per_bucket(per_day)
        }
        Period::Clock(window) => {
            let mut per_window: BTreeMap<u128, usize> = BTreeMap::new();
            for a in matching {
                *per_window
                    .entry(super::state::clock_window(a.wall, window))
                    .or_default() += 1;
            }
            per_bucket(per_window)
        }
        Period::Bucket(window) => {
            // Replayed as a debt, in quanta (one request is the window's nanoseconds, paid
            // off at `admits` quanta a nanosecond): the peak debt, in whole requests, is
            // what the bucket had lent out at once, and may not pass its size.
            let (rate, token) = (u128::from(limit.admits), window.as_nanos().max(1));
            let mut times: Vec<Instant> = matching.map(|a| a.at).collect();
            times.sort_unstable();
            let mut debt: u128 = 0;
            let mut peak: u128 = 0;
            for (k, &at) in times.iter().enumerate() {
                let since = k.checked_sub(1).map_or(Duration::ZERO, |p| at - times[p]);
                debt = debt.saturating_sub(rate * since.as_nanos()) + token;
                peak = peak.max(debt);
            }
            // Compared with the bucket's size, not its rate.
            let in_use = usize::try_from(peak.div_ceil(token)).unwrap_or(usize::MAX);
            if in_use > limit.burst() as usize {
                return Err(InvariantViolation {
                    account: account.to_string(),
                    limit: limit.name.clone(),
                    allowed: limit.burst(),
                    admitted: in_use,
                });
            }
            0
        }
        Period::Anchored(window) => {
            // Each arrival that reached the check opens a window when none is open; count the
            // admissions in each.
            let mut per_window: BTreeMap<u128, usize> = BTreeMap::new();
            let mut open: Option<std::time::SystemTime> = None;
            let arrivals = records.iter().filter(|r| {
                r.account.as_deref() == Some(account)
                    && r.reached_limits()
                    && limit
                        .models
                        .matches(r.model.as_deref().is_some_and(|m| m.ends_with(":free")))
            });
            for r in arrivals {
                let start = match open {
                    Some(start) if r.wall < start + window => start,
                    _ => super::state::truncate(r.wall, limit.second),
                };
                open = Some(start);
                if r.outcome == Outcome::Completed {
                    *per_window
                        .entry(super::state::epoch_nanos(start))
                        .or_default() += 1;
                }
            }
            per_bucket(per_window)
        }
    };
    if admitted > limit.admits as usize {
        Err(InvariantViolation {
            account: account.to_string(),
            limit: limit.name.clone(),
            allowed: limit.admits,
            admitted,
        })
    } else {
        Ok(())
    }
}

/// The peak of a token limit's window over one account's admissions (see
/// [`Stats::max_tokens_in`]); rebuilt from the admissions alone.
fn token_peak(limit: &TokenLimit, admissions: &[&Admission]) -> u64 {
    // Each admission's charge: from when it counts, in which window, and its amount at `t`.
    let after = limit.counting == Counting::AfterResponse;
    let charges: Vec<(u64, Instant, SystemTime, Instant, u64, u64)> = admissions
        .iter()
        .map(|a| {
            let (reserved, settled) = limit.charge(&a.tokens);
            if after {
                (
                    a.seq,
                    a.done,
                    a.wall + (a.done - a.at),
                    a.done,
                    settled,
                    settled,
                )
            } else {
                (a.seq, a.at, a.wall, a.done, reserved, settled)
            }
        })
        .collect();
    let mut peak = 0;
    for a in admissions {
        let (t, wall) = (a.at, a.wall);
        // What the server's log held when it checked this admission: the earlier ones'
        // charges (and, when it reserves, this one's).
        let used: u64 = charges
            .iter()
            .filter(|(seq, at, cwall, ..)| {
                (*seq < a.seq || (!after && *seq == a.seq))
                    && *at <= t
                    && match limit.period {
                        Period::Clock(w) => {
                            super::state::clock_window(*cwall, w)
                                == super::state::clock_window(wall, w)
                        }
                        _ => t - *at < limit.window(),
                    }
            })
            .map(|(_, _, _, done, reserved, settled)| if t >= *done { *settled } else { *reserved })
            .sum();
        peak = peak.max(used);
    }
    peak
}

/// Checks one account's admissions against one token limit (see [`Stats::max_tokens_in`]).
pub(crate) fn check_token_limit(
    account: &str,
    limit: &TokenLimit,
    admissions: &[Admission],
) -> Result<(), InvariantViolation> {
    let mine: Vec<&Admission> = admissions.iter().filter(|a| a.account == account).collect();
    let peak = token_peak(limit, &mine);
    let broken = match limit.counting {
        Counting::AfterResponse => peak >= limit.tokens && !mine.is_empty(),
        _ => peak > limit.tokens,
    };
    if broken {
        Err(InvariantViolation {
            account: account.to_string(),
            limit: limit.name.clone(),
            allowed: u32::try_from(limit.tokens).unwrap_or(u32::MAX),
            admitted: usize::try_from(peak).unwrap_or(usize::MAX),
        })
    } else {
        Ok(())
    }
}

/// Stands in for a key in `Debug` output.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("at", &self.at)
            .field("wall", &self.wall)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("key", &self.key.as_ref().map(|_| Redacted))
            .field("account", &self.account)
            .field("model", &self.model)
            .field("status", &self.status)
            .field("outcome", &self.outcome)
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .finish()
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("seq", &self.seq)
            .field("at", &self.at)
            .field("wall", &self.wall)
            .field("account", &self.account)
            .field("key", &Redacted)
            .field("model", &self.model)
            .field("free", &self.free)
            .field("tokens", &self.tokens)
            .field("done", &self.done)
            .finish()
    }
}

/// Admissions of `account` at `times` (paid models, no tokens): for tests of the checks.
#[cfg(test)]
pub(crate) fn admissions_at(account: &str, times: &[Instant]) -> Vec<Admission> {
    let wall = std::time::UNIX_EPOCH;
    times
        .iter()
        .enumerate()
        .map(|(seq, &at)| Admission {
            seq: seq as u64,
            at,
            wall,
            account: account.to_string(),
            key: String::new(),
            model: String::new(),
            free: false,
            tokens: Tokens::default(),
            done: at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_overdrawn_is_a_violation() {
        let limit = Limit::bucket(crate::sim::Models::All, 2, Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Two at once, a third once one token is back (1 s), a fourth 1 s later: fits.
        let fits = admissions_at("a", &[at(0), at(0), at(1000), at(2000)]);
        assert!(check_limit("a", &limit, &fits, &[]).is_ok());
        // A third 1 ns early overdraws it.
        let early = admissions_at("a", &[at(0), at(0), at(1000) - Duration::from_nanos(1)]);
        let e = check_limit("a", &limit, &early, &[]).unwrap_err();
        assert_eq!((e.allowed, e.admitted), (2, 3));
    }

    #[test]
    fn window_maximum() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [at(0), at(100), at(999), at(1000), at(1500), at(1999)];
        // [0, 1000) holds 3; [999, 1999) holds 3; [1000, 2000) holds 3.
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 3);
        assert_eq!(max_in_window(&times, Duration::from_millis(1001)), 4);
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
    }
}
