//! [`QuotaLayer`]: the three layers in one, in the right order.

use std::fmt;

use tower_layer::Layer;

use std::time::Duration;

use crate::classify::{Auto, QuotaClassify, QuotaClassifyLayer};
use crate::clock::WallClock;
use crate::limit::store::Store;
use crate::limit::{
    Cost, KeyBy, KeySecret, Limiter, Mode, RateLimit, RateLimitLayer, Reconcile, RequestHead, Tier,
};
use crate::retry::{Backoff, RetryAfter, RetryAfterLayer, Standard};

/// The whole stack in one layer: [`RetryAfterLayer`] (outermost, so that every attempt goes
/// through the limiter again) → [`RateLimitLayer`] → [`QuotaClassifyLayer`] (with the
/// [`Auto`] classifier, which recognises every provider's error shape) → your client.
///
/// `QuotaLayer::new(tier)` is the same as
///
/// ```text
/// ServiceBuilder::new()
///     .layer(RetryAfterLayer::new())
///     .layer(RateLimitLayer::new(tier))
///     .layer(QuotaClassifyLayer::new(Auto))
/// ```
///
/// with one difference: the classifier and the retry layer read the limiter's wall clock
/// ([`Limiter::wall_clock`]), so that all three agree on "now" — in paused tokio time too.
/// The limiter's own refusals (reject mode, a wait beyond its `max_wait`) come back at once:
/// [`Standard`] does not retry them.
///
/// **One builder.** Every setting of every part is a method here, each set once, and the
/// order of the calls does not matter: the clock is resolved when the stack is built, and
/// replacing a part whole ([`with_rate_limit`](Self::with_rate_limit),
/// [`with_retry`](Self::with_retry), [`with_classify`](Self::with_classify)) keeps the
/// clock set with [`with_wall_clock`](Self::with_wall_clock). A tier selector needs no
/// placeholder tier: [`QuotaLayer::selecting`]. The same configuration drives the reqwest
/// middleware (`QuotaMiddleware::from(layer)`, feature `reqwest-middleware`).
///
/// The service it makes is a [`QuotaStack`]: it takes `http::Request<B>`, its inner service
/// sees `http::Request<ReplayBody<B>>` (see [the retry docs](crate::retry) for what that
/// means for hyper-util and tonic), its responses carry a
/// [`Classification`](crate::classify::Classification) (and, after a retry or a refusal to
/// retry, a [`RetryInfo`](crate::retry::RetryInfo)), and its error is a
/// [`BoxError`](crate::limit::BoxError) — the client's own, or the limiter's
/// [`RateLimited`](crate::limit::RateLimited).
///
/// # Example
///
/// Twenty-five requests against the simulated OpenRouter free tier (20 per rolling minute):
/// the last five wait for the first to leave the window, and none gets a 429. In paused
/// tokio time, this runs instantly.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_quota::classify::{Classification, QuotaClass};
/// use tower_quota::limit::KeyBy;
/// use tower_quota::{sim, tiers, QuotaLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let simulator = sim::Simulator::builder()
///     .key("sk-or-v1-demo", sim::Tier::openrouter_free())
///     .build();
///
/// let client = ServiceBuilder::new()
///     .layer(QuotaLayer::new(tiers::openrouter::free()).key_by(KeyBy::ApiKey))
///     .service(simulator.clone());
///
/// let start = tokio::time::Instant::now();
/// for _ in 0..25 {
///     let request = http::Request::post("/api/v1/chat/completions")
///         .header("authorization", "Bearer sk-or-v1-demo")
///         .body(Full::new(Bytes::from(r#"{"model":"meta-llama/llama-3.3-70b-instruct:free"}"#)))
///         .unwrap();
///     let response = client.clone().oneshot(request).await.unwrap();
///     assert_eq!(response.status(), 200);
///     let verdict = response.extensions().get::<Classification>().unwrap();
///     assert_eq!(verdict.class(), QuotaClass::Success);
/// }
/// assert!(start.elapsed() >= Duration::from_secs(60));
/// assert_eq!(simulator.stats().rate_limited, 0); // never tripped the limit
/// simulator.check_invariants().unwrap();
/// # }
/// ```
///
/// Settings of each part, in any order:
///
/// ```
/// use std::time::Duration;
/// use tower_quota::classify::OpenRouter;
/// use tower_quota::limit::KeyBy;
/// use tower_quota::{tiers, QuotaLayer};
///
/// let layer = QuotaLayer::new(tiers::openrouter::free())
///     .with_max_attempts(3)                     // retry
///     .key_by(KeyBy::ApiKey)                    // rate limit
///     .with_max_wait(Duration::from_secs(120))  // rate limit: the longest wait for admission
///     .with_max_delay(Duration::from_secs(30))  // retry: the longest server delay waited out
///     .with_classifier(OpenRouter::default());  // classify
/// assert_eq!(layer.retry().max_attempts(), 3);
/// assert_eq!(layer.retry().max_delay(), Duration::from_secs(30));
/// assert_eq!(layer.limiter().max_wait(), Some(Duration::from_secs(120)));
/// ```
#[derive(Clone)]
pub struct QuotaLayer<C = Auto, D = Standard> {
    pub(crate) retry: RetryAfterLayer<D>,
    pub(crate) rate_limit: RateLimitLayer,
    pub(crate) classify: QuotaClassifyLayer<C>,
    // Set by `with_wall_clock`, and kept when the rate limit is replaced.
    clock: Option<WallClock>,
}

