//! The value parsers: `parse_delay_seconds`, `parse_go_duration`, `parse_rfc3339`, and
//! `retry_after` on HTTP-dates, each on arbitrary text (never a panic, never above
//! `MAX_DELAY`) and on well-formed values written from a known answer (the answer comes back).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tower_quota::headers::{
    self, parse_delay_seconds, parse_go_duration, parse_rfc3339, MAX_DELAY,
};
use tower_quota_fuzz::{civil, http_date, rfc3339, Now};

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text, to every parser.
    Text(String),
    /// `whole.frac` seconds, `frac` given as digits.
    Seconds {
        whole: u64,
        frac: Vec<u8>,
        pad: bool,
    },
    /// A Go duration from `(amount, unit)` pairs, units h, m, s, ms, us, µs, μs, ns.
    Go(Vec<(u32, u8, Option<u16>)>),
    /// An RFC 3339 timestamp.
    Rfc3339 {
        at: Now,
        digits: u8,
        tz_minutes: i16,
        lower: bool,
    },
    /// An HTTP-date `offset` seconds from `now`, as a `Retry-After`.
    HttpDate { now: Now, offset: i32, form: u8 },
}

const UNITS: [(&str, u128); 8] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ns", 1),
];

fn saturating(nanos: u128) -> Duration {
    if nanos >= MAX_DELAY.as_nanos() {
        MAX_DELAY
    } else {
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }
}

fn bounded(d: Option<Duration>) {
    assert!(d.is_none_or(|d| d <= MAX_DELAY), "{d:?}");
}

fuzz_target!(|data: &[u8]| {
    // The bytes as text, to every parser (the seeds are values as servers send them), then
    // as a structured input.
    if let Ok(s) = std::str::from_utf8(data) {
        for line in s.lines() {
            text(line);
        }
    }
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        structured(input);
    }
});

fn text(s: &str) {
    bounded(parse_delay_seconds(s));
    bounded(parse_go_duration(s));
    let _ = parse_rfc3339(s);
    if let Ok(v) = http::HeaderValue::from_str(s) {
        let mut map = http::HeaderMap::new();
        map.insert("retry-after", v);
        bounded(headers::retry_after(&map, SystemTime::now()));
    }
}

fn structured(input: Input) {
    match input {
        Input::Text(s) => {
            bounded(parse_delay_seconds(&s));
            bounded(parse_go_duration(&s));
            let _ = parse_rfc3339(&s);
            if let Ok(v) = http::HeaderValue::from_str(&s) {
                let mut map = http::HeaderMap::new();
                map.insert("retry-after", v);
                bounded(headers::retry_after(&map, SystemTime::now()));
            }
        }
        Input::Seconds { whole, frac, pad } => {
            let frac: String = frac
                .iter()
                .take(30)
                .map(|d| char::from(b'0' + d % 10))
                .collect();
            let mut text = format!("{whole}.{frac}");
            if pad {
                text = format!(" \t{text} ");
            }
            // Fraction digits past the ninth are below a nanosecond.
            let nanos: u128 = format!("{:0<9}", &frac[..frac.len().min(9)])
                .parse()
                .unwrap();
            let expected = saturating(u128::from(whole) * 1_000_000_000 + nanos);
            assert_eq!(parse_delay_seconds(&text), Some(expected), "{text}");
            assert_eq!(parse_go_duration(&text), Some(expected), "{text}");
        }
        Input::Go(parts) => {
            if parts.is_empty() {
                return;
            }
            let mut text = String::new();
            let mut nanos: u128 = 0;
            for (amount, unit, frac) in parts.iter().take(10) {
                let (name, unit_nanos) = UNITS[usize::from(*unit) % UNITS.len()];
                text.push_str(&amount.to_string());
                nanos = nanos.saturating_add(u128::from(*amount) * unit_nanos);
                if let Some(f) = frac {
                    // A fraction of up to four digits.
                    let f = f % 10_000;
                    text.push_str(&format!(".{f:04}"));
                    nanos = nanos.saturating_add(u128::from(f) * unit_nanos / 10_000);
                }
                text.push_str(name);
            }
            assert_eq!(parse_go_duration(&text), Some(saturating(nanos)), "{text}");
        }
        Input::Rfc3339 {
            at,
            digits,
            tz_minutes,
            lower,
        } => {
            let t = at.time();
            let since = t.duration_since(UNIX_EPOCH).unwrap();
            // A local time before the epoch is not written.
            let tz = i64::from(tz_minutes % (24 * 60));
            if tz < 0 && since.as_secs() < tz.unsigned_abs() * 60 {
                return;
            }
            let text = rfc3339(t, at.1, digits, tz_minutes, lower);
            let kept = u32::from(digits % 10);
            let nanos = at.1 % 1_000_000_000;
            let nanos = nanos - nanos % 10u32.pow(9 - kept);
            let expected = UNIX_EPOCH + Duration::new(since.as_secs(), nanos);
            assert_eq!(parse_rfc3339(&text), Some(expected), "{text}");
        }
        Input::HttpDate { now, offset, form } => {
            let now = now.time();
            let at = if offset >= 0 {
                now + Duration::from_secs(offset.unsigned_abs().into())
            } else {
                now.checked_sub(Duration::from_secs(offset.unsigned_abs().into()))
                    .unwrap_or(UNIX_EPOCH)
                    .max(UNIX_EPOCH)
            };
            let (year, ..) = civil(at);
            // Two-digit years (RFC 850) are read in 1970..=2069.
            if form % 3 == 1 && !(1970..=2069).contains(&year) || year > 9999 {
                return;
            }
            let text = http_date(at, form);
            let mut map = http::HeaderMap::new();
            map.insert("retry-after", text.parse().unwrap());
            let whole =
                UNIX_EPOCH + Duration::from_secs(at.duration_since(UNIX_EPOCH).unwrap().as_secs());
            let expected = whole.duration_since(now).unwrap_or_default().min(MAX_DELAY);
            assert_eq!(headers::retry_after(&map, now), Some(expected), "{text}");
        }
    }
}
