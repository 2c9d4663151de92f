//! What the fuzz targets share: structured inputs ([`arbitrary`]) for header maps whose
//! values come in every format the providers send (so that the fuzzer reaches the parsers'
//! deep paths, not only their first byte check), a streamed body with arbitrary chunking,
//! and the checks of the `http_body::Body` contract that every body target makes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

// === header names ===

/// Header names the parsers and classifiers read, and a few they must ignore.
pub const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "grpc-retry-pushback-ms",
    "x-should-retry",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "content-type",
    "llm_provider-retry-after",
    "x-litellm-attempted-retries",
    "openai-organization",
    "x-request-id",
    // The server's clock (absolute resets are read on it) and LiteLLM's v3 key limiter.
    "date",
    "rate_limit_type",
    "reset_at",
    "llm_provider-retry-after-ms",
];

/// Vendor families whose names are built from parts.
const FAMILIES: &[&str] = &[
    "x-ratelimit-",
    "anthropic-ratelimit-",
    "ratelimit-",
    "x-ratelimit-api_key-",
];
const WORDS: &[&str] = &["limit", "remaining", "reset", "used", ""];
const DIMENSIONS: &[&str] = &[
    "requests",
    "tokens",
    "input-tokens",
    "output-tokens",
    "images",
    "max_parallel_requests",
    "",
];

/// A header name.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    /// One of [`NAMES`].
    Known(u8),
    /// A vendor family's `{word}-{dimension}` (OpenAI, LiteLLM) or `{dimension}-{word}`
    /// (Anthropic) name.
    Vendor {
        family: u8,
        word: u8,
        dimension: u8,
        flipped: bool,
    },
    /// Anything else (skipped if not a valid name).
    Raw(String),
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

impl Name {
    /// The name as text.
    pub fn text(&self) -> String {
        match self {
            Name::Known(i) => pick(NAMES, *i).to_owned(),
            Name::Vendor {
                family,
                word,
                dimension,
                flipped,
            } => {
                let (word, dimension) = (pick(WORDS, *word), pick(DIMENSIONS, *dimension));
                let (a, b) = if *flipped {
                    (dimension, word)
                } else {
                    (word, dimension)
                };
                format!("{}{a}-{b}", pick(FAMILIES, *family))
            }
            Name::Raw(s) => s.to_ascii_lowercase(),
        }
    }
}

// === header values ===

/// A header value, in one of the forms servers send, or raw bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum Value {
    /// Raw bytes (skipped if not a valid header value).
    Raw(Vec<u8>),
    /// A non-negative integer.
    Int(u64),
    /// A negative one.
    Neg(i64),
    /// A decimal `whole.frac`, with `digits` fraction digits (zero-padded or cut).
    Decimal { whole: u64, frac: u64, digits: u8 },
    /// An epoch timestamp near `now`, in seconds or milliseconds.
    Epoch { offset: i32, millis: bool },
    /// A Go duration: `(amount, unit)` pairs, `unit` an index into h, m, s, ms, us, µs, μs,
    /// ns, or a bad one.
    Go(Vec<(u32, u8)>, Option<u16>),
    /// An HTTP-date `offset` seconds from `now`, in one of the three RFC 9110 forms.
    HttpDate { offset: i32, form: u8 },
    /// An RFC 3339 timestamp `offset` seconds from `now`.
    Rfc3339 {
        offset: i32,
        nanos: u32,
        digits: u8,
        tz_minutes: i16,
        lower: bool,
    },
    /// An IETF Structured Field list of policies or states.
    Sfv(Vec<SfvItem>),
    /// The older drafts' `limit=…, remaining=…, reset=…` dictionary.
    Dict(Vec<(u8, i64)>),
    /// `true`, `false` and their cases.
    Bool(u8),
    /// A word servers send as a value (LiteLLM's `rate_limit_type`, …).
    Word(u8),
    /// Surrounding whitespace around another value.
    Padded(Box<Value>),
}

/// One item of an IETF `RateLimit` or `RateLimit-Policy` list.
#[derive(Arbitrary, Debug, Clone)]
pub struct SfvItem {
    pub name: u8,
    pub token: bool,
    pub params: Vec<(u8, i64)>,
}

const GO_UNITS: &[&str] = &["h", "m", "s", "ms", "us", "µs", "μs", "ns", "d", ""];
const SFV_NAMES: &[&str] = &["burst", "daily", "default", "tokens", "a b", "x"];
const SFV_PARAMS: &[&str] = &["q", "w", "r", "t", "pk", "qu"];
const DICT_KEYS: &[&str] = &["limit", "remaining", "reset", "policy"];
const WORD_VALUES: &[&str] = &[
    "max_parallel_requests",
    "MAX_PARALLEL_REQUESTS",
    "requests",
    "tokens",
    "rpm",
    "tpm",
    "budget_exceeded",
];

