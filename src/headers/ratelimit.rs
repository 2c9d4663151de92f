//! [`RateLimitInfo::from_headers`]: one pass over the headers, dispatching each vendor
//! family to its value parser, merging into one window per dimension.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::go_duration::go_duration;
use super::number::{epoch_or_delay, parse_remaining, parse_u64, until};
use super::rfc3339::rfc3339;
use super::{ietf, Dimension, RateLimitInfo, RateLimitWindow};

/// A [`Dimension`] without the allocation, for lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DimRef<'a> {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
    Named(&'a str),
}

impl<'a> DimRef<'a> {
    /// The dimension a vendor suffix names (`requests`, `tokens`, `input-tokens`, …); `None`
    /// for an empty suffix.
    fn from_suffix(suffix: &'a str) -> Option<Self> {
        Some(match suffix {
            "" => return None,
            "requests" => DimRef::Requests,
            "tokens" => DimRef::Tokens,
            "input-tokens" => DimRef::InputTokens,
            "output-tokens" => DimRef::OutputTokens,
            other => DimRef::Named(other),
        })
    }

    fn matches(self, dimension: &Dimension) -> bool {
        match (self, dimension) {
            (DimRef::Requests, Dimension::Requests)
            | (DimRef::Tokens, Dimension::Tokens)
            | (DimRef::InputTokens, Dimension::InputTokens)
            | (DimRef::OutputTokens, Dimension::OutputTokens) => true,
            (DimRef::Named(a), Dimension::Named(b)) => a == &**b,
            _ => false,
        }
    }

    fn to_dimension(self) -> Dimension {
        match self {
            DimRef::Requests => Dimension::Requests,
            DimRef::Tokens => Dimension::Tokens,
            DimRef::InputTokens => Dimension::InputTokens,
            DimRef::OutputTokens => Dimension::OutputTokens,
            DimRef::Named(name) => Dimension::Named(name.into()),
        }
    }
}

/// One field of a window, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    Limit(u64),
    Remaining(u64),
    Reset(Duration),
    Window(Duration),
}

impl RateLimitInfo {
    /// Fills one field of a dimension's window unless already known, creating the window
    /// when the dimension is new. `None` (an unparseable value) changes nothing.
    pub(super) fn fill(&mut self, dimension: DimRef<'_>, value: Option<Value>) {
        let Some(value) = value else { return };
        let window = match self
            .windows
            .iter()
            .position(|w| dimension.matches(&w.dimension))
        {
            Some(i) => &mut self.windows[i],
            None => {
                self.windows.push(RateLimitWindow {
                    dimension: dimension.to_dimension(),
                    limit: None,
                    remaining: None,
                    reset: None,
                    window: None,
                });
                let last = self.windows.len() - 1;
                &mut self.windows[last]
            }
        };
        match value {
            Value::Limit(v) => {
                window.limit.get_or_insert(v);
            }
            Value::Remaining(v) => {
                window.remaining.get_or_insert(v);
            }
            Value::Reset(v) => {
                window.reset.get_or_insert(v);
            }
            Value::Window(v) => {
                window.window.get_or_insert(v);
            }
        }
    }
}

/// The field a `limit` / `remaining` / `reset` word names, parsing counts here and the reset
/// with `reset`.
fn field(word: &str, value: &[u8], reset: impl FnOnce(&[u8]) -> Option<Duration>) -> Option<Value> {
    match word {
        "limit" => parse_u64(value).map(Value::Limit),
        "remaining" => parse_remaining(value).map(Value::Remaining),
        "reset" => reset(value).map(Value::Reset),
        _ => None,
    }
}

/// The prefix under which the LiteLLM proxy relays an upstream provider's headers.
pub(super) const RELAYED_PREFIX: &str = "llm_provider-";

/// Three sources, most specific first; a later one adds a dimension the earlier ones did not
/// report, or fills in fields of a window it agrees with (see [`RateLimitInfo::merge`]):
///
/// 1. the LiteLLM key limiter's per-descriptor headers (`x-ratelimit-api_key-remaining-requests`):
///    the proxy's own limits on this caller;
/// 2. every vendor family, as sent;
/// 3. the same families relayed under `llm_provider-` (the upstream's own state, of which
///    the proxy copies some fields to the top level and drops others, such as the reset).
pub(super) fn parse(headers: &HeaderMap, now: SystemTime) -> RateLimitInfo {
    let mut info = descriptors(headers);
    let own = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    info.merge(families(own, Some(headers), now));
    let relayed = headers.iter().filter_map(|(name, value)| {
        let name = name.as_str().strip_prefix(RELAYED_PREFIX)?;
        Some((name, value.as_bytes()))
    });
    info.merge(families(relayed, None, now));
    info
}

