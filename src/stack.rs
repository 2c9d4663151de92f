//! [`QuotaLayer`]: the three layers in one, in the right order.

use std::fmt;

use tower_layer::Layer;

use crate::classify::{Auto, QuotaClassify, QuotaClassifyLayer};
use crate::limit::{KeyBy, Limiter, RateLimit, RateLimitLayer, Tier};
use crate::retry::{RetryAfter, RetryAfterLayer, Standard};

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
/// Each part stays reachable: [`key_by`](Self::key_by) for the most common setting, and
/// [`with_retry`](Self::with_retry), [`with_rate_limit`](Self::with_rate_limit),
/// [`with_classifier`](Self::with_classifier) and [`with_classify`](Self::with_classify) to
/// replace a part whole. The same configuration drives the reqwest middleware
/// (`QuotaMiddleware::from(layer)`, feature `reqwest-middleware`).
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
/// Settings of each part:
///
/// ```
/// use std::time::Duration;
/// use tower_quota::classify::OpenRouter;
/// use tower_quota::limit::KeyBy;
/// use tower_quota::{tiers, QuotaLayer, RateLimitLayer, RetryAfterLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = QuotaLayer::new(tiers::openrouter::free())
///     .with_rate_limit(
///         RateLimitLayer::new(tiers::openrouter::free())
///             .key_by(KeyBy::ApiKey)
///             .with_max_wait(Duration::from_secs(120)),
///     )
///     .with_retry(RetryAfterLayer::new().with_max_attempts(3))
///     .with_classifier(OpenRouter::default());
/// assert_eq!(layer.retry().max_attempts(), 3);
/// assert_eq!(layer.limiter().max_wait(), Some(Duration::from_secs(120)));
/// # }
/// ```
#[derive(Clone)]
pub struct QuotaLayer<C = Auto, D = Standard> {
    pub(crate) retry: RetryAfterLayer<D>,
    pub(crate) rate_limit: RateLimitLayer,
    pub(crate) classify: QuotaClassifyLayer<C>,
}

/// The service a [`QuotaLayer`] makes: `RetryAfter<RateLimit<QuotaClassify<S, C>>, D>`.
pub type QuotaStack<S, C = Auto, D = Standard> = RetryAfter<RateLimit<QuotaClassify<S, C>>, D>;

impl QuotaLayer {
    /// The three layers with their defaults, enforcing `tier` under one global key.
    pub fn new(tier: Tier) -> QuotaLayer {
        let rate_limit = RateLimitLayer::new(tier);
        let clock = rate_limit.limiter().wall_clock();
        QuotaLayer {
            retry: RetryAfterLayer::new().with_clock(clock.clone()),
            rate_limit,
            classify: QuotaClassifyLayer::new(Auto).with_clock(clock),
        }
    }
}

impl<C, D> QuotaLayer<C, D> {
    /// Replaces the retry layer (attempts, `max_wait`, deadline, backoff, budget, decision).
    pub fn with_retry<D2>(self, retry: RetryAfterLayer<D2>) -> QuotaLayer<C, D2> {
        QuotaLayer {
            retry,
            rate_limit: self.rate_limit,
            classify: self.classify,
        }
    }

    /// Replaces the rate-limit layer (tier, keys, costs, mode, store, …). The classifier and
    /// the retry layer are set to read its limiter's wall clock.
    pub fn with_rate_limit(self, rate_limit: RateLimitLayer) -> QuotaLayer<C, D> {
        let clock = rate_limit.limiter().wall_clock();
        QuotaLayer {
            retry: self.retry.with_clock(clock.clone()),
            rate_limit,
            classify: self.classify.with_clock(clock),
        }
    }

    /// Sets the wall clock all three layers read (epoch resets, HTTP-dates, UTC days): in
    /// paused tokio time, one that follows virtual time
    /// ([`WallClock::starting_at`](crate::clock::WallClock::starting_at), or a simulator's).
    pub fn with_wall_clock(self, clock: crate::clock::WallClock) -> QuotaLayer<C, D> {
        QuotaLayer {
            retry: self.retry.with_clock(clock.clone()),
            rate_limit: self.rate_limit.with_wall_clock(clock.clone()),
            classify: self.classify.with_clock(clock),
        }
    }

    /// Sets how requests are keyed (see [`RateLimitLayer::key_by`]).
    pub fn key_by(self, key_by: KeyBy) -> QuotaLayer<C, D> {
        QuotaLayer {
            rate_limit: self.rate_limit.key_by(key_by),
            ..self
        }
    }

    /// Replaces the classifier, keeping the body cap and the clock.
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
        }
    }

    /// Replaces the classification layer (classifier, body cap, clock).
    pub fn with_classify<C2>(self, classify: QuotaClassifyLayer<C2>) -> QuotaLayer<C2, D> {
        QuotaLayer {
            retry: self.retry,
            rate_limit: self.rate_limit,
            classify,
        }
    }

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
}

impl<S, C: Clone, D: Clone> Layer<S> for QuotaLayer<C, D> {
    type Service = QuotaStack<S, C, D>;

    fn layer(&self, inner: S) -> Self::Service {
        self.retry
            .layer(self.rate_limit.layer(self.classify.layer(inner)))
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
                QuotaLayer::new(tier.clone()).with_rate_limit(RateLimitLayer::new(tier).reject()),
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
