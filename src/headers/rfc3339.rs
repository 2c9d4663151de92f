//! RFC 3339 timestamps, as Anthropic sends in `anthropic-ratelimit-*-reset`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::number::trim_ows;

/// Parses an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, e.g.
/// `2024-05-01T12:00:30Z` or `2024-05-01T14:00:30.250+02:00`. `T` and `Z` may be lowercase
/// and `T` a space (RFC 3339 §5.6 note); a leap second (`:60`) is read as the next second.
/// Invalid dates (`2023-02-29`), out-of-range fields and anything else give `None`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_quota::headers::parse_rfc3339;
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_714_564_830);
/// assert_eq!(parse_rfc3339("2024-05-01T12:00:30Z"), Some(t));
/// assert_eq!(parse_rfc3339("2024-05-01T14:00:30+02:00"), Some(t));
/// assert_eq!(parse_rfc3339("2024-05-01T12:00:30.5Z"), Some(t + Duration::from_millis(500)));
/// assert_eq!(parse_rfc3339("2023-02-29T00:00:00Z"), None);
/// ```
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    rfc3339(value.as_bytes())
}

/// [`parse_rfc3339`] on bytes.
pub(crate) fn rfc3339(value: &[u8]) -> Option<SystemTime> {
    let s = trim_ows(value);
    if s.len() < 20 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let [y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1] = *date else {
        return None;
    };
    let [b'T' | b't' | b' ', h0, h1, b':', mi0, mi1, b':', s0, s1, ref rest @ ..] = *rest else {
        return None;
    };
    let year = i64::from(digits(&[y0, y1, y2, y3])?);
    let month = digits(&[mo0, mo1])?;
    let day = digits(&[d0, d1])?;
    let hour = digits(&[h0, h1])?;
    let minute = digits(&[mi0, mi1])?;
    let second = digits(&[s0, s1])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let (nanos, rest) = match rest {
        [b'.', frac @ ..] => {
            let len = frac.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return None;
            }
            // Nanosecond precision: further digits are ignored.
            let kept = len.min(9);
            let scale = 10u32.pow(9 - kept as u32);
            (digits(&frac[..kept])? * scale, &frac[len..])
        }
        _ => (0, rest),
    };

    let offset: i64 = match *rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh0, oh1, b':', om0, om1] => {
            let (oh, om) = (digits(&[oh0, oh1])?, digits(&[om0, om1])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = i64::from(oh * 60 + om) * 60;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second) - offset;
    let sub = Duration::from_nanos(u64::from(nanos));
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()) + sub)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(sub)
    }
}

/// The value of ASCII decimal digits.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, the inverse of [`days_from_civil`]): `(year, month, day)`. The
/// simulator writes its dates with it.
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64, nanos: u64) -> SystemTime {
        let base = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        base + Duration::from_nanos(nanos)
    }

    #[test]
    fn table() {
        let table: &[(&str, Option<SystemTime>)] = &[
            ("1970-01-01T00:00:00Z", Some(at(0, 0))),
            ("2024-05-01T12:00:30Z", Some(at(1_714_564_830, 0))),
            ("2024-05-01t12:00:30z", Some(at(1_714_564_830, 0))),
            ("2024-05-01 12:00:30Z", Some(at(1_714_564_830, 0))),
            ("2024-05-01T14:00:30+02:00", Some(at(1_714_564_830, 0))),
            ("2024-05-01T06:30:30-05:30", Some(at(1_714_564_830, 0))),
            (
                "2024-05-01T12:00:30.5Z",
                Some(at(1_714_564_830, 500_000_000)),
            ),
            (
                "2024-05-01T12:00:30.123456789Z",
                Some(at(1_714_564_830, 123_456_789)),
            ),
            (
                "2024-05-01T12:00:30.1234567891234Z",
                Some(at(1_714_564_830, 123_456_789)),
            ),
            ("2024-02-29T00:00:00Z", Some(at(1_709_164_800, 0))),
            ("2000-02-29T00:00:00Z", Some(at(951_782_400, 0))),
            ("1969-12-31T23:59:59Z", Some(at(-1, 0))),
            ("2016-12-31T23:59:60Z", Some(at(1_483_228_800, 0))),
            ("9999-12-31T23:59:59Z", Some(at(253_402_300_799, 0))),
            (" 2024-05-01T12:00:30Z ", Some(at(1_714_564_830, 0))),
            ("2023-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2024-04-31T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-00-01T00:00:00Z", None),
            ("2024-05-00T00:00:00Z", None),
            ("2024-05-01T24:00:00Z", None),
            ("2024-05-01T12:60:00Z", None),
            ("2024-05-01T12:00:61Z", None),
            ("2024-05-01T12:00:30", None),
            ("2024-05-01T12:00:30.Z", None),
            ("2024-05-01T12:00:30+0200", None),
            ("2024-05-01T12:00:30+24:00", None),
            ("2024-05-01T12:00:30ZZ", None),
            ("2024-5-1T12:00:30Z", None),
            ("+2024-05-01T12:00:30Z", None),
            ("2024-05-01", None),
            ("", None),
            ("Wed, 01 May 2024 12:00:30 GMT", None),
            ("2024-05-01T12:00:30Zé", None),
        ];
        for &(input, want) in table {
            assert_eq!(parse_rfc3339(input), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = rfc3339(&bytes);
        }

        #[test]
        fn matches_httpdate(secs in 0u64..253_402_300_799) {
            // httpdate formats any time in its range; compare the calendar arithmetic.
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let http = httpdate::fmt_http_date(t);
            let (d, mon, y, hms) = (&http[5..7], &http[8..11], &http[12..16], &http[17..25]);
            let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                       "Nov", "Dec"].iter().position(|m| *m == mon).unwrap() + 1;
            let text = format!("{y}-{mon:02}-{d}T{hms}Z");
            prop_assert_eq!(parse_rfc3339(&text), Some(t));
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 1, 10_956, 11_016, 20_414, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
