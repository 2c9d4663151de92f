//! What a response reports: [`Usage`], and the [`UsageScanner`] that finds it in a body fed
//! chunk by chunk, in bounded memory.
//!
//! # Where the providers put their usage
//!
//! | response | where | fields |
//! |---|---|---|
//! | OpenAI chat (JSON) | top-level `usage` | `prompt_tokens`, `completion_tokens`, `total_tokens` |
//! | OpenAI Responses, Anthropic Messages (JSON) | top-level `usage` | `input_tokens`, `output_tokens` (Anthropic: and the cache counts) |
//! | OpenAI chat (SSE) | the chunk before `data: [DONE]`, with `choices: []`, when the request set `stream_options.include_usage` (every other chunk has `"usage": null`) | as in JSON |
//! | OpenAI Responses (SSE) | `response.usage` of `response.completed` (or `response.incomplete`, `response.failed`) | as in JSON |
//! | Anthropic Messages (SSE) | `message.usage` of `message_start` (input and cache counts, an intermediate output count), then `usage` of `message_delta` (the final, **cumulative** output count, sometimes the input counts again) | as in JSON |
//! | Gemini and Vertex AI `generateContent` (JSON) | top-level `usageMetadata` | `promptTokenCount` (cached content included) and `toolUsePromptTokenCount` in; `candidatesTokenCount` and `thoughtsTokenCount` (thinking) out |
//! | Gemini `streamGenerateContent` (SSE with `alt=sse`, else a JSON array of responses) | `usageMetadata` of each response, cumulative, the last one final | as in JSON |
//!
//! Every count the providers send is cumulative, so the scanner keeps, field by field, the
//! last value it saw: Anthropic's `message_delta` replaces the output count of
//! `message_start` rather than adding to it.
//!
//! # Memory
//!
//! The scanner never holds a body, a line or an event. It follows the JSON structure byte by
//! byte (strings skipped with `memchr`) and keeps only the bytes of a `usage` value, at most
//! [`MAX_USAGE_BYTES`]; a longer one is dropped. In an event stream it reads each `data:`
//! line's value straight into the same JSON follower, so a 10 MB `response.completed` event
//! (it repeats the whole answer) costs no more memory than a 100-byte chunk, and a line of
//! any length never disturbs the events after it. [`UsageScanner::buffered`] tells how many
//! bytes it holds.

use bytes::Buf;
use memchr::memchr2;
use serde_core::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// The longest `usage` value (in bytes of JSON) that [`UsageScanner`] keeps while reading it.
///
/// A usage object with every detail the providers add (OpenRouter's `cost_details`, OpenAI's
/// `prompt_tokens_details` and `completion_tokens_details`, Anthropic's `cache_creation`,
/// `server_tool_use`) is under 1 KiB. A longer one is skipped, as if absent. This is also the
/// most the scanner ever buffers: [`UsageScanner::buffered`] never exceeds it.
pub const MAX_USAGE_BYTES: usize = 4096;

// === Usage ===

/// Tokens a response says it used.
///
/// `input` and `output` are what the provider reports as such (`prompt_tokens` /
/// `input_tokens`, `completion_tokens` / `output_tokens`; output includes reasoning tokens).
///
/// The cache counts are Anthropic's, kept apart because Anthropic reports them **apart from**
/// `input_tokens`: a request's whole prompt is `input + cache_creation_input +
/// cache_read_input` ([`Usage::input_total`]). What Anthropic's input-tokens-per-minute limit
/// counts is, for most current models, `input + cache_creation_input`: cache reads are not
/// counted ([`Usage::counted_input`]). OpenAI's cached tokens
/// (`prompt_tokens_details.cached_tokens`, `input_tokens_details.cached_tokens`) are a part
/// **of** `prompt_tokens` / `input_tokens`, so they are already in `input` and are not
/// recorded again; for OpenAI-shaped responses both cache counts are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Usage {
    /// Input (prompt) tokens: `prompt_tokens` or `input_tokens`. Anthropic: the input tokens
    /// that were neither written to nor read from the prompt cache.
    pub input: u64,
    /// Output (completion) tokens: `completion_tokens` or `output_tokens`.
    pub output: u64,
    /// Anthropic's `cache_creation_input_tokens`: input tokens written to the prompt cache
    /// (billed at a premium; counted by the input rate limit).
    pub cache_creation_input: u64,
    /// Anthropic's `cache_read_input_tokens`: input tokens read from the prompt cache (billed
    /// at a tenth; not counted by the input rate limit of most current models).
    pub cache_read_input: u64,
}