/// The service a [`QuotaLayer`] makes: `RetryAfter<RateLimit<QuotaClassify<S, C>>, D>`.
pub type QuotaStack<S, C = Auto, D = Standard> = RetryAfter<RateLimit<QuotaClassify<S, C>>, D>;

impl QuotaLayer {
    /// The three layers with their defaults, enforcing `tier` under one global key.
    pub fn new(tier: Tier) -> QuotaLayer {
        QuotaLayer::from_rate_limit(RateLimitLayer::new(tier))
    }

    /// The three layers with their defaults, each request's tier picked by `select` (e.g.
    /// the free tier for `:free` models); `None` lets a request through unlimited. See
    /// [`RateLimitLayer::with_tier_selector`].
    ///
    /// ```
    /// use tower_quota::{tiers, QuotaLayer};
    ///
    /// let layer = QuotaLayer::selecting(|head| {
    ///     let free = head.uri.path().ends_with(":free");
    ///     free.then(tiers::openrouter::free)
    /// });
    /// # let _ = layer;
    /// ```
    pub fn selecting(
        select: impl Fn(&RequestHead<'_>) -> Option<Tier> + Send + Sync + 'static,
    ) -> QuotaLayer {
        QuotaLayer::from_rate_limit(RateLimitLayer::selecting(select))
    }

    /// The default retry and classification layers around `rate_limit`.
    pub fn from_rate_limit(rate_limit: RateLimitLayer) -> QuotaLayer {
        QuotaLayer {
            retry: RetryAfterLayer::new(),
            rate_limit,
            classify: QuotaClassifyLayer::new(Auto),
            clock: None,
        }
    }
}

impl<C, D> QuotaLayer<C, D> {
    fn map_rate_limit(self, f: impl FnOnce(RateLimitLayer) -> RateLimitLayer) -> Self {
        QuotaLayer {
            rate_limit: f(self.rate_limit),
            ..self
        }
    }

    fn map_retry(self, f: impl FnOnce(RetryAfterLayer<D>) -> RetryAfterLayer<D>) -> Self {
        QuotaLayer {
            retry: f(self.retry),
            ..self
        }
    }

    // --- replacing a part whole ---

    /// Replaces the retry layer (attempts, `max_delay`, deadline, backoff, budget, decision).
    pub fn with_retry<D2>(self, retry: RetryAfterLayer<D2>) -> QuotaLayer<C, D2> {
        QuotaLayer {
            retry,
            rate_limit: self.rate_limit,
            classify: self.classify,
            clock: self.clock,
        }
    }

    /// Replaces the rate-limit layer (tier, keys, costs, mode, store, …); a clock set with
    /// [`with_wall_clock`](Self::with_wall_clock) carries over.
    pub fn with_rate_limit(self, rate_limit: RateLimitLayer) -> QuotaLayer<C, D> {
        let rate_limit = match &self.clock {
            Some(clock) => rate_limit.with_wall_clock(clock.clone()),
            None => rate_limit,
        };
        QuotaLayer { rate_limit, ..self }
    }

    /// Replaces the classification layer (classifier, body cap).
    pub fn with_classify<C2>(self, classify: QuotaClassifyLayer<C2>) -> QuotaLayer<C2, D> {
        QuotaLayer {
            retry: self.retry,
            rate_limit: self.rate_limit,
            classify,
            clock: self.clock,
        }
    }

    // --- all three ---

