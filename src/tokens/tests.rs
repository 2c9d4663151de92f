//! Unit tests of the request reader and the usage scanner (integration tests with the
//! providers' fixtures, chunking proptests and huge bodies: `tests/tokens.rs`).

use super::*;

fn scan(format: Format, body: &[u8]) -> Option<Usage> {
    let mut scanner = UsageScanner::new(format);
    scanner.feed(body);
    scanner.finish()
}

fn scan_bytewise(format: Format, body: &[u8]) -> Option<Usage> {
    let mut scanner = UsageScanner::new(format);
    for b in body.chunks(1) {
        scanner.feed(b);
        assert!(scanner.buffered() <= MAX_USAGE_BYTES);
    }
    scanner.finish()
}

fn both(format: Format, body: &str) -> Option<Usage> {
    let one = scan(format, body.as_bytes());
    assert_eq!(one, scan_bytewise(format, body.as_bytes()), "{body}");
    one
}

// === Format ===

#[test]
fn formats_from_content_types() {
    use Format::*;
    for (value, format) in [
        (Some("application/json"), Json),
        (Some("application/json; charset=utf-8"), Json),
        (Some("Application/JSON"), Json),
        (Some("application/problem+json"), Json),
        (Some("text/event-stream"), EventStream),
        (Some("text/event-stream;charset=UTF-8"), EventStream),
        (Some(" TEXT/EVENT-STREAM "), EventStream),
        (Some("text/plain"), Sniff),
        (Some("+json"), Sniff),
        (Some("text/html"), Sniff),
        (Some(""), Sniff),
        (None, Sniff),
    ] {
        assert_eq!(Format::from_content_type(value), format, "{value:?}");
    }
    let mut headers = http::HeaderMap::new();
    assert_eq!(Format::from_headers(&headers), Sniff);
    headers.insert("content-type", "text/event-stream".parse().unwrap());
    assert_eq!(Format::from_headers(&headers), EventStream);
    assert_eq!(
        UsageScanner::for_headers(&headers).format(),
        Format::EventStream
    );
}

// === JSON bodies ===

#[test]
fn json_top_level_usage_only() {
    let body = r#"{"choices":[{"message":{"content":"{\"usage\":{\"prompt_tokens\":99}}","usage":{"prompt_tokens":98}}}],
        "message":{"usage":{"input_tokens":97}},
        "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;
    assert_eq!(both(Format::Json, body), Some(Usage::new(19, 10)));
}

#[test]
fn json_usage_first_or_last_and_with_whitespace() {
    let body =
        "{ \"usage\" :\n { \"input_tokens\" : 5 , \"output_tokens\" : 7 } , \"id\" : \"x\" }";
    assert_eq!(both(Format::Json, body), Some(Usage::new(5, 7)));
    // A duplicated member: the last wins.
    let body = r#"{"usage":{"input_tokens":1,"output_tokens":1},"usage":{"input_tokens":2}}"#;
    assert_eq!(both(Format::Json, body), Some(Usage::new(2, 1)));
}

#[test]
fn json_without_usage_or_not_an_object() {
    for body in [
        "",
        "{}",
        r#"{"usage":null}"#,
        r#"{"usage":17}"#,
        r#"{"usage":"lots"}"#,
        r#"{"usage":[1,2]}"#,
        r#"{"usage":{}}"#,
        r#"{"usage":{"total_tokens":3}}"#,
        r#"[{"usage":{"prompt_tokens":1}}]"#,
        r#""usage""#,
        "<html><body>502 Bad Gateway</body></html>",
        r#"{"error":{"message":"Rate limit exceeded","code":429}}"#,
    ] {
        assert_eq!(both(Format::Json, body), None, "{body}");
    }
}

#[test]
fn json_lenient_counts() {
    // Anthropic sends null cache counts; fractional or negative counts are no counts.
    let body = r#"{"usage":{"input_tokens":12.0,"output_tokens":-3,"cache_creation_input_tokens":null,"cache_read_input_tokens":"7","server_tool_use":{"web_search_requests":1}}}"#;
    assert_eq!(both(Format::Json, body), Some(Usage::new(12, 0)));
    let body = r#"{"usage":{"input_tokens":1.5,"output_tokens":2}}"#;
    assert_eq!(both(Format::Json, body), Some(Usage::new(0, 2)));
}

