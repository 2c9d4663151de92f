//! Keys: which requests share a set of windows.
//!
//! A [`Key`] is a 64-bit SipHash of whatever identifies the requests (an API key, a header
//! value, a model), with a per-process random seed. Raw values are hashed as soon as they are
//! read and never stored, logged or printed.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use http::header::{HeaderName, AUTHORIZATION};
use http::{Extensions, HeaderMap, Method, Uri};

/// A hashed key. Its `Debug` and `Display` show the hash, never what was hashed.
///
/// ```
/// use tower_quota::limit::Key;
///
/// let k = Key::of("sk-or-v1-secret");
/// assert_eq!(k, Key::of("sk-or-v1-secret"));
/// assert!(!format!("{k:?}").contains("secret"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub(crate) u64);

impl Key {
    /// The key every request shares when nothing else keys them.
    pub const GLOBAL: Key = Key(0x676c_6f62_616c);

    /// The key of a value: its SipHash with this process's random seed.
    pub fn of<T: Hash + ?Sized>(value: &T) -> Key {
        Key(seeded().hash_one(value))
    }

    /// Which of `n` shards the key lives in: bits the hash maps do not use for their tags.
    pub(crate) fn shard(self, n: usize) -> usize {
        (self.0.rotate_left(32) as usize) % n
    }

    /// The raw 64-bit hash (what a store sees).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// This key scoped to a tier: the same requester under two tiers gets two sets of
    /// windows.
    pub(crate) fn with_tier(self, tier_id: u64) -> Key {
        // The key is already a seeded SipHash: a splitmix64 finaliser over it and the tier's
        // id keeps it unpredictable and costs a few cycles, not a second SipHash.
        let mut z = self.0 ^ tier_id.rotate_left(29);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Key(z ^ (z >> 31))
    }

    fn join(self, other: Key) -> Key {
        let mut h = seeded().build_hasher();
        h.write_u64(self.0);
        h.write_u64(other.0);
        Key(h.finish())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:016x})", self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

fn seeded() -> &'static std::collections::hash_map::RandomState {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default)
}

/// A hash that is the same in every process (for tier names, which are not secret).
pub(crate) fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The model a request is for. Insert it into the request's extensions to key by model or
/// to pick a tier per model; the layer never parses the body to find it.
///
/// ```
/// use tower_quota::limit::Model;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Model::new("meta-llama/llama-3.3-70b-instruct:free"));
/// assert!(req.extensions().get::<Model>().unwrap().is_free_variant());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model(pub Arc<str>);

