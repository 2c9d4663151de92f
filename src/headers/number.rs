//! Numbers in header values: unsigned decimals scaled to a time unit, counts, and the
//! epoch-or-delay reset values told apart by magnitude.
//!
//! Everything works on bytes (no UTF-8 check, no allocation) and saturates instead of
//! overflowing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MAX_DELAY;

pub(crate) const NANOS_PER_MILLI: u64 = 1_000_000;
pub(crate) const NANOS_PER_SEC: u64 = 1_000_000_000;

/// [`MAX_DELAY`] in nanoseconds.
const MAX_DELAY_NANOS: u128 = MAX_DELAY.as_nanos();

/// Reset values at or above this many seconds are Unix epoch milliseconds (year 5138 in
/// seconds, 1973 in milliseconds).
const EPOCH_MILLIS_THRESHOLD: u128 = 100_000_000_000;
/// Reset values at or above this many seconds are Unix epoch seconds (2001-09-09).
const EPOCH_SECONDS_THRESHOLD: u128 = 1_000_000_000;

/// Strips HTTP optional whitespace (spaces and tabs) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses an unsigned decimal `digits[.digits]` (either side may be empty, not both; no
/// sign, no exponent, no whitespace) as a count of `unit_nanos`, in nanoseconds.
///
/// Saturates at `u128::MAX` instead of overflowing; fractional digits beyond the 18th are
/// checked but ignored.
pub(crate) fn decimal_nanos(s: &[u8], unit_nanos: u64) -> Option<u128> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &[][..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut whole: u128 = 0;
    for &b in int {
        if !b.is_ascii_digit() {
            return None;
        }
        whole = whole
            .saturating_mul(10)
            .saturating_add(u128::from(b - b'0'));
    }
    let (mut num, mut den): (u64, u64) = (0, 1);
    for &b in frac {
        if !b.is_ascii_digit() {
            return None;
        }
        if den < 1_000_000_000_000_000_000 {
            num = num * 10 + u64::from(b - b'0');
            den *= 10;
        }
    }
    let unit = u128::from(unit_nanos);
    Some(
        whole
            .saturating_mul(unit)
            .saturating_add(u128::from(num) * unit / u128::from(den)),
    )
}

/// A duration from nanoseconds, saturating at [`MAX_DELAY`].
pub(crate) fn saturating_duration(nanos: u128) -> Duration {
    if nanos >= MAX_DELAY_NANOS {
        return MAX_DELAY;
    }
    // Below MAX_DELAY_NANOS, so both parts fit.
    let secs = (nanos / u128::from(NANOS_PER_SEC)) as u64;
    let sub = (nanos % u128::from(NANOS_PER_SEC)) as u32;
    Duration::new(secs, sub)
}

/// A non-negative decimal count of `unit_nanos` (surrounding whitespace allowed) as a
/// duration, saturating at [`MAX_DELAY`].
pub(crate) fn decimal_duration(value: &[u8], unit_nanos: u64) -> Option<Duration> {
    decimal_nanos(trim_ows(value), unit_nanos).map(saturating_duration)
}

/// Parses delay-seconds: a non-negative number of seconds, fractional tolerated (`"1.5"`),
/// surrounding whitespace allowed. Signs, exponents, `NaN` and `inf` are rejected; huge
/// values saturate at [`MAX_DELAY`].
///
/// ```
/// use std::time::Duration;
/// use tower_quota::headers::{parse_delay_seconds, MAX_DELAY};
///
/// assert_eq!(parse_delay_seconds("30"), Some(Duration::from_secs(30)));
/// assert_eq!(parse_delay_seconds(" 1.5 "), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_delay_seconds("99999999999999999999"), Some(MAX_DELAY));
/// assert_eq!(parse_delay_seconds("-1"), None);
/// assert_eq!(parse_delay_seconds("1e3"), None);
/// ```
pub fn parse_delay_seconds(value: &str) -> Option<Duration> {
    decimal_duration(value.as_bytes(), NANOS_PER_SEC)
}

/// A non-negative integer (surrounding whitespace allowed), saturating at `u64::MAX`.
pub(crate) fn parse_u64(value: &[u8]) -> Option<u64> {
    let s = trim_ows(value);
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(n)
}

/// A remaining count: a non-negative integer, or a negative one read as zero.
pub(crate) fn parse_remaining(value: &[u8]) -> Option<u64> {
    match trim_ows(value) {
        [b'-', digits @ ..] => parse_u64(digits).map(|_| 0),
        s => parse_u64(s),
    }
}

/// The time from `now` until `at`: zero when already past, saturating at [`MAX_DELAY`].
pub(crate) fn until(now: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(now)
        .map_or(Duration::ZERO, |d| d.min(MAX_DELAY))
}

