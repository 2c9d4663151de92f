//! `tower_quota::tokens`: `RequestFacts::from_json` on any request body (never a panic, never
//! more text than the body holds), and `UsageScanner` on any response body in any format —
//! split anywhere (in one chunk, byte by byte, at arbitrary cuts, and through `UsageBody` as
//! non-contiguous frames with `Pending`s, trailers or an error) it finds the same usage, never
//! holds more than `MAX_USAGE_BYTES`, and `UsageBody` yields the bytes unchanged and reports
//! exactly once.
#![no_main]

use std::sync::{Arc, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tower_quota::tokens::{
    BodyEnd, Format, RequestFacts, Usage, UsageBody, UsageScanner, MAX_USAGE_BYTES,
};
use tower_quota_fuzz::{drain, parse_text, Stream};

#[derive(Arbitrary, Debug)]
enum Input {
    /// A request body.
    Request(Vec<u8>),
    /// A response body, read as JSON, events or sniffed, and where to cut it.
    Response {
        format: u8,
        body: Stream,
        cuts: Vec<u16>,
    },
}

const FORMATS: [Format; 3] = [Format::Json, Format::EventStream, Format::Sniff];

fuzz_target!(|data: &[u8]| {
    // A request or a response written as text (the seeds): the body after the blank line.
    if data.starts_with(b"POST ") {
        request(after_head(data));
    } else if let Some(text) = parse_text(data) {
        let body = Stream::seeded(&text.body);
        response(Format::from_headers(&text.headers), body, &[5, 300, 301]);
        request(&text.body);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        match input {
            Input::Request(body) => request(&body),
            Input::Response { format, body, cuts } => {
                response(FORMATS[usize::from(format) % FORMATS.len()], body, &cuts)
            }
        }
    }
});

fn after_head(data: &[u8]) -> &[u8] {
    let at = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
        .unwrap_or(data.len());
    &data[at..]
}

fn request(body: &[u8]) {
    let Some(facts) = RequestFacts::from_json(body) else {
        return;
    };
    // Decoded text is never longer than the JSON that wrote it.
    assert!(facts.prompt_bytes() <= body.len() as u64, "{facts:?}");
    assert!(facts.messages() + facts.media_parts() + facts.prompt_token_ids() <= body.len() as u64);
    assert!(facts.model().is_none_or(|m| m.len() <= body.len()));
    let input = facts.estimated_input_tokens();
    assert!(input >= facts.prompt_token_ids());
    assert_eq!(
        facts.output_reservation(7),
        facts.max_output_tokens().unwrap_or(7)
    );
    let _ = facts.estimated_total_tokens(u64::MAX);
}

fn scan<'a>(format: Format, chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<Usage> {
    let mut scanner = UsageScanner::new(format);
    for chunk in chunks {
        scanner.feed(chunk);
        assert!(scanner.buffered() <= MAX_USAGE_BYTES);
    }
    scanner.finish()
}

fn response(format: Format, stream: Stream, cuts: &[u16]) {
    let bytes = stream.bytes();
    let whole = scan(format, [&bytes[..]]);
    assert_eq!(scan(format, bytes.chunks(1)), whole, "byte by byte");

    let mut cuts: Vec<usize> = cuts
        .iter()
        .take(64)
        .map(|&c| usize::from(c) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    assert_eq!(scan(format, chunks), whole, "at cuts");

    // Through UsageBody: the same bytes out, one report.
    let reports = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&reports);
    {
        let body = UsageBody::new(
            stream.body(),
            UsageScanner::new(format),
            move |usage, end| log.lock().unwrap().push((usage, end)),
        );
        let mut body = std::pin::pin!(body);
        let total = (!stream.fails).then_some(bytes.len() as u64);
        let polls = 64 + 8 * stream.pieces.len();
        let out = drain(body.as_mut(), total, polls);
        assert_eq!(out.bytes, bytes, "bytes out differ from bytes in");
        assert_eq!(out.error.is_some(), stream.fails);
    }
    let end = if stream.fails {
        BodyEnd::Error
    } else {
        BodyEnd::Complete
    };
    assert_eq!(*reports.lock().unwrap(), [(whole, end)]);
}
