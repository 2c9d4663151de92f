//! The IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10),
//! Structured Field Lists joined by policy name:
//!
//! ```text
//! RateLimit-Policy: "burst";q=100;w=60,"daily";q=1000;w=86400
//! RateLimit: "burst";r=50;t=30
//! ```
//!
//! and the older drafts' dictionary form `RateLimit: limit=100, remaining=50, reset=30`.
//!
//! A field that fails to parse, or that has any item without a string or token name, without
//! its required parameter (`q` in a policy, `r` in a state) or with a known parameter (`q`,
//! `w`, `r`, `t`) that is not an integer, or is negative (except `r`, where a negative value
//! reads as zero), is ignored as a whole: nothing of it is reported. Other parameters (`pk`,
//! `qu`) are ignored.

use std::time::Duration;

use http::header::{GetAll, HeaderName, HeaderValue};
use http::HeaderMap;
use sfv::{BareItem, Dictionary, List, ListEntry, Parser};

use super::ratelimit::{DimRef, Value};
use super::{RateLimitInfo, MAX_DELAY};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Reads both fields into `info`.
pub(super) fn parse(headers: &HeaderMap, info: &mut RateLimitInfo) {
    let policies = headers.get_all(&RATELIMIT_POLICY);
    if let Some(list) = parse_list(&policies) {
        if list.iter().all(|e| policy(e).is_some()) {
            for (name, quota, window) in list.iter().filter_map(policy) {
                let name = DimRef::Named(name);
                info.fill(name, Some(Value::Limit(quota)));
                info.fill(name, window.map(Value::Window));
            }
        }
    }

    let states = headers.get_all(&RATELIMIT);
    if let Some(list) = parse_list(&states) {
        if list.iter().all(|e| state(e).is_some()) {
            for (name, remaining, reset) in list.iter().filter_map(state) {
                let name = DimRef::Named(name);
                info.fill(name, Some(Value::Remaining(remaining)));
                info.fill(name, reset.map(Value::Reset));
            }
            return;
        }
    }
    if let Some(dict) = parse_dictionary(&states) {
        legacy_dictionary(&dict, info);
    }
}

/// All lines of a List field, or `None` when absent or malformed.
fn parse_list(values: &GetAll<'_, HeaderValue>) -> Option<List> {
    let mut list = List::new();
    let mut any = false;
    for value in values {
        Parser::new(value.as_bytes())
            .parse_list_with_visitor(&mut list)
            .ok()?;
        any = true;
    }
    any.then_some(list)
}

/// All lines of a Dictionary field, or `None` when absent or malformed.
fn parse_dictionary(values: &GetAll<'_, HeaderValue>) -> Option<Dictionary> {
    let mut dict = Dictionary::new();
    let mut any = false;
    for value in values {
        Parser::new(value.as_bytes())
            .parse_dictionary_with_visitor(&mut dict)
            .ok()?;
        any = true;
    }
    any.then_some(dict)
}

/// A non-negative integer.
fn count(value: &BareItem) -> Option<u64> {
    u64::try_from(i64::from(value.as_integer()?)).ok()
}

/// A remaining count: an integer, negative read as zero.
fn remaining_count(value: &BareItem) -> Option<u64> {
    Some(u64::try_from(i64::from(value.as_integer()?)).unwrap_or(0))
}

/// A non-negative integer of seconds, saturating at [`MAX_DELAY`].
fn seconds(value: &BareItem) -> Option<Duration> {
    count(value).map(|s| Duration::from_secs(s).min(MAX_DELAY))
}

/// The name and parameters of a list item named by a string or token.
fn named(entry: &ListEntry) -> Option<(&str, &sfv::Parameters)> {
    let ListEntry::Item(item) = entry else {
        return None;
    };
    let name = match &item.bare_item {
        BareItem::String(s) => s.as_str(),
        BareItem::Token(t) => t.as_str(),
        _ => return None,
    };
    Some((name, &item.params))
}

/// A policy item: name, quota `q` (required) and window `w`.
fn policy(entry: &ListEntry) -> Option<(&str, u64, Option<Duration>)> {
    let (name, params) = named(entry)?;
    let (mut quota, mut window) = (None, None);
    for (key, value) in params {
        match key.as_str() {
            "q" => quota = Some(count(value)?),
            "w" => window = Some(seconds(value)?),
            _ => {}
        }
    }
    Some((name, quota?, window))
}

/// A state item: name, remaining `r` (required; negative reads as zero) and reset `t`.
fn state(entry: &ListEntry) -> Option<(&str, u64, Option<Duration>)> {
    let (name, params) = named(entry)?;
    let (mut remaining, mut reset) = (None, None);
    for (key, value) in params {
        match key.as_str() {
            "r" => remaining = Some(remaining_count(value)?),
            "t" => reset = Some(seconds(value)?),
            _ => {}
        }
    }
    Some((name, remaining?, reset))
}

