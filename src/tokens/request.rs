//! What a request body says: [`RequestFacts`].

use serde_core::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_core::Deserialize;
use std::fmt;

/// Bytes of prompt text per token in the built-in estimate, [`RequestFacts::estimated_input_tokens`].
///
/// OpenAI's rule of thumb is "one token is about 4 characters of English text"; Anthropic's
/// is about 3.5 characters per Claude token. 3.5 is the smaller of the two, so one constant
/// serves both without under-reserving for Claude. It is counted over UTF-8 **bytes**, not
/// characters, which leans the same way for any text that is not ASCII (an accented letter is
/// 2 bytes, a CJK character 3 — and usually about one token). Code, numbers and JSON pack
/// fewer characters per token than prose; an estimate that comes out high costs only
/// headroom until the response's real usage corrects it, one that comes out low can trip the
/// server's limit before the correction arrives.
pub const BYTES_PER_TOKEN: f64 = 3.5;

/// Tokens added per message (or Responses API input item) in the estimate: the role and
/// delimiters that frame each message. OpenAI's cookbook ("How to count tokens with
/// tiktoken") counts 3 per message for current chat models.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens added once per conversation in the estimate: the cookbook's 3 tokens that prime
/// the assistant's reply (`<|start|>assistant<|message|>`). Added when there is at least one
/// message or input item.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Tokens counted for each part that is not text (an image, audio, a file or document) in the
/// estimate.
///
/// Their size cannot be told from the request (a URL, or base64 bytes that are not text), so
/// each counts as a fixed 1 600 tokens: the most an image costs on Anthropic (which scales
/// images down to about 1.15 megapixels, ≈ 1 600 tokens), above OpenAI's high-detail
/// images (765 tokens for 1024×1024, ≈ 1 450 for the largest tiling). Long audio and
/// multi-page documents can cost more; their real count arrives with the response's usage.
/// The bytes of such parts (base64 data, URLs) are never counted as text.
pub const TOKENS_PER_MEDIA_PART: u64 = 1_600;

/// The top-level fields of a JSON request body that tell what the request costs in tokens,
/// read without copying the body (only the model's name is copied) and without building a
/// tree of it.
///
/// Read from the request shapes of the OpenAI chat and completions APIs, the OpenAI
/// Responses API, the Anthropic Messages API, and every API compatible with them (LiteLLM,
/// OpenRouter, Gemini's OpenAI-compatible endpoint):
///
/// | field | read as |
/// |---|---|
/// | `model` | [`model`](RequestFacts::model) |
/// | `max_tokens`, `max_completion_tokens`, `max_output_tokens` | [`max_output_tokens`](RequestFacts::max_output_tokens): the largest given |
/// | `stream`, `stream_options.include_usage` | [`stream`](RequestFacts::stream), [`include_usage`](RequestFacts::include_usage) |
/// | `messages` (chat, Anthropic) | text of each message's `content` (a string, or parts), of its `tool_calls`; one [message](RequestFacts::messages) each |
/// | `system` (Anthropic: a string or blocks), `instructions` (Responses) | text |
/// | `prompt` (completions: a string, strings, or token ids) | text; each token id is one token |
/// | `input` (Responses: a string or items; embeddings: strings or token ids) | text; each item is one message; each token id one token |
///
/// **Text** is counted in UTF-8 bytes of the JSON strings' decoded contents: the `text` of a
/// part (`text`, `input_text`, `output_text`), a part's or item's `content` and `output`
/// (nested: Anthropic's `tool_result`), `thinking`, `refusal`, tool-call `arguments`, and every
/// string and member name of `tool_calls` and of a `tool_use` block's `input`. Roles, ids,
/// `cache_control` and other metadata are not text. A part of type `image`, `image_url`,
/// `input_image`, `audio`, `input_audio`, `file`, `input_file` or `document` is a
/// [media part](RequestFacts::media_parts), counted as [`TOKENS_PER_MEDIA_PART`].
/// Tool definitions (`tools`) are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    model: Option<String>,
    max_output_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
    tally: Tally,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    text_bytes: u64,
    messages: u64,
    media_parts: u64,
    token_ids: u64,
}