#[test]
fn json_escaped_member_names_are_not_matched() {
    // No server escapes plain ASCII names; an escaped name is passed over, not misread.
    let body = r#"{"us\u0061ge":{"input_tokens":1,"output_tokens":1}}"#;
    assert_eq!(both(Format::Json, body), None);
    let body = r#"{"a\"usage":{"input_tokens":1},"usage":{"input_tokens":4,"output_tokens":2}}"#;
    assert_eq!(both(Format::Json, body), Some(Usage::new(4, 2)));
}

#[test]
fn json_truncated_usage_is_none() {
    let body = r#"{"id":"x","usage":{"prompt_tokens":19,"completion_tok"#;
    assert_eq!(both(Format::Json, body), None);
}

#[test]
fn oversized_usage_is_skipped_and_bounded() {
    let filler = "x".repeat(MAX_USAGE_BYTES);
    let body =
        format!(r#"{{"usage":{{"input_tokens":1,"output_tokens":2,"note":"{filler}"}},"id":"a"}}"#);
    assert_eq!(both(Format::Json, &body), None);
    // The same usage, small enough, is read.
    let filler = "x".repeat(MAX_USAGE_BYTES - 100);
    let body = format!(r#"{{"usage":{{"input_tokens":1,"output_tokens":2,"note":"{filler}"}}}}"#);
    assert_eq!(both(Format::Json, &body), Some(Usage::new(1, 2)));
}

#[test]
fn json_with_byte_order_mark() {
    let body = "\u{feff}{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}";
    assert_eq!(both(Format::Json, body), Some(Usage::new(3, 4)));
    assert_eq!(both(Format::Sniff, body), Some(Usage::new(3, 4)));
}

// === event streams ===

const OPENAI_STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
    data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}\n\n\
    data: [DONE]\n\n";

#[test]
fn sse_line_endings() {
    let expected = Some(Usage::new(12, 9));
    assert_eq!(both(Format::EventStream, OPENAI_STREAM), expected);
    assert_eq!(
        both(Format::EventStream, &OPENAI_STREAM.replace('\n', "\r\n")),
        expected
    );
    assert_eq!(
        both(Format::EventStream, &OPENAI_STREAM.replace('\n', "\r")),
        expected
    );
}

#[test]
fn sse_data_without_space_and_multi_line_data() {
    let body = "data:{\"usage\":\ndata: {\"input_tokens\":3,\r\ndata:\"output_tokens\":4}}\n\n";
    assert_eq!(both(Format::EventStream, body), Some(Usage::new(3, 4)));
}

#[test]
fn sse_ignores_other_fields_and_comments() {
    let body = ": {\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}\n\
        event: {\"usage\":{\"input_tokens\":2,\"output_tokens\":2}}\n\
        id: 7\nretry: 10\ndatum: {\"usage\":{\"input_tokens\":3}}\n\
        Data: {\"usage\":{\"input_tokens\":4}}\n\
        data : {\"usage\":{\"input_tokens\":5}}\n\n\
        data: {\"usage\":{\"input_tokens\":6,\"output_tokens\":1}}\n\n";
    assert_eq!(both(Format::EventStream, body), Some(Usage::new(6, 1)));
}

#[test]
fn sse_an_event_cut_by_a_blank_line_does_not_leak() {
    // The first event's JSON never closes; the blank line ends it, and the next is read.
    let body = "data: {\"usage\":{\"input_tokens\":1,\n\n\
        data: {\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}\n\n";
    assert_eq!(both(Format::EventStream, body), Some(Usage::new(2, 3)));
    // A stray quote in one event does not swallow the next.
    let body = "data: {\"a\":\"unterminated\n\ndata: {\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}\n\n";
    assert_eq!(both(Format::EventStream, body), Some(Usage::new(2, 3)));
}

#[test]
fn sse_huge_line_does_not_break_later_events() {
    let body = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n\
         data: {{\"a\":[{}]}}\n\n\
         data: {{\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":6}}}}\n\n",
        "y".repeat(1 << 20),
        "[".repeat(100_000)
    );
    let mut scanner = UsageScanner::new(Format::EventStream);
    for chunk in body.as_bytes().chunks(4093) {
        scanner.feed(chunk);
        assert!(scanner.buffered() <= MAX_USAGE_BYTES);
    }
    assert_eq!(scanner.finish(), Some(Usage::new(5, 6)));
}