impl Value {
    /// The value's bytes, written for the wall-clock time `now`.
    pub fn bytes(&self, now: SystemTime) -> Vec<u8> {
        match self {
            Value::Raw(b) => b.clone(),
            Value::Int(n) => n.to_string().into_bytes(),
            Value::Neg(n) => format!("-{}", n.unsigned_abs()).into_bytes(),
            Value::Decimal {
                whole,
                frac,
                digits,
            } => {
                let digits = usize::from(*digits % 24);
                let mut f = frac.to_string();
                f.truncate(digits);
                format!("{whole}.{f:0<digits$}").into_bytes()
            }
            Value::Epoch { offset, millis } => {
                let t = shift(now, i64::from(*offset));
                let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                if *millis {
                    d.as_millis().to_string().into_bytes()
                } else {
                    d.as_secs().to_string().into_bytes()
                }
            }
            Value::Go(parts, bad) => {
                let mut s = String::new();
                for (amount, unit) in parts.iter().take(8) {
                    s.push_str(&amount.to_string());
                    s.push_str(pick(GO_UNITS, *unit));
                }
                if let Some(b) = bad {
                    s.push_str(&format!(".{b}"));
                }
                s.into_bytes()
            }
            Value::HttpDate { offset, form } => {
                http_date(shift(now, i64::from(*offset)), *form).into_bytes()
            }
            Value::Rfc3339 {
                offset,
                nanos,
                digits,
                tz_minutes,
                lower,
            } => rfc3339(
                shift(now, i64::from(*offset)),
                *nanos,
                *digits,
                *tz_minutes,
                *lower,
            )
            .into_bytes(),
            Value::Sfv(items) => {
                let mut out = Vec::new();
                for item in items.iter().take(6) {
                    let mut s = if item.token {
                        pick(SFV_NAMES, item.name).replace(' ', "_")
                    } else {
                        format!("\"{}\"", pick(SFV_NAMES, item.name))
                    };
                    for (p, v) in item.params.iter().take(5) {
                        s.push_str(&format!(";{}={v}", pick(SFV_PARAMS, *p)));
                    }
                    out.push(s);
                }
                out.join(", ").into_bytes()
            }
            Value::Dict(entries) => entries
                .iter()
                .take(6)
                .map(|(k, v)| format!("{}={v}", pick(DICT_KEYS, *k)))
                .collect::<Vec<_>>()
                .join(", ")
                .into_bytes(),
            Value::Bool(b) => pick(&["true", "false", "TRUE", "False", "yes", ""], *b)
                .to_owned()
                .into_bytes(),
            Value::Word(w) => pick(WORD_VALUES, *w).to_owned().into_bytes(),
            Value::Padded(v) => {
                let mut out = b" \t".to_vec();
                out.extend(v.bytes(now));
                out.extend(b"\t ");
                out
            }
        }
    }
}

/// `now` moved by `secs`, never before the epoch.
fn shift(now: SystemTime, secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        now.checked_add(d).unwrap_or(now)
    } else {
        now.checked_sub(d).unwrap_or(UNIX_EPOCH)
    };
    t.max(UNIX_EPOCH)
}

/// The civil date and time of `t` (UTC): year, month, day, hour, minute, second, weekday
/// (0 = Sunday). Howard Hinnant's days-from-civil, inverted.
pub fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let weekday = (days + 4).rem_euclid(7) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    );
    (year, month, day, h, m, s, weekday)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `t` as an HTTP-date: IMF-fixdate, RFC 850 or asctime by `form`.
pub fn http_date(t: SystemTime, form: u8) -> String {
    let (y, mo, d, h, mi, s, wd) = civil(t);
    let (mon, wd) = (MONTHS[mo as usize - 1], wd as usize);
    match form % 3 {
        0 => httpdate::fmt_http_date(t),
        1 => format!(
            "{}, {d:02}-{mon}-{:02} {h:02}:{mi:02}:{s:02} GMT",
            LONG_DAYS[wd],
            y.rem_euclid(100)
        ),
        _ => format!("{} {mon} {d:>2} {h:02}:{mi:02}:{s:02} {y}", DAYS[wd]),
    }
}

