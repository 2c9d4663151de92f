//! Small helpers for reading provider error bodies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::headers::MAX_DELAY;

/// Parses an error body as JSON. A top-level array (Gemini's OpenAI-compatible endpoint wraps
/// its error in one) yields its first element. `None` for anything that is not JSON, including
/// JSON cut short by the body cap.
pub(crate) fn parse(body: &[u8]) -> Option<Value> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if !matches!(body[first], b'{' | b'[') {
        return None;
    }
    match serde_json::from_slice::<Value>(&body[first..]).ok()? {
        Value::Array(mut items) if !items.is_empty() => Some(items.swap_remove(0)),
        v @ Value::Object(_) => Some(v),
        _ => None,
    }
}

/// Opens the `{"error": {…}}` object of a provider body: records the API and the message on
/// `c` and returns the object with its message (`""` when it has none).
pub(crate) fn error_object<'a>(
    c: &mut super::Classification,
    v: &'a Value,
    api: &'static str,
) -> Option<(&'a Value, &'a str)> {
    let err = v.get("error").filter(|e| e.is_object())?;
    c.set_api(api);
    let message = str_at(err, "message").unwrap_or("");
    if !message.is_empty() {
        c.set_message(message);
    }
    Some((err, message))
}

/// `v[key]` as a string, when it is one.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// A delay in seconds given as a JSON number or numeric string; saturates at `MAX_DELAY`,
/// `None` when negative or not a number.
pub(crate) fn seconds(v: &Value) -> Option<Duration> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    secs_f64(secs)
}

/// Seconds as `f64` to a duration: `None` when negative or not finite, saturating at `MAX_DELAY`.
pub(crate) fn secs_f64(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(if secs >= MAX_DELAY.as_secs_f64() {
        MAX_DELAY
    } else {
        Duration::from_secs_f64(secs)
    })
}

/// Case-insensitive ASCII substring search.
pub(crate) fn contains_ci(haystack: impl AsRef<[u8]>, needle: &str) -> bool {
    let (h, n) = (haystack.as_ref(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The delay in "… try again in 12 seconds …" / "Please try again in 7m12s." / "retry
/// after 250ms" phrases that routers and APIs put in their messages.
pub(crate) fn delay_in_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    for marker in ["try again in ", "retry after ", "retry in ", "please wait "] {
        let Some(at) = lower.find(marker) else {
            continue;
        };
        let rest = &lower[at + marker.len()..];
        let token = rest
            .split(|ch: char| ch.is_whitespace() || ch == ',' || ch == ')')
            .next()
            .unwrap_or("")
            .trim_end_matches('.');
        // A Go-style duration (`1.5s`, `7m12s`, `20ms`) as OpenAI writes them.
        if token.bytes().any(|b| b.is_ascii_alphabetic()) {
            if let Some(d) = crate::headers::parse_go_duration(token) {
                return Some(d.min(MAX_DELAY));
            }
        }
        // A number and a unit word: `12 seconds`, `2 minutes`, `250 milliseconds`.
        let end = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let Ok(n) = rest[..end].parse::<f64>() else {
            continue;
        };
        let unit = rest[end..].trim_start();
        let secs = if unit.starts_with("ms") || unit.starts_with("milli") {
            n / 1000.0
        } else if unit.starts_with("min") {
            n * 60.0
        } else if unit.starts_with("hour") {
            n * 3600.0
        } else {
            n
        };
        return secs_f64(secs);
    }
    None
}

/// Time from `now` until the next UTC midnight (a full day at exactly midnight).
pub(crate) fn until_next_utc_midnight(now: SystemTime) -> Duration {
    until_next_utc_boundary(now, 86_400)
}

/// The time from `now` to the next boundary of the UTC periods of `period_secs` (a clock
/// minute, a day) counted from the Unix epoch.
pub(crate) fn until_next_utc_boundary(now: SystemTime, period_secs: u64) -> Duration {
    let period = period_secs.max(1);
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into = Duration::new(since.as_secs() % period, since.subsec_nanos());
    Duration::from_secs(period) - into
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_non_json_and_truncated_json() {
        assert!(parse(b"<html>502 Bad Gateway</html>").is_none());
        assert!(parse(b"{\"error\": {\"message\": \"cut").is_none());
        assert!(parse(b"").is_none());
        assert!(parse(b"\"a string\"").is_none());
        assert!(parse(b" \n{\"error\":{}}").is_some());
        assert!(parse(b"[{\"error\":{\"code\":429}}]").is_some());
        assert!(parse(b"\xEF\xBB\xBF{}").is_some());
    }

    #[test]
    fn seconds_saturates_and_rejects_negative() {
        assert_eq!(
            seconds(&serde_json::json!(29)),
            Some(Duration::from_secs(29))
        );
        assert_eq!(
            seconds(&serde_json::json!("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(seconds(&serde_json::json!(-1)), None);
        assert_eq!(seconds(&serde_json::json!(1e300)), Some(MAX_DELAY));
        assert_eq!(seconds(&serde_json::json!(null)), None);
    }

    #[test]
    fn message_delays() {
        let m = "No deployments available for selected model, Try again in 60 seconds. Passed model=gpt-4";
        assert_eq!(delay_in_message(m), Some(Duration::from_secs(60)));
        assert_eq!(
            delay_in_message("Please retry after 250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            delay_in_message("try again in 2 minutes"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(delay_in_message("try again later"), None);
        assert_eq!(delay_in_message(""), None);
    }

    #[test]
    fn midnight() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!(until_next_utc_midnight(t), Duration::from_secs(6_400));
        // A clock minute: 20 s and a half into one, 39.5 s to the next; on a boundary, a
        // whole minute.
        let t = UNIX_EPOCH + Duration::from_millis(1_795_892_880_000 + 20_500);
        assert_eq!(
            until_next_utc_boundary(t, 60),
            Duration::from_millis(39_500)
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_795_892_880);
        assert_eq!(until_next_utc_boundary(t, 60), Duration::from_secs(60));
        let midnight = UNIX_EPOCH + Duration::from_secs(1_700_006_400);
        assert_eq!(
            until_next_utc_midnight(midnight),
            Duration::from_secs(86_400)
        );
    }
}
