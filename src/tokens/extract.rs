//! Reading a request body's [`RequestFacts`] once, where a front end already holds its bytes,
//! into the request's extensions: the limiter's cost and keys read them from there.

use http::{Extensions, HeaderMap};
use http_body::SizeHint;

use super::RequestFacts;
use crate::limit::Model;

/// The largest body whose facts are read: a prompt of a million bytes is about 285 000
/// tokens, past every model's context.
pub(crate) const MAX_FACTS_BYTES: u64 = 4 << 20;

/// Whether a body with these headers and this size is worth reading for its facts: JSON (or
/// no content type), of a known size no larger than `cap` (what can still be replayed whole
/// once read) and [`MAX_FACTS_BYTES`].
pub(crate) fn worth_reading(headers: &HeaderMap, hint: &SizeHint, cap: u64) -> bool {
    let json = match headers.get(http::header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        }),
    };
    json && hint
        .upper()
        .is_some_and(|n| n > 0 && n <= cap.min(MAX_FACTS_BYTES))
}

/// Reads the facts of a body made of `chunks` into `extensions`: a [`RequestFacts`], and the
/// body's model as a [`Model`] unless one is set already (the caller's own wins). A body
/// that is not a JSON object leaves them as they were.
pub(crate) fn note_facts<T: AsRef<[u8]>>(extensions: &mut Extensions, chunks: &[T]) {
    let facts = match chunks {
        [] => return,
        [one] => RequestFacts::from_json(one.as_ref()),
        // JSON is parsed from contiguous bytes: a body in several chunks is joined for that,
        // and the join dropped at once.
        many => {
            let joined: Vec<u8> = many.iter().flat_map(|c| c.as_ref()).copied().collect();
            RequestFacts::from_json(&joined)
        }
    };
    let Some(facts) = facts else { return };
    if extensions.get::<Model>().is_none() {
        if let Some(model) = facts.model() {
            extensions.insert(Model::new(model));
        }
    }
    extensions.insert(facts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn headers(ct: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_json_of_a_known_replayable_size() {
        let exact = SizeHint::with_exact(100);
        assert!(worth_reading(&headers(None), &exact, 1024));
        assert!(worth_reading(
            &headers(Some("application/json; charset=utf-8")),
            &exact,
            1024
        ));
        assert!(worth_reading(
            &headers(Some("application/vnd.api+json")),
            &exact,
            1024
        ));
        assert!(!worth_reading(
            &headers(Some("multipart/form-data")),
            &exact,
            1024
        ));
        assert!(!worth_reading(&headers(None), &SizeHint::new(), 1024));
        assert!(!worth_reading(&headers(None), &exact, 99));
        assert!(!worth_reading(
            &headers(None),
            &SizeHint::with_exact(0),
            1024
        ));
    }

    #[test]
    fn the_callers_model_wins_and_chunks_are_joined() {
        let mut ext = Extensions::new();
        note_facts(
            &mut ext,
            &[
                Bytes::from_static(br#"{"model":"a","max_"#),
                Bytes::from_static(br#"tokens":7}"#),
            ],
        );
        assert_eq!(ext.get::<Model>().unwrap().as_str(), "a");
        assert_eq!(
            ext.get::<RequestFacts>().unwrap().max_output_tokens(),
            Some(7)
        );

        let mut ext = Extensions::new();
        ext.insert(Model::new("mine"));
        note_facts(&mut ext, &[Bytes::from_static(br#"{"model":"a"}"#)]);
        assert_eq!(ext.get::<Model>().unwrap().as_str(), "mine");

        let mut ext = Extensions::new();
        note_facts(&mut ext, &[Bytes::from_static(b"not json")]);
        assert!(ext.get::<RequestFacts>().is_none() && ext.get::<Model>().is_none());
    }
}