impl Usage {
    /// A usage of `input` and `output` tokens, with no cache counts.
    pub const fn new(input: u64, output: u64) -> Self {
        Usage {
            input,
            output,
            cache_creation_input: 0,
            cache_read_input: 0,
        }
    }

    /// The same usage with Anthropic's cache counts.
    pub const fn with_cache(mut self, creation_input: u64, read_input: u64) -> Self {
        self.cache_creation_input = creation_input;
        self.cache_read_input = read_input;
        self
    }

    /// Every input token of the request: `input + cache_creation_input + cache_read_input`.
    pub const fn input_total(&self) -> u64 {
        self.input
            .saturating_add(self.cache_creation_input)
            .saturating_add(self.cache_read_input)
    }

    /// The input tokens an input-tokens-per-minute limit counts: `input +
    /// cache_creation_input` (Anthropic does not count cache reads for most current models;
    /// for OpenAI-shaped responses this is `input`).
    pub const fn counted_input(&self) -> u64 {
        self.input.saturating_add(self.cache_creation_input)
    }

    /// Every token, in and out: [`input_total`](Usage::input_total) `+ output` (OpenAI's
    /// `total_tokens`).
    pub const fn total(&self) -> u64 {
        self.input_total().saturating_add(self.output)
    }
}

// === Format ===

/// How a response body is read, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// A JSON object (or a sequence of them, as JSON lines); the top-level `usage` member is
    /// read (Gemini's `usageMetadata`, also in the objects of a top-level array). Bytes that
    /// are not JSON between them are passed over.
    Json,
    /// Server-sent events (`text/event-stream`); each event's data is one JSON object, read
    /// for `usage`, `message.usage` and `response.usage`.
    EventStream,
    /// Unknown: decided by the first byte that is not whitespace (or a byte order mark): `{`
    /// reads the body as [`Json`](Format::Json), anything else as an
    /// [`EventStream`](Format::EventStream) (`data:`, `event:`, or a `:` comment such as
    /// OpenRouter's `: OPENROUTER PROCESSING`).
    Sniff,
}

impl Format {
    /// The format a `Content-Type` value names: `text/event-stream` is
    /// [`EventStream`](Format::EventStream); `application/json` and any `…/…+json` are
    /// [`Json`](Format::Json); anything else, or none, is [`Sniff`](Format::Sniff)
    /// (parameters and case are ignored).
    pub fn from_content_type(value: Option<&str>) -> Format {
        let Some(value) = value else {
            return Format::Sniff;
        };
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Format::EventStream
        } else if essence.eq_ignore_ascii_case("application/json")
            || (essence.len() > 5
                && essence.contains('/')
                && essence.is_char_boundary(essence.len() - 5)
                && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
        {
            Format::Json
        } else {
            Format::Sniff
        }
    }

    /// The format of a response with these headers (its `Content-Type`; a value that is not
    /// visible ASCII counts as none).
    pub fn from_headers(headers: &http::HeaderMap) -> Format {
        Format::from_content_type(
            headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )
    }
}

// === UsageScanner ===

/// Finds the [`Usage`] in a response body fed to it chunk by chunk, in order, split anywhere
/// (one byte at a time gives the same answer as one chunk), in memory bounded by
/// [`MAX_USAGE_BYTES`] whatever the body's size.
///
/// It never fails and never panics: bytes that are not what it expects (an HTML error page,
/// a truncated body, `data: [DONE]`) are passed over, and a body without a readable `usage`
/// gives `None`.
///
/// ```
/// use tower_quota::tokens::{Format, Usage, UsageScanner};
///
/// let body = "event: message_start\r\n\
///             data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
///             event: message_delta\r\n\
///             data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n";
/// let mut scanner = UsageScanner::new(Format::EventStream);
/// for byte in body.as_bytes().chunks(1) {
///     scanner.feed(byte);
/// }
/// assert_eq!(scanner.finish(), Some(Usage::new(25, 15)));
/// ```
#[derive(Clone)]
pub struct UsageScanner {
    mode: Mode,
    /// Bytes of a leading UTF-8 byte order mark seen so far; `BOM_DONE` once past the start.
    bom: u8,
    sse: Sse,
    finder: Finder,
    seen: Seen,
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sniff,
    Json,
    EventStream,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
const BOM_DONE: u8 = u8::MAX;

impl UsageScanner {
    /// A scanner for a body in `format`.
    pub fn new(format: Format) -> Self {
        let mode = match format {
            Format::Json => Mode::Json,
            Format::EventStream => Mode::EventStream,
            Format::Sniff => Mode::Sniff,
        };
        UsageScanner {
            mode,
            bom: 0,
            sse: Sse::default(),
            finder: Finder::new(mode == Mode::EventStream),
            seen: Seen::default(),
            lost: false,
        }
    }

