//! Keys: which requests share a set of windows.
//!
//! A [`Key`] is a 64-bit SipHash of whatever identifies the requests (an API key, a header
//! value, a model). Raw values are hashed as soon as they are read and never stored, logged
//! or printed.
//!
//! By default the hash is seeded per process at random: fine for the in-memory store, useless
//! for a store that several processes share, where the same API key must land on the same
//! store key in every one of them. For that, configure a [`KeySecret`]: a keyed hash (SipHash-2-4
//! under a 128-bit key derived from your secret) that is the same in every process holding the
//! secret, and that nobody without it can compute — a store's keys reveal nothing about the API
//! keys behind them, not even to someone who can guess one.

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
    #[inline]
    pub(crate) fn shard(self, n: usize) -> usize {
        (self.0.rotate_left(32) as usize) % n
    }

    /// The raw 64-bit hash (what a store sees).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// This key scoped to a tier: the same requester under two tiers gets two sets of
    /// windows.
    #[inline]
    pub(crate) fn with_tier(self, tier_id: u64) -> Key {
        // The key is already a seeded SipHash: a splitmix64 finaliser over it and the tier's
        // id keeps it unpredictable and costs a few cycles, not a second SipHash.
        let mut z = self.0 ^ tier_id.rotate_left(29);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Key(z ^ (z >> 31))
    }

    fn join(self, other: Key, secret: &KeySecret) -> Key {
        match secret.0 {
            Secret::Process => {
                let mut h = seeded().build_hasher();
                h.write_u64(self.0);
                h.write_u64(other.0);
                Key(h.finish())
            }
            Secret::Shared(k) => k.hash(&[b"join", &self.0.to_le_bytes(), &other.0.to_le_bytes()]),
        }
    }
}

// === impl KeySecret ===

/// The secret request keys are hashed with.
///
/// The default, [`KeySecret::per_process`], seeds the hash at random in each process, as
/// [`Key::of`] does: right for the in-memory store. When several processes share a store
/// (Redis), give them all the same secret — 16 bytes or more, from your secret store or an
/// environment variable, e.g. `openssl rand -hex 32` — so that one API key gets one store key
/// everywhere. The secret never leaves the process: the store sees 64-bit keyed hashes, which
/// without the secret can neither be reversed nor recomputed from a guessed API key.
///
/// Keys made with a secret are stable: the same bytes and secret give the same [`Key`] in
/// every process, on every platform, in every version of this crate with the same major
/// version. Its `Debug` output never shows the secret.
///
/// ```
/// use tower_quota::limit::KeySecret;
///
/// let a = KeySecret::new("correct horse battery staple").unwrap();
/// let b = KeySecret::new("correct horse battery staple").unwrap();
/// assert_eq!(a.key(b"Bearer sk-or-v1-team"), b.key(b"Bearer sk-or-v1-team"));
/// assert_ne!(a.key(b"Bearer sk-or-v1-team"), KeySecret::new("another secret, 16+ bytes").unwrap().key(b"Bearer sk-or-v1-team"));
/// assert!(KeySecret::new("short").is_err());
/// assert!(!format!("{a:?}").contains("horse"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(Secret);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// The process's random seed ([`Key::of`]).
    Process,
    /// A 128-bit SipHash key derived from the configured secret.
    Shared(SipKey),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct SipKey(u64, u64);

impl SipKey {
    /// SipHash-2-4 of `parts`, each written as its length (8 bytes, little-endian) and its
    /// bytes: an encoding that is the same on every platform and cannot make two lists of
    /// parts collide.
    fn hash(self, parts: &[&[u8]]) -> Key {
        #[allow(deprecated)] // `SipHasher` is SipHash-2-4, which is what we want: stable, keyed.
        let mut h = std::hash::SipHasher::new_with_keys(self.0, self.1);
        for p in parts {
            h.write(&(p.len() as u64).to_le_bytes());
            h.write(p);
        }
        Key(h.finish())
    }
}

/// A [`KeySecret`] shorter than [`KeySecret::MIN_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortSecret {
    len: usize,
}

impl fmt::Display for ShortSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a key secret needs at least {} bytes, this one has {}",
            KeySecret::MIN_LEN,
            self.len
        )
    }
}

impl std::error::Error for ShortSecret {}

impl KeySecret {
    /// The fewest bytes a secret may have.
    pub const MIN_LEN: usize = 16;