    /// Sets the wall clock all three layers read (epoch resets, HTTP-dates, UTC days): in
    /// paused tokio time, one that follows virtual time
    /// ([`WallClock::starting_at`](crate::clock::WallClock::starting_at), or a simulator's).
    pub fn with_wall_clock(self, clock: WallClock) -> QuotaLayer<C, D> {
        QuotaLayer {
            rate_limit: self.rate_limit.with_wall_clock(clock.clone()),
            clock: Some(clock),
            ..self
        }
    }

    // --- the rate limit ---

    /// Sets how requests are keyed (see [`RateLimitLayer::key_by`]).
    pub fn key_by(self, key_by: KeyBy) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.key_by(key_by))
    }

    /// Picks each request's tier (see [`RateLimitLayer::with_tier_selector`]).
    pub fn with_tier_selector(
        self,
        select: impl Fn(&RequestHead<'_>) -> Option<Tier> + Send + Sync + 'static,
    ) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_tier_selector(select))
    }

    /// Sets what each request costs (see [`RateLimitLayer::with_cost`]).
    pub fn with_cost<K: Into<Cost>>(
        self,
        cost: impl Fn(&RequestHead<'_>) -> K + Send + Sync + 'static,
    ) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_cost(cost))
    }

    /// Sets how a token reservation is corrected to the response's usage (see
    /// [`RateLimitLayer::with_reconcile`]).
    pub fn with_reconcile(self, reconcile: Reconcile) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_reconcile(reconcile))
    }

    /// Sets the output tokens reserved for a request that names no maximum (see
    /// [`RateLimitLayer::with_default_max_tokens`]).
    pub fn with_default_max_tokens(self, tokens: u64) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_default_max_tokens(tokens))
    }

    /// Sets the mode: wait for admission, or reject at once (see [`Mode`]).
    pub fn with_mode(self, mode: Mode) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_mode(mode))
    }

    /// Sets the longest a request may wait for admission (see
    /// [`RateLimitLayer::with_max_wait`]).
    pub fn with_max_wait(self, max_wait: impl Into<Option<Duration>>) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_max_wait(max_wait))
    }

    /// Caps every key at `max` requests in flight at once (see
    /// [`Limiter::with_max_in_flight`]): a LiteLLM key's `max_parallel_requests`.
    pub fn with_max_in_flight(self, max: impl Into<Option<u32>>) -> QuotaLayer<C, D> {
        let max = max.into();
        self.map_rate_limit(|r| r.with_max_in_flight(max))
    }

    /// Sets the least margin (see [`RateLimitLayer::with_margin`]).
    pub fn with_margin(self, margin: Duration) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_margin(margin))
    }

    /// Sets the store (see [`RateLimitLayer::with_store`]).
    pub fn with_store(self, store: impl Store) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_store(store))
    }

    /// Sets the secret keys are hashed with (see [`RateLimitLayer::with_key_secret`]).
    pub fn with_key_secret(self, secret: KeySecret) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.with_key_secret(secret))
    }

    /// Whether a limit the server announces replaces a looser configured one (see
    /// [`RateLimitLayer::learn_limits`]).
    pub fn learn_limits(self, learn_limits: bool) -> QuotaLayer<C, D> {
        self.map_rate_limit(|r| r.learn_limits(learn_limits))
    }

    // --- the retries ---

    /// Sets the number of attempts in all (see [`RetryAfterLayer::with_max_attempts`]).
    pub fn with_max_attempts(self, attempts: u32) -> QuotaLayer<C, D> {
        self.map_retry(|r| r.with_max_attempts(attempts))
    }

    /// Sets the longest server-given delay waited out (see
    /// [`RetryAfterLayer::with_max_delay`]).
    pub fn with_max_delay(self, max_delay: Duration) -> QuotaLayer<C, D> {
        self.map_retry(|r| r.with_max_delay(max_delay))
    }

    /// Sets the overall deadline of a request's attempts (see
    /// [`RetryAfterLayer::with_deadline`]).
    pub fn with_deadline(self, deadline: Duration) -> QuotaLayer<C, D> {
        self.map_retry(|r| r.with_deadline(deadline))
    }

    /// Sets the backoff used when the server gave no delay (see
    /// [`RetryAfterLayer::with_backoff`]).
    pub fn with_backoff(self, backoff: Backoff) -> QuotaLayer<C, D> {
        self.map_retry(|r| r.with_backoff(backoff))
    }

    /// Replaces the decision of whether an attempt is worth repeating (see
    /// [`RetryAfterLayer::with_decide`]).
    pub fn with_decide<D2>(self, decide: D2) -> QuotaLayer<C, D2> {
        QuotaLayer {
            retry: self.retry.with_decide(decide),
            rate_limit: self.rate_limit,
            classify: self.classify,
            clock: self.clock,
        }
    }

    // --- the classification ---

    /// Replaces the classifier, keeping the body cap.
    pub fn with_classifier<C2>(self, classifier: C2) -> QuotaLayer<C2, D> {
        let QuotaClassifyLayer {
            max_body, clock, ..
        } = self.classify;
        QuotaLayer {
            retry: self.retry,
            rate_limit: self.rate_limit,
            classify: QuotaClassifyLayer {
                classifier,
                max_body,
                clock,
            },
            clock: self.clock,
        }
    }

    /// Sets how much of an error body the classifier reads (see
    /// [`QuotaClassifyLayer::with_max_body`]).
    pub fn with_max_body(self, bytes: usize) -> QuotaLayer<C, D> {
        QuotaLayer {
            classify: self.classify.with_max_body(bytes),
            ..self
        }
    }

    // --- the parts ---

    /// The shared limiter: for [`Limiter::snapshot`] (metrics), direct
    /// [`acquire`](Limiter::acquire)s, or a second layer sharing its state.
    pub fn limiter(&self) -> &Limiter {
        self.rate_limit.limiter()
    }

    /// The retry layer.
    pub fn retry(&self) -> &RetryAfterLayer<D> {
        &self.retry
    }

    /// The rate-limit layer.
    pub fn rate_limit(&self) -> &RateLimitLayer {
        &self.rate_limit
    }

    /// The classification layer.
    pub fn classify(&self) -> &QuotaClassifyLayer<C> {
        &self.classify
    }

    /// The parts as the stack is built from them: the retry and classification layers read
    /// the limiter's wall clock.
    pub(crate) fn parts(&self) -> (RetryAfterLayer<D>, RateLimitLayer, QuotaClassifyLayer<C>)
    where
        C: Clone,
        D: Clone,
    {
        let clock = self.rate_limit.limiter().wall_clock();
        let mut retry = self.retry.clone().with_clock(clock.clone());
        // The body is read for the limiter only when its settings can use what it says.
        retry.read_facts = self.rate_limit.policy.wants_facts();
        (
            retry,
            self.rate_limit.clone(),
            self.classify.clone().with_clock(clock),
        )
    }
}

