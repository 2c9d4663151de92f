//! `headers::retry_after`, `grpc_pushback` and `should_retry` over arbitrary header maps whose
//! values come in every delay form (delay-seconds, fractions, HTTP-dates in all three forms,
//! milliseconds, pushback), and a check of each answer against what the headers say.
#![no_main]

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use tower_quota::headers::{self, Pushback, MAX_DELAY};
use tower_quota_fuzz::header_input;

fuzz_target!(|data: &[u8]| {
    if let Some((map, now)) = header_input(data) {
        check(&map, now);
    }
});

fn check(map: &HeaderMap, now: SystemTime) {
    let delay = headers::retry_after(map, now);
    assert!(delay.is_none_or(|d| d <= MAX_DELAY), "{delay:?}");
    // Never earlier than any usable `retry-after-ms` asks.
    for v in map.get_all("retry-after-ms") {
        if let Ok(ms) = std::str::from_utf8(v.as_bytes())
            .unwrap_or("")
            .trim()
            .parse::<u64>()
        {
            let asked = Duration::from_millis(ms).min(MAX_DELAY);
            assert!(delay.is_some_and(|d| d >= asked), "{delay:?} < {asked:?}");
        }
    }
    // Absent every source, no delay.
    if ["retry-after-ms", "retry-after", "grpc-retry-pushback-ms"]
        .iter()
        .all(|n| !map.contains_key(*n))
    {
        assert_eq!(delay, None);
    }

    match headers::grpc_pushback(map) {
        None => assert!(!map.contains_key("grpc-retry-pushback-ms")),
        Some(Pushback::After(d)) => assert!(d <= MAX_DELAY),
        Some(Pushback::DoNotRetry) => {}
    }

    let verdict = headers::should_retry(map);
    let values: Vec<String> = map
        .get_all("x-should-retry")
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let expected = if values.iter().any(|v| v == "false") {
        Some(false)
    } else if values.iter().any(|v| v == "true") {
        Some(true)
    } else {
        None
    };
    assert_eq!(verdict, expected, "{values:?}");
}