/// A reset value told apart by magnitude: at least 1e11 is Unix epoch milliseconds (what
/// OpenRouter sends), at least 1e9 is Unix epoch seconds (Envoy, GitHub), anything smaller is
/// delay-seconds. Fractions are tolerated; the result is the delay from `now`.
pub(crate) fn epoch_or_delay(value: &[u8], now: SystemTime) -> Option<Duration> {
    let nanos = decimal_nanos(trim_ows(value), NANOS_PER_SEC)?;
    let secs = nanos / u128::from(NANOS_PER_SEC);
    let since_epoch = if secs >= EPOCH_MILLIS_THRESHOLD {
        nanos / 1000
    } else if secs >= EPOCH_SECONDS_THRESHOLD {
        nanos
    } else {
        return Some(saturating_duration(nanos));
    };
    let secs = u64::try_from(since_epoch / u128::from(NANOS_PER_SEC)).unwrap_or(u64::MAX);
    let sub = (since_epoch % u128::from(NANOS_PER_SEC)) as u32;
    Some(
        UNIX_EPOCH
            .checked_add(Duration::new(secs, sub))
            .map_or(MAX_DELAY, |at| until(now, at)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        let s = NANOS_PER_SEC;
        let table: &[(&str, Option<u128>)] = &[
            ("0", Some(0)),
            ("30", Some(30 * 1_000_000_000)),
            ("1.5", Some(1_500_000_000)),
            ("1.", Some(1_000_000_000)),
            (".25", Some(250_000_000)),
            ("0.000000001", Some(1)),
            ("0.0000000001", Some(0)),
            ("", None),
            (".", None),
            ("-1", None),
            ("-0", None),
            ("+1", None),
            ("1e3", None),
            ("NaN", None),
            ("inf", None),
            ("1.2.3", None),
            ("1 2", None),
            ("0x10", None),
        ];
        for &(input, want) in table {
            assert_eq!(decimal_nanos(input.as_bytes(), s), want, "{input:?}");
        }
        assert_eq!(
            decimal_nanos(b"99999999999999999999999999999999999999999", s),
            Some(u128::MAX)
        );
    }

    #[test]
    fn delay_seconds() {
        let table: &[(&str, Option<Duration>)] = &[
            ("120", Some(Duration::from_secs(120))),
            ("  7\t", Some(Duration::from_secs(7))),
            ("0.5", Some(Duration::from_millis(500))),
            ("99999999999999999999", Some(MAX_DELAY)),
            ("31536001", Some(MAX_DELAY)),
            ("31535999", Some(Duration::from_secs(31_535_999))),
            ("", None),
            ("   ", None),
            ("-5", None),
            ("soon", None),
        ];
        for &(input, want) in table {
            assert_eq!(parse_delay_seconds(input), want, "{input:?}");
        }
    }

    #[test]
    fn counts() {
        let table: &[(&[u8], Option<u64>, Option<u64>)] = &[
            (b"100", Some(100), Some(100)),
            (b" 0 ", Some(0), Some(0)),
            (b"-3", None, Some(0)),
            (b"-0", None, Some(0)),
            (b"-", None, None),
            (b"1.5", None, None),
            (b"", None, None),
            (b"abc", None, None),
            (b"\xff\xfe", None, None),
            (b"99999999999999999999999", Some(u64::MAX), Some(u64::MAX)),
        ];
        for &(input, limit, remaining) in table {
            assert_eq!(parse_u64(input), limit, "{input:?}");
            assert_eq!(parse_remaining(input), remaining, "{input:?}");
        }
    }

    #[test]
    fn epoch_or_delay_by_magnitude() {
        let now = UNIX_EPOCH + Duration::from_secs(1_732_200_000);
        let table: &[(&str, Option<Duration>)] = &[
            // OpenRouter: next UTC midnight in epoch milliseconds.
            ("1732233600000", Some(Duration::from_secs(33_600))),
            ("1732233600500", Some(Duration::from_millis(33_600_500))),
            // Envoy / GitHub: epoch seconds.
            ("1732200060", Some(Duration::from_secs(60))),
            ("1732200060.25", Some(Duration::from_millis(60_250))),
            // Past epochs are "now".
            ("1732199000", Some(Duration::ZERO)),
            ("1732199000000", Some(Duration::ZERO)),
            // Delay-seconds.
            ("30", Some(Duration::from_secs(30))),
            ("0.5", Some(Duration::from_millis(500))),
            ("999999999", Some(MAX_DELAY)),
            // Absurd epochs saturate.
            ("99999999999999999999999999", Some(MAX_DELAY)),
            ("-1", None),
            ("", None),
            ("tomorrow", None),
        ];
        for &(input, want) in table {
            assert_eq!(epoch_or_delay(input.as_bytes(), now), want, "{input:?}");
        }
    }
}
