//! [`Limiter::learn`]: what a response teaches — cooldowns after a 429, pauses until a
//! reset, tightened counts, and limits and windows learned from the server.

use super::*;

impl Limiter {
    /// Blocks `key` (under `tier`) until `delay` from now (plus the margin): waiting requests
    /// are held too.
    pub async fn cool_down(
        &self,
        key: Key,
        tier: &Tier,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let until = self
            .now_ns()
            .saturating_add(dur_ns(delay))
            .saturating_add(self.margin_ns(tier));
        tracing::info!(key = %key, tier = tier.name(), delay_ms = delay.as_millis() as u64, "rate limit: cooling down");
        let store_key = key.with_tier(tier.id());
        let tier = self.shared.learned.in_force(store_key, tier.clone());
        self.shared
            .blocks
            .learned(store_key.0, until, self.now_ns());
        match self.apply(store_key, &tier, vec![Update::BlockUntil(until)]) {
            Some(fut) => fut.await,
            None => Ok(()),
        }
    }

    /// Applies `updates` to `key` under `tier` in one batch: at once when the store can,
    /// else returns the future of the one round trip.
    fn apply(
        &self,
        store_key: Key,
        tier: &Tier,
        updates: Vec<Update>,
    ) -> Option<StoreFuture<'static, ()>> {
        let s = &self.shared;
        let t = self.times(tier, Instant::now());
        let margin = self.margin_ns(tier);
        let req = UpdateRequest::new(store_key, tier.specs(), &updates, t.now)
            .with_wall(t.wall)
            .with_margin(margin);
        if s.config.store.update_now(&req) {
            return None;
        }
        let store = s.config.store.clone();
        let tier = tier.clone();
        Some(Box::pin(async move {
            let req = UpdateRequest::new(store_key, tier.specs(), &updates, t.now)
                .with_wall(t.wall)
                .with_margin(margin);
            store.update(req).await
        }))
    }

    /// Learns from a response's classification for `key` under `tier`: a cooldown after a
    /// rate-limited response with a delay, a block until an exhausted quota resets, a pause
    /// until a window with nothing remaining resets, a tightened count when the server says
    /// fewer units remain than the local count, and (with `learn_limits`) the server's
    /// limits. Model- and upstream-scoped limits are applied only when `keys_model` says the
    /// key is the model's: an upstream 429 never pauses a whole account.
    ///
    /// Everything one response taught goes to the store as one batch. Returns `None` when
    /// the store applied it at once, else a [`Learning`] future to drive: it is bounded by
    /// the learn timeout and never fails (a store error or a timeout is logged as a warning).
    ///
    /// A second refusal the windows did not predict, and that taught no quota, within a
    /// window of the first's cooldown, also paces the key for one window of its request
    /// quota: one request per window ÷ limit, instead of bursts (the server counts
    /// differently: shorter intervals, a bucket smaller than the window).
    ///
    /// A server that counts in a token bucket says how small it is: what remains of the
    /// request window and when it is full again (Anthropic's and OpenAI's reset) bound what
    /// it holds. When three answers of a window or more say it holds no more than three
    /// quarters of the limit, the key is paced for a window to bursts of that size, at the
    /// window's rate.
    ///
    /// A refusal of the requests in flight at once ([`Scope::InFlight`]) teaches the windows
    /// nothing and blocks nothing but for a delay the server gave; the key is capped for a
    /// minute to as many requests in flight as the server allows (its
    /// [`IN_FLIGHT`](crate::headers::IN_FLIGHT) window, else one): the layers make each
    /// request wait for a place (or refuse it, in reject mode) and hold it until the
    /// response ends ([`with_max_in_flight`](Self::with_max_in_flight)).
    pub fn learn(
        &self,
        key: Key,
        tier: &Tier,
        classification: &Classification,
        options: LearnOptions,
    ) -> Option<Learning> {
        self.learn_answer(key, tier, classification, options, false)
    }

    /// [`learn`](Self::learn), told whether the answer was a [`Foreseen`] refusal: the
    /// refusal of an attempt on the wire when its key's block was learned says nothing new,
    /// and does not pace the key.
    pub(crate) fn learn_answer(
        &self,
        key: Key,
        tier: &Tier,
        classification: &Classification,
        options: LearnOptions,
        foreseen: bool,
    ) -> Option<Learning> {
        let store_key = key.with_tier(tier.id());
        let mut in_force = self.shared.learned.in_force(store_key, tier.clone());
        let grown = self.learn_quotas(key, &in_force, classification, options);
        let taught = grown.is_some();
        if let Some(grown) = grown {
            in_force = self.shared.learned.set(store_key, tier, grown);
        }
        if !taught {
            self.watch_bucket(key, store_key, tier, classification, options);
        }
        if classification.class() == QuotaClass::RateLimited
            && classification.scope() == Scope::InFlight
        {
            self.cap_in_flight(key, classification);
        }
        let updates = self.updates(key, tier, &in_force, classification, options);
        let block = updates
            .iter()
            .filter_map(|u| match *u {
                Update::BlockUntil(until) => Some(until),
                _ => None,
            })
            .max();
        // A limit learned, or adopted in place of the tier's, explains the refusal: the
        // windows were wrong, not the way they count.
        let taught = taught
            || updates.iter().any(|u| match *u {
                Update::Limit { quota, limit } => in_force
                    .quotas()
                    .get(quota)
                    .is_none_or(|q| q.limit() != limit),
                _ => false,
            });
        if !foreseen
            && !taught
            && classification.class() == QuotaClass::RateLimited
            && matches!(classification.scope(), Scope::Account | Scope::Unknown)
        {
            let now = Instant::now();
            let from = block.map_or(now, |b| self.to_instant(b).max(now));
            self.pace(key, store_key, tier, from);
        }
        if updates.is_empty() {
            return None;
        }
        if let Some(until) = block {
            self.shared
                .blocks
                .learned(store_key.0, until, self.now_ns());
        }
        let fut = self.apply(store_key, &in_force, updates)?;
        Some(self.learning(fut))
    }

    /// Corrects what the admission of `key` under `tier` made at `admitted` counts: it
    /// reserved `reserved` and really cost `actual` (what the response's usage reported). Each
    /// quota gives back or counts the difference for its dimension, as of the admission
    /// ([`Update::Adjust`]): a refund frees room at once, a charge leaves the window with
    /// the admission. Returns `None` when there was nothing to correct or the store applied
    /// it at once, else a [`Learning`] to drive.
    ///
    /// ```
    /// use tower_quota::headers::Dimension;
    /// use tower_quota::limit::{Cost, Key, Limiter};
    /// use tower_quota::{Quota, Tier};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let tpm = Tier::new("tpm").with_quota(Quota::per_minute(10_000).with_dimension(Dimension::Tokens));
    /// let limiter = Limiter::new(tpm.clone());
    /// let key = Key::of("team");
    /// let reserved = Cost::tokens(1_000, 4_000); // the prompt's estimate, and max_tokens
    /// limiter.acquire(key, reserved).await.unwrap();
    /// let admitted = tokio::time::Instant::now();
    /// // The response's usage: 1 200 in, 300 out.
    /// assert!(limiter.reconcile(key, &tpm, admitted, reserved, Cost::tokens(1_200, 300)).is_none());
    /// let snap = limiter.snapshot(key).await.unwrap();
    /// assert_eq!(snap.windows[0].used, 1_500);
    /// # }
    /// ```
    pub fn reconcile(
        &self,
        key: Key,
        tier: &Tier,
        admitted: Instant,
        reserved: Cost,
        actual: Cost,
    ) -> Option<Learning> {
        self.reconcile_counted(key, tier, admitted, reserved, actual, None)
    }

    /// [`reconcile`](Self::reconcile), with the usage counted as of `counted` when given:
    /// each token quota gives the whole reservation back as of the admission and counts
    /// the usage as of `counted` (the answer's end). A server that counts usage when an
    /// answer is done (LiteLLM's `tpm`) holds it a window from then, not from the request's
    /// arrival; one that corrects as of the arrival (Anthropic) is covered too, a little
    /// longer. Quotas of other dimensions are corrected as of the admission.
    pub(crate) fn reconcile_counted(
        &self,
        key: Key,
        tier: &Tier,
        admitted: Instant,
        reserved: Cost,
        actual: Cost,
        counted: Option<Instant>,
    ) -> Option<Learning> {
        let store_key = key.with_tier(tier.id());
        let in_force = self.shared.learned.in_force(store_key, tier.clone());
        let at = self.to_ns(admitted);
        let counted = counted.map(|t| self.to_ns(t).max(at));
        let (r, a) = (in_force.costs(&reserved), in_force.costs(&actual));
        let delta = |units: u64| i64::try_from(units).unwrap_or(i64::MAX);
        let mut updates: Vec<Update> = Vec::new();
        for (quota, ((&r, &a), q)) in r
            .as_slice()
            .iter()
            .zip(a.as_slice())
            .zip(in_force.quotas())
            .enumerate()
        {
            match counted {
                Some(then) if counts_tokens(q.dimension()) => {
                    if r > 0 {
                        updates.push(Update::Adjust {
                            quota,
                            at,
                            delta: -delta(r),
                        });
                    }
                    if a > 0 {
                        updates.push(Update::Adjust {
                            quota,
                            at: then,
                            delta: delta(a),
                        });
                    }
                }
                _ if r != a => updates.push(Update::Adjust {
                    quota,
                    at,
                    delta: i64::try_from(i128::from(a) - i128::from(r)).unwrap_or(i64::MAX),
                }),
                _ => {}
            }
        }
        if updates.is_empty() {
            return None;
        }
        tracing::debug!(key = %key, tier = in_force.name(), reserved = reserved.count(&crate::headers::Dimension::Tokens), used = actual.count(&crate::headers::Dimension::Tokens), "rate limit: reservation corrected to the usage");
        // A refund makes room: the key's head, asleep until a time named when the window
        // was fuller, asks again once the store has it.
        let refund = updates
            .iter()
            .any(|u| matches!(u, Update::Adjust { delta, .. } if *delta < 0));
        let Some(fut) = self.apply(store_key, &in_force, updates) else {
            if refund {
                self.shared.gates.nudge(store_key);
            }
            return None;
        };
        if !refund {
            return Some(self.learning(fut));
        }
        let limiter = self.clone();
        Some(self.learning(Box::pin(async move {
            let applied = fut.await;
            limiter.shared.gates.nudge(store_key);
            applied
        })))
    }

    /// A store round trip as a [`Learning`]: bounded by the learn timeout, never failing.
    fn learning(&self, fut: StoreFuture<'static, ()>) -> Learning {
        let timeout = self.shared.config.learn_timeout;
        Learning {
            fut,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }

    /// After a second refusal the windows did not predict, within a window of the first's
    /// cooldown, paces `key` from `from` (when the cooldown ends) for one window of its
    /// request quota: one request per window ÷ limit (plus the margin), however much of the
    /// window is left. The server counts differently from the windows (shorter intervals, a
    /// bucket smaller than the window, arrivals bunched on the way), and requests spaced at
    /// the quota's mean rate suit every such count; the burst after each cooldown would be
    /// refused again. One refusal alone (a request's arrival late at a window's edge) paces
    /// nothing. A refusal soon after a pace doubles the next (up to 8 windows); without one,
    /// bursts come back. A tier without a rolling request quota of an hour or less is not
    /// paced.
    fn pace(&self, key: Key, store_key: Key, configured: &Tier, from: Instant) {
        let own = self.shared.learned.own(store_key, configured);
        let Some((spacing, window)) = own.request_pace() else {
            return;
        };
        let margin = Duration::from_nanos(self.margin_ns(&own));
        let windows = self
            .shared
            .learned
            .pace(store_key, &own, spacing, window, from, margin);
        if windows > 0 {
            tracing::info!(key = %key, tier = own.name(), spacing_ms = spacing.as_millis() as u64, windows, window_ms = window.as_millis() as u64, "rate limit: refusals the windows did not predict, pacing the key");
        }
    }

    /// What a response's request window says of the server's count. A server that counts
    /// in a token bucket refilled at L per window (Anthropic, and OpenAI's "time until fully
    /// replenished") says how much of it is left (R) and when it is full again (T): it holds
    /// R + T·L/W at most. A bucket far smaller than the window's limit admits the window's
    /// rate, but not its bursts ("60 per minute may be enforced as 1 per second"). When
    /// every response of a window (three at least) says so, the key is paced for a window
    /// from the last: its tier plus a quota of that capacity per capacity × W/L — the same
    /// rate, in bursts the bucket holds. A window counted otherwise (fixed, rolling) says
    /// more than L early in it, which ends the watch.
    fn watch_bucket(
        &self,
        key: Key,
        store_key: Key,
        configured: &Tier,
        c: &Classification,
        options: LearnOptions,
    ) {
        match c.scope() {
            Scope::InFlight => return,
            Scope::Model | Scope::Upstream if !options.keys_model => return,
            _ => {}
        }
        let Some(w) = c.rate_limit().requests() else {
            return;
        };
        let (Some(remaining), Some(reset)) = (w.remaining, w.reset) else {
            return;
        };
        let own = self.shared.learned.own(store_key, configured);
        let Some(quota) = match_quota(own.quotas(), w).map(|i| &own.quotas()[i]) else {
            return;
        };
        let Window::Rolling(window) = quota.window() else {
            return;
        };
        let limit = w.limit.filter(|&l| l > 0).unwrap_or(quota.limit());
        if window > Duration::from_secs(3600) || window.is_zero() || limit < 2 {
            return;
        }
        let refill = reset.as_nanos().saturating_mul(u128::from(limit)) / window.as_nanos();
        let holds = remaining.saturating_add(u64::try_from(refill).unwrap_or(u64::MAX));
        let now = Instant::now();
        let Some(capacity) = self
            .shared
            .learned
            .bucket_seen(store_key, holds, limit, window, now)
        else {
            return;
        };
        let spacing = window
            .checked_mul(u32::try_from(capacity).unwrap_or(u32::MAX))
            .map_or(window, |d| d / u32::try_from(limit).unwrap_or(u32::MAX));
        if spacing.is_zero() {
            return;
        }
        let bucket = Quota::new(capacity, spacing);
        if self
            .shared
            .learned
            .pace_to(store_key, &own, bucket, now + window)
        {
            tracing::info!(key = %key, tier = own.name(), capacity, limit, spacing_ms = spacing.as_millis() as u64, "rate limit: the server counts in a bucket smaller than its window, pacing the key");
        }
    }

    /// A refusal of the requests in flight caps `key` for a minute (renewed by each such
    /// refusal) to the number the server names, else one: the layers hold each request's
    /// place until its response ends.
    fn cap_in_flight(&self, key: Key, c: &Classification) {
        let limit = c
            .rate_limit()
            .get(&crate::headers::Dimension::Named(
                crate::headers::IN_FLIGHT.into(),
            ))
            .and_then(|w| w.limit)
            .filter(|&l| l > 0)
            .map_or(1, |l| u32::try_from(l).unwrap_or(u32::MAX));
        if self
            .shared
            .in_flight
            .cap(key, limit, Instant::now() + IN_FLIGHT_CAP)
        {
            tracing::info!(key = %key, limit, "rate limit: too many requests in flight, capping the key");
        }
    }

    /// The tier in force grown by the windows the server announced that it has no quota for
    /// (an empty tier learns its quotas so), or `None` when nothing is new.
    fn learn_quotas(
        &self,
        key: Key,
        in_force: &Tier,
        c: &Classification,
        options: LearnOptions,
    ) -> Option<Tier> {
        let applies = match c.scope() {
            Scope::Model | Scope::Upstream => options.keys_model,
            _ => true,
        };
        if !applies {
            return None;
        }
        let mut grown: Option<Tier> = None;
        for w in c.rate_limit().windows() {
            let current = grown.as_ref().unwrap_or(in_force);
            if current
                .quotas()
                .iter()
                .any(|q| q.dimension() == &w.dimension)
            {
                continue;
            }
            let (Some(limit), Some(window)) =
                (w.limit.filter(|&l| l > 0), infer_window(w, c.server_now()))
            else {
                continue;
            };
            let quota = window.quota(limit).with_dimension(w.dimension.clone());
            tracing::info!(key = %key, tier = in_force.name(), quota = %quota, "rate limit: learned a quota from the server");
            grown = Some(current.clone().with_quota(quota));
        }
        grown
    }

    fn updates(
        &self,
        key: Key,
        configured: &Tier,
        tier: &Tier,
        c: &Classification,
        options: LearnOptions,
    ) -> Vec<Update> {
        let mut out = Vec::new();
        let applies = match c.scope() {
            Scope::Model | Scope::Upstream => options.keys_model,
            _ => true,
        };
        if !applies {
            if c.class() == QuotaClass::RateLimited {
                tracing::debug!(key = %key, tier = tier.name(), scope = c.scope().as_str(), "rate limit: not cooling the key down for a model- or upstream-scoped limit");
            }
            return out;
        }
        let now = self.now_ns();
        if c.class() == QuotaClass::RateLimited
            && matches!(c.scope(), Scope::Account | Scope::Unknown)
            && !tier.quotas().is_empty()
        {
            // The windows admitted this request: the server counted it in a window they
            // did not see, so its arrivals run further from our sends than the margin says.
            self.shared.margin.surprise(now, tier.shortest_window_ns());
            tracing::debug!(key = %key, tier = tier.name(), learned_margin_ms = self.learned_margin().as_millis() as u64, "rate limit: a 429 the windows did not predict, widening the margin");
        }
        let margin = self.margin_ns(tier);
        let until = |d: Duration| now.saturating_add(dur_ns(d)).saturating_add(margin);
        let info = c.rate_limit();
        let delay = match c.class() {
            QuotaClass::RateLimited => c.retry_after().or_else(|| info.exhausted_reset()),
            QuotaClass::QuotaExhausted => c
                .reset_after()
                .or(c.retry_after())
                .or_else(|| info.exhausted_reset()),
            _ => None,
        };
        if let Some(d) = delay {
            tracing::info!(key = %key, tier = tier.name(), class = c.class().as_str(), delay_ms = d.as_millis() as u64, "rate limit: cooling down");
            out.push(Update::BlockUntil(until(d)));
        }
        for w in info.windows() {
            if w.remaining == Some(0) {
                if let Some(r) = w.reset {
                    tracing::info!(key = %key, tier = tier.name(), reset_ms = r.as_millis() as u64, "rate limit: window exhausted, pausing until reset");
                    out.push(Update::BlockUntil(until(r)));
                }
            }
            let Some(quota) = match_quota(tier.quotas(), w) else {
                continue;
            };
            // The server's limit is adopted when asked, when it is tighter than the one
            // configured, and always for a quota learned from the server: before what it
            // says remains, which is of that limit.
            if let Some(limit) = w.limit.filter(|&l| l > 0) {
                let configured_limit = configured
                    .quotas()
                    .iter()
                    .find(|q| {
                        q.window() == tier.quotas()[quota].window() && q.dimension() == &w.dimension
                    })
                    .map(Quota::limit);
                let adopt = match configured_limit {
                    Some(mine) => options.learn_limits || limit < mine,
                    None => true,
                };
                if adopt {
                    if limit != tier.quotas()[quota].limit() {
                        tracing::info!(key = %key, tier = tier.name(), quota, limit, "rate limit: adopting the server's limit");
                    }
                    out.push(Update::Limit { quota, limit });
                }
            }
            if let Some(remaining) = w.remaining {
                out.push(Update::Remaining {
                    quota,
                    remaining,
                    reset: w.reset.map(dur_ns),
                });
            }
        }
        out
    }
}

