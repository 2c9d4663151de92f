//! `tower_quota::tokens` against the providers' real-shaped bodies (`tests/fixtures/usage/`):
//! every chunking gives the usage of one chunk, a 50 MB body is read in bounded memory, and
//! `UsageBody` passes every frame through untouched and reports exactly once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use tower_quota::tokens::{BodyEnd, Format, Usage, UsageBody, UsageScanner, MAX_USAGE_BYTES};

// === fixtures ===

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/usage/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each fixture, its content type, and the usage it reports.
fn fixtures() -> Vec<(&'static str, &'static str, Usage)> {
    vec![
        ("openai_chat.json", "application/json", Usage::new(19, 10)),
        (
            "openai_chat_stream.sse",
            "text/event-stream",
            Usage::new(12, 9),
        ),
        (
            "openai_responses.json",
            "application/json",
            Usage::new(36, 87),
        ),
        (
            "openai_responses_stream.sse",
            "text/event-stream",
            Usage::new(37, 11),
        ),
        (
            "anthropic_messages.json",
            "application/json",
            Usage::new(2095, 503).with_cache(503, 18204),
        ),
        (
            "anthropic_messages_stream.sse",
            "text/event-stream; charset=utf-8",
            Usage::new(25, 15).with_cache(1200, 0),
        ),
        (
            "openrouter_chat_stream.sse",
            "text/event-stream",
            Usage::new(14, 7),
        ),
        // Gemini's `usageMetadata`: thinking tokens are output.
        (
            "gemini_generate_content.json",
            "application/json; charset=UTF-8",
            Usage::new(11, 27 + 1066),
        ),
        (
            "gemini_stream_generate_content.sse",
            "text/event-stream",
            Usage::new(6, 10 + 24),
        ),
    ]
}

fn scan_chunks<'a>(format: Format, chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<Usage> {
    let mut scanner = UsageScanner::new(format);
    for chunk in chunks {
        scanner.feed(chunk);
        assert!(scanner.buffered() <= MAX_USAGE_BYTES);
    }
    scanner.finish()
}

#[test]
fn every_fixture_in_one_chunk_byte_by_byte_and_sniffed() {
    for (name, content_type, usage) in fixtures() {
        let body = fixture(name);
        let format = Format::from_content_type(Some(content_type));
        assert_ne!(format, Format::Sniff, "{name}");
        assert_eq!(scan_chunks(format, [&body[..]]), Some(usage), "{name}");
        assert_eq!(scan_chunks(format, body.chunks(1)), Some(usage), "{name}");
        assert_eq!(
            scan_chunks(Format::Sniff, body.chunks(3)),
            Some(usage),
            "{name} sniffed"
        );
    }
}

#[test]
fn event_streams_with_every_line_ending() {
    for (name, content_type, usage) in fixtures() {
        if !content_type.starts_with("text/event-stream") {
            continue;
        }
        let text = String::from_utf8(fixture(name)).unwrap();
        for eol in ["\r\n", "\r"] {
            let body = text.replace('\n', eol);
            assert_eq!(
                scan_chunks(Format::EventStream, body.as_bytes().chunks(5)),
                Some(usage),
                "{name} with {eol:?}"
            );
        }
    }
}

#[test]
fn an_openai_stream_without_include_usage_reports_none() {
    let text = String::from_utf8(fixture("openai_chat_stream.sse")).unwrap();
    let without: String = text
        .split("\n\n")
        .filter(|event| !event.contains("\"choices\":[]"))
        .map(|event| format!("{event}\n\n"))
        .collect();
    assert_eq!(scan_chunks(Format::EventStream, [without.as_bytes()]), None);
}

#[test]
fn truncated_fixtures_never_panic() {
    for (name, _, usage) in fixtures() {
        let body = fixture(name);
        for cut in 0..body.len() {
            // A prefix reports nothing, the usage, or (Anthropic) the counts so far: a
            // count is read only once its value is closed, never a cut-off number.
            if let Some(found) = scan_chunks(Format::Sniff, [&body[..cut]]) {
                assert!(
                    found.input <= usage.input
                        && found.output <= usage.output
                        && found.cache_creation_input <= usage.cache_creation_input
                        && found.cache_read_input <= usage.cache_read_input,
                    "{name} cut at {cut}: {found:?}"
                );
            }
        }
    }
}

