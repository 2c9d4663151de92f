//! Ready-made [`Tier`]s for known providers.

use crate::limit::{Quota, Tier};

/// OpenRouter's platform limits on `:free` model variants: 20 requests per rolling minute,
/// and per UTC day 50 requests (fewer than 10 credits ever purchased) or 1000 (at least 10).
/// The limits are account-wide. Paid variants have no platform request cap:
/// [`paid`](openrouter::paid) is the published 500 requests per minute, to be followed by
/// what the server reports.
///
/// A process that starts in the middle of a UTC day should not spend calls finding out that
/// the day's cap is already used: [`KeyInfo`](openrouter::KeyInfo) (from `GET /api/v1/key`)
/// gives the tier and [`KeyInfo::seed`](openrouter::KeyInfo::seed) starts the limiter's daily
/// window at the server's `used`.
pub mod openrouter {
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::time::{Duration, SystemTime};

    use http::{Request, Response};
    use http_body::Body;
    use serde_json::Value;
    use tower_service::Service;

    use super::{Quota, Tier};
    use crate::classify::{Classification, QuotaClass};
    use crate::headers::{Dimension, RateLimitInfo, RateLimitWindow};
    use crate::limit::{BoxError, Key, LearnOptions, Limiter};

    /// Where OpenRouter describes the calling key.
    pub const KEY_INFO_URL: &str = "https://openrouter.ai/api/v1/key";

    /// Requests per rolling minute on free models.
    pub const FREE_PER_MINUTE: u64 = 20;
    /// Free-model requests per UTC day without purchased credits.
    pub const FREE_PER_DAY: u64 = 50;
    /// Free-model requests per UTC day with at least 10 credits purchased.
    pub const FREE_PER_DAY_WITH_CREDITS: u64 = 1000;

    /// Requests per minute on paid models, as published for paid use (more with more
    /// credits).
    pub const PAID_PER_MINUTE: u64 = 500;

    /// The most bytes of a key-info response read.
    const MAX_BODY: usize = 64 * 1024;

    /// Paid models: 500 requests per rolling minute. The server may allow more (with more
    /// credits) or less: let the limiter follow what it reports with
    /// [`RateLimitLayer::learn_limits`](crate::RateLimitLayer::learn_limits).
    ///
    /// ```
    /// use tower_quota::{tiers, RateLimitLayer};
    ///
    /// let t = tiers::openrouter::paid();
    /// assert_eq!(t.quotas()[0].limit(), 500);
    /// let layer = RateLimitLayer::new(t).learn_limits(true);
    /// ```
    pub fn paid() -> Tier {
        Tier::new("openrouter-paid").with_quota(Quota::per_minute(PAID_PER_MINUTE))
    }

    /// Free models, no credits purchased: 20 per rolling minute and 50 per UTC day.
    ///
    /// ```
    /// let t = tower_quota::tiers::openrouter::free();
    /// assert_eq!(t.quotas()[0].limit(), 20);
    /// assert_eq!(t.quotas()[1].limit(), 50);
    /// ```
    pub fn free() -> Tier {
        free_with_daily(FREE_PER_DAY)
    }

    /// Free models with at least 10 credits purchased: 20 per rolling minute and 1000 per UTC
    /// day.
    pub fn free_with_credits() -> Tier {
        free_with_daily(FREE_PER_DAY_WITH_CREDITS)
    }

    /// Free models with a daily cap of `per_day` requests (as `GET /api/v1/key` reports it).
    pub fn free_with_daily(per_day: u64) -> Tier {
        let name = match per_day {
            FREE_PER_DAY => "openrouter-free",
            FREE_PER_DAY_WITH_CREDITS => "openrouter-free-with-credits",
            _ => "openrouter-free-custom",
        };
        Tier::new(name)
            .with_quota(Quota::per_minute(FREE_PER_MINUTE))
            .with_quota(Quota::per_utc_day(per_day))
    }

    /// What `GET /api/v1/key` says about a key, as far as limits go.
    ///
    /// ```
    /// use tower_quota::tiers::openrouter::{self, KeyInfo};
    ///
    /// let info = serde_json::json!({"data": {"is_free_tier": true, "limit_remaining": 0.0,
    ///     "free_model_daily_requests": {"limit": 50, "remaining": 12, "used": 38}}});
    /// let key = KeyInfo::from_json(&info).unwrap();
    /// assert_eq!(key.tier(), openrouter::free());
    /// let daily = key.free_model_daily_requests.unwrap();
    /// assert_eq!((daily.limit, daily.remaining(), daily.used()), (50, 12, 38));
    /// assert_eq!(key.limit_remaining, Some(0.0));
    /// ```
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub struct KeyInfo {
        /// `data.free_model_daily_requests`: the daily free-model cap and its use today.
        pub free_model_daily_requests: Option<DailyRequests>,
        /// `data.is_free_tier`: no credits ever purchased.
        pub is_free_tier: Option<bool>,
        /// `data.limit_remaining`: credits left under the key's limit (`None`: no limit).
        pub limit_remaining: Option<f64>,
    }