/// What [`Limiter::learn`] may apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LearnOptions {
    /// Replace configured limits with the ones the server announces.
    pub learn_limits: bool,
    /// The key tells models apart: model- and upstream-scoped limits may cool it down.
    pub keys_model: bool,
}

impl LearnOptions {
    /// Sets whether limits the server announces replace configured ones.
    pub fn with_learn_limits(mut self, learn_limits: bool) -> Self {
        self.learn_limits = learn_limits;
        self
    }

    /// Sets whether the key tells models apart.
    pub fn with_keys_model(mut self, keys_model: bool) -> Self {
        self.keys_model = keys_model;
        self
    }
}

/// The quota of the tier a server-reported window describes: same dimension, and the same
/// window length if the server said, else the same limit, else the only one.
fn match_quota(quotas: &[Quota], w: &RateLimitWindow) -> Option<usize> {
    let mut same_dim = quotas
        .iter()
        .enumerate()
        .filter(|(_, q)| q.dimension() == &w.dimension);
    if let Some(len) = w.window {
        return same_dim
            .find(|(_, q)| q.window().length() == len)
            .map(|(i, _)| i);
    }
    let cands: Vec<usize> = same_dim.map(|(i, _)| i).collect();
    if let Some(limit) = w.limit {
        if let Some(&i) = cands.iter().find(|&&i| quotas[i].limit() == limit) {
            return Some(i);
        }
    }
    (cands.len() == 1).then(|| cands[0])
}