/// The vendor families, from `(lowercase name, value)` pairs; the IETF fields too when the
/// whole map is given.
fn families<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ietf_map: Option<&HeaderMap>,
    now: SystemTime,
) -> RateLimitInfo {
    let mut info = RateLimitInfo::default();
    let mut ietf_seen = false;
    for (name, value) in headers {
        if let Some(rest) = name.strip_prefix("x-ratelimit-") {
            match rest.split_once('-') {
                // OpenAI / LiteLLM: `x-ratelimit-{limit,remaining,reset}-{dimension}`, the reset
                // a Go duration (an epoch, by magnitude, if a bare number says so).
                Some((word, suffix)) => {
                    if let Some(dimension) = DimRef::from_suffix(suffix) {
                        let reset = |v: &[u8]| epoch_or_delay(v, now).or_else(|| go_duration(v));
                        info.fill(dimension, field(word, value, reset));
                    }
                }
                // OpenRouter / Envoy: `X-RateLimit-{Limit,Remaining,Reset}`, the reset epoch
                // ms, epoch s or delay-seconds by magnitude.
                None => {
                    let reset = |v: &[u8]| epoch_or_delay(v, now);
                    info.fill(DimRef::Requests, field(rest, value, reset));
                }
            }
        } else if let Some(rest) = name.strip_prefix("anthropic-ratelimit-") {
            // Anthropic: `anthropic-ratelimit-{dimension}-{limit,remaining,reset}`, the reset
            // RFC 3339 (an epoch or delay by magnitude, if a bare number).
            if let Some((dimension, word)) = rest.rsplit_once('-') {
                if let Some(dimension) = DimRef::from_suffix(dimension) {
                    let reset = |v: &[u8]| match rfc3339(v) {
                        Some(at) => Some(until(now, at)),
                        None => epoch_or_delay(v, now),
                    };
                    info.fill(dimension, field(word, value, reset));
                }
            }
        } else if let Some(rest) = name.strip_prefix("ratelimit") {
            match rest {
                // IETF Structured Fields: parsed together, once, where first seen.
                "" | "-policy" => {
                    if let (Some(map), false) = (ietf_map, ietf_seen) {
                        ietf_seen = true;
                        ietf::parse(map, &mut info);
                    }
                }
                // Older drafts: `RateLimit-{Limit,Remaining,Reset}`, the reset delay-seconds
                // (an epoch, by magnitude, as some servers send).
                _ => {
                    if let Some(word) = rest.strip_prefix('-') {
                        let reset = |v: &[u8]| epoch_or_delay(v, now);
                        info.fill(DimRef::Requests, field(word, value, reset));
                    }
                }
            }
        }
    }
    info
}

/// One LiteLLM descriptor's report on one dimension.
struct Descriptor<'a> {
    name: &'a str,
    dimension: DimRef<'a>,
    limit: Option<u64>,
    remaining: Option<u64>,
}

/// The LiteLLM key limiter (v3) names its success headers per descriptor:
/// `x-ratelimit-{descriptor}-{limit,remaining}-{requests,tokens}` with `descriptor` one of
/// `api_key`, `user`, `team`, `end_user`, `model_per_key`, … (never a dash in it). Every
/// descriptor limits this caller: per dimension, the one with the least remaining binds.
/// `max_parallel_requests` counts requests in flight, not a window: skipped.
fn descriptors(headers: &HeaderMap) -> RateLimitInfo {
    let mut found: Vec<Descriptor<'_>> = Vec::new();
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix("x-ratelimit-") else {
            continue;
        };
        let Some((descriptor, tail)) = rest.split_once('-') else {
            continue;
        };
        if matches!(descriptor, "" | "limit" | "remaining" | "reset")
            || !descriptor
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        let Some((word, dimension)) = tail.split_once('-') else {
            continue;
        };
        let dimension = match dimension {
            "requests" => DimRef::Requests,
            "tokens" => DimRef::Tokens,
            _ => continue,
        };
        let i = match found
            .iter()
            .position(|d| d.name == descriptor && d.dimension == dimension)
        {
            Some(i) => i,
            None => {
                found.push(Descriptor {
                    name: descriptor,
                    dimension,
                    limit: None,
                    remaining: None,
                });
                found.len() - 1
            }
        };
        let d = &mut found[i];
        let value = value.as_bytes();
        match word {
            "limit" => d.limit = d.limit.or(parse_u64(value)),
            "remaining" => d.remaining = d.remaining.or(parse_remaining(value)),
            _ => {}
        }
    }
    let mut info = RateLimitInfo::default();
    for dimension in [DimRef::Requests, DimRef::Tokens] {
        let binding = found
            .iter()
            .filter(|d| d.dimension == dimension && (d.limit.is_some() || d.remaining.is_some()))
            .min_by_key(|d| (d.remaining.unwrap_or(u64::MAX), d.limit.unwrap_or(u64::MAX)));
        if let Some(d) = binding {
            info.fill(dimension, d.limit.map(Value::Limit));
            info.fill(dimension, d.remaining.map(Value::Remaining));
        }
    }
    info
}