    /// `free_model_daily_requests`: `{limit, remaining, used}`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct DailyRequests {
        /// Free-model requests per UTC day.
        pub limit: u64,
        /// Left today, as reported.
        pub remaining: Option<u64>,
        /// Used today, as reported.
        pub used: Option<u64>,
    }

    impl DailyRequests {
        /// Left today: as reported, else `limit - used`, else the whole limit.
        pub fn remaining(&self) -> u64 {
            self.remaining
                .or_else(|| self.used.map(|u| self.limit.saturating_sub(u)))
                .unwrap_or(self.limit)
                .min(self.limit)
        }

        /// Used today: `limit - remaining`.
        pub fn used(&self) -> u64 {
            self.limit - self.remaining()
        }
    }

    impl KeyInfo {
        /// Reads the JSON of `GET /api/v1/key`; `None` without a `data` object.
        pub fn from_json(info: &Value) -> Option<KeyInfo> {
            let data = info.get("data")?.as_object()?;
            let daily = data.get("free_model_daily_requests").and_then(|f| {
                let limit = f.get("limit").and_then(Value::as_u64).filter(|&l| l > 0)?;
                Some(DailyRequests {
                    limit,
                    remaining: f.get("remaining").and_then(Value::as_u64),
                    used: f.get("used").and_then(Value::as_u64),
                })
            });
            Some(KeyInfo {
                free_model_daily_requests: daily,
                is_free_tier: data.get("is_free_tier").and_then(Value::as_bool),
                limit_remaining: data.get("limit_remaining").and_then(Value::as_f64),
            })
        }

        /// The key's free-model tier: the daily cap from `free_model_daily_requests.limit`
        /// when present (it follows the credits purchased), else from `is_free_tier` (no
        /// credits purchased: 50, else 1000).
        ///
        /// Without the cap, `is_free_tier: false` does not say whether the credits bought
        /// reach 10, so the guess errs where the server corrects it: a key with fewer gets
        /// one refusal on its 51st request (`free-models-per-day`, whose reset the limiter
        /// learns, pausing the key until the UTC midnight), where guessing 50 would cost a
        /// key with more 950 requests a day with no refusal to learn from.
        pub fn tier(&self) -> Tier {
            let per_day = match (self.free_model_daily_requests, self.is_free_tier) {
                (Some(d), _) => d.limit,
                (None, Some(false)) => FREE_PER_DAY_WITH_CREDITS,
                (None, _) => FREE_PER_DAY,
            };
            free_with_daily(per_day)
        }

        /// The key's tier for paid models: [`paid`] (500 per minute), or — when the key
        /// has no credits left under its limit (`limit_remaining` ≤ 0) — a tier that admits
        /// nothing, so that a paid request fails at once with a
        /// [`CostExceedsLimit`](crate::limit::CostExceedsLimit) naming it instead of being
        /// sent for a 402. Free models are not affected (see [`tier`](Self::tier)).
        ///
        /// ```
        /// use tower_quota::limit::{CostExceedsLimit, Key, Limiter};
        /// use tower_quota::tiers::openrouter::KeyInfo;
        ///
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// let broke = serde_json::json!({"data": {"limit": 10.0, "limit_remaining": 0.0}});
        /// let tier = KeyInfo::from_json(&broke).unwrap().paid_tier();
        /// let err = Limiter::new(tier).acquire(Key::of("k"), 1).await.unwrap_err();
        /// assert!(err.to_string().contains("no credits left"), "{err}");
        ///
        /// let funded = serde_json::json!({"data": {"limit": 10.0, "limit_remaining": 3.5}});
        /// assert_eq!(KeyInfo::from_json(&funded).unwrap().paid_tier().quotas()[0].limit(), 500);
        /// # }
        /// ```
        pub fn paid_tier(&self) -> Tier {
            match self.limit_remaining {
                Some(left) if left <= 0.0 => {
                    Tier::new("openrouter-paid: no credits left").with_quota(Quota::per_minute(0))
                }
                _ => paid(),
            }
        }

        /// Today's use of the daily cap as the limiter learns from responses: a
        /// classification whose rate-limit state is a request window of a UTC day with the
        /// reported limit and remaining, resetting at the next UTC midnight after `now`.
        /// `None` when the key info did not report the daily requests.
        pub fn daily_usage(&self, now: SystemTime) -> Option<Classification> {
            let daily = self.free_model_daily_requests?;
            let window = RateLimitWindow {
                dimension: Dimension::Requests,
                limit: Some(daily.limit),
                remaining: Some(daily.remaining()),
                reset: Some(crate::classify::until_next_utc_midnight(now)),
                window: Some(Duration::from_secs(86_400)),
            };
            Some(
                Classification::new_at(QuotaClass::Success, now)
                    .with_rate_limit(RateLimitInfo::from_windows(vec![window])),
            )
        }

        /// Starts `key`'s daily window under `tier` (the tier of [`tier`](Self::tier)) at
        /// the server's count: a restarted process does not spend calls on a cap already
        /// used, and with nothing left it waits for the next UTC midnight at once.
        ///
        /// `key` is the key the rate-limit layer computes for the requests of this API key:
        /// with [`KeyBy::ApiKey`](crate::limit::KeyBy::ApiKey), the key of a request that
        /// carries its `Authorization` header.
        ///
        /// ```
        /// use tower_quota::limit::{KeyBy, Limiter, RequestHead};
        /// use tower_quota::tiers::openrouter::KeyInfo;
        ///
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// let info = serde_json::json!({"data": {"free_model_daily_requests":
        ///     {"limit": 50, "remaining": 12, "used": 38}}});
        /// let info = KeyInfo::from_json(&info).unwrap();
        /// let tier = info.tier();
        /// let limiter = Limiter::new(tier.clone());
        ///
        /// let probe = http::Request::get("/")
        ///     .header("authorization", "Bearer sk-or-v1-secret")
        ///     .body(())
        ///     .unwrap();
        /// let key = KeyBy::ApiKey.key(&RequestHead::of(&probe));
        /// info.seed(&limiter, key, &tier).await;
        ///
        /// let day = &limiter.snapshot(key).await.unwrap().windows[1];
        /// assert_eq!((day.used, day.remaining), (38, 12));
        /// # }
        /// ```
        pub async fn seed(&self, limiter: &Limiter, key: Key, tier: &Tier) {
            let Some(usage) = self.daily_usage(limiter.now_wall()) else {
                return;
            };
            if let Some(learning) = limiter.learn(key, tier, &usage, LearnOptions::default()) {
                learning.await;
            }
        }
    }

    /// The free-model tier of the key described by OpenRouter's `GET /api/v1/key` JSON:
    /// the daily cap from `data.free_model_daily_requests.limit` when present, else from
    /// `data.is_free_tier` (no credits purchased: 50, else 1000). `None` if the document has
    /// no `data` object.
    ///
    /// ```
    /// use tower_quota::tiers::openrouter;
    ///
    /// let info = serde_json::json!({"data": {"is_free_tier": false, "usage": 1.5, "limit": null}});
    /// assert_eq!(openrouter::tier_from_key_info(&info), Some(openrouter::free_with_credits()));
    /// let info = serde_json::json!({"data": {"is_free_tier": true,
    ///     "free_model_daily_requests": {"limit": 50, "remaining": 12, "used": 38}}});
    /// assert_eq!(openrouter::tier_from_key_info(&info), Some(openrouter::free()));
    /// ```
    pub fn tier_from_key_info(info: &Value) -> Option<Tier> {
        KeyInfo::from_json(info).map(|k| k.tier())
    }

    /// Fetches [`KEY_INFO_URL`] through `svc` with `api_key` and returns the key's free-model
    /// tier (see [`tier_from_key_info`]).
    pub async fn fetch_tier<S, ReqB, ResB>(svc: S, api_key: &str) -> Result<Tier, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ReqB: Default,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        fetch_tier_from(svc, KEY_INFO_URL, api_key).await
    }

    /// Fetches `url` (OpenRouter's [`KEY_INFO_URL`], a proxy, a test server) through `svc`
    /// with `api_key` and reads it (see [`KeyInfo`]).
    pub async fn fetch_key_info<S, ReqB, ResB>(
        mut svc: S,
        url: &str,
        api_key: &str,
    ) -> Result<KeyInfo, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ReqB: Default,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        let mut auth = http::HeaderValue::try_from(format!("Bearer {api_key}"))?;
        auth.set_sensitive(true);
        let req = Request::get(url)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .body(ReqB::default())?;
        poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
        let resp = svc.call(req).await.map_err(Into::into)?;
        let status = resp.status();
        let bytes = collect(resp.into_body()).await?;
        if !status.is_success() {
            return Err(format!("GET /api/v1/key answered {status}").into());
        }
        let info: Value = serde_json::from_slice(&bytes)?;
        KeyInfo::from_json(&info).ok_or_else(|| "GET /api/v1/key: no `data` object".into())
    }

    /// Like [`fetch_tier`], from another URL (a proxy, a test server).
    pub async fn fetch_tier_from<S, ReqB, ResB>(
        svc: S,
        url: &str,
        api_key: &str,
    ) -> Result<Tier, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ReqB: Default,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        Ok(fetch_key_info(svc, url, api_key).await?.tier())
    }

    async fn collect<B>(body: B) -> Result<Vec<u8>, BoxError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = poll_fn(|cx| Pin::as_mut(&mut body).poll_frame(cx)).await {
            if let Ok(data) = frame.map_err(Into::into)?.into_data() {
                use bytes::Buf;
                let mut data = data;
                while data.has_remaining() {
                    let chunk = data.chunk();
                    if out.len() + chunk.len() > MAX_BODY {
                        return Err("GET /api/v1/key: response too large".into());
                    }
                    out.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::openrouter::{self, KeyInfo};
    use crate::limit::{AcquireError, Key, Limiter, Mode};

    fn info(json: serde_json::Value) -> KeyInfo {
        KeyInfo::from_json(&json).unwrap()
    }

    #[test]
    fn tiers_from_key_info() {
        let cases = [
            (serde_json::json!({"data": {}}), 50),
            (serde_json::json!({"data": {"is_free_tier": false}}), 1000),
            // The announced cap wins over `is_free_tier` (it follows credits purchased).
            (
                serde_json::json!({"data": {"is_free_tier": true,
                    "free_model_daily_requests": {"limit": 1000, "remaining": 1000, "used": 0}}}),
                1000,
            ),
            (
                serde_json::json!({"data": {"free_model_daily_requests": {"limit": 0}}}),
                50,
            ),
        ];
        for (json, per_day) in cases {
            let tier = info(json.clone()).tier();
            assert_eq!(tier.quotas()[1].limit(), per_day, "{json}");
            assert_eq!(openrouter::tier_from_key_info(&json), Some(tier));
        }
        assert!(KeyInfo::from_json(&serde_json::json!({"error": {}})).is_none());
    }

    #[test]
    fn daily_requests_fill_each_other_in() {
        let d = |json| info(json).free_model_daily_requests.unwrap();
        let only_used = d(
            serde_json::json!({"data": {"free_model_daily_requests": {"limit": 50, "used": 49}}}),
        );
        assert_eq!((only_used.remaining(), only_used.used()), (1, 49));
        let over = d(
            serde_json::json!({"data": {"free_model_daily_requests": {"limit": 50, "used": 70}}}),
        );
        assert_eq!((over.remaining(), over.used()), (0, 50));
        let bare = d(serde_json::json!({"data": {"free_model_daily_requests": {"limit": 50}}}));
        assert_eq!((bare.remaining(), bare.used()), (50, 0));
    }

    /// A restarted process whose key used the whole day's cap asks nothing before the next
    /// UTC midnight.
    #[tokio::test(start_paused = true)]
    async fn a_used_up_day_is_refused_at_once_until_midnight() {
        let key_info = info(serde_json::json!({"data": {"is_free_tier": true,
            "free_model_daily_requests": {"limit": 50, "remaining": 0, "used": 50}}}));
        let tier = key_info.tier();
        let limiter = Limiter::new(tier.clone()).with_mode(Mode::Reject);
        let key = Key::of("Bearer sk-or-v1-a");
        key_info.seed(&limiter, key, &tier).await;
        match limiter.acquire(key, 1).await {
            Err(AcquireError::RateLimited(e)) => {
                let wait = e.retry_after().unwrap();
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(86_400 + 60));
            }
            other => panic!("refused until midnight: {other:?}"),
        }
    }

    #[test]
    fn paid_preset() {
        let t = openrouter::paid();
        assert_eq!(t.quotas().len(), 1);
        assert_eq!(t.quotas()[0].limit(), openrouter::PAID_PER_MINUTE);
        assert_eq!(t.quotas()[0].window().length(), Duration::from_secs(60));
    }
}
