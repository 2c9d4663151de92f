//! Go duration strings (`time.Duration.String()`), as OpenAI and LiteLLM send in
//! `x-ratelimit-reset-*`: `6m0s`, `1h2m3.5s`, `12ms`, `500µs`.

use std::time::Duration;

use super::number::{decimal_nanos, saturating_duration, trim_ows, NANOS_PER_SEC};

/// Parses a Go duration string: a sequence of decimal numbers each followed by a unit
/// (`h`, `m`, `s`, `ms`, `us`, `µs`, `μs`, `ns`), e.g. `6m0s`, `1h2m3.5s`, `12ms`. A leading
/// `+` is accepted and a bare number is read as seconds (`"20"`, `"1.5"`); negative
/// durations, missing units and unknown units are rejected. Surrounding whitespace is
/// allowed; huge values saturate at [`MAX_DELAY`](super::MAX_DELAY).
///
/// ```
/// use std::time::Duration;
/// use tower_quota::headers::parse_go_duration;
///
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
/// assert_eq!(parse_go_duration("500µs"), Some(Duration::from_micros(500)));
/// assert_eq!(parse_go_duration("20"), Some(Duration::from_secs(20)));
/// assert_eq!(parse_go_duration("-1s"), None);
/// assert_eq!(parse_go_duration("1h30"), None);
/// ```
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    go_duration(value.as_bytes())
}

/// [`parse_go_duration`] on bytes.
pub(crate) fn go_duration(value: &[u8]) -> Option<Duration> {
    let s = match trim_ows(value) {
        [b'+', rest @ ..] => rest,
        s => s,
    };
    if s.is_empty() {
        return None;
    }
    // A bare number: seconds.
    if let Some(nanos) = decimal_nanos(s, NANOS_PER_SEC) {
        return Some(saturating_duration(nanos));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .iter()
            .position(|&b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .iter()
            .position(|&b| b.is_ascii_digit() || b == b'.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos = match unit {
            b"h" => 3_600 * NANOS_PER_SEC,
            b"m" => 60 * NANOS_PER_SEC,
            b"s" => NANOS_PER_SEC,
            b"ms" => 1_000_000,
            // "us", "µs" (U+00B5 micro sign), "μs" (U+03BC Greek mu).
            b"us" | b"\xC2\xB5s" | b"\xCE\xBCs" => 1_000,
            b"ns" => 1,
            _ => return None,
        };
        total = total.saturating_add(decimal_nanos(num, unit_nanos)?);
        rest = tail;
    }
    Some(saturating_duration(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::MAX_DELAY;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let ms = Duration::from_millis;
        let table: &[(&str, Option<Duration>)] = &[
            ("1s", Some(ms(1_000))),
            ("6m0s", Some(ms(360_000))),
            ("12ms", Some(ms(12))),
            ("1h2m3.5s", Some(ms(3_723_500))),
            ("0s", Some(Duration::ZERO)),
            ("0", Some(Duration::ZERO)),
            ("500us", Some(Duration::from_micros(500))),
            ("500µs", Some(Duration::from_micros(500))),
            ("500μs", Some(Duration::from_micros(500))),
            ("250ns", Some(Duration::from_nanos(250))),
            ("1.5s", Some(ms(1_500))),
            ("1.5m", Some(ms(90_000))),
            (".5s", Some(ms(500))),
            ("1.s", Some(ms(1_000))),
            ("+2s", Some(ms(2_000))),
            ("20", Some(ms(20_000))),
            ("1.25", Some(ms(1_250))),
            (" 3s ", Some(ms(3_000))),
            ("2h0m0s", Some(ms(7_200_000))),
            ("1s500ms", Some(ms(1_500))),
            ("99999999999999999999h", Some(MAX_DELAY)),
            ("8761h", Some(MAX_DELAY)),
            ("", None),
            ("s", None),
            ("1", Some(ms(1_000))),
            ("1h30", None),
            ("-1s", None),
            ("-0s", None),
            ("1d", None),
            ("1 s", None),
            ("1S", None),
            ("..s", None),
            ("1e3s", None),
            ("NaN", None),
            ("inf", None),
        ];
        for &(input, want) in table {
            assert_eq!(parse_go_duration(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(h in 0u64..8_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000,
                       us in 0u64..1000) {
            let want = Duration::from_secs((h * 60 + m) * 60 + s) + Duration::from_millis(ms);
            let spelled = format!("{h}h{m}m{s}s{ms}ms");
            prop_assert_eq!(parse_go_duration(&spelled), Some(want));
            // Go's own `String()` form: fractional seconds.
            let go = format!("{h}h{m}m{s}.{ms:03}{us:03}s");
            prop_assert_eq!(parse_go_duration(&go), Some(want + Duration::from_micros(us)));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(d) = go_duration(&bytes) {
                prop_assert!(d <= MAX_DELAY);
            }
        }
    }
}