    /// A scanner for the body of a response with these headers
    /// ([`Format::from_headers`]).
    pub fn for_headers(headers: &http::HeaderMap) -> Self {
        UsageScanner::new(Format::from_headers(headers))
    }

    /// The format the body is read as: the one given, or for [`Format::Sniff`] the one
    /// decided once a byte other than whitespace was fed.
    pub fn format(&self) -> Format {
        match self.mode {
            Mode::Sniff => Format::Sniff,
            Mode::Json => Format::Json,
            Mode::EventStream => Format::EventStream,
        }
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.lost {
            return;
        }
        while self.bom != BOM_DONE {
            let Some((&b, rest)) = chunk.split_first() else {
                return;
            };
            if usize::from(self.bom) < BOM.len() && b == BOM[usize::from(self.bom)] {
                self.bom += 1;
                chunk = rest;
            } else {
                self.bom = BOM_DONE;
            }
        }
        if self.mode == Mode::Sniff {
            let Some(at) = chunk
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            else {
                return;
            };
            chunk = &chunk[at..];
            self.mode = if chunk[0] == b'{' {
                Mode::Json
            } else {
                Mode::EventStream
            };
            self.finder = Finder::new(self.mode == Mode::EventStream);
        }
        match self.mode {
            Mode::Json => self.finder.feed(chunk, &mut self.seen),
            Mode::EventStream => self.sse.feed(chunk, &mut self.finder, &mut self.seen),
            Mode::Sniff => unreachable!("decided above"),
        }
    }

    /// Reads every byte of `buf` without consuming it: the bytes of an `http_body` frame.
    ///
    /// A `Buf` made of many pieces is read through [`Buf::chunks_vectored`], up to 64
    /// pieces. If that does not show every byte (a `Buf` of more pieces, or one that does not
    /// implement `chunks_vectored`), the scanner stops reading the body: it keeps what it has
    /// found so far and reads nothing more, rather than read a stream with a hole in it.
    pub fn feed_buf<T: Buf>(&mut self, buf: &T) {
        let remaining = buf.remaining();
        let first = buf.chunk();
        if first.len() == remaining {
            self.feed(first);
            return;
        }
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let n = buf.chunks_vectored(&mut slices);
        let shown: usize = slices[..n].iter().map(|s| s.len()).sum();
        if shown != remaining {
            self.lost = true;
            return;
        }
        for slice in &slices[..n] {
            self.feed(slice);
        }
    }

    /// What the body has said so far: the counts seen, each the last value reported, or
    /// `None` if it has reported neither an input nor an output count yet.
    ///
    /// Before the body's end this may be partial: Anthropic's `message_start` gives the input
    /// counts and an output count of 1 or so, replaced by `message_delta` at the end.
    pub fn usage(&self) -> Option<Usage> {
        self.seen.usage()
    }

    /// How many bytes the scanner holds: at most [`MAX_USAGE_BYTES`], whatever was fed.
    /// (It allocates one buffer of that capacity the first time it meets a `usage` member,
    /// and never grows it.)
    pub fn buffered(&self) -> usize {
        self.finder.buf.len()
    }

    /// The capacity of the one buffer (for tests).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.finder.buf.capacity()
    }

    /// The usage the body reported ([`usage`](UsageScanner::usage) at the end).
    pub fn finish(self) -> Option<Usage> {
        self.usage()
    }
}

impl fmt::Debug for UsageScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageScanner")
            .field("format", &self.format())
            .field("usage", &self.usage())
            .field("buffered", &self.buffered())
            .field("lost", &self.lost)
            .finish()
    }
}

// === what was seen ===

/// The counts seen so far, each the last one reported.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    input: Option<u64>,
    output: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
}