/// The older drafts' `RateLimit: limit=100, remaining=50, reset=30`, for requests.
fn legacy_dictionary(dict: &Dictionary, info: &mut RateLimitInfo) {
    let mut values = [None; 3];
    for (key, entry) in dict {
        let slot = match key.as_str() {
            "limit" => 0,
            "remaining" => 1,
            "reset" => 2,
            _ => continue,
        };
        let ListEntry::Item(item) = entry else { return };
        let v = &item.bare_item;
        let value = match slot {
            0 => count(v).map(Value::Limit),
            1 => remaining_count(v).map(Value::Remaining),
            _ => seconds(v).map(Value::Reset),
        };
        // A malformed member makes the whole field malformed.
        let Some(value) = value else { return };
        values[slot] = Some(value);
    }
    for value in values {
        info.fill(DimRef::Requests, value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::headers::{Dimension, RateLimitWindow};

    fn info(pairs: &[(&'static str, &[u8])]) -> RateLimitInfo {
        let mut h = HeaderMap::new();
        for &(name, value) in pairs {
            h.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        RateLimitInfo::from_headers(&h, now)
    }

    fn named(
        name: &str,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset: Option<u64>,
        window: Option<u64>,
    ) -> RateLimitWindow {
        RateLimitWindow {
            dimension: Dimension::Named(name.into()),
            limit,
            remaining,
            reset: reset.map(Duration::from_secs),
            window: window.map(Duration::from_secs),
        }
    }

    fn requests(limit: Option<u64>, remaining: Option<u64>, reset: Option<u64>) -> RateLimitWindow {
        RateLimitWindow {
            dimension: Dimension::Requests,
            limit,
            remaining,
            reset: reset.map(Duration::from_secs),
            window: None,
        }
    }

    /// What, the header lines, the windows expected.
    type Case = (
        &'static str,
        Vec<(&'static str, &'static [u8])>,
        Vec<RateLimitWindow>,
    );

    const POLICY: &str = "ratelimit-policy";
    const STATE: &str = "ratelimit";

    #[test]
    fn table() {
        let table: Vec<Case> = vec![
            (
                "policy and state joined by name",
                vec![
                    (POLICY, br#""burst";q=100;w=60,"daily";q=1000;w=86400"#),
                    (STATE, br#""burst";r=50;t=30"#),
                ],
                vec![
                    named("burst", Some(100), Some(50), Some(30), Some(60)),
                    named("daily", Some(1000), None, None, Some(86_400)),
                ],
            ),
            (
                "state before policy, tokens as names, pk and qu ignored",
                vec![
                    (STATE, b"day;r=0;t=3600;pk=:YWJj:"),
                    (POLICY, br#"day;q=500;w=86400;qu="request";pk=:YWJj:"#),
                ],
                vec![named("day", Some(500), Some(0), Some(3_600), Some(86_400))],
            ),
            (
                "lines split across several fields",
                vec![
                    (POLICY, br#""a";q=1"#),
                    (POLICY, br#""b";q=2;w=10"#),
                    (STATE, br#""a";r=1, "b";r=-4"#),
                ],
                vec![
                    named("a", Some(1), Some(1), None, None),
                    named("b", Some(2), Some(0), None, Some(10)),
                ],
            ),
            (
                "state without t",
                vec![(STATE, br#""x";r=7"#)],
                vec![named("x", None, Some(7), None, None)],
            ),
            (
                "absurd window and reset saturate",
                vec![(STATE, br#""x";r=1;t=999999999999999"#)],
                vec![RateLimitWindow {
                    reset: Some(MAX_DELAY),
                    ..named("x", None, Some(1), None, None)
                }],
            ),
            (
                "older draft dictionary form",
                vec![(STATE, b"limit=100, remaining=50, reset=30")],
                vec![requests(Some(100), Some(50), Some(30))],
            ),
            (
                "older draft dictionary form, negative remaining, unknown keys",
                vec![(STATE, b"limit=10, remaining=-1, foo=bar")],
                vec![requests(Some(10), Some(0), None)],
            ),
            (
                "a malformed policy is ignored, the state is kept",
                vec![
                    (POLICY, br#""burst";q=100;w=60,"daily";q=1.5"#),
                    (STATE, br#""burst";r=50"#),
                ],
                vec![named("burst", None, Some(50), None, None)],
            ),
            (
                "sfv syntax error",
                vec![(POLICY, br#""burst;q=100"#)],
                vec![],
            ),
            ("missing q", vec![(POLICY, br#""burst";w=60"#)], vec![]),
            ("negative q", vec![(POLICY, br#""burst";q=-1"#)], vec![]),
            ("string q", vec![(POLICY, br#""burst";q="1""#)], vec![]),
            ("integer name", vec![(POLICY, b"100;w=60")], vec![]),
            ("inner list", vec![(POLICY, br#"("a" "b");q=1"#)], vec![]),
            (
                "one bad item spoils the field",
                vec![(STATE, br#""a";r=1, "b";t=5"#)],
                vec![],
            ),
            ("decimal t", vec![(STATE, br#""a";r=1;t=1.5"#)], vec![]),
            ("negative t", vec![(STATE, br#""a";r=1;t=-1"#)], vec![]),
            (
                "one bad line spoils the field",
                vec![(STATE, br#""a";r=1"#), (STATE, b"\"b")],
                vec![],
            ),
            ("non-ASCII", vec![(STATE, b"\"a\xff\";r=1")], vec![]),
            ("non-UTF-8", vec![(POLICY, b"\xff\xfe")], vec![]),
            (
                "dictionary with a bad member",
                vec![(STATE, b"limit=a, remaining=1")],
                vec![],
            ),
            (
                "dictionary inner list",
                vec![(STATE, b"limit=(1 2)")],
                vec![],
            ),
            ("empty", vec![(STATE, b""), (POLICY, b"")], vec![]),
        ];
        for (what, pairs, want) in table {
            assert_eq!(info(&pairs).windows(), &want[..], "{what}");
        }
    }
}