#[test]
fn sse_anthropic_cumulative_and_nested() {
    let body = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":20,\"output_tokens\":1}}}\n\n\
        event: message_delta\n\
        data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
        event: message_delta\n\
        data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":26,\"output_tokens\":40}}\n\n";
    let usage = both(Format::EventStream, body).unwrap();
    assert_eq!(usage, Usage::new(26, 40).with_cache(10, 20));
    assert_eq!(usage.input_total(), 56);
    assert_eq!(usage.counted_input(), 36);
    assert_eq!(usage.total(), 96);
}

#[test]
fn sse_responses_nested_usage_only_under_response_or_message() {
    let body = "event: response.completed\n\
        data: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"usage\":{\"input_tokens\":1}}],\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n\
        data: {\"item\":{\"usage\":{\"input_tokens\":99,\"output_tokens\":99}}}\n\n";
    assert_eq!(both(Format::EventStream, body), Some(Usage::new(37, 11)));
}

#[test]
fn gemini_usage_metadata_json_sse_and_array() {
    // `generateContent`: thinking tokens are output, tool-use prompt tokens input; the cached
    // content is part of the prompt count.
    let json = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP"}],
        "usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":30,"totalTokenCount":190,
        "cachedContentTokenCount":100,"thoughtsTokenCount":35,"toolUsePromptTokenCount":5,
        "promptTokensDetails":[{"modality":"TEXT","tokenCount":120}]},"modelVersion":"gemini-2.5-flash"}"#;
    assert_eq!(both(Format::Json, json), Some(Usage::new(125, 65)));
    // `streamGenerateContent?alt=sse`: every chunk carries the counts so far.
    let sse = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"He\"}]}}],\"usageMetadata\":{\"promptTokenCount\":12,\"totalTokenCount\":12}}\r\n\r\n\
        data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"llo\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":12,\"candidatesTokenCount\":9,\"totalTokenCount\":21}}\r\n\r\n";
    assert_eq!(both(Format::EventStream, sse), Some(Usage::new(12, 9)));
    // Without `alt=sse`: a JSON array of the same responses.
    let array = r#"[{"candidates":[],"usageMetadata":{"promptTokenCount":12}},
        {"candidates":[],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":9,"thoughtsTokenCount":4}}]"#;
    assert_eq!(both(Format::Json, array), Some(Usage::new(12, 13)));
    // Only where Gemini puts it: not deeper, and a name that merely starts alike is not it.
    let elsewhere = r#"{"candidates":[{"usageMetadata":{"promptTokenCount":7}}],"usageMetadataX":{"promptTokenCount":8}}"#;
    assert_eq!(both(Format::Json, elsewhere), None);
    // OpenAI's names win where both appear (a proxy that adds its own).
    let both_names = r#"{"usage":{"prompt_tokens":3,"completion_tokens":4},"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4}}"#;
    assert_eq!(both(Format::Json, both_names), Some(Usage::new(3, 4)));
}

#[test]
fn sse_partial_usage_before_the_end() {
    let start = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
        event: content_block_delta\n\
        data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hel";
    let mut scanner = UsageScanner::new(Format::EventStream);
    scanner.feed(start.as_bytes());
    assert_eq!(scanner.usage(), Some(Usage::new(25, 1)));
}

#[test]
fn sniffing_decides_on_the_first_byte() {
    assert_eq!(both(Format::Sniff, OPENAI_STREAM), Some(Usage::new(12, 9)));
    let json = "\n\t {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
    assert_eq!(both(Format::Sniff, json), Some(Usage::new(1, 2)));
    let comment = ": OPENROUTER PROCESSING\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
    assert_eq!(both(Format::Sniff, comment), Some(Usage::new(1, 2)));
    let mut scanner = UsageScanner::new(Format::Sniff);
    scanner.feed(b"  \n");
    assert_eq!(scanner.format(), Format::Sniff);
    scanner.feed(b"{");
    assert_eq!(scanner.format(), Format::Json);
}