/// Splits `body` at `cuts` (positions, any order, duplicates allowed).
fn split_at<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&body[start..cut]);
        start = cut;
    }
    chunks.push(&body[start..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_of_a_fixture_gives_its_usage(
        which in 0usize..7,
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let (name, content_type, usage) = fixtures()[which];
        let mut body = fixture(name);
        if crlf && content_type.starts_with("text/event-stream") {
            body = String::from_utf8(body).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let format = Format::from_content_type(Some(content_type));
        prop_assert_eq!(scan_chunks(format, split_at(&body, &cuts)), Some(usage));
    }

    #[test]
    fn any_chunking_of_any_bytes_gives_the_same_answer(
        body in proptest::collection::vec(
            prop_oneof![
                Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b'\\'),
                Just(b':'), Just(b','), Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'1'),
                any::<u8>(),
            ],
            0..400,
        ),
        words in proptest::collection::vec(0usize..8, 0..12),
        format in prop_oneof![Just(Format::Json), Just(Format::EventStream), Just(Format::Sniff)],
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        // Arbitrary bytes with the words that matter spliced in.
        const WORDS: [&[u8]; 8] = [
            b"\"usage\"", b"\"message\"", b"\"response\"", b"data:", b"data: ",
            b"\"input_tokens\":", b"\"completion_tokens\":7", b"\n\n",
        ];
        let mut body = body;
        for (i, w) in words.iter().enumerate() {
            let at = (i * 37) % (body.len() + 1);
            body.splice(at..at, WORDS[*w].iter().copied());
        }
        let whole = scan_chunks(format, [&body[..]]);
        prop_assert_eq!(scan_chunks(format, split_at(&body, &cuts)), whole);
        prop_assert_eq!(scan_chunks(format, body.chunks(1)), whole);
    }
}

// === huge bodies ===

const HUGE: usize = 50 << 20;

/// Feeds `parts` to a scanner in 64 KiB chunks (as a network would), never holding the
/// body: returns the usage, the largest `buffered()` seen and the bytes fed.
fn stream_huge(
    format: Format,
    parts: impl Iterator<Item = Vec<u8>>,
) -> (Option<Usage>, usize, usize) {
    let mut scanner = UsageScanner::new(format);
    let mut most = 0;
    let mut fed = 0;
    for part in parts {
        for chunk in part.chunks(64 << 10) {
            scanner.feed(chunk);
            fed += chunk.len();
            most = most.max(scanner.buffered());
        }
    }
    (scanner.finish(), most, fed)
}

#[test]
fn a_50_mb_json_body_with_usage_at_the_end() {
    let piece =
        "The quick brown fox jumps over the lazy dog, \\\"quoted\\\" {usage}. ".repeat(1024);
    let pieces = HUGE / piece.len();
    let parts = std::iter::once(
        br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":""#
            .to_vec(),
    )
    .chain(std::iter::repeat_n(piece.clone().into_bytes(), pieces))
    .chain(std::iter::once(
        br#""}}],"usage":{"prompt_tokens":1234,"completion_tokens":5678,"total_tokens":6912}}"#
            .to_vec(),
    ));
    let start = Instant::now();
    let (usage, most, fed) = stream_huge(Format::Json, parts);
    let secs = start.elapsed().as_secs_f64();
    assert!(fed >= HUGE - piece.len());
    assert_eq!(usage, Some(Usage::new(1234, 5678)));
    assert!(most <= MAX_USAGE_BYTES, "{most}");
    eprintln!(
        "JSON: {} MB in {secs:.2} s ({:.0} MB/s)",
        fed >> 20,
        fed as f64 / secs / 1e6
    );
}

#[test]
fn a_50_mb_event_stream_with_usage_at_the_end() {
    let chunk = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}],"usage":null}

"#;
    let events = HUGE / chunk.len();
    let batch = chunk.repeat(1000).into_bytes();
    let parts = std::iter::repeat_n(batch, events / 1000).chain(std::iter::once(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":50000}}\n\ndata: [DONE]\n\n".to_vec(),
    ));
    let start = Instant::now();
    let (usage, most, fed) = stream_huge(Format::EventStream, parts);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(usage, Some(Usage::new(12, 50000)));
    assert!(most <= MAX_USAGE_BYTES, "{most}");
    eprintln!(
        "SSE: {} MB in {secs:.2} s ({:.0} MB/s)",
        fed >> 20,
        fed as f64 / secs / 1e6
    );
}