    /// A secret shared by every process that must agree on keys. At least
    /// [`MIN_LEN`](Self::MIN_LEN) bytes; use random ones (any length past that is fine: the
    /// secret is condensed into a 128-bit SipHash key).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<KeySecret, ShortSecret> {
        let secret = secret.as_ref();
        if secret.len() < Self::MIN_LEN {
            return Err(ShortSecret { len: secret.len() });
        }
        // Two fixed keys derive the two halves: the secret's entropy, up to 128 bits, is kept.
        let derive = |k0, k1| SipKey(k0, k1).hash(&[b"tower-quota key secret", secret]).0;
        Ok(KeySecret(Secret::Shared(SipKey(
            derive(0x7471_6b73_6563_7230, 0x0123_4567_89ab_cdef),
            derive(0x7471_6b73_6563_7231, 0xfedc_ba98_7654_3210),
        ))))
    }

    /// This process's random seed, the default: keys agree within the process only.
    pub fn per_process() -> KeySecret {
        KeySecret(Secret::Process)
    }

    /// Whether this is a configured secret (not [`per_process`](Self::per_process)).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Secret::Shared(_))
    }

    /// The key of `bytes` (an API key, a header value, a tenant id).
    pub fn key(&self, bytes: &[u8]) -> Key {
        match self.0 {
            Secret::Process => Key::of(bytes),
            Secret::Shared(k) => k.hash(&[b"value", bytes]),
        }
    }

    fn model(&self, model: &str) -> Key {
        match self.0 {
            Secret::Process => Key::of(&("model", model)),
            Secret::Shared(k) => k.hash(&[b"model", model.as_bytes()]),
        }
    }
}

impl Default for KeySecret {
    fn default() -> Self {
        KeySecret::per_process()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Secret::Process => f.write_str("KeySecret(per-process)"),
            Secret::Shared(_) => f.write_str("KeySecret(..)"),
        }
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

    /// The key of a request, hashed with this process's random seed
    /// ([`KeySecret::per_process`]). A limiter configured with a secret keys requests with
    /// [`key_with`](Self::key_with) and its [`key_secret`](super::Limiter::key_secret).
    pub fn key(&self, head: &RequestHead<'_>) -> Key {
        self.key_with(head, &KeySecret::per_process())
    }

    /// The key of a request, hashed with `secret` (a [`Custom`](KeyBy::Custom) function
    /// hashes as it likes: call [`KeySecret::key`] in it to agree across processes).
    pub fn key_with(&self, head: &RequestHead<'_>, secret: &KeySecret) -> Key {
        match self {
            KeyBy::Global => Key::GLOBAL,
            KeyBy::ApiKey => api_key(head.headers, secret),
            KeyBy::Header(name) => head
                .headers
                .get(name)
                .map_or(Key::GLOBAL, |v| secret.key(v.as_bytes())),
            KeyBy::Model => model_key(head, secret),
            KeyBy::ApiKeyAndModel => {
                api_key(head.headers, secret).join(model_key(head, secret), secret)
            }
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

fn api_key(headers: &HeaderMap, secret: &KeySecret) -> Key {
    headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .map_or(Key::GLOBAL, |v| secret.key(v.as_bytes()))
}

fn model_key(head: &RequestHead<'_>, secret: &KeySecret) -> Key {
    head.model()
        .map_or(Key::GLOBAL, |m| secret.model(m.as_str()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_gives_the_same_keys_everywhere_and_only_with_it() {
        let s = KeySecret::new("0123456789abcdef-shared-secret").unwrap();
        let k = s.key(b"Bearer sk-or-v1-team");
        // Pinned: a change here splits every deployment's keys in two during an upgrade.
        assert_eq!(k, Key(0x5e3b_f2bb_61ca_abe6));
        assert_eq!(
            k,
            KeySecret::new("0123456789abcdef-shared-secret")
                .unwrap()
                .key(b"Bearer sk-or-v1-team")
        );
        assert_ne!(
            k,
            KeySecret::new("0123456789abcdef-other-secret")
                .unwrap()
                .key(b"Bearer sk-or-v1-team")
        );
        assert_ne!(k, Key::of(b"Bearer sk-or-v1-team".as_slice()));
        // Values of different kinds never collide by construction.
        assert_ne!(s.key(b"x"), s.model("x"));
        assert_eq!(KeySecret::new([7u8; 15]), Err(ShortSecret { len: 15 }));
        assert_eq!(format!("{s:?}"), "KeySecret(..)");
    }

    #[test]
    fn key_by_hashes_with_the_secret_given() {
        let s = KeySecret::new("0123456789abcdef-shared-secret").unwrap();
        let req = http::Request::builder()
            .header("authorization", "Bearer sk-a")
            .extension(Model::new("m"))
            .body(())
            .unwrap();
        let head = RequestHead::of(&req);
        assert_eq!(KeyBy::ApiKey.key_with(&head, &s), s.key(b"Bearer sk-a"));
        assert_eq!(KeyBy::ApiKey.key(&head), Key::of(b"Bearer sk-a".as_slice()));
        assert_eq!(KeyBy::Model.key_with(&head, &s), s.model("m"));
        let both = KeyBy::ApiKeyAndModel.key_with(&head, &s);
        assert_eq!(both, s.key(b"Bearer sk-a").join(s.model("m"), &s));
        assert_ne!(both, KeyBy::ApiKeyAndModel.key(&head));
        assert_eq!(KeyBy::Global.key_with(&head, &s), Key::GLOBAL);
    }
}
