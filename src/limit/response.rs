//! Turning a [`RateLimited`] into the `429` a gateway answers: `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10).
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 12
//! ratelimit-policy: "minute";q=20;w=60, "utc-day";q=50;w=86400
//! ratelimit: "minute";r=0;t=12, "utc-day";r=31
//! ```

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;

use super::error::RateLimited;
use super::limiter::{Limiter, Snapshot};
use super::quota::{Quota, Window};
use super::store::StoreError;
use crate::headers::Dimension;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl RateLimited {
    /// The quotas of the tier that limited the request, in order.
    pub fn quotas(&self) -> &[Quota] {
        self.tier.quotas()
    }

    /// The state of the limited key's windows under the tier that limited it (one store
    /// read), for [`headers`](Self::headers): the error alone does not say which window is
    /// full nor what is left of the others.
    pub async fn snapshot(&self, limiter: &Limiter) -> Result<Snapshot, StoreError> {
        limiter.snapshot_with(self.key, &self.tier).await
    }

    /// The fields that tell a client when to come back:
    ///
    /// - `Retry-After`: the error's [`retry_after`](Self::retry_after) in whole seconds,
    ///   rounded up (else the latest time the snapshot's full windows or block free up;
    ///   absent when neither is known);
    /// - `RateLimit-Policy`: one item per quota of the tier, `"<name>";q=<limit>;w=<window
    ///   in seconds>` — with a snapshot the limit in force (a learned limit replaces the
    ///   configured one);
    /// - `RateLimit` (only with a snapshot): one item per quota, `"<name>";r=<remaining>`,
    ///   and `;t=<seconds until one more unit fits>` for a window that is full (or when the
    ///   key is blocked, which leaves nothing remaining in any window).
    ///
    /// Names come from the window: `second`, `minute`, `hour`, `day` (rolling),
    /// `utc-hour`, `utc-day` (calendar), else the length (`90s`, `utc-7200s`); a weighted
    /// quota adds its dimension (`minute-tokens`). Seconds are rounded up, so a client that
    /// waits them is never early.
    ///
    /// ```
    /// use tower_quota::{Quota, Tier};
    /// use tower_quota::limit::{AcquireError, Key, Limiter, Mode};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = Limiter::new(Tier::new("t").with_quota(Quota::per_minute(1)))
    ///     .with_mode(Mode::Reject);
    /// limiter.acquire(Key::of("k"), 1).await.unwrap();
    /// let Err(AcquireError::RateLimited(e)) = limiter.acquire(Key::of("k"), 1).await else {
    ///     panic!("the second request is over the quota");
    /// };
    /// let snap = e.snapshot(&limiter).await.unwrap();
    /// let h = e.headers(Some(&snap));
    /// assert_eq!(h["retry-after"], "60");
    /// assert_eq!(h["ratelimit-policy"], r#""minute";q=1;w=60"#);
    /// assert_eq!(h["ratelimit"], r#""minute";r=0;t=60"#);
    /// # }
    /// ```
    pub fn headers(&self, snapshot: Option<&Snapshot>) -> HeaderMap {
        fields(self, snapshot, Instant::now())
    }

    /// A `429 Too Many Requests` with [`headers`](Self::headers) and `body`.
    pub fn to_response<B>(&self, snapshot: Option<&Snapshot>, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        *response.headers_mut() = self.headers(snapshot);
        response
    }
}

fn fields(e: &RateLimited, snapshot: Option<&Snapshot>, now: Instant) -> HeaderMap {
    let quotas = e.quotas();
    let mut h = HeaderMap::new();

    let blocked = snapshot.and_then(|s| s.blocked_until).filter(|&t| t > now);
    let retry_after = e.retry_after().or_else(|| {
        let s = snapshot?;
        let full = s
            .windows
            .iter()
            .filter(|w| w.remaining == 0)
            .map(|w| w.next_free);
        full.chain(blocked)
            .max()
            .map(|t| t.saturating_duration_since(now))
    });
    if let Some(d) = retry_after {
        h.insert(RETRY_AFTER, secs_value(ceil_secs(d)));
    }

    // The limits in force: the configured ones (the tier's field, made once) unless a
    // snapshot shows a learned limit.
    let limits = |i: usize, q: &Quota| {
        snapshot
            .and_then(|s| s.windows.get(i))
            .map_or(q.limit(), |w| w.limit)
    };
    let configured = quotas
        .iter()
        .enumerate()
        .all(|(i, q)| limits(i, q) == q.limit());
    let policy = if configured {
        e.tier
            .policy_field(|quotas| policy_field(quotas, |_, q| q.limit()))
    } else {
        policy_field(quotas, limits)
    };
    if let Some(v) = policy {
        h.insert(RATELIMIT_POLICY, v);
    }

    if let Some(s) = snapshot {
        let names = names(quotas);
        let state: Vec<String> = s
            .windows
            .iter()
            .zip(&names)
            .map(|(w, name)| {
                let full = w.remaining == 0 || blocked.is_some();
                if full {
                    let next = blocked.map_or(w.next_free, |b| b.max(w.next_free));
                    let t = ceil_secs(next.saturating_duration_since(now));
                    format!("\"{name}\";r=0;t={t}")
                } else {
                    format!("\"{name}\";r={}", w.remaining)
                }
            })
            .collect();
        if let Some(v) = join(&state) {
            h.insert(RATELIMIT, v);
        }
    }
    h
}