/// `t` as RFC 3339, with `digits` fraction digits of `nanos` and a `tz_minutes` offset.
pub fn rfc3339(t: SystemTime, nanos: u32, digits: u8, tz_minutes: i16, lower: bool) -> String {
    let tz = i64::from(tz_minutes % (24 * 60));
    let (y, mo, d, h, mi, s, _) = civil(shift(t, tz * 60));
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    let digits = usize::from(digits % 10);
    if digits > 0 {
        let f = format!("{:09}", nanos % 1_000_000_000);
        out.push('.');
        out.push_str(&f[..digits]);
    }
    if tz == 0 {
        out.push('Z');
    } else {
        let sign = if tz < 0 { '-' } else { '+' };
        out.push_str(&format!("{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60));
    }
    if lower {
        out = out.to_ascii_lowercase();
    }
    out
}

/// A header map's worth of `(name, value)` pairs, in order (repeats allowed).
#[derive(Arbitrary, Debug, Clone)]
pub struct Headers(pub Vec<(Name, Value)>);

impl Headers {
    /// The map, written for the wall-clock time `now`; invalid names and values are skipped.
    pub fn map(&self, now: SystemTime) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.0.iter().take(32) {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.text().as_bytes()),
                HeaderValue::from_bytes(&value.bytes(now)),
            ) else {
                continue;
            };
            map.append(name, value);
        }
        map
    }
}

/// A wall-clock time: seconds and nanoseconds after the epoch, up to the year ~2500.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Now(pub u64, pub u32);

impl Now {
    /// The time.
    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.0 % 17_000_000_000, self.1 % 1_000_000_000)
    }
}

// === a streamed body ===

/// One data frame: its bytes, stored as a two-part (non-contiguous) buffer split at
/// `split`, after `pending` polls that return `Pending` (waking the task at once).
#[derive(Arbitrary, Debug, Clone)]
pub struct Piece {
    pub data: Vec<u8>,
    pub split: u8,
    pub pending: u8,
}

/// A body: its frames, its trailers, and whether it fails at the end instead of ending.
#[derive(Arbitrary, Debug, Clone)]
pub struct Stream {
    pub pieces: Vec<Piece>,
    pub trailers: Option<Vec<(u8, Vec<u8>)>>,
    pub fails: bool,
    pub exact_hint: bool,
}

impl Stream {
    /// A seed's body as a stream: 7-byte frames, each split at its 3rd byte, with a
    /// `Pending` before each; it ends cleanly.
    pub fn seeded(body: &[u8]) -> Stream {
        Stream {
            pieces: body
                .chunks(7)
                .map(|c| Piece {
                    data: c.to_vec(),
                    split: 3,
                    pending: 1,
                })
                .collect(),
            trailers: None,
            fails: false,
            exact_hint: false,
        }
    }

    /// Every data byte, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect()
    }

    /// The trailers, valid values only (`None` when the body fails first).
    pub fn trailer_map(&self) -> Option<HeaderMap> {
        if self.fails {
            return None;
        }
        let mut map = HeaderMap::new();
        for (name, value) in self.trailers.as_ref()?.iter().take(8) {
            let name = HeaderName::from_static(pick(
                &["grpc-status", "grpc-message", "x-checksum"],
                *name,
            ));
            if let Ok(v) = HeaderValue::from_bytes(value) {
                map.append(name, v);
            }
        }
        Some(map)
    }

    /// The body.
    pub fn body(&self) -> Scripted {
        Scripted {
            frames: self
                .pieces
                .iter()
                .map(|p| {
                    let at = usize::from(p.split).min(p.data.len());
                    let data = Bytes::copy_from_slice(&p.data);
                    (p.pending % 4, data.slice(..at).chain(data.slice(at..)))
                })
                .collect(),
            trailers: self.trailer_map(),
            fails: self.fails,
            exact_hint: self.exact_hint,
            pending: 0,
        }
    }
}

/// The error a [`Scripted`] body fails with.
#[derive(Debug, PartialEq, Eq)]
pub struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// A body playing a [`Stream`]; its data is non-contiguous (`Chain<Bytes, Bytes>`).
pub struct Scripted {
    frames: VecDeque<(u8, Chain<Bytes, Bytes>)>,
    trailers: Option<HeaderMap>,
    fails: bool,
    exact_hint: bool,
    pending: u8,
}