/// The window a server-reported window describes: its own length when it said (IETF `w`);
/// else, from the time until it resets, a UTC day when it resets at a UTC midnight hours
/// away (on the server's clock, `wall`), else the shortest common window (1 s, 10 s, 1 min, 1 h, 1 day) that reset fits in
/// (with 10 % of slack).
fn infer_window(w: &RateLimitWindow, wall: SystemTime) -> Option<Window> {
    if let Some(len) = w.window.filter(|d| !d.is_zero()) {
        return Some(Window::Rolling(len));
    }
    let reset = w.reset?;
    const DAY: u64 = 86_400;
    if reset > Duration::from_secs(3600) {
        let at = wall.checked_add(reset)?;
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let off = secs.rem_euclid(DAY as f64);
        if off < 2.0 || off > DAY as f64 - 2.0 {
            return Some(Window::Calendar(Duration::from_secs(DAY)));
        }
    }
    // A reset a little past a common window is that window, seen late (rounding, the way
    // back): 10 % of slack.
    [1, 10, 60, 3600, DAY]
        .into_iter()
        .map(Duration::from_secs)
        .find(|&len| reset <= len + len / 10)
        .map(Window::Rolling)
}

/// The quotas learned per store key, beside the configured tier, and the keys paced for a
/// while after a refusal their windows did not predict.
pub(super) struct Learned {
    /// Sharded by key: once a key is paced or has learned a tier, every admission looks here.
    shards: Box<[Mutex<LearnedMaps>]>,
    /// Whether any tier was learned or any key paced: the common case reads one atomic.
    any: AtomicBool,
}

