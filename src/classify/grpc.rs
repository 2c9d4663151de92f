//! gRPC status codes, pushback and `RetryInfo`.

use std::time::{Duration, SystemTime};

use http::response::Parts;
use http::HeaderMap;

use super::{Classification, Classify, QuotaClass, Scope};
use crate::headers::{self, Pushback, MAX_DELAY};

/// Classifies gRPC responses from `grpc-status`, `grpc-message`, `grpc-retry-pushback-ms` and a
/// `google.rpc.RetryInfo` detail in `grpc-status-details-bin`.
///
/// The status is read from the response headers, where a trailers-only response (the form
/// servers use for an immediate error, e.g. tonic's `Err(Status)`) carries it; a status that
/// only arrives in the trailers of a streamed response is not seen here.
///
/// `RESOURCE_EXHAUSTED` is [`QuotaClass::RateLimited`] when the server gave a delay (pushback
/// or `RetryInfo`) and a non-retryable [`QuotaClass::QuotaExhausted`] when it did not; a
/// negative or unparseable pushback means "do not retry" whatever the status.
///
/// ```
/// use tower_quota::classify::{Classify, Grpc, QuotaClass};
///
/// let (parts, ()) = http::Response::builder()
///     .header("content-type", "application/grpc")
///     .header("grpc-status", "14")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert_eq!(Grpc::default().classify(&parts, b"").class(), QuotaClass::Unavailable);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Grpc;

impl Classify for Grpc {
    fn classify(&self, parts: &Parts, body: &[u8]) -> Classification {
        self.classify_at(parts, body, SystemTime::now())
    }

    fn classify_at(&self, parts: &Parts, _body: &[u8], now: SystemTime) -> Classification {
        let mut c = super::generic::base(parts, now);
        refine(&mut c, &parts.headers);
        super::generic::finish(c)
    }

    fn wants_body(&self, _parts: &Parts) -> bool {
        false
    }
}

/// Whether a response is gRPC: a `grpc-status` header or an `application/grpc` content type.
pub(crate) fn matches(parts: &Parts) -> bool {
    parts.headers.contains_key(super::generic::GRPC_STATUS)
        || parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The class of a gRPC status code.
pub fn class_of(code: u32) -> QuotaClass {
    match code {
        0 => QuotaClass::Success,
        3 | 9 | 11 => QuotaClass::InvalidRequest,
        4 => QuotaClass::Timeout,
        7 => QuotaClass::Forbidden,
        8 => QuotaClass::RateLimited,
        14 => QuotaClass::Unavailable,
        16 => QuotaClass::Auth,
        1 | 5 | 6 | 12 => QuotaClass::ClientError,
        _ => QuotaClass::ServerError,
    }
}

pub(crate) fn refine(c: &mut Classification, h: &HeaderMap) {
    let Some(code) = h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    c.set_api("grpc");
    c.set_class(class_of(code));
    if let Some(m) = h.get("grpc-message") {
        c.set_message(&percent_decode(m.as_bytes()));
    }
    let pushback = headers::grpc_pushback(h);
    if c.retry_after().is_none() {
        let detail = h
            .get("grpc-status-details-bin")
            .and_then(|v| retry_info_delay(v.as_bytes()));
        c.set_retry_after(detail);
    }
    if code == 8 {
        c.set_code("RESOURCE_EXHAUSTED");
        let delayed = c.retry_after().is_some() && pushback != Some(Pushback::DoNotRetry);
        if !delayed {
            c.set_class(QuotaClass::QuotaExhausted);
            c.set_retryable(Some(false));
        }
        c.set_scope(Scope::Account);
    }
}

/// Decodes a `grpc-message` value (percent-encoded UTF-8; invalid sequences are kept as-is).
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The delay of a `google.rpc.RetryInfo` detail in a base64 `grpc-status-details-bin` value
/// (a serialised `google.rpc.Status`).
pub(crate) fn retry_info_delay(b64: &[u8]) -> Option<Duration> {
    if b64.len() > 16 * 1024 {
        return None;
    }
    let status = base64_decode(b64)?;
    let mut fields = Fields(&status);
    while let Some((number, value)) = fields.next_field()? {
        let (3, Wire::Len(any)) = (number, value) else {
            continue;
        };
        let (mut type_url, mut payload) = ("".as_bytes(), None);
        let mut any_fields = Fields(any);
        while let Some((n, v)) = any_fields.next_field()? {
            match (n, v) {
                (1, Wire::Len(s)) => type_url = s,
                (2, Wire::Len(p)) => payload = Some(p),
                _ => {}
            }
        }
        if !type_url.ends_with(b"google.rpc.RetryInfo") {
            continue;
        }
        let mut info = Fields(payload?);
        while let Some((n, v)) = info.next_field()? {
            if let (1, Wire::Len(duration)) = (n, v) {
                return proto_duration(duration);
            }
        }
        return Some(Duration::ZERO);
    }
    None
}

/// A `google.protobuf.Duration` message; negative is `None`, large saturates.
fn proto_duration(buf: &[u8]) -> Option<Duration> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    let mut fields = Fields(buf);
    while let Some((n, v)) = fields.next_field()? {
        match (n, v) {
            (1, Wire::Varint(s)) => secs = s as i64,
            (2, Wire::Varint(ns)) => nanos = ns as i32 as i64,
            _ => {}
        }
    }
    if secs < 0 || nanos < 0 {
        return None;
    }
    let d = Duration::from_secs(secs as u64).saturating_add(Duration::from_nanos(nanos as u64));
    Some(d.min(MAX_DELAY))
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// A minimal protobuf wire-format reader: enough to find one field in a small message.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// `Some(None)` at the end of the message, `None` when it is malformed.
    fn next_field(&mut self) -> Option<Option<(u32, Wire<'a>)>> {
        if self.0.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.0 = self.0.get(8..)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                if len > self.0.len() {
                    return None;
                }
                let (v, rest) = self.0.split_at(len);
                self.0 = rest;
                Wire::Len(v)
            }
            5 => {
                self.0 = self.0.get(4..)?;
                Wire::Fixed
            }
            _ => return None,
        };
        Some(Some((number, value)))
    }
}