impl RequestFacts {
    /// Reads a JSON request body.
    ///
    /// `None` when the body is not one JSON object, or when a field read here has a type the
    /// APIs do not allow (`model` not a string, `max_tokens` not a non-negative integer,
    /// `stream` not a boolean, `messages` not an array of objects, `system`, `prompt` or
    /// `input` neither a string nor an array, …): then the caller falls back to what the
    /// request's head says. Never panics; nesting deeper than 128 is refused (`None`).
    ///
    /// ```
    /// use tower_quota::tokens::RequestFacts;
    ///
    /// let body = br#"{"model":"openai/gpt-4o-mini","max_tokens":800,"stream":true,
    ///     "stream_options":{"include_usage":true},
    ///     "messages":[{"role":"system","content":"Be brief."},
    ///                 {"role":"user","content":[{"type":"text","text":"What is a token?"},
    ///                                            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]}]}"#;
    /// let facts = RequestFacts::from_json(body).unwrap();
    /// assert_eq!(facts.model(), Some("openai/gpt-4o-mini"));
    /// assert_eq!(facts.max_output_tokens(), Some(800));
    /// assert!(facts.stream() && facts.include_usage());
    /// assert_eq!(facts.prompt_bytes(), 9 + 16);
    /// assert_eq!((facts.messages(), facts.media_parts()), (2, 1));
    /// // ⌈25 / 3.5⌉ + 2 × 3 per message + 3 priming + 1 600 for the image
    /// assert_eq!(facts.estimated_input_tokens(), 8 + 6 + 3 + 1_600);
    /// assert_eq!(facts.output_reservation(4096), 800);
    ///
    /// assert_eq!(RequestFacts::from_json(b"not json"), None);
    /// assert_eq!(RequestFacts::from_json(br#"{"max_tokens":"800"}"#), None);
    /// ```
    pub fn from_json(body: &[u8]) -> Option<RequestFacts> {
        serde_json::from_slice::<RequestFacts>(body).ok()
    }

    /// The `model` the body names.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The cap on output tokens the body sets: the largest of `max_tokens` (OpenAI chat,
    /// Anthropic, completions), `max_completion_tokens` (OpenAI chat, reasoning models) and
    /// `max_output_tokens` (OpenAI Responses, Gemini) that is present and not `null`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_output_tokens
    }

    /// Whether the body asks for a streamed answer (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// Whether the body asks for usage at the end of a stream
    /// (`"stream_options": {"include_usage": true}`, OpenAI chat). Anthropic and the
    /// Responses API always report usage when streaming; OpenAI chat streams without this
    /// report none.
    pub fn include_usage(&self) -> bool {
        self.include_usage
    }

    /// The prompt's text, in bytes (see the type's docs for what counts as text).
    pub fn prompt_bytes(&self) -> u64 {
        self.tally.text_bytes
    }

    /// How many messages (`messages`) or input items (objects in an `input` array) the body
    /// holds.
    pub fn messages(&self) -> u64 {
        self.tally.messages
    }

    /// How many parts are not text: images, audio, files, documents.
    pub fn media_parts(&self) -> u64 {
        self.tally.media_parts
    }

    /// How many token ids the body gives directly (`prompt` or `input` as arrays of
    /// integers): each counts as one token in the estimate.
    pub fn prompt_token_ids(&self) -> u64 {
        self.tally.token_ids
    }

    /// The built-in estimate of the request's input tokens:
    /// ⌈[`prompt_bytes`](RequestFacts::prompt_bytes) / [`BYTES_PER_TOKEN`]⌉
    /// \+ [`TOKENS_PER_MESSAGE`] × [`messages`](RequestFacts::messages)
    /// \+ [`REPLY_PRIMING_TOKENS`] (if any message)
    /// \+ [`TOKENS_PER_MEDIA_PART`] × [`media_parts`](RequestFacts::media_parts)
    /// \+ [`prompt_token_ids`](RequestFacts::prompt_token_ids).
    ///
    /// It errs on the high side for text, and is meant to be corrected by the response's
    /// [`Usage`](super::Usage). Tool definitions are not counted.
    pub fn estimated_input_tokens(&self) -> u64 {
        let t = &self.tally;
        let text = (t.text_bytes as f64 / BYTES_PER_TOKEN).ceil() as u64;
        let priming = if t.messages > 0 {
            REPLY_PRIMING_TOKENS
        } else {
            0
        };
        text.saturating_add(t.messages.saturating_mul(TOKENS_PER_MESSAGE))
            .saturating_add(priming)
            .saturating_add(t.media_parts.saturating_mul(TOKENS_PER_MEDIA_PART))
            .saturating_add(t.token_ids)
    }

    /// The output tokens to reserve: the body's
    /// [`max_output_tokens`](RequestFacts::max_output_tokens), else `default` (what the
    /// server would allow: the model's own maximum, or a configured figure).
    pub fn output_reservation(&self, default: u64) -> u64 {
        self.max_output_tokens.unwrap_or(default)
    }

    /// [`estimated_input_tokens`](RequestFacts::estimated_input_tokens) `+`
    /// [`output_reservation(default)`](RequestFacts::output_reservation): what a total-tokens
    /// quota reserves for the request.
    pub fn estimated_total_tokens(&self, default_output: u64) -> u64 {
        self.estimated_input_tokens()
            .saturating_add(self.output_reservation(default_output))
    }
}