impl RateLimitInfo {
    /// Adds what a less specific source reported: a window of a new dimension whole; a
    /// window of a known dimension only when it agrees with the known one (same limit and
    /// remaining wherever both say), and then only the fields still missing. A window that
    /// disagrees describes another limit (the upstream's, under the proxy's): its reset must
    /// not be taken for this one's.
    pub(crate) fn merge(&mut self, other: RateLimitInfo) {
        for w in other.windows {
            let Some(known) = self.windows.iter_mut().find(|k| k.dimension == w.dimension) else {
                self.windows.push(w);
                continue;
            };
            let agree = |a: Option<u64>, b: Option<u64>| a.zip(b).is_none_or(|(a, b)| a == b);
            if !(agree(known.limit, w.limit) && agree(known.remaining, w.remaining)) {
                continue;
            }
            known.limit = known.limit.or(w.limit);
            known.remaining = known.remaining.or(w.remaining);
            known.reset = known.reset.or(w.reset);
            known.window = known.window.or(w.window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::tests::map;
    use crate::headers::MAX_DELAY;
    use std::time::UNIX_EPOCH;

    /// 2024-11-21T23:00:00Z.
    const NOW: u64 = 1_732_230_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn win(
        dimension: Dimension,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset: Option<Duration>,
    ) -> RateLimitWindow {
        RateLimitWindow {
            dimension,
            limit,
            remaining,
            reset,
            window: None,
        }
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn vendor_families() {
        use Dimension::*;
        let table: Vec<(&str, HeaderMap, Vec<RateLimitWindow>)> = vec![
            (
                "OpenRouter daily cap, reset at the next UTC midnight in epoch ms",
                map(&[
                    ("X-RateLimit-Limit", b"50"),
                    ("X-RateLimit-Remaining", b"0"),
                    ("X-RateLimit-Reset", b"1732233600000"),
                ]),
                vec![win(Requests, Some(50), Some(0), secs(3_600))],
            ),
            (
                "Envoy, epoch seconds with a fraction",
                map(&[
                    ("x-ratelimit-limit", b"20"),
                    ("x-ratelimit-remaining", b"7"),
                    ("x-ratelimit-reset", b"1732230042.5"),
                ]),
                vec![win(
                    Requests,
                    Some(20),
                    Some(7),
                    Some(Duration::from_millis(42_500)),
                )],
            ),
            (
                "delay-seconds reset, past epoch",
                map(&[("x-ratelimit-reset", b"17")]),
                vec![win(Requests, None, None, secs(17))],
            ),
            (
                "epoch in the past is now",
                map(&[("x-ratelimit-reset", b"1732229000000")]),
                vec![win(Requests, None, None, secs(0))],
            ),
            (
                "OpenAI",
                map(&[
                    ("x-ratelimit-limit-requests", b"5000"),
                    ("x-ratelimit-limit-tokens", b"800000"),
                    ("x-ratelimit-remaining-requests", b"4999"),
                    ("x-ratelimit-remaining-tokens", b"799980"),
                    ("x-ratelimit-reset-requests", b"12ms"),
                    ("x-ratelimit-reset-tokens", b"6m0s"),
                ]),
                vec![
                    win(
                        Requests,
                        Some(5000),
                        Some(4999),
                        Some(Duration::from_millis(12)),
                    ),
                    win(Tokens, Some(800_000), Some(799_980), secs(360)),
                ],
            ),
            (
                "LiteLLM, other suffixes and bare-number resets",
                map(&[
                    ("x-ratelimit-remaining-input-tokens", b"100"),
                    ("x-ratelimit-reset-input-tokens", b"1h2m3.5s"),
                    ("x-ratelimit-limit-output-tokens", b"900"),
                    ("x-ratelimit-limit-images", b"3"),
                    ("x-ratelimit-reset-images", b"20"),
                    ("x-ratelimit-reset-requests", b"1732230060"),
                ]),
                vec![
                    win(
                        InputTokens,
                        None,
                        Some(100),
                        Some(Duration::from_millis(3_723_500)),
                    ),
                    win(OutputTokens, Some(900), None, None),
                    win(Named("images".into()), Some(3), None, secs(20)),
                    win(Requests, None, None, secs(60)),
                ],
            ),
            (
                "Anthropic",
                map(&[
                    ("anthropic-ratelimit-requests-limit", b"50"),
                    ("anthropic-ratelimit-requests-remaining", b"49"),
                    (
                        "anthropic-ratelimit-requests-reset",
                        b"2024-11-21T23:00:01Z",
                    ),
                    ("anthropic-ratelimit-tokens-limit", b"100000"),
                    ("anthropic-ratelimit-tokens-remaining", b"0"),
                    (
                        "anthropic-ratelimit-tokens-reset",
                        b"2024-11-22T00:00:30+01:00",
                    ),
                    ("anthropic-ratelimit-input-tokens-limit", b"80000"),
                    ("anthropic-ratelimit-input-tokens-remaining", b"79000"),
                    (
                        "anthropic-ratelimit-input-tokens-reset",
                        b"2024-11-21T23:00:00.250Z",
                    ),
                    ("anthropic-ratelimit-output-tokens-limit", b"16000"),
                    ("anthropic-ratelimit-output-tokens-remaining", b"16000"),
                    (
                        "anthropic-ratelimit-output-tokens-reset",
                        b"2024-11-21T22:59:00Z",
                    ),
                    ("anthropic-ratelimit-unified-5h-reset", b"1732248000"),
                ]),
                vec![
                    win(Requests, Some(50), Some(49), secs(1)),
                    win(Tokens, Some(100_000), Some(0), secs(30)),
                    win(
                        InputTokens,
                        Some(80_000),
                        Some(79_000),
                        Some(Duration::from_millis(250)),
                    ),
                    win(OutputTokens, Some(16_000), Some(16_000), secs(0)),
                    win(Named("unified-5h".into()), None, None, secs(18_000)),
                ],
            ),
            (
                "older IETF drafts",
                map(&[
                    ("RateLimit-Limit", b"100"),
                    ("RateLimit-Remaining", b"10"),
                    ("RateLimit-Reset", b"30"),
                ]),
                vec![win(Requests, Some(100), Some(10), secs(30))],
            ),
            (
                "families merge into one window per dimension, first found wins",
                map(&[
                    ("x-ratelimit-limit-requests", b"60"),
                    ("x-ratelimit-limit", b"1000"),
                    ("x-ratelimit-remaining", b"3"),
                    ("ratelimit-reset", b"9"),
                    ("x-ratelimit-reset-requests", b"1s"),
                ]),
                vec![win(Requests, Some(60), Some(3), secs(9))],
            ),
            (
                "garbage fields are skipped, negative remaining is zero",
                map(&[
                    ("x-ratelimit-limit", b"-5"),
                    ("x-ratelimit-limit", b"lots"),
                    ("x-ratelimit-remaining", b"-2"),
                    ("x-ratelimit-reset", b"\xff\xfe"),
                    ("x-ratelimit-limit-tokens", b"1.5"),
                    ("x-ratelimit-remaining-tokens", b""),
                    ("x-ratelimit-reset-tokens", b"-1s"),
                    (
                        "anthropic-ratelimit-requests-reset",
                        b"2024-02-30T00:00:00Z",
                    ),
                    ("anthropic-ratelimit-requests-bogus", b"1"),
                    ("anthropic-ratelimit-limit", b"1"),
                    ("x-ratelimit-bogus-requests", b"1"),
                    ("ratelimit-bogus", b"1"),
                    ("ratelimitx", b"1"),
                    ("x-ratelimit-limit-", b"1"),
                    ("anthropic-ratelimit--limit", b"1"),
                ]),
                vec![win(Requests, None, Some(0), None)],
            ),
            (
                "duplicates: first parseable wins",
                map(&[
                    ("x-ratelimit-remaining", b"junk"),
                    ("x-ratelimit-remaining", b"4"),
                    ("x-ratelimit-remaining", b"2"),
                ]),
                vec![win(Requests, None, Some(4), None)],
            ),
            (
                "absurd resets saturate",
                map(&[
                    ("x-ratelimit-reset", b"99999999999999999999999"),
                    ("x-ratelimit-reset-tokens", b"99999999h"),
                    (
                        "anthropic-ratelimit-input-tokens-reset",
                        b"9999-12-31T23:59:59Z",
                    ),
                ]),
                vec![
                    win(Requests, None, None, Some(MAX_DELAY)),
                    win(Tokens, None, None, Some(MAX_DELAY)),
                    win(InputTokens, None, None, Some(MAX_DELAY)),
                ],
            ),
            (
                "nothing",
                map(&[("content-type", b"application/json")]),
                vec![],
            ),
        ];
        for (what, headers, want) in table {
            let info = RateLimitInfo::from_headers(&headers, now());
            assert_eq!(info.windows(), &want[..], "{what}");
        }
    }

    #[test]
    fn litellm_sources_in_order() {
        use Dimension::*;
        let table: Vec<(&str, HeaderMap, Vec<RateLimitWindow>)> = vec![
            (
                "the key limiter's descriptor wins over the upstream's copied state and its relayed reset",
                map(&[
                    ("x-ratelimit-limit-requests", b"500"),
                    ("x-ratelimit-remaining-requests", b"499"),
                    ("llm_provider-x-ratelimit-limit-requests", b"500"),
                    ("llm_provider-x-ratelimit-remaining-requests", b"499"),
                    ("llm_provider-x-ratelimit-reset-requests", b"120ms"),
                    ("x-ratelimit-api_key-remaining-requests", b"0"),
                    ("x-ratelimit-api_key-limit-requests", b"3"),
                ]),
                vec![win(Requests, Some(3), Some(0), None)],
            ),
            (
                "the binding descriptor: least remaining; parallel slots are not a window",
                map(&[
                    ("x-ratelimit-api_key-remaining-tokens", b"70"),
                    ("x-ratelimit-api_key-limit-tokens", b"100"),
                    ("x-ratelimit-team-remaining-tokens", b"7"),
                    ("x-ratelimit-team-limit-tokens", b"1000"),
                    ("x-ratelimit-api_key-remaining-max_parallel_requests", b"0"),
                    ("x-ratelimit-api_key-limit-max_parallel_requests", b"1"),
                ]),
                vec![win(Tokens, Some(1000), Some(7), None)],
            ),
            (
                "a relayed window that agrees gives the reset the proxy dropped",
                map(&[
                    ("llm_provider-retry-after", b"7"),
                    ("llm_provider-x-ratelimit-limit-requests", b"60"),
                    ("llm_provider-x-ratelimit-remaining-requests", b"0"),
                    ("llm_provider-x-ratelimit-reset-requests", b"7s"),
                    ("x-ratelimit-limit-requests", b"60"),
                    ("x-ratelimit-remaining-requests", b"0"),
                ]),
                vec![win(Requests, Some(60), Some(0), secs(7))],
            ),
            (
                "a relayed window that disagrees (the legacy limiter's own counts on top) is left out",
                map(&[
                    ("x-ratelimit-limit-requests", b"3"),
                    ("x-ratelimit-remaining-requests", b"0"),
                    ("llm_provider-x-ratelimit-limit-requests", b"500"),
                    ("llm_provider-x-ratelimit-remaining-requests", b"499"),
                    ("llm_provider-x-ratelimit-reset-requests", b"120ms"),
                ]),
                vec![win(Requests, Some(3), Some(0), None)],
            ),
            (
                "relayed Anthropic state, alone",
                map(&[
                    ("llm_provider-anthropic-ratelimit-requests-limit", b"50"),
                    ("llm_provider-anthropic-ratelimit-requests-remaining", b"0"),
                    (
                        "llm_provider-anthropic-ratelimit-requests-reset",
                        b"2024-11-21T23:00:11Z",
                    ),
                ]),
                vec![win(Requests, Some(50), Some(0), secs(11))],
            ),
            (
                "not descriptors: OpenAI words, odd characters, no dimension",
                map(&[
                    ("x-ratelimit-limit-requests", b"9"),
                    ("x-ratelimit-api.key-remaining-requests", b"1"),
                    ("x-ratelimit-api_key-remaining", b"1"),
                    ("x-ratelimit-api_key-bogus-requests", b"1"),
                ]),
                vec![win(Requests, Some(9), None, None)],
            ),
        ];
        for (what, headers, want) in table {
            let info = RateLimitInfo::from_headers(&headers, now());
            assert_eq!(info.windows(), &want[..], "{what}");
        }
    }

    #[test]
    fn exhausted_reset_of_openai_tokens() {
        let h = map(&[
            ("x-ratelimit-remaining-requests", b"10"),
            ("x-ratelimit-reset-requests", b"1s"),
            ("x-ratelimit-remaining-tokens", b"0"),
            ("x-ratelimit-reset-tokens", b"6m0s"),
        ]);
        let info = RateLimitInfo::from_headers(&h, now());
        assert_eq!(info.exhausted_reset(), secs(360));
        assert_eq!(info.tokens().and_then(|w| w.remaining), Some(0));
    }
}
