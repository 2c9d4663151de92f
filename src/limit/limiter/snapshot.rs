//! [`Limiter::snapshot`]: the state of a key's windows, for metrics.

use super::*;

impl Limiter {
    /// The state of `key`'s windows under the default tier: per quota the limit in force,
    /// the units used and remaining, and when one more fits; whether the key is blocked
    /// (cooling down after a 429, or paused until a reset) and how many requests wait on it.
    ///
    /// This is the way to export the limiter's state as metrics: read it on an interval (or
    /// when your metrics are scraped) and set gauges. The key of a request is what the
    /// layer's [`KeyBy`](crate::limit::KeyBy) makes of its head.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_quota::limit::{KeyBy, RequestHead};
    /// use tower_quota::{tiers, QuotaLayer};
    ///
    /// /// Stands in for your metrics library (`metrics::gauge!`, a Prometheus `GaugeVec`, …).
    /// fn gauge(name: &str, labels: &[(&str, &str)], value: f64) {
    ///     println!("{name}{labels:?} {value}");
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = QuotaLayer::new(tiers::openrouter::free()).key_by(KeyBy::ApiKey);
    /// let limiter = layer.limiter().clone(); // shares the state of every service the layer makes
    /// # for _ in 0..3 { let req = http::Request::builder().header("authorization", "Bearer sk-or-v1-team").body(()).unwrap();
    /// #     let key = KeyBy::ApiKey.key(&RequestHead::of(&req)); limiter.acquire(key, 1).await.unwrap(); }
    ///
    /// // The key the layer gives a team's requests.
    /// let req = http::Request::builder()
    ///     .header("authorization", "Bearer sk-or-v1-team")
    ///     .body(())
    ///     .unwrap();
    /// let key = KeyBy::ApiKey.key(&RequestHead::of(&req));
    ///
    /// // In a task of its own: `loop { interval.tick().await; … }`.
    /// let snap = limiter.snapshot(key).await.unwrap();
    /// let tier = limiter.tier().name();
    /// for w in &snap.windows {
    ///     let window = w.quota.to_string(); // "20/60s rolling", "50/86400s calendar"
    ///     let labels = [("tier", tier), ("window", window.as_str())];
    ///     gauge("llm_quota_limit", &labels, w.limit as f64);
    ///     gauge("llm_quota_used", &labels, w.used as f64);
    ///     gauge("llm_quota_remaining", &labels, w.remaining as f64);
    /// }
    /// let blocked = snap.blocked_until.map_or(Duration::ZERO, |t| {
    ///     t.saturating_duration_since(tokio::time::Instant::now())
    /// });
    /// gauge("llm_quota_blocked_seconds", &[("tier", tier)], blocked.as_secs_f64());
    /// gauge("llm_quota_waiting", &[("tier", tier)], snap.waiting as f64);
    ///
    /// assert_eq!(snap.windows[0].used, 3);
    /// assert_eq!(snap.windows[1].remaining, 47);
    /// # }
    /// ```
    ///
    /// A [`Key`] is a hash: metrics per API key should be labelled with a name of your own,
    /// never the key itself.
    pub async fn snapshot(&self, key: Key) -> Result<Snapshot, StoreError> {
        let tier = self.shared.config.tier.clone();
        self.snapshot_with(key, &tier).await
    }

    /// The state of `key`'s windows under `tier`.
    pub async fn snapshot_with(&self, key: Key, tier: &Tier) -> Result<Snapshot, StoreError> {
        let store_key = key.with_tier(tier.id());
        let tier = &self.shared.learned.in_force(store_key, tier.clone());
        let t = self.times(tier, Instant::now());
        let now = t.now;
        let s = &self.shared;
        let req = SnapshotRequest::new(store_key, tier.specs(), t.now)
            .with_wall(t.wall)
            .with_margin(self.margin_ns(tier));
        let snap = s.config.store.snapshot(req).await?;
        let windows = tier
            .quotas()
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let w = snap.as_ref().and_then(|s| s.windows.get(i).copied());
                let limit = w.map_or(q.limit(), |w| w.limit);
                let used = w.map_or(0, |w| w.used);
                WindowSnapshot {
                    quota: q.clone(),
                    limit,
                    used,
                    remaining: limit.saturating_sub(used),
                    next_free: self.to_instant(w.map_or(now, |w| w.next_free).max(now)),
                }
            })
            .collect();
        let blocked = snap.as_ref().map_or(0, |s| s.blocked_until);
        Ok(Snapshot {
            windows,
            blocked_until: (blocked > now).then(|| self.to_instant(blocked)),
            waiting: s.gates.waiting(store_key),
        })
    }
}

/// The state of one key's windows (see [`Limiter::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// One entry per quota of the tier, in order.
    pub windows: Vec<WindowSnapshot>,
    /// The key is blocked (cooling down or paused) until then.
    pub blocked_until: Option<Instant>,
    /// Requests waiting on the key in this process.
    pub waiting: usize,
}

/// The state of one window of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowSnapshot {
    /// The quota as configured.
    pub quota: Quota,
    /// The limit in force (a learned limit replaces the configured one).
    pub limit: u64,
    /// Units counted in the window now.
    pub used: u64,
    /// Units left now.
    pub remaining: u64,
    /// The earliest time one more unit fits (now if it fits now).
    pub next_free: Instant,
}