// === the top level ===

enum TopKey {
    Model,
    MaxTokens,
    Stream,
    StreamOptions,
    /// `messages`; Gemini's `contents`.
    Messages,
    /// `system`, `prompt`, `instructions`.
    Text,
    /// Gemini's `systemInstruction`: an object with `parts`, its text counted (not as a
    /// message).
    Instruction,
    /// Gemini's `generationConfig`: its `maxOutputTokens`.
    GenerationConfig,
    /// `input`: objects in it are items, each counted as a message.
    Input,
    Other,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor(|key: &str| match key {
            "model" => TopKey::Model,
            "max_tokens" | "max_completion_tokens" | "max_output_tokens" => TopKey::MaxTokens,
            "stream" => TopKey::Stream,
            "stream_options" => TopKey::StreamOptions,
            "messages" | "contents" => TopKey::Messages,
            "system" | "prompt" | "instructions" => TopKey::Text,
            "systemInstruction" | "system_instruction" => TopKey::Instruction,
            "generationConfig" | "generation_config" => TopKey::GenerationConfig,
            "input" => TopKey::Input,
            _ => TopKey::Other,
        }))
    }
}

/// A visitor of member names that maps each to a value without allocating.
struct KeyVisitor<F>(F);

impl<T, F: FnOnce(&str) -> T> Visitor<'_> for KeyVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<T, E> {
        Ok((self.0)(key))
    }
}

impl RequestFacts {
    /// An output cap the body gives: the largest of those given counts.
    fn cap_output(&mut self, max: Option<u64>) {
        if let Some(max) = max {
            self.max_output_tokens = Some(self.max_output_tokens.map_or(max, |m| m.max(max)));
        }
    }
}

impl<'de> Deserialize<'de> for RequestFacts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RequestFacts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFacts, A::Error> {
                let mut facts = RequestFacts::default();
                while let Some(key) = map.next_key::<TopKey>()? {
                    match key {
                        TopKey::Model => facts.model = map.next_value()?,
                        TopKey::MaxTokens => facts.cap_output(map.next_value::<Option<u64>>()?),
                        TopKey::Stream => {
                            facts.stream = map.next_value::<Option<bool>>()?.unwrap_or(false)
                        }
                        TopKey::StreamOptions => {
                            let include = Member::<bool>::named(|k| k == "include_usage");
                            facts.include_usage = map.next_value_seed(include)?.unwrap_or(false)
                        }
                        TopKey::Messages => {
                            map.next_value_seed(Nullable(Messages(&mut facts.tally)))?
                        }
                        // Gemini's `systemInstruction`: one content object, its text counted
                        // (not as a message).
                        TopKey::Instruction => {
                            map.next_value_seed(Nullable(Message(&mut facts.tally)))?
                        }
                        TopKey::GenerationConfig => {
                            let max = Member::<u64>::named(|k| {
                                matches!(k, "maxOutputTokens" | "max_output_tokens")
                            });
                            facts.cap_output(map.next_value_seed(max)?);
                        }
                        TopKey::Text => map.next_value_seed(TopText(&mut facts.tally, false))?,
                        TopKey::Input => map.next_value_seed(TopText(&mut facts.tally, true))?,
                        TopKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(facts)
            }
        }
        d.deserialize_map(V)
    }
}

/// One member of an object, named as `is_name` says (the last such), its value a `T` or
/// `null`; the other members passed over. `null` for the object is none; another type is an
/// error. `stream_options.include_usage`, Gemini's `generationConfig.maxOutputTokens`.
struct Member<T> {
    is_name: fn(&str) -> bool,
    value: std::marker::PhantomData<T>,
}

impl<T> Member<T> {
    fn named(is_name: fn(&str) -> bool) -> Self {
        Member {
            is_name,
            value: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Member<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Member<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut value = None;
        while let Some(wanted) = map.next_key_seed(KeyVisitor(self.is_name))? {
            if wanted {
                value = map.next_value::<Option<T>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeyVisitor<F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_identifier(self)
    }
}

/// A value read by the seed `S`, or `null` (nothing).
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for Nullable<S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de, Value = ()>> Visitor<'de> for Nullable<S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// `messages` (Gemini's `contents`): an array of objects, each counted as a message.
struct Messages<'a>(&'a mut Tally);

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Message(self.0))?.is_some() {
            self.0.messages += 1;
        }
        Ok(())
    }
}