/// `RateLimit-Policy`: `"<name>";q=<limit>;w=<window in seconds>` per quota, with the
/// limit `limit` gives the `i`th quota.
fn policy_field(quotas: &[Quota], limit: impl Fn(usize, &Quota) -> u64) -> Option<HeaderValue> {
    let names = names(quotas);
    let items: Vec<String> = quotas
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let secs = ceil_secs(q.window().length());
            format!("\"{}\";q={};w={secs}", names[i], limit(i, q))
        })
        .collect();
    join(&items)
}

fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    // Names are ASCII made here, numbers are digits: always a valid header value.
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// The most seconds [`secs_value`] takes from its table.
const TABLE_SECS: usize = 3600;

/// The decimal digits of 0 to [`TABLE_SECS`], one after the other.
static DIGITS: ([u8; digits_len(TABLE_SECS)], [u16; TABLE_SECS + 2]) = digits();

/// The bytes the decimals of 0 ..= `max` take.
const fn digits_len(max: usize) -> usize {
    let (mut n, mut len) = (0, 0);
    while n <= max {
        len += decimal_len(n);
        n += 1;
    }
    len
}

const fn decimal_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// [`DIGITS`]: the decimals, and where each starts (the last entry: the end).
const fn digits() -> ([u8; digits_len(TABLE_SECS)], [u16; TABLE_SECS + 2]) {
    let mut bytes = [0u8; digits_len(TABLE_SECS)];
    let mut starts = [0u16; TABLE_SECS + 2];
    let (mut n, mut at) = (0, 0);
    while n <= TABLE_SECS {
        starts[n] = at as u16;
        let len = decimal_len(n);
        let (mut i, mut v) = (len, n);
        while i > 0 {
            bytes[at + i - 1] = b'0' + (v % 10) as u8;
            v /= 10;
            i -= 1;
        }
        at += len;
        n += 1;
    }
    starts[TABLE_SECS + 1] = at as u16;
    (bytes, starts)
}

/// `secs` as a header value: from a static table up to an hour (a `429` under a flood of
/// refusals allocates nothing for it), formatted beyond.
fn secs_value(secs: u64) -> HeaderValue {
    match usize::try_from(secs) {
        Ok(n) if n <= TABLE_SECS => {
            let (bytes, starts) = &DIGITS;
            let digits = &bytes[usize::from(starts[n])..usize::from(starts[n + 1])];
            // ASCII digits: always a valid value.
            HeaderValue::from_maybe_shared(bytes::Bytes::from_static(digits))
                .unwrap_or_else(|_| HeaderValue::from(secs))
        }
        _ => HeaderValue::from(secs),
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A distinct policy name per quota.
fn names(quotas: &[Quota]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(quotas.len());
    for q in quotas {
        let mut name = window_name(q.window());
        match q.dimension() {
            Dimension::Requests => {}
            Dimension::Tokens => name.push_str("-tokens"),
            Dimension::InputTokens => name.push_str("-input-tokens"),
            Dimension::OutputTokens => name.push_str("-output-tokens"),
            Dimension::Named(n) => {
                name.push('-');
                name.extend(
                    n.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }),
                );
            }
        }
        if names.contains(&name) {
            name = format!("{name}-{}", names.len());
        }
        names.push(name);
    }
    names
}