impl Body for Scripted {
    type Data = Chain<Bytes, Bytes>;
    type Error = Boom;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Boom>>> {
        let this = &mut *self;
        if let Some((wait, _)) = this.frames.front() {
            if this.pending < *wait {
                this.pending += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.pending = 0;
            let (_, data) = this.frames.pop_front().expect("a frame");
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut this.fails) {
            this.trailers = None;
            return Poll::Ready(Some(Err(Boom)));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.fails && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let left: u64 = self.frames.iter().map(|(_, d)| d.remaining() as u64).sum();
        if self.exact_hint && !self.fails {
            SizeHint::with_exact(left)
        } else {
            let mut h = SizeHint::new();
            h.set_lower(left / 2);
            h
        }
    }
}

// === reading a body, checking the contract ===

/// What a body yielded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub bytes: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// The error's text, when it ended with one.
    pub error: Option<String>,
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Reads `body` to its end without a runtime (it must wake itself when pending), checking at
/// each step that its size hint covers what is still to come (`total` bytes in all, when
/// the body ends cleanly) and that `is_end_stream` is only said at the end. At most
/// `max_polls` polls: a body that needs more hangs.
pub fn drain<B>(mut body: Pin<&mut B>, total: Option<u64>, max_polls: usize) -> Drained
where
    B: Body + ?Sized,
    B::Error: std::fmt::Display,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut out = Drained::default();
    let mut seen = 0u64;
    for _ in 0..max_polls {
        let said_end = body.is_end_stream();
        let hint = body.size_hint();
        if let Some(total) = total {
            let left = total - seen;
            assert!(
                hint.lower() <= left,
                "size hint {hint:?} with {left} bytes left"
            );
            assert!(
                hint.upper().is_none_or(|u| u >= left),
                "size hint {hint:?} with {left} bytes left"
            );
        }
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Pending => {
                assert!(!said_end, "pending after is_end_stream");
            }
            Poll::Ready(None) => return out,
            Poll::Ready(Some(Ok(frame))) => {
                assert!(!said_end, "a frame after is_end_stream");
                assert!(out.trailers.is_none(), "a frame after the trailers");
                match frame.into_data() {
                    Ok(mut data) => {
                        let n = data.remaining();
                        seen += n as u64;
                        out.bytes.extend_from_slice(&data.copy_to_bytes(n));
                    }
                    Err(frame) => out.trailers = frame.into_trailers().ok(),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                assert!(!said_end, "an error after is_end_stream");
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    panic!(
        "the body hangs: {} bytes after {max_polls} polls",
        out.bytes.len()
    );
}

// === JSON error bodies ===

/// Keys the provider error bodies use.
const KEYS: &[&str] = &[
    "error",
    "code",
    "message",
    "type",
    "param",
    "status",
    "metadata",
    "error_type",
    "limit_source",
    "provider_name",
    "raw",
    "headers",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Reset",
    "retry_after_seconds",
    "retry_after_seconds_raw",
    "availability",
    "retryable",
    "retry_after",
    "fallback_models",
    "details",
    "error_code",
    "@type",
    "retryDelay",
    "violations",
    "quotaId",
    "quotaMetric",
    "request_id",
    "is_byok",
    "remedy_hint",
];

/// Strings the classifiers look for.
const STRINGS: &[&str] = &[
    "error",
    "429",
    "rate_limit_exceeded",
    "insufficient_quota",
    "credit_balance_exhausted",
    "budget_exceeded",
    "rate_limit_error",
    "overloaded_error",
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "api_error",
    "enforced_spend_limit_reached",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "PERMISSION_DENIED",
    "type.googleapis.com/google.rpc.RetryInfo",
    "type.googleapis.com/google.rpc.QuotaFailure",
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    "12s",
    "1.5s",
    "capacity_exhausted",
    "temporarily_unavailable",
    "model_not_found",
    "free_variant_ended",
    "provider_overloaded",
    "provider_unavailable",
    "payment_required",
    "openrouter_free_tier_daily",
    "openrouter_shared_capacity",
    "upstream_provider_shared_pool",
    "openrouter_credits",
    "openrouter_in_flight_budget",
    "Provider returned error",
    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
    "Rate limit exceeded: free-models-per-min.",
    "Rate limit exceeded: limit_rpm/google/gemma-3-27b-it/9f3c. High demand for google/gemma-3-27b-it:free on OpenRouter - limited to 8 requests per minute.",
    "google/gemma-3-27b-it is temporarily rate-limited upstream. Please retry shortly.",
    "No deployments available for selected model, Try again in 60 seconds",
    "litellm.RateLimitError: Crossed TPM / RPM / Max Parallel Request Limit",
    "Please try again in 7m12s.",
    "retry after 250ms",
    "please wait 2 minutes",
    "Budget has been exceeded! Current cost: 10.5, Max budget: 10.0",
    "You exceeded your current quota, please check your plan and billing details.",
    // LiteLLM's key limiter (v3, older, legacy) and OpenRouter's data policy.
    "Rate limit exceeded for api_key: ab. Limit type: max_parallel_requests. Current limit: 1, Remaining: 0. Limit resets at: 2024-11-21 23:01:00 UTC",
    "Rate limit exceeded for api_key: ab. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2024-11-21 23:01:00 UTC",
    "Max parallel request limit reached. Hit limit for api_key: ab. current max_parallel_requests: 1, max_parallel_requests: 1",
    "LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM / RPM / Max Parallel Request Limit. current rpm: 1, rpm limit: 20, current tpm: 0, tpm limit: None, current max_parallel_requests: 1, max_parallel_requests: 1",
    "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy",
    "privacy_restricted",
    "model_deprecated",
];

/// A JSON value built from the providers' keys and strings, or anything else.
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(u8),
    RawStr(String),
    Array(Vec<Json>),
    Object(Vec<(u8, Json)>),
    RawObject(Vec<(String, Json)>),
}

impl Json {
    /// The value as `serde_json`'s, at most `depth` levels deep.
    pub fn value(&self, depth: u8) -> serde_json::Value {
        use serde_json::Value as V;
        if depth == 0 {
            return V::Null;
        }
        match self {
            Json::Null => V::Null,
            Json::Bool(b) => V::Bool(*b),
            Json::Int(n) => V::from(*n),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(V::Null, V::Number),
            Json::Str(i) => V::from(pick(STRINGS, *i)),
            Json::RawStr(s) => V::from(s.as_str()),
            Json::Array(items) => {
                V::Array(items.iter().take(8).map(|j| j.value(depth - 1)).collect())
            }
            Json::Object(fields) => V::Object(
                fields
                    .iter()
                    .take(12)
                    .map(|(k, j)| (pick(KEYS, *k).to_owned(), j.value(depth - 1)))
                    .collect(),
            ),
            Json::RawObject(fields) => V::Object(
                fields
                    .iter()
                    .take(8)
                    .map(|(k, j)| (k.clone(), j.value(depth - 1)))
                    .collect(),
            ),
        }
    }
}

/// A response body: JSON in the providers' vocabulary (possibly cut short, as the body cap
/// cuts it), or raw bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum ErrorBody {
    Json { value: Json, cut: Option<u16> },
    Raw(Vec<u8>),
}

impl ErrorBody {
    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            ErrorBody::Json { value, cut } => {
                let mut out = serde_json::to_vec(&value.value(6)).expect("JSON");
                if let Some(cut) = cut {
                    out.truncate(usize::from(*cut));
                }
                out
            }
            ErrorBody::Raw(b) => b.clone(),
        }
    }
}

