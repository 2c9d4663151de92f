//! Token costs from the request body, and the usage the response reports — the pure
//! building blocks of token quotas: no I/O, no clock.
//!
//! OpenAI limits tokens per minute, Anthropic input and output tokens per minute apart,
//! LiteLLM `tpm`/`itpm`/`otpm`. A limiter that counts tokens reserves an estimate before the
//! call and corrects it when the server says what the call really cost:
//!
//! 1. **Before**: [`RequestFacts::from_json`] reads the few top-level fields of a JSON request
//!    body that tell its cost — `model`, the output cap (`max_tokens`,
//!    `max_completion_tokens`, `max_output_tokens`, Gemini's
//!    `generationConfig.maxOutputTokens`), `stream`, `stream_options.include_usage` and the
//!    size of the prompt's text (`messages`, `system`, `input`…, Gemini's `contents` and
//!    `systemInstruction`) — without copying the body or building a tree of it.
//!    [`RequestFacts::estimated_input_tokens`] turns the prompt's size into tokens (a
//!    documented bytes-per-token estimate, [`BYTES_PER_TOKEN`], plus the per-message overhead
//!    of OpenAI's cookbook); [`RequestFacts::output_reservation`] reserves the output cap.
//! 2. **After**: [`UsageBody`] wraps the response body, passes every frame on untouched, and
//!    lets a [`UsageScanner`] find the [`Usage`] as the bytes stream through: the top-level
//!    `usage` of a JSON body, or the usage events of a server-sent event stream (OpenAI chat
//!    with `include_usage`, OpenAI Responses' `response.completed`, Anthropic's
//!    `message_start` and `message_delta`), or Gemini's `usageMetadata` (in JSON, a stream,
//!    or a JSON array of responses). It never buffers the body: its memory is bounded
//!    by [`MAX_USAGE_BYTES`] whatever the body's size. When the body ends (or fails, or is
//!    dropped) it calls back once with the usage and how the body ended ([`BodyEnd`]).
//!
//! # Example
//!
//! A streamed Anthropic call: reserve from the request, then correct from the stream.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, StreamBody};
//! use http_body::Frame;
//! use tower_quota::tokens::{BodyEnd, RequestFacts, Usage, UsageBody, UsageScanner};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Before the call: what the request body says.
//! let request = br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
//!     "system":"You are terse.",
//!     "messages":[{"role":"user","content":"Name three prime numbers."}]}"#;
//! let facts = RequestFacts::from_json(request).expect("a JSON object");
//! assert_eq!(facts.model(), Some("claude-sonnet-4-5"));
//! let reserved_input = facts.estimated_input_tokens();
//! let reserved_output = facts.output_reservation(4096);
//! // ⌈(14 + 25 bytes of text) / 3.5⌉ + 3 for the message + 3 to prime the reply
//! assert_eq!((reserved_input, reserved_output), (12 + 3 + 3, 1024));
//!
//! // The response streams in, split anywhere.
//! let sse = "event: message_start\n\
//!     data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
//!     event: content_block_delta\n\
//!     data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"2, 3, 5.\"}}\n\n\
//!     event: message_delta\n\
//!     data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n\
//!     event: message_stop\n\
//!     data: {\"type\":\"message_stop\"}\n\n";
//! let chunks: Vec<Result<_, std::convert::Infallible>> = sse
//!     .as_bytes()
//!     .chunks(7)
//!     .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
//!     .collect();
//! let mut headers = http::HeaderMap::new();
//! headers.insert("content-type", "text/event-stream".parse().unwrap());
//!
//! let reported = Arc::new(Mutex::new(None));
//! let slot = reported.clone();
//! let body = UsageBody::new(
//!     StreamBody::new(tokio_stream::iter(chunks)),
//!     UsageScanner::for_headers(&headers),
//!     move |usage, end| *slot.lock().unwrap() = Some((usage, end)),
//! );
//! let bytes = body.collect().await.unwrap().to_bytes();
//! assert_eq!(bytes, sse.as_bytes()); // the caller reads the stream unchanged
//!
//! // After: the real counts, to correct the reservation.
//! let (usage, end) = reported.lock().unwrap().take().unwrap();
//! assert_eq!(end, BodyEnd::Complete);
//! let usage = usage.unwrap();
//! assert_eq!(usage, Usage::new(21, 9));
//! assert_eq!(reserved_output - usage.output, 1015); // to refund
//! assert_eq!(usage.input as i64 - reserved_input as i64, 3); // to charge
//! # }
//! ```
//!
//! # What is estimated, what is reported
//!
//! [`RequestFacts`] documents which fields count as prompt text, how media parts (images,
//! audio, files) are counted, and the constants of the estimate ([`BYTES_PER_TOKEN`],
//! [`TOKENS_PER_MESSAGE`], [`REPLY_PRIMING_TOKENS`], [`TOKENS_PER_MEDIA_PART`]).
//! [`Usage`] documents how Anthropic's cache counts relate to the input count, and the
//! [`usage`] module where each provider puts its usage.

mod body;
pub(crate) mod extract;
mod request;
pub mod usage;

pub use body::{BodyEnd, OnUsage, UsageBody};
pub use request::{
    RequestFacts, BYTES_PER_TOKEN, REPLY_PRIMING_TOKENS, TOKENS_PER_MEDIA_PART, TOKENS_PER_MESSAGE,
};
pub use usage::{Format, Usage, UsageScanner, MAX_USAGE_BYTES};

#[cfg(test)]
mod tests;