#[test]
fn a_50_mb_responses_completed_event() {
    // `response.completed` repeats the whole answer: one event, one line, 50 MB.
    let piece = "lorem ipsum dolor sit amet ".repeat(4096).into_bytes();
    let pieces = HUGE / piece.len();
    let parts = std::iter::once(
        b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"content\":[{\"text\":\"".to_vec(),
    )
    .chain(std::iter::repeat_n(piece, pieces))
    .chain(std::iter::once(
        b"\"}]}],\"usage\":{\"input_tokens\":37,\"output_tokens\":12000000,\"total_tokens\":12000037}}}\n\n".to_vec(),
    ));
    let (usage, most, _) = stream_huge(Format::EventStream, parts);
    assert_eq!(usage, Some(Usage::new(37, 12_000_000)));
    assert!(most <= MAX_USAGE_BYTES, "{most}");
}

// === UsageBody ===

type Reports = Arc<Mutex<Vec<(Option<Usage>, BodyEnd)>>>;

fn recorder() -> (
    Reports,
    impl FnOnce(Option<Usage>, BodyEnd) + Send + 'static,
) {
    let reports = Reports::default();
    let log = reports.clone();
    (reports, move |usage, end| {
        log.lock().unwrap().push((usage, end))
    })
}

#[derive(Debug, PartialEq)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Broken {}

type Frames = Vec<Result<Frame<Bytes>, Broken>>;

type Streamed = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Broken>>>>;

fn stream_body(frames: Frames) -> Streamed {
    StreamBody::new(tokio_stream::iter(frames))
}

fn data_frames(body: &[u8], size: usize) -> (Frames, Vec<Bytes>) {
    let chunks: Vec<Bytes> = body.chunks(size).map(Bytes::copy_from_slice).collect();
    let frames = chunks.iter().cloned().map(|b| Ok(Frame::data(b))).collect();
    (frames, chunks)
}

async fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

#[tokio::test]
async fn frames_pass_through_unchanged_and_usage_is_reported_once() {
    let sse = fixture("anthropic_messages_stream.sse");
    let (mut frames, chunks) = data_frames(&sse, 13);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", "1".parse().unwrap());
    frames.push(Ok(Frame::trailers(trailers.clone())));
    let (reports, on_usage) = recorder();
    let mut body = UsageBody::new(
        stream_body(frames),
        UsageScanner::new(Format::EventStream),
        on_usage,
    );
    for chunk in &chunks {
        let data = next(&mut body).await.unwrap().unwrap().into_data().unwrap();
        // The very same bytes: not copied, not re-chunked.
        assert_eq!(data.as_ptr(), chunk.as_ptr());
        assert_eq!(data.len(), chunk.len());
    }
    assert!(
        reports.lock().unwrap().is_empty(),
        "reported before the end"
    );
    assert_eq!(body.usage(), Some(Usage::new(25, 15).with_cache(1200, 0)));
    let got = next(&mut body)
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(got, trailers);
    assert!(next(&mut body).await.is_none());
    assert!(next(&mut body).await.is_none());
    assert!(body.is_reported());
    drop(body);
    assert_eq!(
        *reports.lock().unwrap(),
        [(
            Some(Usage::new(25, 15).with_cache(1200, 0)),
            BodyEnd::Complete
        )]
    );
}

#[tokio::test]
async fn an_error_is_passed_on_and_reports_what_was_seen() {
    let sse = fixture("anthropic_messages_stream.sse");
    let cut = sse.windows(13).position(|w| w == b"message_delta").unwrap();
    let (mut frames, _) = data_frames(&sse[..cut], 64);
    frames.push(Err(Broken));
    frames.push(Ok(Frame::data(Bytes::from_static(b"after"))));
    let (reports, on_usage) = recorder();
    let mut body = UsageBody::new(
        stream_body(frames),
        UsageScanner::new(Format::EventStream),
        on_usage,
    );
    loop {
        match next(&mut body).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert_eq!(e, Broken);
                break;
            }
            None => panic!("the error was swallowed"),
        }
    }
    // Partial: message_start's counts, and its intermediate output count.
    let partial = (Some(Usage::new(25, 1).with_cache(1200, 0)), BodyEnd::Error);
    assert_eq!(*reports.lock().unwrap(), [partial]);
    // Whatever the inner body does next is passed on; nothing is reported again.
    assert_eq!(
        next(&mut body).await.unwrap().unwrap().into_data().unwrap(),
        Bytes::from_static(b"after")
    );
    drop(body);
    assert_eq!(*reports.lock().unwrap(), [partial]);
}