/// Standard base64, padding optional (gRPC's binary headers omit it).
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let input = input.trim_ascii();
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &ch in input {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    /// `google.rpc.Status{code: 8, details: [Any{RetryInfo{retry_delay: {secs, nanos}}}]}`.
    fn status_with_retry_info(secs: u8, nanos: u8) -> Vec<u8> {
        let duration = [0x08, secs, 0x10, nanos];
        let mut info = vec![0x0a, duration.len() as u8];
        info.extend_from_slice(&duration);
        let url = b"type.googleapis.com/google.rpc.RetryInfo";
        let mut any = vec![0x0a, url.len() as u8];
        any.extend_from_slice(url);
        any.extend_from_slice(&[0x12, info.len() as u8]);
        any.extend_from_slice(&info);
        let mut status = vec![0x08, 0x08, 0x12, 0x02, b'n', b'o'];
        status.extend_from_slice(&[0x1a, any.len() as u8]);
        status.extend_from_slice(&any);
        status
    }

    #[test]
    fn retry_info_is_read() {
        let encoded = b64(&status_with_retry_info(3, 100));
        assert_eq!(
            retry_info_delay(encoded.trim_end_matches('=').as_bytes()),
            Some(Duration::new(3, 100))
        );
        assert_eq!(
            retry_info_delay(encoded.as_bytes()),
            Some(Duration::new(3, 100))
        );
    }

    /// `RESOURCE_EXHAUSTED` whose only delay is a `RetryInfo` detail: rate limited for that
    /// long, worth a retry; the same status without it is exhausted.
    #[test]
    fn a_retry_info_detail_alone_makes_a_rate_limit() {
        use crate::classify::Classify;
        let head = |details: Option<&str>| {
            let mut b = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "8");
            if let Some(d) = details {
                b = b.header("grpc-status-details-bin", d);
            }
            b.body(()).unwrap().into_parts().0
        };
        let encoded = b64(&status_with_retry_info(3, 100));
        let c = Grpc.classify(&head(Some(&encoded)), &[]);
        assert_eq!(c.class(), QuotaClass::RateLimited);
        assert_eq!(c.retry_after(), Some(Duration::new(3, 100)));
        assert!(c.should_retry());
        let c = Grpc.classify(&head(None), &[]);
        assert_eq!(c.class(), QuotaClass::QuotaExhausted);
        assert!(!c.should_retry());
    }

    #[test]
    fn malformed_details_are_ignored() {
        assert_eq!(retry_info_delay(b"!!!"), None);
        assert_eq!(retry_info_delay(b""), None);
        let mut truncated = status_with_retry_info(3, 0);
        truncated.truncate(truncated.len() - 3);
        assert_eq!(retry_info_delay(b64(&truncated).as_bytes()), None);
        // A varint that never ends.
        assert_eq!(retry_info_delay(b64(&[0xff; 12]).as_bytes()), None);
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"quota%20exceeded%"), "quota exceeded%");
        assert_eq!(percent_decode(b"%E2%9C%93 ok"), "\u{2713} ok");
        assert_eq!(percent_decode(b"%zz"), "%zz");
    }
}
