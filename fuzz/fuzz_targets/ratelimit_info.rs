//! `RateLimitInfo::from_headers` over arbitrary header maps mixing every vendor family
//! (OpenRouter / Envoy `X-RateLimit-*`, OpenAI / LiteLLM `x-ratelimit-*-{dimension}`,
//! Anthropic `anthropic-ratelimit-*`, IETF `RateLimit` / `RateLimit-Policy` Structured
//! Fields, the older `RateLimit-*` drafts) with values in every format.
#![no_main]

use std::time::SystemTime;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use tower_quota::headers::{RateLimitInfo, MAX_DELAY};
use tower_quota_fuzz::header_input;

fuzz_target!(|data: &[u8]| {
    if let Some((map, now)) = header_input(data) {
        check(&map, now);
    }
});

fn check(map: &HeaderMap, now: SystemTime) {
    let info = RateLimitInfo::from_headers(map, now);

    let windows = info.windows();
    for (i, w) in windows.iter().enumerate() {
        // One window per dimension, and none empty.
        assert!(
            windows[..i].iter().all(|o| o.dimension != w.dimension),
            "{windows:?}"
        );
        assert!(
            w.limit.is_some() || w.remaining.is_some() || w.reset.is_some() || w.window.is_some(),
            "{w:?}"
        );
        assert!(w.reset.is_none_or(|d| d <= MAX_DELAY), "{w:?}");
        assert!(w.window.is_none_or(|d| d <= MAX_DELAY), "{w:?}");
    }
    assert!(info.exhausted_reset().is_none_or(|d| d <= MAX_DELAY));
    assert_eq!(info.is_empty(), windows.is_empty());
    // Nothing without a rate-limit header.
    if map.keys().all(|k| !k.as_str().contains("ratelimit")) {
        assert!(info.is_empty(), "{info:?} from {map:?}");
    }
    // Same input, same answer.
    assert_eq!(RateLimitInfo::from_headers(map, now), info);
}