#[tokio::test]
async fn dropped_before_the_end_reports_what_was_seen() {
    let json = fixture("openai_chat.json");
    let (frames, _) = data_frames(&json, 100);
    let (reports, on_usage) = recorder();
    let mut body = UsageBody::new(
        stream_body(frames),
        UsageScanner::new(Format::Json),
        on_usage,
    );
    next(&mut body).await.unwrap().unwrap();
    drop(body);
    assert_eq!(*reports.lock().unwrap(), [(None, BodyEnd::Dropped)]);

    // Never polled at all.
    let (reports, on_usage) = recorder();
    drop(UsageBody::new(
        stream_body(vec![Ok(Frame::data(Bytes::from_static(b"{}")))]),
        UsageScanner::new(Format::Json),
        on_usage,
    ));
    assert_eq!(*reports.lock().unwrap(), [(None, BodyEnd::Dropped)]);
}

#[tokio::test]
async fn a_body_that_ends_with_its_last_frame_reports_at_once() {
    let json = Bytes::from(fixture("openai_responses.json"));
    let (reports, on_usage) = recorder();
    let mut body = UsageBody::new(
        Full::new(json.clone()),
        UsageScanner::new(Format::Json),
        on_usage,
    );
    assert_eq!(body.size_hint().exact(), Some(json.len() as u64));
    assert!(!body.is_end_stream());
    let data = next(&mut body).await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(data.as_ptr(), json.as_ptr());
    // Full says it has ended: a reader may stop here, and the usage is already reported.
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert_eq!(
        *reports.lock().unwrap(),
        [(Some(Usage::new(36, 87)), BodyEnd::Complete)]
    );
    drop(body);
    assert_eq!(reports.lock().unwrap().len(), 1);

    // An empty body dropped unpolled has ended: Complete, with no usage.
    let (reports, on_usage) = recorder();
    drop(UsageBody::new(
        Full::new(Bytes::new()),
        UsageScanner::new(Format::Json),
        on_usage,
    ));
    assert_eq!(*reports.lock().unwrap(), [(None, BodyEnd::Complete)]);
}

/// A body that is `Pending` between frames, with a size hint of its own.
struct Slow {
    frames: Vec<Bytes>,
    pending: bool,
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.pending = !self.pending;
        if self.pending {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.frames.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(self.frames.remove(0)))))
    }
    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_lower(7);
        hint.set_upper(1 << 30);
        hint
    }
}

#[tokio::test]
async fn pending_and_size_hints_are_forwarded() {
    let sse = fixture("openrouter_chat_stream.sse");
    let frames: Vec<Bytes> = sse.chunks(1).map(Bytes::copy_from_slice).collect();
    let (reports, on_usage) = recorder();
    let body = UsageBody::new(
        Slow {
            frames,
            pending: false,
        },
        UsageScanner::new(Format::Sniff),
        on_usage,
    );
    assert_eq!(body.size_hint().lower(), 7);
    assert_eq!(body.size_hint().upper(), Some(1 << 30));
    let out = body.collect().await.unwrap().to_bytes();
    assert_eq!(out, sse);
    assert_eq!(
        *reports.lock().unwrap(),
        [(Some(Usage::new(14, 7)), BodyEnd::Complete)]
    );
}

#[tokio::test]
async fn a_boxed_callback_names_the_type() {
    let (reports, on_usage) = recorder();
    let on_usage: tower_quota::tokens::OnUsage = Box::new(on_usage);
    let body: UsageBody<Full<Bytes>, tower_quota::tokens::OnUsage> = UsageBody::new(
        Full::new(Bytes::from(fixture("anthropic_messages.json"))),
        UsageScanner::new(Format::Json),
        on_usage,
    );
    body.collect().await.unwrap();
    assert_eq!(reports.lock().unwrap().len(), 1);
}