#[derive(Default)]
struct LearnedMaps {
    tiers: HashMap<u64, Tier, BuildHasherDefault<KeyHasher>>,
    paced: HashMap<u64, Paced, BuildHasherDefault<KeyHasher>>,
    buckets: HashMap<u64, BucketWatch, BuildHasherDefault<KeyHasher>>,
}

/// What a key's responses of one window said of the server's bucket: the most any said it
/// holds, and how many said so since `since`.
struct BucketWatch {
    since: Instant,
    window: Duration,
    most: u64,
    seen: u32,
}

/// How long a key is capped after a refusal of its requests in flight (renewed by each).
const IN_FLIGHT_CAP: Duration = Duration::from_secs(60);

/// The responses of a window that must say the bucket is small before the key is paced.
const BUCKET_WITNESSES: u32 = 3;

/// A key paced: the tier in force until `until`, its own (learned or configured) plus one
/// request per spacing, for `windows` windows (`hold`). Kept for as long again after it
/// ends: a refusal then holds the next pace longer. With no tier (`windows` 0), a first
/// refusal watched for until `until`: a second one in that time starts the pace.
struct Paced {
    tier: Option<Tier>,
    until: Instant,
    hold: Duration,
    windows: u32,
    /// Paced to what the server said of its count (its bucket, see `Limiter::watch_bucket`;
    /// its concurrency), not after refusals.
    from_server: bool,
}

