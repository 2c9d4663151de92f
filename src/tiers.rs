//! Ready-made [`Tier`]s for known providers.

use crate::limit::{Quota, Tier};

/// OpenRouter's platform limits on `:free` model variants: 20 requests per rolling minute,
/// and per UTC day 50 requests (fewer than 10 credits ever purchased) or 1000 (at least 10).
/// The limits are account-wide. Paid variants have no platform cap: give them no tier.
pub mod openrouter {
    use std::future::poll_fn;
    use std::pin::Pin;

    use http::{Request, Response};
    use http_body::Body;
    use serde_json::Value;
    use tower_service::Service;

    use super::{Quota, Tier};
    use crate::limit::BoxError;

    /// Where OpenRouter describes the calling key.
    pub const KEY_INFO_URL: &str = "https://openrouter.ai/api/v1/key";

    /// Requests per rolling minute on free models.
    pub const FREE_PER_MINUTE: u64 = 20;
    /// Free-model requests per UTC day without purchased credits.
    pub const FREE_PER_DAY: u64 = 50;
    /// Free-model requests per UTC day with at least 10 credits purchased.
    pub const FREE_PER_DAY_WITH_CREDITS: u64 = 1000;

    /// The most bytes of a key-info response read.
    const MAX_BODY: usize = 64 * 1024;

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
        let data = info.get("data")?.as_object()?;
        let announced = data
            .get("free_model_daily_requests")
            .and_then(|f| f.get("limit"))
            .and_then(Value::as_u64)
            .filter(|&l| l > 0);
        let per_day = match announced {
            Some(l) => l,
            None => match data.get("is_free_tier").and_then(Value::as_bool) {
                Some(false) => FREE_PER_DAY_WITH_CREDITS,
                _ => FREE_PER_DAY,
            },
        };
        Some(free_with_daily(per_day))
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

    /// Like [`fetch_tier`], from another URL (a proxy, a test server).
    pub async fn fetch_tier_from<S, ReqB, ResB>(
        mut svc: S,
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
        tier_from_key_info(&info).ok_or_else(|| "GET /api/v1/key: no `data` object".into())
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