fn window_name(window: Window) -> String {
    let secs = ceil_secs(window.length());
    match (window, secs) {
        (Window::Calendar(_), 3600) => "utc-hour".into(),
        (Window::Calendar(_), 86_400) => "utc-day".into(),
        (Window::Calendar(_), s) => format!("utc-{s}s"),
        (_, 1) if window.length() == Duration::from_secs(1) => "second".into(),
        (_, 60) if window.length() == Duration::from_secs(60) => "minute".into(),
        (_, 3600) if window.length() == Duration::from_secs(3600) => "hour".into(),
        (_, 86_400) if window.length() == Duration::from_secs(86_400) => "day".into(),
        _ => {
            let d = window.length();
            if d.subsec_nanos() == 0 {
                format!("{secs}s")
            } else {
                format!("{}ms", d.as_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::headers::{Dimension, RateLimitInfo};
    use crate::limit::{AcquireError, Key, Mode};
    use crate::Tier;

    #[test]
    fn seconds_from_the_table_and_beyond_are_their_decimals() {
        for n in (0..=TABLE_SECS as u64 + 2).chain([86_400, u64::MAX]) {
            assert_eq!(secs_value(n), n.to_string().as_str(), "{n}");
        }
    }

    fn limited(r: Result<(), AcquireError>) -> RateLimited {
        match r {
            Err(AcquireError::RateLimited(e)) => e,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_minute_and_a_daily_quota_with_room() {
        let tier = Tier::new("gw")
            .with_quota(Quota::per_minute(3))
            .with_quota(Quota::per_utc_day(10));
        let limiter = Limiter::new(tier).with_mode(Mode::Reject);
        let key = Key::of("sk-a");
        for _ in 0..3 {
            limiter.acquire(key, 1).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        // 7.5 s after the first admission: it leaves the minute 52.5 s from now.
        let e = limited(limiter.acquire(key, 1).await);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(52_500)));
        let snap = e.snapshot(&limiter).await.unwrap();

        let h = e.headers(Some(&snap));
        assert_eq!(h["retry-after"], "53");
        assert_eq!(
            h["ratelimit-policy"],
            r#""minute";q=3;w=60, "utc-day";q=10;w=86400"#
        );
        assert_eq!(h["ratelimit"], r#""minute";r=0;t=53, "utc-day";r=7"#);

        // The crate's own parser reads them back.
        let info = RateLimitInfo::from_headers(&h, SystemTime::now());
        let minute = info.get(&Dimension::Named("minute".into())).unwrap();
        assert_eq!(
            (minute.limit, minute.remaining, minute.reset, minute.window),
            (
                Some(3),
                Some(0),
                Some(Duration::from_secs(53)),
                Some(Duration::from_secs(60))
            )
        );
        let day = info.get(&Dimension::Named("utc-day".into())).unwrap();
        assert_eq!((day.limit, day.remaining), (Some(10), Some(7)));

        let resp = e.to_response(Some(&snap), "slow down");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers(), &h);
        assert_eq!(*resp.body(), "slow down");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_snapshot_policy_and_retry_after_only() {
        let limiter =
            Limiter::new(Tier::new("t").with_quota(Quota::new(2, Duration::from_millis(1500))))
                .with_mode(Mode::Reject);
        let key = Key::of("k");
        limiter.acquire(key, 1).await.unwrap();
        limiter.acquire(key, 1).await.unwrap();
        let e = limited(limiter.acquire(key, 1).await);
        let h = e.headers(None);
        assert_eq!(h["retry-after"], "2"); // 1.5 s, rounded up
        assert_eq!(h["ratelimit-policy"], r#""1500ms";q=2;w=2"#);
        assert!(!h.contains_key("ratelimit"));
    }

    /// The configured policy, made once per tier and cloned into every refusal, is the
    /// configured limits' on every key; a snapshot with a learned limit gets a field of its
    /// own, and the next refusal's is the configured one again (the tier's is not replaced).
    #[tokio::test(start_paused = true)]
    async fn a_learned_limit_leaves_the_configured_policy_as_it_was() {
        let tier = Tier::new("t")
            .with_quota(Quota::per_minute(1))
            .with_quota(Quota::per_utc_day(50));
        let limiter = Limiter::new(tier).with_mode(Mode::Reject);
        let configured = r#""minute";q=1;w=60, "utc-day";q=50;w=86400"#;
        for k in 0..64u32 {
            let key = Key::of(&k);
            limiter.acquire(key, 1).await.unwrap();
            let e = limited(limiter.acquire(key, 1).await);
            assert_eq!(e.headers(None)["ratelimit-policy"], configured);
            let mut snap = e.snapshot(&limiter).await.unwrap();
            assert_eq!(e.headers(Some(&snap))["ratelimit-policy"], configured);
            snap.windows[1].limit = 20;
            assert_eq!(
                e.headers(Some(&snap))["ratelimit-policy"],
                r#""minute";q=1;w=60, "utc-day";q=20;w=86400"#
            );
            assert_eq!(e.headers(None)["ratelimit-policy"], configured);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_key_has_nothing_remaining_anywhere() {
        let tier = Tier::new("t").with_quota(Quota::per_second(5));
        let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
        let key = Key::of("k");
        limiter
            .cool_down(key, &tier, Duration::from_secs(30))
            .await
            .unwrap();
        let e = limited(limiter.acquire(key, 1).await);
        let snap = e.snapshot(&limiter).await.unwrap();
        let h = e.headers(Some(&snap));
        assert_eq!(h["retry-after"], "30");
        assert_eq!(h["ratelimit-policy"], r#""second";q=5;w=1"#);
        assert_eq!(h["ratelimit"], r#""second";r=0;t=30"#);
    }

    #[test]
    fn names_are_distinct_and_say_the_window() {
        let quotas = [
            Quota::per_minute(20),
            Quota::per_minute(100_000).with_dimension(Dimension::Tokens),
            Quota::per_hour(1),
            Quota::per_day(1),
            Quota::per_utc_hour(1),
            Quota::new(5, Duration::from_secs(90)),
            Quota::calendar(1, Duration::from_secs(7200)),
            Quota::per_minute(30),
        ];
        assert_eq!(
            names(&quotas),
            [
                "minute",
                "minute-tokens",
                "hour",
                "day",
                "utc-hour",
                "90s",
                "utc-7200s",
                "minute-7"
            ]
        );
    }
}