impl Model {
    /// A model name.
    pub fn new(name: impl AsRef<str>) -> Model {
        Model(Arc::from(name.as_ref()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is an OpenRouter `:free` variant.
    pub fn is_free_variant(&self) -> bool {
        self.0.ends_with(":free")
    }
}

/// A borrowed view of a request's head, handed to key, tier and cost functions.
///
/// Its `Debug` output shows the method, the path and the header *names* only: header values
/// (`Authorization`, `x-api-key`) and the query (`?key=…`) can carry API keys.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (where a [`Model`] lives).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of a request.
    pub fn of<B>(req: &'a http::Request<B>) -> RequestHead<'a> {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The model set in the extensions, if any.
    pub fn model(&self) -> Option<&'a Model> {
        self.extensions.get::<Model>()
    }
}

type KeyFn = dyn Fn(&RequestHead<'_>) -> Key + Send + Sync;

/// How requests are keyed: which requests share windows.
///
/// With the `serde` feature it reads and writes as `"global"`, `"api-key"`, `"model"`,
/// `"api-key-and-model"` or `{ header = "x-tenant" }`; [`KeyBy::Custom`] (a function) cannot
/// be written.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use tower_quota::limit::KeyBy;
///
/// let k: KeyBy = serde_json::from_str(r#""api-key""#).unwrap();
/// assert!(matches!(k, KeyBy::ApiKey));
/// let k: KeyBy = serde_json::from_str(r#"{"header":"x-tenant"}"#).unwrap();
/// assert!(matches!(k, KeyBy::Header(h) if h == "x-tenant"));
/// # }
/// ```
#[derive(Clone, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(try_from = "serde_impl::KeyByRepr")
)]
#[non_exhaustive]
pub enum KeyBy {
    /// Every request shares one key (the default).
    #[default]
    Global,
    /// The API key: the `Authorization` header, else `x-api-key` (Anthropic); hashed at once.
    /// Requests without either share one key.
    ApiKey,
    /// The value of a header (hashed). Requests without it share one key.
    Header(HeaderName),
    /// The [`Model`] in the request's extensions. Requests without one share one key.
    Model,
    /// The API key and the model together.
    ApiKeyAndModel,
    /// A function of the request head.
    Custom(Arc<KeyFn>),
}

impl KeyBy {
    /// Keys by a function of the request head.
    pub fn custom(f: impl Fn(&RequestHead<'_>) -> Key + Send + Sync + 'static) -> KeyBy {
        KeyBy::Custom(Arc::new(f))
    }

    /// The key of a request.
    pub fn key(&self, head: &RequestHead<'_>) -> Key {
        match self {
            KeyBy::Global => Key::GLOBAL,
            KeyBy::ApiKey => api_key(head.headers),
            KeyBy::Header(name) => head
                .headers
                .get(name)
                .map_or(Key::GLOBAL, |v| Key::of(v.as_bytes())),
            KeyBy::Model => model_key(head),
            KeyBy::ApiKeyAndModel => api_key(head.headers).join(model_key(head)),
            KeyBy::Custom(f) => f(head),
        }
    }

    /// Whether keys tell models apart, so that a model-scoped 429 may cool a key down.
    pub fn keys_model(&self) -> bool {
        matches!(
            self,
            KeyBy::Model | KeyBy::ApiKeyAndModel | KeyBy::Custom(_)
        )
    }
}

fn api_key(headers: &HeaderMap) -> Key {
    headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .map_or(Key::GLOBAL, |v| Key::of(v.as_bytes()))
}

fn model_key(head: &RequestHead<'_>) -> Key {
    head.model()
        .map_or(Key::GLOBAL, |m| Key::of(&("model", m.as_str())))
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", self.method)
            .field("path", &self.uri.path())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Global => f.write_str("Global"),
            KeyBy::ApiKey => f.write_str("ApiKey"),
            KeyBy::Header(h) => f.debug_tuple("Header").field(h).finish(),
            KeyBy::Model => f.write_str("Model"),
            KeyBy::ApiKeyAndModel => f.write_str("ApiKeyAndModel"),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use http::header::HeaderName;
    use serde::{ser::Error as _, Deserialize, Serialize, Serializer};

    use super::KeyBy;

    #[derive(Deserialize, Serialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    pub(super) enum KeyByRepr {
        Global,
        ApiKey,
        Model,
        ApiKeyAndModel,
        Header(String),
    }

    impl TryFrom<KeyByRepr> for KeyBy {
        type Error = String;

        fn try_from(r: KeyByRepr) -> Result<KeyBy, String> {
            Ok(match r {
                KeyByRepr::Global => KeyBy::Global,
                KeyByRepr::ApiKey => KeyBy::ApiKey,
                KeyByRepr::Model => KeyBy::Model,
                KeyByRepr::ApiKeyAndModel => KeyBy::ApiKeyAndModel,
                KeyByRepr::Header(name) => KeyBy::Header(
                    HeaderName::try_from(name.as_str())
                        .map_err(|e| format!("invalid header name {name:?}: {e}"))?,
                ),
            })
        }
    }

    impl Serialize for KeyBy {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let repr = match self {
                KeyBy::Global => KeyByRepr::Global,
                KeyBy::ApiKey => KeyByRepr::ApiKey,
                KeyBy::Model => KeyByRepr::Model,
                KeyBy::ApiKeyAndModel => KeyByRepr::ApiKeyAndModel,
                KeyBy::Header(h) => KeyByRepr::Header(h.as_str().to_string()),
                KeyBy::Custom(_) => {
                    return Err(S::Error::custom(
                        "a custom key function cannot be serialised",
                    ))
                }
            };
            repr.serialize(s)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips() {
            for (k, json) in [
                (KeyBy::Global, r#""global""#),
                (KeyBy::ApiKey, r#""api-key""#),
                (KeyBy::Model, r#""model""#),
                (KeyBy::ApiKeyAndModel, r#""api-key-and-model""#),
                (
                    KeyBy::Header(HeaderName::from_static("x-tenant")),
                    r#"{"header":"x-tenant"}"#,
                ),
            ] {
                assert_eq!(serde_json::to_string(&k).unwrap(), json);
                let back: KeyBy = serde_json::from_str(json).unwrap();
                assert_eq!(format!("{back:?}"), format!("{k:?}"));
            }
            assert!(serde_json::to_string(&KeyBy::custom(|_| super::super::Key::GLOBAL)).is_err());
            assert!(serde_json::from_str::<KeyBy>(r#"{"header":"bad header"}"#).is_err());
            assert!(serde_json::from_str::<KeyBy>(r#""by-moon-phase""#).is_err());
            // Header names are case-insensitive: written lower-case.
            let k: KeyBy = serde_json::from_str(r#"{"header":"X-Tenant"}"#).unwrap();
            assert!(matches!(k, KeyBy::Header(h) if h == "x-tenant"));
        }
    }
}

/// A hasher for maps keyed by [`Key`]: keys are already SipHash-ed with a per-process random
/// seed, so they are used as they are.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