#[test]
fn a_json_body_read_as_an_event_stream_and_back() {
    // A server that lies about its content type. A JSON body read as events is no event:
    // nothing is found, nothing breaks.
    assert_eq!(
        both(Format::EventStream, r#"{"usage":{"prompt_tokens":1}}"#),
        None
    );
    // Events read as JSON: the follower reads a sequence of JSON texts (JSON lines too) and
    // passes over what is not JSON, so the top-level `usage` of a chunk is found.
    assert_eq!(both(Format::Json, OPENAI_STREAM), Some(Usage::new(12, 9)));
    let lines = "{\"usage\":{\"input_tokens\":1}}\n{\"usage\":{\"output_tokens\":2}}\n";
    assert_eq!(both(Format::Json, lines), Some(Usage::new(1, 2)));
}

#[test]
fn feed_buf_reads_every_piece() {
    use bytes::{Buf, Bytes};
    let (a, b) = OPENAI_STREAM.split_at(40);
    let chained = Bytes::from(a).chain(Bytes::from(b));
    let mut scanner = UsageScanner::new(Format::EventStream);
    scanner.feed_buf(&chained);
    assert_eq!(scanner.finish(), Some(Usage::new(12, 9)));
}

#[test]
fn feed_buf_that_hides_bytes_stops_reading() {
    use bytes::Buf;
    // A Buf of two pieces that does not implement chunks_vectored.
    struct Hidden<'a>(&'a [u8], &'a [u8]);
    impl Buf for Hidden<'_> {
        fn remaining(&self) -> usize {
            self.0.len() + self.1.len()
        }
        fn chunk(&self) -> &[u8] {
            if self.0.is_empty() {
                self.1
            } else {
                self.0
            }
        }
        fn advance(&mut self, _: usize) {
            unimplemented!()
        }
    }
    let mut scanner = UsageScanner::new(Format::EventStream);
    scanner.feed(b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
    scanner.feed_buf(&Hidden(b"data: {\"usage\":", b"{\"prompt_tokens\":2}}\n\n"));
    scanner.feed(b"data: {\"usage\":{\"prompt_tokens\":3}}\n\n");
    assert_eq!(scanner.finish(), Some(Usage::new(1, 1)));
}

// === requests ===

fn facts(body: &str) -> RequestFacts {
    RequestFacts::from_json(body.as_bytes()).unwrap_or_else(|| panic!("{body}"))
}

#[test]
fn request_rejects_what_is_not_an_object_or_has_wrong_types() {
    for body in [
        "",
        "null",
        "[]",
        "\"model\"",
        "{",
        "{} {}",
        "{\"model\":\"a\"} x",
        r#"{"model":7}"#,
        r#"{"max_tokens":-1}"#,
        r#"{"max_tokens":1.5}"#,
        r#"{"max_tokens":"100"}"#,
        r#"{"max_completion_tokens":true}"#,
        r#"{"stream":"true"}"#,
        r#"{"stream_options":true}"#,
        r#"{"stream_options":{"include_usage":1}}"#,
        r#"{"messages":{}}"#,
        r#"{"messages":"hi"}"#,
        r#"{"messages":["hi"]}"#,
        r#"{"messages":[null]}"#,
        r#"{"system":{}}"#,
        r#"{"prompt":7}"#,
        r#"{"input":true}"#,
        r#"{"systemInstruction":"be brief"}"#,
        r#"{"generationConfig":{"maxOutputTokens":"100"}}"#,
        r#"{"generationConfig":7}"#,
        r#"{"contents":{}}"#,
        "\u{feff}{}",
    ] {
        assert_eq!(RequestFacts::from_json(body.as_bytes()), None, "{body}");
    }
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    assert_eq!(
        RequestFacts::from_json(format!(r#"{{"messages":[{{"content":{deep}}}]}}"#).as_bytes()),
        None
    );
}

#[test]
fn request_gemini_generate_content() {
    // Gemini's own request: `contents` of `parts`, a `systemInstruction`, the output cap in
    // `generationConfig`; an inline image and a file are media parts, their bytes not text.
    let f = facts(
        r#"{"systemInstruction":{"parts":[{"text":"Be brief."}]},
            "contents":[
              {"role":"user","parts":[{"text":"What is in this picture?"},
                {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}}]},
              {"role":"model","parts":[{"text":"A cat."}]},
              {"role":"user","parts":[{"text":"And this one?"},
                {"fileData":{"mimeType":"image/jpeg","fileUri":"gs://bucket/cat.jpg"}}]}],
            "generationConfig":{"temperature":0.2,"maxOutputTokens":256,"thinkingConfig":{"thinkingBudget":0}}}"#,
    );
    assert_eq!(f.model(), None, "the model is in the URL's path");
    assert_eq!(f.max_output_tokens(), Some(256));
    assert_eq!(f.messages(), 3);
    assert_eq!(f.media_parts(), 2);
    let text = "Be brief.".len()
        + "What is in this picture?".len()
        + "A cat.".len()
        + "And this one?".len();
    assert_eq!(f.prompt_bytes(), text as u64);
    // snake_case, as the REST API also accepts.
    let g = facts(
        r#"{"system_instruction":{"parts":[{"text":"x"}]},"contents":[{"parts":[{"inline_data":{"data":"AAAA"}}]}],"generation_config":{"max_output_tokens":9}}"#,
    );
    assert_eq!(
        (g.prompt_bytes(), g.media_parts(), g.max_output_tokens()),
        (1, 1, Some(9))
    );
    // Nulls are nothing.
    let n = facts(r#"{"systemInstruction":null,"contents":null,"generationConfig":null}"#);
    assert_eq!(n, RequestFacts::default());
}

#[test]
fn request_nulls_and_empty() {
    let f = facts(
        r#"{"model":null,"max_tokens":null,"stream":null,"stream_options":null,"messages":null,"system":null}"#,
    );
    assert_eq!(f, RequestFacts::default());
    assert_eq!(f.estimated_input_tokens(), 0);
    assert_eq!(f.output_reservation(512), 512);
    assert_eq!(f.estimated_total_tokens(512), 512);
}

#[test]
fn request_output_cap_is_the_largest_given() {
    assert_eq!(
        facts(r#"{"max_tokens":100}"#).max_output_tokens(),
        Some(100)
    );
    assert_eq!(
        facts(r#"{"max_completion_tokens":300,"max_tokens":100}"#).max_output_tokens(),
        Some(300)
    );
    assert_eq!(
        facts(r#"{"max_output_tokens":50,"max_tokens":null}"#).output_reservation(9),
        50
    );
}

#[test]
fn request_openai_chat_parts_and_tool_calls() {
    let f = facts(
        r#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"abcd"},
            {"role":"user","name":"x","content":[{"type":"text","text":"efgh"},{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"high"}},{"type":"input_audio","input_audio":{"data":"UklGR","format":"wav"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"ok"}
        ],"tools":[{"type":"function","function":{"name":"f","description":"not counted"}}]}"#,
    );
    // abcd + efgh + tool_calls' strings and names + ok
    let tool_calls = "id".len()
        + "call_1".len()
        + "type".len()
        + "function".len()
        + "function".len()
        + "name".len()
        + "f".len()
        + "arguments".len()
        + "{\"a\":1}".len();
    assert_eq!(f.prompt_bytes(), (4 + 4 + tool_calls + 2) as u64);
    assert_eq!((f.messages(), f.media_parts()), (4, 2));
    assert!(!f.stream() && !f.include_usage());
}

#[test]
fn request_anthropic_system_blocks_and_tools() {
    let f = facts(
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
            "system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],
            "messages":[
              {"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo"}},{"type":"text","text":"What?"}]},
              {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"tool_use","id":"t1","name":"get","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"12C"}]}]}
            ]}"#,
    );
    assert_eq!(f.max_output_tokens(), Some(1024));
    assert!(f.stream() && !f.include_usage());
    // "You are terse." + "What?" + "hmm" + "city" "Paris" + "12C"
    assert_eq!(f.prompt_bytes(), 14 + 5 + 3 + 4 + 5 + 3);
    assert_eq!((f.messages(), f.media_parts()), (3, 1));
}

#[test]
fn request_responses_api_input() {
    let f = facts(
        r#"{"model":"gpt-4.1","instructions":"Be brief.","max_output_tokens":256,"input":[
            {"role":"user","content":[{"type":"input_text","text":"Describe"},{"type":"input_image","image_url":"data:image/jpeg;base64,/9j/4AAQ"}]},
            {"type":"function_call","call_id":"c","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"c","output":"done"}
        ],"stream":true}"#,
    );
    assert_eq!(f.prompt_bytes(), 9 + 8 + 2 + 4);
    assert_eq!((f.messages(), f.media_parts()), (3, 1));
    assert_eq!(f.max_output_tokens(), Some(256));
    assert_eq!(facts(r#"{"input":"Tell me a story"}"#).prompt_bytes(), 15);
    assert_eq!(facts(r#"{"input":"Tell me a story"}"#).messages(), 0);
}

#[test]
fn request_completions_and_embeddings_prompts() {
    let f = facts(r#"{"model":"gpt-3.5-turbo-instruct","prompt":["Say this","is a test"]}"#);
    assert_eq!((f.prompt_bytes(), f.messages()), (17, 0));
    assert_eq!(f.estimated_input_tokens(), 5); // ⌈17 / 3.5⌉, no message overhead
    let f = facts(r#"{"input":[[1212,318,257],[3303]],"model":"text-embedding-3-small"}"#);
    assert_eq!((f.prompt_bytes(), f.prompt_token_ids()), (0, 4));
    assert_eq!(f.estimated_input_tokens(), 4);
}

#[test]
fn request_text_is_counted_decoded_and_in_bytes() {
    // "é" is 2 bytes, "日本" 6, "\n" 1 once decoded, "\u00e9" 2.
    let f = facts(r#"{"messages":[{"role":"user","content":"é日本\n\u00e9"}]}"#);
    assert_eq!(f.prompt_bytes(), 2 + 6 + 1 + 2);
}

#[test]
fn request_estimate() {
    let f = facts(&format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}},{{"role":"assistant","content":"{}"}}]}}"#,
        "a".repeat(700),
        "b".repeat(7)
    ));
    // ⌈707 / 3.5⌉ = 202, + 2 × 3 + 3
    assert_eq!(f.estimated_input_tokens(), 202 + 6 + 3);
    assert_eq!(f.estimated_total_tokens(100), 211 + 100);
}

#[test]
fn request_unknown_fields_and_types_inside_content_are_tolerated() {
    let f = facts(
        r#"{"model":"m","temperature":0.2,"metadata":{"max_tokens":"x"},"messages":[
            {"role":"user","content":[{"type":"text","text":7},{"type":{"nested":true},"text":"ab"},{"text":["cd",true,null,1.5]}]}
        ],"extra":[1,2,{"a":"b"}]}"#,
    );
    assert_eq!(f.prompt_bytes(), 4);
    assert_eq!(f.prompt_token_ids(), 1);
    assert_eq!(f.model(), Some("m"));
}

#[test]
fn the_one_allocation_never_grows() {
    let mut scanner = UsageScanner::new(Format::EventStream);
    assert_eq!(scanner.capacity(), 0);
    let big = format!(
        "data: {{\"usage\":{{\"input_tokens\":1,\"pad\":\"{}\"}}}}\n\n",
        "p".repeat(3 * MAX_USAGE_BYTES)
    );
    for _ in 0..3 {
        for chunk in big.as_bytes().chunks(1000) {
            scanner.feed(chunk);
            assert!(scanner.capacity() <= MAX_USAGE_BYTES);
        }
        scanner.feed(OPENAI_STREAM.as_bytes());
        assert!(scanner.capacity() <= MAX_USAGE_BYTES);
    }
    assert_eq!(scanner.buffered(), 0);
    assert_eq!(scanner.finish(), Some(Usage::new(12, 9)));
}