impl Seen {
    fn merge(&mut self, raw: RawUsage) {
        let input = raw
            .prompt_tokens
            .or(raw.input_tokens)
            .or_else(|| sum(raw.prompt_token_count, raw.tool_use_prompt_token_count));
        let output = raw
            .completion_tokens
            .or(raw.output_tokens)
            .or_else(|| sum(raw.candidates_token_count, raw.thoughts_token_count));
        for (slot, value) in [
            (&mut self.input, input),
            (&mut self.output, output),
            (&mut self.cache_creation, raw.cache_creation_input_tokens),
            (&mut self.cache_read, raw.cache_read_input_tokens),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        Some(Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_creation_input: self.cache_creation.unwrap_or(0),
            cache_read_input: self.cache_read.unwrap_or(0),
        })
    }
}

/// The sum of the counts present, `None` when neither is (Gemini reports input and output
/// in two parts each).
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

/// The members of a `usage` object that count. Lenient: a member of another type, or a
/// `usage` that is not an object, reads as absent.
#[derive(Debug, Default)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    prompt_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl<'de> Deserialize<'de> for RawUsage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUsage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a usage object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawUsage, A::Error> {
                let mut raw = RawUsage::default();
                while let Some(key) = map.next_key::<UsageKey>()? {
                    let slot = match key {
                        UsageKey::PromptTokens => &mut raw.prompt_tokens,
                        UsageKey::PromptTokenCount => &mut raw.prompt_token_count,
                        UsageKey::ToolUsePromptTokenCount => &mut raw.tool_use_prompt_token_count,
                        UsageKey::CandidatesTokenCount => &mut raw.candidates_token_count,
                        UsageKey::ThoughtsTokenCount => &mut raw.thoughts_token_count,
                        UsageKey::CompletionTokens => &mut raw.completion_tokens,
                        UsageKey::InputTokens => &mut raw.input_tokens,
                        UsageKey::OutputTokens => &mut raw.output_tokens,
                        UsageKey::CacheCreation => &mut raw.cache_creation_input_tokens,
                        UsageKey::CacheRead => &mut raw.cache_read_input_tokens,
                        UsageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Count>()?.0;
                }
                Ok(raw)
            }
            // Anything but an object (`null` in every OpenAI chunk but the last) is no usage.
            fn visit_unit<E: de::Error>(self) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawUsage, E> {
                Ok(RawUsage::default())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawUsage, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawUsage::default())
            }
        }
        d.deserialize_any(V)
    }
}

enum UsageKey {
    PromptTokens,
    PromptTokenCount,
    ToolUsePromptTokenCount,
    CandidatesTokenCount,
    ThoughtsTokenCount,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    CacheCreation,
    CacheRead,
    Other,
}