/// The longest a key is paced after refusals that keep coming, in windows.
const MAX_PACED_WINDOWS: u32 = 8;

/// The most keys whose quotas are learned (and, apart, the most keys paced); past it, no new
/// key learns any (cooldowns and pauses still apply).
const MAX_LEARNED_KEYS: usize = 100_000;

/// The shards of [`Learned`].
const LEARNED_SHARDS: usize = 16;

/// The most keys of one shard.
const MAX_SHARD_KEYS: usize = MAX_LEARNED_KEYS / LEARNED_SHARDS;

impl Default for Learned {
    fn default() -> Learned {
        Learned {
            shards: (0..LEARNED_SHARDS).map(|_| Mutex::default()).collect(),
            any: AtomicBool::new(false),
        }
    }
}

impl Learned {
    /// The tier in force for `store_key`: the learned one, else `configured`.
    /// Whether no tier was learned for any key (the common case: one atomic read).
    #[inline]
    pub(super) fn none(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub(super) fn in_force(&self, store_key: Key, configured: Tier) -> Tier {
        if !self.any.load(Ordering::Acquire) {
            return configured;
        }
        let maps = self.lock(store_key);
        if let Some(Paced {
            tier: Some(tier),
            until,
            ..
        }) = maps.paced.get(&store_key.0)
        {
            if *until > Instant::now() {
                return tier.clone();
            }
        }
        maps.tiers.get(&store_key.0).cloned().unwrap_or(configured)
    }

    fn lock(&self, store_key: Key) -> std::sync::MutexGuard<'_, LearnedMaps> {
        self.shards[store_key.shard(LEARNED_SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records `grown` for `store_key` (within the bound) and returns the tier in force. A
    /// pace kept for the key ends: it was made from the tier before.
    fn set(&self, store_key: Key, configured: &Tier, grown: Tier) -> Tier {
        let mut maps = self.lock(store_key);
        maps.paced.remove(&store_key.0);
        if maps.tiers.len() >= MAX_SHARD_KEYS && !maps.tiers.contains_key(&store_key.0) {
            return maps
                .tiers
                .get(&store_key.0)
                .cloned()
                .unwrap_or_else(|| configured.clone());
        }
        maps.tiers.insert(store_key.0, grown.clone());
        self.any.store(true, Ordering::Release);
        grown
    }

    /// A refusal the windows did not predict, on `store_key`, whose cooldown ends at
    /// `from`. The first is only watched for a `window` (plus `margin`) after `from`; a
    /// second within that time paces the key from `from`: `own` (its tier, learned or
    /// configured) plus one request per `spacing`, for one window; and a refusal within
    /// as long again after a pace ended doubles the windows (up to [`MAX_PACED_WINDOWS`]).
    /// Within the bound on keys. Returns the windows paced (0: none).
    fn pace(
        &self,
        store_key: Key,
        own: &Tier,
        spacing: Duration,
        window: Duration,
        from: Instant,
        margin: Duration,
    ) -> u32 {
        let mut maps = self.lock(store_key);
        let now = Instant::now();
        if !room(&mut maps.paced, store_key, |p| p.recent(now)) {
            return 0;
        }
        let windows = match maps.paced.get(&store_key.0) {
            Some(p) if p.recent(now) => (p.windows * 2).clamp(1, MAX_PACED_WINDOWS),
            _ => 0,
        };
        let hold = window.saturating_mul(windows.max(1)).saturating_add(margin);
        let until = from.checked_add(hold).unwrap_or_else(far_future);
        let (tier, hold) = if windows == 0 {
            (None, Duration::ZERO)
        } else {
            (Some(own.paced(spacing)), hold)
        };
        maps.paced.insert(
            store_key.0,
            Paced {
                tier,
                until,
                hold,
                windows,
                from_server: false,
            },
        );
        self.any.store(true, Ordering::Release);
        windows
    }

    /// A response of `store_key` said the server's bucket holds `holds` requests at most,
    /// of `limit` per `window`. Returns the capacity to pace the key to when every response
    /// of the current watch (a window long, [`BUCKET_WITNESSES`] at least) said the bucket
    /// holds no more than three quarters of the limit: the most any said, at least one.
    /// Within the bound on keys.
    fn bucket_seen(
        &self,
        store_key: Key,
        holds: u64,
        limit: u64,
        window: Duration,
        now: Instant,
    ) -> Option<u64> {
        let mut maps = self.lock(store_key);
        let current = |w: &BucketWatch| w.since + w.window > now;
        if !room(&mut maps.buckets, store_key, current) {
            return None;
        }
        let watch = maps
            .buckets
            .entry(store_key.0)
            .and_modify(|w| {
                if current(w) && w.window == window {
                    w.most = w.most.max(holds);
                    w.seen = w.seen.saturating_add(1);
                } else {
                    *w = BucketWatch {
                        since: now,
                        window,
                        most: holds,
                        seen: 1,
                    };
                }
            })
            .or_insert(BucketWatch {
                since: now,
                window,
                most: holds,
                seen: 1,
            });
        let small = u128::from(watch.most) * 4 <= u128::from(limit) * 3;
        (watch.seen >= BUCKET_WITNESSES && small).then_some(watch.most.max(1))
    }

    /// Paces `store_key` to what the server said of its count until `until`: `own` plus
    /// `bucket` (a quota of its bucket, or of its concurrency). A pace after refusals still
    /// in force is left as it is (one request per spacing: no burstier). Returns whether the
    /// key was not paced so before.
    fn pace_to(&self, store_key: Key, own: &Tier, bucket: Quota, until: Instant) -> bool {
        let mut maps = self.lock(store_key);
        let now = Instant::now();
        let fresh = match maps.paced.get(&store_key.0) {
            Some(p) if p.tier.is_some() && p.until > now && !p.from_server => return false,
            Some(p) => !(p.from_server && p.until > now),
            None => true,
        };
        if !room(&mut maps.paced, store_key, |p| p.recent(now)) {
            return false;
        }
        let hold = until.saturating_duration_since(now);
        maps.paced.insert(
            store_key.0,
            Paced {
                tier: Some(own.clone().with_quota(bucket)),
                until,
                hold,
                windows: 1,
                from_server: true,
            },
        );
        self.any.store(true, Ordering::Release);
        fresh
    }

    /// The key's own tier (learned, else `configured`), without a pace.
    fn own(&self, store_key: Key, configured: &Tier) -> Tier {
        if !self.any.load(Ordering::Acquire) {
            return configured.clone();
        }
        let maps = self.lock(store_key);
        maps.tiers
            .get(&store_key.0)
            .cloned()
            .unwrap_or_else(|| configured.clone())
    }
}

impl Paced {
    /// Whether the pace still holds at `now`, or ended less than its hold ago (a refusal
    /// then holds the next one longer).
    fn recent(&self, now: Instant) -> bool {
        self.until
            .checked_add(self.hold)
            .is_none_or(|end| end > now)
    }
}

/// Whether `map` (one shard's) may hold `key`: it does, or it holds fewer than
/// [`MAX_SHARD_KEYS`] once the entries no longer `live` are dropped.
fn room<V>(
    map: &mut HashMap<u64, V, BuildHasherDefault<KeyHasher>>,
    key: Key,
    live: impl Fn(&V) -> bool,
) -> bool {
    if map.len() < MAX_SHARD_KEYS || map.contains_key(&key.0) {
        return true;
    }
    map.retain(|_, v| live(v));
    map.len() < MAX_SHARD_KEYS
}

// === impl Learning ===

/// The future of [`Limiter::learn`] for a store that answers asynchronously: one round trip
/// carrying every update of a response, bounded by the learn timeout. It never fails: a store
/// error or a timeout is logged (`warn`) and what the response taught is lost for this once.
#[must_use = "futures do nothing unless polled"]
pub struct Learning {
    fut: StoreFuture<'static, ()>,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Future for Learning {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Poll::Ready(out) = self.fut.as_mut().poll(cx) {
            if let Err(e) = out {
                tracing::warn!(error = %e, "rate limit: could not record what a response taught");
            }
            return Poll::Ready(());
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            tracing::warn!(
                timeout_ms = self.timeout.as_millis() as u64,
                "rate limit: the store did not record what a response taught in time"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Learning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Learning")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys watched for a bucket are bounded per shard, like the keys paced.
    #[tokio::test(start_paused = true)]
    async fn the_keys_watched_for_a_bucket_are_bounded() {
        let learned = Learned::default();
        let window = Duration::from_secs(60);
        let now = Instant::now();
        let in_shard: Vec<Key> = (1..=MAX_SHARD_KEYS as u64 + 1).map(Key).collect();
        for &k in &in_shard[..MAX_SHARD_KEYS] {
            for seen in 1..=BUCKET_WITNESSES {
                let capacity = learned.bucket_seen(k, 1, 50, window, now);
                assert_eq!(capacity, (seen == BUCKET_WITNESSES).then_some(1));
            }
        }
        let extra = in_shard[MAX_SHARD_KEYS];
        for _ in 0..BUCKET_WITNESSES {
            assert_eq!(learned.bucket_seen(extra, 1, 50, window, now), None);
        }
        assert_eq!(learned.lock(extra).buckets.len(), MAX_SHARD_KEYS);
        // A window later every watch is over: room again.
        tokio::time::sleep(window).await;
        let now = Instant::now();
        for _ in 0..BUCKET_WITNESSES {
            learned.bucket_seen(extra, 1, 50, window, now);
        }
        assert_eq!(learned.lock(extra).buckets.len(), 1);
        // The most any response said is the capacity; three quarters of the limit is the
        // most that counts as small.
        let k = in_shard[0];
        assert_eq!(learned.bucket_seen(k, 0, 50, window, now), None);
        assert_eq!(learned.bucket_seen(k, 2, 50, window, now), None);
        assert_eq!(learned.bucket_seen(k, 1, 50, window, now), Some(2));
        assert_eq!(learned.bucket_seen(k, 37, 50, window, now), Some(37));
        assert_eq!(learned.bucket_seen(k, 38, 50, window, now), None);
        assert_eq!(learned.bucket_seen(k, 1, 50, window, now), None);
        // A response of another window length starts the watch over.
        let k = in_shard[1];
        learned.bucket_seen(k, 1, 50, window, now);
        learned.bucket_seen(k, 1, 50, window, now);
        assert_eq!(learned.bucket_seen(k, 1, 50, 2 * window, now), None);
    }

    /// The keys paced to what the server said are bounded like the others: a new key is
    /// not paced while every one is recent, and they make room once past.
    #[tokio::test(start_paused = true)]
    async fn the_keys_paced_to_the_server_are_bounded() {
        let learned = Learned::default();
        let tier = Tier::new("t").with_quota(Quota::per_minute(60));
        let quota = Quota::new(1, Duration::from_secs(1));
        let in_shard: Vec<Key> = (1..=MAX_SHARD_KEYS as u64 + 1).map(Key).collect();
        let until = Instant::now() + Duration::from_secs(1);
        for &k in &in_shard[..MAX_SHARD_KEYS] {
            assert!(learned.pace_to(k, &tier, quota.clone(), until));
        }
        let extra = in_shard[MAX_SHARD_KEYS];
        assert!(!learned.pace_to(extra, &tier, quota.clone(), until));
        assert_eq!(learned.in_force(extra, tier.clone()).quotas().len(), 1);
        // Past their end and as long again: room.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let until = Instant::now() + Duration::from_secs(1);
        assert!(learned.pace_to(extra, &tier, quota, until));
        assert_eq!(learned.in_force(extra, tier.clone()).quotas().len(), 2);
        assert_eq!(learned.lock(extra).paced.len(), 1);
    }

    /// The keys paced (and watched) are bounded per shard: while every one is recent a new
    /// key is not recorded, and once they are past, they make room.
    #[tokio::test(start_paused = true)]
    async fn the_keys_paced_are_bounded() {
        let learned = Learned::default();
        let tier = Tier::new("t").with_quota(Quota::per_minute(60));
        let (spacing, window) = (Duration::from_secs(1), Duration::from_secs(60));
        let now = Instant::now();
        // Keys of one shard: the shard is picked from the hash's upper half, 0 here.
        let in_shard: Vec<Key> = (1..=MAX_SHARD_KEYS as u64 + 1).map(Key).collect();
        assert!(in_shard.iter().all(|k| k.shard(LEARNED_SHARDS) == 0));
        for &k in &in_shard[..MAX_SHARD_KEYS] {
            // Twice: the first is watched, the second paces.
            learned.pace(k, &tier, spacing, window, now, Duration::ZERO);
            assert_eq!(
                learned.pace(k, &tier, spacing, window, now, Duration::ZERO),
                1
            );
        }
        let extra = in_shard[MAX_SHARD_KEYS];
        assert_eq!(
            learned.pace(extra, &tier, spacing, window, now, Duration::ZERO),
            0
        );
        assert_eq!(learned.lock(extra).paced.len(), MAX_SHARD_KEYS);
        // Two windows later every pace is past its end and its hold: room again.
        tokio::time::sleep(3 * window).await;
        learned.pace(
            extra,
            &tier,
            spacing,
            window,
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(learned.lock(extra).paced.len(), 1);
        // A paced key's tier is its own plus the pace; a watched one's is its own.
        let paced = in_shard[0];
        let t = Instant::now();
        learned.pace(paced, &tier, spacing, window, t, Duration::ZERO);
        assert_eq!(learned.in_force(paced, tier.clone()).quotas().len(), 1);
        learned.pace(paced, &tier, spacing, window, t, Duration::ZERO);
        assert_eq!(learned.in_force(paced, tier.clone()).quotas().len(), 2);
    }
}