// === driving futures without a runtime ===

/// Polls `future` to completion with a waker that does nothing: everything it waits on must
/// wake it at once. At most `max_polls` polls: a future that needs more hangs.
pub fn block_on<F: std::future::Future>(future: F, max_polls: usize) -> F::Output {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    for _ in 0..max_polls {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the future hangs after {max_polls} polls");
}

// === text inputs ===

/// The wall-clock time of text inputs: 2024-11-21T23:00:00Z, an hour before a UTC midnight.
pub const TEXT_NOW: u64 = 1_732_230_000;

/// A response written as text, for readable seeds: `HTTP/1.1 429 Too Many Requests`, header
/// lines, a blank line, the body.
#[derive(Debug)]
pub struct Text {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Reads `data` as a [`Text`] response if it starts with `HTTP/`; lines end with `\n` or
/// `\r\n`; header lines that are not valid are skipped.
pub fn parse_text(data: &[u8]) -> Option<Text> {
    if !data.starts_with(b"HTTP/") {
        return None;
    }
    let mut rest = data;
    let mut line = || {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (l, r) = rest.split_at(end);
        rest = r.get(1..).unwrap_or(&[]);
        l.strip_suffix(b"\r").unwrap_or(l)
    };
    let status_line = line();
    let status = std::str::from_utf8(status_line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let mut headers = HeaderMap::new();
    loop {
        let l = line();
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(l[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(l[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Some(Text {
        status,
        headers,
        body: rest.to_vec(),
    })
}

/// The text time as a `SystemTime`.
pub fn text_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(TEXT_NOW)
}

/// The header map and wall-clock time an input of a header target stands for: a response
/// written as text (the seeds; at [`TEXT_NOW`]), else a structured `(Headers, Now)`.
pub fn header_input(data: &[u8]) -> Option<(HeaderMap, SystemTime)> {
    if let Some(text) = parse_text(data) {
        return Some((text.headers, text_now()));
    }
    let u = arbitrary::Unstructured::new(data);
    let (headers, now) = <(Headers, Now)>::arbitrary_take_rest(u).ok()?;
    let now = now.time();
    Some((headers.map(now), now))
}