impl<'de> Deserialize<'de> for UsageKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UsageKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<UsageKey, E> {
                Ok(match key {
                    "prompt_tokens" => UsageKey::PromptTokens,
                    "promptTokenCount" => UsageKey::PromptTokenCount,
                    "toolUsePromptTokenCount" => UsageKey::ToolUsePromptTokenCount,
                    "candidatesTokenCount" => UsageKey::CandidatesTokenCount,
                    "thoughtsTokenCount" => UsageKey::ThoughtsTokenCount,
                    "completion_tokens" => UsageKey::CompletionTokens,
                    "input_tokens" => UsageKey::InputTokens,
                    "output_tokens" => UsageKey::OutputTokens,
                    "cache_creation_input_tokens" => UsageKey::CacheCreation,
                    "cache_read_input_tokens" => UsageKey::CacheRead,
                    _ => UsageKey::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A token count: a non-negative integer (also written `12.0`); anything else (`null`, a
/// string, a negative or fractional number) is no count.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                let whole = v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19;
                Ok(Count(whole.then_some(v as u64)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
}

// === the JSON follower ===

/// Follows the structure of a JSON text (or a sequence of them) byte by byte, without
/// validating it, and captures the value of `usage` or `usageMetadata` at the top level
/// (`usageMetadata` also in the objects of a top-level array; for events, also
/// `message.usage` and `response.usage`).
#[derive(Clone)]
struct Finder {
    /// Also capture `message.usage` and `response.usage` (events).
    nested: bool,
    /// Open containers.
    depth: u32,
    /// The containers at depths 1 and 2 (the top-level object and its members' values).
    frames: [Frame; 2],
    string: Str,
    escape: bool,
    /// The name being read (at depth 1 or 2), up to 16 bytes.
    key: [u8; 16],
    key_len: u8,
    /// The depth of the object whose member is being captured.
    capture: Option<u32>,
    overflow: bool,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    state: State,
    /// The name of the member being read (objects).
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectKey,
    InKey,
    AfterKey,
    ExpectValue,
    InValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Usage,
    /// Gemini's and Vertex AI's `usageMetadata`.
    UsageMetadata,
    Message,
    Response,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    None,
    Key,
    Value,
}

const EMPTY_FRAME: Frame = Frame {
    object: false,
    state: State::InValue,
    key: Key::Other,
};

impl Finder {
    fn new(nested: bool) -> Self {
        Finder {
            nested,
            depth: 0,
            frames: [EMPTY_FRAME; 2],
            string: Str::None,
            escape: false,
            key: [0; 16],
            key_len: 0,
            capture: None,
            overflow: false,
            buf: Vec::new(),
        }
    }

    /// Forgets the text read so far (an event ended), keeping the buffer's allocation.
    fn reset(&mut self) {
        self.depth = 0;
        self.string = Str::None;
        self.escape = false;
        self.capture = None;
        self.overflow = false;
        self.buf.clear();
    }

    fn frame(&mut self) -> Option<&mut Frame> {
        match self.depth {
            1 | 2 => Some(&mut self.frames[self.depth as usize - 1]),
            _ => None,
        }
    }

    fn feed(&mut self, data: &[u8], seen: &mut Seen) {
        let mut i = 0;
        while i < data.len() {
            if self.string != Str::None {
                if self.escape {
                    self.escape = false;
                    self.in_string(&data[i..=i], true);
                    self.keep(&data[i..=i]);
                    i += 1;
                    continue;
                }
                let rest = &data[i..];
                match memchr2(b'"', b'\\', rest) {
                    None => {
                        self.in_string(rest, false);
                        self.keep(rest);
                        return;
                    }
                    Some(at) => {
                        self.in_string(&rest[..at], false);
                        self.keep(&rest[..=at]);
                        if rest[at] == b'\\' {
                            self.escape = true;
                        } else {
                            self.end_string();
                        }
                        i += at + 1;
                    }
                }
                continue;
            }
            let b = data[i];
            i += 1;
            if self.capture == Some(self.depth) && matches!(b, b',' | b'}' | b']') {
                self.end_capture(seen);
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => match self.frame() {
                    Some(frame) if frame.state == State::ExpectKey => {
                        frame.state = State::InKey;
                        self.key_len = 0;
                        self.string = Str::Key;
                    }
                    _ => {
                        self.value_start();
                        self.string = Str::Value;
                    }
                },
                b'{' | b'[' => {
                    self.value_start();
                    self.depth = self.depth.saturating_add(1);
                    let object = b == b'{';
                    if let Some(frame) = self.frame() {
                        *frame = Frame {
                            object,
                            state: if object {
                                State::ExpectKey
                            } else {
                                State::ExpectValue
                            },
                            key: Key::Other,
                        };
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b':' => {
                    if let Some(frame) = self.frame() {
                        if frame.state == State::AfterKey {
                            frame.state = State::ExpectValue;
                        }
                    }
                }
                b',' => {
                    if let Some(frame) = self.frame() {
                        frame.state = if frame.object {
                            State::ExpectKey
                        } else {
                            State::ExpectValue
                        };
                    }
                }
                _ => self.value_start(),
            }
            if self.capture.is_some() {
                self.keep(&[b]);
            }
        }
    }

    /// Bytes of a string's contents (`escaped`: the byte after a backslash).
    fn in_string(&mut self, bytes: &[u8], escaped: bool) {
        if self.string != Str::Key || bytes.is_empty() {
            return;
        }
        let len = usize::from(self.key_len);
        // A name with an escape, or longer than the buffer, is none that counts.
        if escaped || len + bytes.len() > self.key.len() {
            self.key_len = u8::MAX;
        } else {
            self.key[len..len + bytes.len()].copy_from_slice(bytes);
            self.key_len += bytes.len() as u8;
        }
    }

    fn end_string(&mut self) {
        if self.string == Str::Key {
            let key = match &self.key[..usize::from(self.key_len).min(self.key.len())] {
                _ if self.key_len == u8::MAX => Key::Other,
                b"usage" => Key::Usage,
                b"usageMetadata" => Key::UsageMetadata,
                b"message" => Key::Message,
                b"response" => Key::Response,
                _ => Key::Other,
            };
            if let Some(frame) = self.frame() {
                frame.key = key;
                frame.state = State::AfterKey;
            }
        }
        self.string = Str::None;
    }

    /// The first byte of a value: starts capturing it if it is a `usage` we look for.
    fn value_start(&mut self) {
        let depth = self.depth;
        let Some(frame) = self.frame() else {
            return;
        };
        if frame.state != State::ExpectValue {
            return;
        }
        frame.state = State::InValue;
        let (key, object) = (frame.key, frame.object);
        let parent = self.frames[0];
        let wanted = object
            && match (key, depth) {
                (Key::Usage | Key::UsageMetadata, 1) => true,
                (Key::Usage, _) => {
                    self.nested
                        && parent.object
                        && matches!(parent.key, Key::Message | Key::Response)
                }
                // Gemini's `streamGenerateContent` without `alt=sse`: a JSON array of
                // responses, each with its `usageMetadata`.
                (Key::UsageMetadata, _) => !parent.object,
                _ => false,
            };
        if wanted && self.capture.is_none() {
            self.capture = Some(depth);
            self.overflow = false;
            self.buf.clear();
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(MAX_USAGE_BYTES);
            }
        }
    }

    /// Keeps bytes of the value being captured, up to the cap.
    fn keep(&mut self, bytes: &[u8]) {
        if self.capture.is_none() || self.overflow {
            return;
        }
        if self.buf.len() + bytes.len() > MAX_USAGE_BYTES {
            self.overflow = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn end_capture(&mut self, seen: &mut Seen) {
        self.capture = None;
        if !self.overflow {
            if let Ok(raw) = serde_json::from_slice::<RawUsage>(&self.buf) {
                seen.merge(raw);
            }
        }
        self.overflow = false;
        self.buf.clear();
    }
}

// === server-sent events ===

/// Where the event-stream reader is in a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    #[default]
    Start,
    /// In a field name, `n` bytes of which match `data`.
    Name(u8),
    /// In a line that does not matter (a comment, another field).
    Ignore,
    /// Just after `data:` (a space here is skipped).
    DataStart,
    /// In the value of a `data` field.
    Data,
}

/// The line reader of an event stream (the WHATWG HTML "server-sent events" parsing rules),
/// holding no line: the values of `data` fields go straight to the JSON follower, joined by
/// `\n` as the rules say; a blank line ends an event and resets the follower.
#[derive(Debug, Clone, Copy, Default)]
struct Sse {
    line: Line,
    /// The last byte was a `\r` (a `\n` now ends no second line).
    last_cr: bool,
}

impl Sse {
    fn feed(&mut self, data: &[u8], finder: &mut Finder, seen: &mut Seen) {
        let mut i = 0;
        while i < data.len() {
            match self.line {
                Line::Data | Line::Ignore => {
                    let rest = &data[i..];
                    let end = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if self.line == Line::Data {
                        finder.feed(&rest[..end], seen);
                    }
                    if end > 0 {
                        self.last_cr = false;
                    }
                    i += end;
                    if i < data.len() {
                        self.end_line(data[i], finder, seen);
                        i += 1;
                    }
                }
                Line::Start | Line::Name(_) | Line::DataStart => {
                    let b = data[i];
                    i += 1;
                    if b == b'\r' || b == b'\n' {
                        self.end_line(b, finder, seen);
                        continue;
                    }
                    self.last_cr = false;
                    self.line = match (self.line, b) {
                        (Line::Start, b':') => Line::Ignore,
                        (Line::Start, _) => Line::Name(0),
                        (Line::DataStart, b' ') => Line::Data,
                        (Line::DataStart, _) => {
                            i -= 1; // this byte is the value's first
                            Line::Data
                        }
                        (line, _) => line,
                    };
                    if let Line::Name(n) = self.line {
                        self.line = match (n, b) {
                            (4, b':') => Line::DataStart,
                            (0..=3, _) if b == b"data"[usize::from(n)] => Line::Name(n + 1),
                            _ => Line::Ignore,
                        };
                    }
                }
            }
        }
    }

    fn end_line(&mut self, b: u8, finder: &mut Finder, seen: &mut Seen) {
        if b == b'\n' && self.last_cr {
            // The `\n` of a `\r\n`.
            self.last_cr = false;
            return;
        }
        self.last_cr = b == b'\r';
        match self.line {
            // A blank line dispatches the event.
            Line::Start => finder.reset(),
            // The end of a data line (`data` with no colon is one with an empty value).
            Line::Data | Line::DataStart | Line::Name(4) => finder.feed(b"\n", seen),
            Line::Name(_) | Line::Ignore => {}
        }
        self.line = Line::Start;
    }
}