/// One message: an object, read as a [`Node`].
struct Message<'a>(&'a mut Tally);

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(Node(self.0))
    }
}

/// `system`, `prompt`, `input`, `instructions`: a string or an array (or `null`). With
/// `true` (`input`), objects in the array are items, counted as messages.
struct TopText<'a>(&'a mut Tally, bool);

impl<'de> DeserializeSeed<'de> for TopText<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopText<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        Node(self.0).visit_str(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(Item(&mut *self.0))? {
            if item && self.1 {
                self.0.messages += 1;
            }
        }
        Ok(())
    }
}

/// An element of a top-level text array: a [`Node`]; `true` if it was an object.
struct Item<'a>(&'a mut Tally);

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an item")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        Node(self.0).visit_map(map).map(|()| true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        Node(self.0).visit_seq(seq).map(|()| false)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Node(self.0).visit_str(v).map(|()| false)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        Node(self.0).visit_u64(v).map(|()| false)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        Node(self.0).visit_i64(v).map(|()| false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

// === content ===

/// Any value inside a message, part or item, read leniently (no type is an error): strings
/// are text, integers token ids, arrays their elements, objects their text members.
struct Node<'a>(&'a mut Tally);

enum NodeKey {
    /// `text`, `content`, `output`, `arguments`, `thinking`, `refusal`; Gemini's `parts`.
    Text,
    /// Gemini's `inlineData` and `fileData`: a media part.
    Media,
    /// `input` (a `tool_use` block's arguments), `tool_calls`, `function_call`.
    Strings,
    Type,
    Other,
}

const MEDIA_TYPES: &[&str] = &[
    "image",
    "image_url",
    "input_image",
    "audio",
    "input_audio",
    "file",
    "input_file",
    "document",
];

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("content")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text_bytes = self.0.text_bytes.saturating_add(v.len() as u64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.token_ids = self.0.token_ids.saturating_add(1);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.token_ids = self.0.token_ids.saturating_add(1);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Node(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut media = false;
        while let Some(key) = map.next_key_seed(KeyVisitor(|k: &str| match k {
            "text" | "content" | "output" | "arguments" | "thinking" | "refusal" | "parts" => {
                NodeKey::Text
            }
            "inlineData" | "inline_data" | "fileData" | "file_data" => NodeKey::Media,
            "input" | "tool_calls" | "function_call" => NodeKey::Strings,
            "type" => NodeKey::Type,
            _ => NodeKey::Other,
        }))? {
            match key {
                NodeKey::Text => map.next_value_seed(Node(&mut *self.0))?,
                NodeKey::Strings => map.next_value_seed(Strings(&mut *self.0))?,
                NodeKey::Type => media = map.next_value::<IsMedia>()?.0,
                NodeKey::Media => {
                    map.next_value::<IgnoredAny>()?;
                    media = true;
                }
                NodeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if media {
            self.0.media_parts = self.0.media_parts.saturating_add(1);
        }
        Ok(())
    }
}

/// A part's `type`: whether it names a media part.
struct IsMedia(bool);

impl<'de> Deserialize<'de> for IsMedia {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsMedia;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsMedia, E> {
                Ok(IsMedia(MEDIA_TYPES.contains(&v)))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<IsMedia, E> {
                Ok(IsMedia(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<IsMedia, E> {
                Ok(IsMedia(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<IsMedia, E> {
                Ok(IsMedia(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<IsMedia, E> {
                Ok(IsMedia(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<IsMedia, E> {
                Ok(IsMedia(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsMedia, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsMedia(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsMedia, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsMedia(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every string and member name in a value (tool calls and tool inputs: the model reads
/// them as JSON text); numbers, booleans and `null` are not counted.
struct Strings<'a>(&'a mut Tally);

impl<'de> DeserializeSeed<'de> for Strings<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text_bytes = self.0.text_bytes.saturating_add(v.len() as u64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strings(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(len) = map.next_key_seed(KeyVisitor(|k: &str| k.len() as u64))? {
            self.0.text_bytes = self.0.text_bytes.saturating_add(len);
            map.next_value_seed(Strings(&mut *self.0))?;
        }
        Ok(())
    }
}
