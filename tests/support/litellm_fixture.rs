//! The LiteLLM fixtures (`tests/fixtures/litellm/*.json`): raw answers captured from a real
//! proxy by `tests/litellm.rs`, each with what it must be classified as (`expect`, reviewed by
//! hand). `tests/classify_litellm.rs` runs them through the classifiers without Python; the
//! live test holds a running proxy's answers to the same expectations.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tower_quota::classify::{Anthropic, Auto, Classification, Classify, LiteLlm, OpenAi};
use tower_quota::headers::RateLimitWindow;

/// Where the fixtures live.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litellm")
}

/// One captured answer.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    /// `/v1/chat/completions` or `/v1/messages`.
    pub endpoint: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it was captured: "now" for the classifier (dates and resets in it are relative).
    pub captured_at: SystemTime,
    /// The whole file, `expect` included.
    pub json: Value,
}

impl Fixture {
    /// Reads `<dir>/<name>.json`, if there is one.
    pub fn load(name: &str) -> Option<Fixture> {
        let text = std::fs::read_to_string(dir().join(format!("{name}.json"))).ok()?;
        let json: Value = serde_json::from_str(&text).expect("a fixture is JSON");
        Some(Fixture::from_json(name, json))
    }

    /// Every fixture, by name.
    pub fn all() -> Vec<Fixture> {
        let mut names: Vec<String> = std::fs::read_dir(dir())
            .expect("tests/fixtures/litellm exists")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        names.sort();
        names.iter().filter_map(|n| Fixture::load(n)).collect()
    }

    pub fn from_json(name: &str, json: Value) -> Fixture {
        let answer = &json["answer"];
        let headers = answer["headers"]
            .as_array()
            .expect("answer.headers is an array")
            .iter()
            .map(|line| {
                let line = line.as_str().expect("a header line");
                let (name, value) = line.split_once(": ").expect("`name: value`");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Fixture {
            name: name.to_owned(),
            endpoint: json["request"]["endpoint"]
                .as_str()
                .expect("request.endpoint")
                .to_owned(),
            status: answer["status"].as_u64().expect("answer.status") as u16,
            headers,
            body: answer["body"].as_str().expect("answer.body").to_owned(),
            captured_at: UNIX_EPOCH
                + Duration::from_secs(json["captured_at"].as_u64().expect("captured_at")),
            json,
        }
    }

    /// The response head.
    pub fn parts(&self) -> http::response::Parts {
        let mut b = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(()).unwrap().into_parts().0
    }

    /// The expectation, if reviewed.
    pub fn expect(&self) -> Option<&Value> {
        self.json.get("expect").filter(|e| e.is_object())
    }

    /// What every classifier that may face this answer says: `Auto`, `LiteLlm`, and the
    /// classifier of the API the endpoint speaks (`OpenAi` or `Anthropic`).
    pub fn classify(&self) -> Vec<(&'static str, Classification)> {
        let parts = self.parts();
        let body = self.body.as_bytes();
        let body = if Auto.wants_body(&parts) { body } else { b"" };
        let at = self.captured_at;
        let mut out = vec![
            ("Auto", Auto.classify_at(&parts, body, at)),
            ("LiteLlm", LiteLlm.classify_at(&parts, body, at)),
        ];
        if self.endpoint.ends_with("/messages") {
            out.push(("Anthropic", Anthropic.classify_at(&parts, body, at)));
        } else {
            out.push(("OpenAi", OpenAi.classify_at(&parts, body, at)));
        }
        out
    }

    /// The mismatches between every classifier's verdict and the expectation.
    pub fn mismatches(&self) -> Vec<String> {
        let Some(expect) = self.expect() else {
            return vec![format!("[{}] has no reviewed `expect`", self.name)];
        };
        self.classify()
            .into_iter()
            .flat_map(|(who, c)| {
                check(expect, &c)
                    .into_iter()
                    .map(move |m| format!("[{}] via {who}: {m}", self.name))
            })
            .collect()
    }
}

/// Where a classification differs from an expectation:
///
/// ```json
/// {"class": "rate_limited", "scope": "account", "retry_after": 60 | [0, 60] | null,
///  "should_retry": true, "code": "…", "provider": "…",
///  "requests": {"limit": 2, "remaining": 0}, "tokens": {…}}
/// ```
///
/// `code`, `provider`, `requests` and `tokens` are checked only when given.
pub fn check(expect: &Value, c: &Classification) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = |what: &str, ok: bool, got: String| {
        if !ok {
            out.push(format!("{what} was {got}, want {}", expect[what]));
        }
    };
    want(
        "class",
        expect["class"] == c.class().as_str(),
        c.class().to_string(),
    );
    want(
        "scope",
        expect["scope"] == c.scope().as_str(),
        c.scope().to_string(),
    );
    let got = c.retry_after().map(|d| d.as_secs_f64());
    let delay_ok = match (&expect["retry_after"], got) {
        (Value::Null, None) => true,
        (Value::Number(n), Some(g)) => (n.as_f64().unwrap() - g).abs() < 1e-3,
        (Value::Array(r), Some(g)) => {
            r[0].as_f64().unwrap() <= g + 1e-3 && g <= r[1].as_f64().unwrap() + 1e-3
        }
        _ => false,
    };
    want("retry_after", delay_ok, format!("{got:?}"));
    want(
        "should_retry",
        expect["should_retry"] == c.should_retry(),
        c.should_retry().to_string(),
    );
    for key in ["code", "provider"] {
        if let Some(w) = expect.get(key) {
            let got = if key == "code" {
                c.code()
            } else {
                c.provider()
            };
            want(key, w.as_str() == got, format!("{got:?}"));
        }
    }
    for (key, window) in [
        ("requests", c.rate_limit().requests()),
        ("tokens", c.rate_limit().tokens()),
    ] {
        if let Some(w) = expect.get(key) {
            want(
                key,
                *w == window_json(window),
                window_json(window).to_string(),
            );
        }
    }
    out
}

fn window_json(w: Option<&RateLimitWindow>) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({"limit": w.limit, "remaining": w.remaining}),
    }
}

/// A classification in the expectation's terms: what a recording proposes for review.
pub fn describe(c: &Classification) -> Value {
    let mut v = json!({
        "class": c.class().as_str(),
        "scope": c.scope().as_str(),
        "retry_after": c.retry_after().map(|d| d.as_secs_f64()),
        "should_retry": c.should_retry(),
    });
    if let Some(code) = c.code() {
        v["code"] = json!(code);
    }
    if let Some(p) = c.provider() {
        v["provider"] = json!(p);
    }
    if c.rate_limit().requests().is_some() {
        v["requests"] = window_json(c.rate_limit().requests());
    }
    if c.rate_limit().tokens().is_some() {
        v["tokens"] = window_json(c.rate_limit().tokens());
    }
    v
}