impl<S, C: Clone, D: Clone> Layer<S> for QuotaLayer<C, D> {
    type Service = QuotaStack<S, C, D>;

    fn layer(&self, inner: S) -> Self::Service {
        let (retry, rate_limit, classify) = self.parts();
        retry.layer(rate_limit.layer(classify.layer(inner)))
    }
}

impl<C: fmt::Debug, D> fmt::Debug for QuotaLayer<C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaLayer")
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("classify", &self.classify)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::classify::{Classification, QuotaClass};
    use crate::limit::Mode;
    use crate::retry::{ReplayBody, RetryInfo, StopReason};
    use crate::Quota;

    type Req = http::Request<ReplayBody<Full<Bytes>>>;

    fn answer(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> http::Response<Full<Bytes>> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    /// The order: the classification is attached inside, the limiter learns from it, the
    /// retry layer honours the delay in the body (which only the classifier can read).
    #[tokio::test(start_paused = true)]
    async fn body_delay_reaches_retry_and_limiter() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let upstream = tower::service_fn(move |_req: Req| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(if n == 0 {
                    answer(
                        429,
                        &[],
                        r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x is temporarily rate-limited upstream","provider_name":"P","retry_after_seconds":7}}}"#,
                    )
                } else {
                    answer(200, &[], "{}")
                })
            }
        });
        let layer = QuotaLayer::new(Tier::new("t").with_quota(Quota::per_minute(100)));
        let limiter = layer.limiter().clone();
        let svc = ServiceBuilder::new().layer(layer).service(upstream);
        let start = tokio::time::Instant::now();
        let resp = svc
            .oneshot(http::Request::new(Full::new(Bytes::from_static(b"{}"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
        assert!(start.elapsed() <= Duration::from_millis(7_700));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let info = RetryInfo::get(resp.extensions());
        assert_eq!((info.attempts, info.stopped), (2, StopReason::Success));
        assert_eq!(
            resp.extensions().get::<Classification>().unwrap().class(),
            QuotaClass::Success
        );
        // Both attempts went through the limiter.
        let snap = limiter.snapshot(crate::limit::Key::GLOBAL).await.unwrap();
        assert_eq!(snap.windows[0].used, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_quota_error_arrives_at_once() {
        let upstream = tower::service_fn(|_req: Req| async {
            Ok::<_, Infallible>(answer(
                402,
                &[],
                r#"{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}"#,
            ))
        });
        let svc = ServiceBuilder::new()
            .layer(QuotaLayer::new(
                Tier::new("t").with_quota(Quota::per_minute(10)),
            ))
            .service(upstream);
        let start = tokio::time::Instant::now();
        let resp = svc
            .oneshot(http::Request::new(Full::new(Bytes::new())))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(resp.status(), 402);
        let c = resp.extensions().get::<Classification>().unwrap();
        assert_eq!(c.class(), QuotaClass::QuotaExhausted);
        let info = RetryInfo::get(resp.extensions());
        assert_eq!((info.attempts, info.stopped), (1, StopReason::NotRetryable));
    }

    /// The limiter's own refusal is returned at once ([`Standard`] does not retry it): a
    /// retry would only be refused again.
    #[tokio::test(start_paused = true)]
    async fn limiter_refusals_are_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let upstream = tower::service_fn(move |_req: Req| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(answer(200, &[], "{}")) }
        });
        let tier = Tier::new("t").with_quota(Quota::per_minute(1));
        let svc = ServiceBuilder::new()
            .layer(
                QuotaLayer::new(tier.clone())
                    .with_rate_limit(RateLimitLayer::new(tier).with_mode(Mode::Reject)),
            )
            .service(upstream);
        let req = || http::Request::new(Full::new(Bytes::new()));
        svc.clone().oneshot(req()).await.unwrap();
        let start = tokio::time::Instant::now();
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(err.is::<crate::limit::RateLimited>(), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Every setting set once, in any order, gives the same stack: the clock set with
    /// `with_wall_clock` reaches all three parts whether the parts are replaced before or
    /// after it.
    #[test]
    fn the_order_of_settings_does_not_matter() {
        use std::time::{Duration, SystemTime};
        let t = || Tier::new("t").with_quota(Quota::per_minute(5));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = || crate::clock::WallClock::fixed(at);
        let a = QuotaLayer::new(t())
            .with_wall_clock(clock())
            .with_retry(RetryAfterLayer::new().with_max_attempts(2).with_seed(1))
            .with_classify(QuotaClassifyLayer::new(crate::classify::OpenAi))
            .with_rate_limit(RateLimitLayer::new(t()).key_by(KeyBy::ApiKey))
            .with_max_wait(Duration::from_secs(9))
            .with_max_delay(Duration::from_secs(8));
        let b = QuotaLayer::new(t())
            .with_max_delay(Duration::from_secs(8))
            .with_rate_limit(RateLimitLayer::new(t()).key_by(KeyBy::ApiKey))
            .with_classify(QuotaClassifyLayer::new(crate::classify::OpenAi))
            .with_max_wait(Duration::from_secs(9))
            .with_retry(
                RetryAfterLayer::new()
                    .with_max_attempts(2)
                    .with_seed(1)
                    .with_max_delay(Duration::from_secs(8)),
            )
            .with_wall_clock(clock());
        let (ra, la, ca) = a.parts();
        let (rb, lb, cb) = b.parts();
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
        assert_eq!(format!("{la:?}"), format!("{lb:?}"));
        assert_eq!(format!("{ca:?}"), format!("{cb:?}"));
        for now in [ra.clock.now(), la.limiter().now_wall(), ca.clock.now()] {
            assert_eq!(now, at);
        }
        assert_eq!(la.limiter().max_wait(), Some(Duration::from_secs(9)));
        assert_eq!(ra.max_delay(), Duration::from_secs(8));
    }

    #[test]
    fn settings_reach_the_parts() {
        let layer = QuotaLayer::new(Tier::new("t").with_quota(Quota::per_minute(1)))
            .key_by(KeyBy::ApiKey)
            .with_retry(RetryAfterLayer::new().with_max_attempts(2))
            .with_classifier(crate::classify::OpenAi);
        assert_eq!(layer.retry().max_attempts(), 2);
        assert_eq!(layer.limiter().tier().name(), "t");
        assert_eq!(
            layer.classify().max_body(),
            crate::classify::DEFAULT_MAX_BODY
        );
        let debug = format!("{layer:?}");
        assert!(debug.contains("key_by: ApiKey"), "{debug}");
        assert!(debug.contains("OpenAi"), "{debug}");
    }
}
