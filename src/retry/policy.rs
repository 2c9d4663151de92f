//! The retry decision: [`Decide`] says *whether* an attempt is worth repeating (the
//! replaceable part), [`plan`] applies the bounds and picks the delay (pure: elapsed time and
//! randomness come in as arguments).

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::backoff::{self, Backoff};
use crate::classify::{Classification, QuotaClass};

// === Verdict, Outcome, Attempt ===

/// What a [`Decide`] says about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Retry: after the server's delay (plus a small upward jitter) when the response carries
    /// one, else after the exponential [`Backoff`].
    Retry,
    /// Retry after exactly this delay, whatever the server said: no jitter is added and
    /// `max_delay` (which bounds server delays) does not apply; attempts, the deadline, the
    /// budget and replayability do.
    RetryAfter(Duration),
    /// Do not retry: return this response (or error) to the caller.
    Stop,
}

/// What one attempt produced: a response (with its [`Classification`]) or an error from the
/// inner service.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome<'a, E> {
    /// The inner service returned a response.
    Response {
        /// The response's status.
        status: StatusCode,
        /// The response's headers.
        headers: &'a HeaderMap,
        /// Its classification: the one in the response's extensions or, when there is none,
        /// a plain `Success` for a 1xx–3xx status and otherwise the one the
        /// [`Generic`](crate::classify::Generic) classifier derives from status and headers.
        classification: &'a Classification,
    },
    /// The inner service failed (connection refused, reset, …).
    Error(&'a E),
}

impl<E> Clone for Outcome<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Outcome<'_, E> {}

/// One finished attempt, as a [`Decide`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Attempt<'a, E> {
    number: u32,
    outcome: Outcome<'a, E>,
}

impl<'a, E> Attempt<'a, E> {
    /// The `number`th attempt (1 for the first), which produced `outcome`.
    pub fn new(number: u32, outcome: Outcome<'a, E>) -> Self {
        Attempt { number, outcome }
    }

    /// Which attempt this was: 1 for the first.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// What the attempt produced.
    pub fn outcome(&self) -> Outcome<'a, E> {
        self.outcome
    }

    /// The response's classification, if the attempt produced a response.
    pub fn classification(&self) -> Option<&'a Classification> {
        match self.outcome {
            Outcome::Response { classification, .. } => Some(classification),
            Outcome::Error(_) => None,
        }
    }
}

// === Decide ===

/// Decides whether an attempt is worth repeating. The bounds (`max_delay`, attempts, deadline,
/// budget, replayability) are applied afterwards whatever it says, so a decision only has to
/// say what it means to retry.
///
/// `E` is the inner service's error type. Closures `Fn(&Attempt<'_, E>) -> Verdict`
/// implement it:
///
/// ```
/// use tower_quota::classify::QuotaClass;
/// use tower_quota::retry::{Attempt, Decide, Standard, Verdict};
/// use tower_quota::RetryAfterLayer;
///
/// // Retry rate limits only, never server errors nor transport errors.
/// let layer = RetryAfterLayer::new().with_decide(|a: &Attempt<'_, std::io::Error>| {
///     match a.classification().map(|c| c.class()) {
///         Some(QuotaClass::RateLimited) => Standard.decide(a),
///         _ => Verdict::Stop,
///     }
/// });
/// # let _ = layer;
/// ```
pub trait Decide<E> {
    /// The verdict on one attempt.
    fn decide(&self, attempt: &Attempt<'_, E>) -> Verdict;
}

impl<E, F> Decide<E> for F
where
    F: Fn(&Attempt<'_, E>) -> Verdict,
{
    fn decide(&self, attempt: &Attempt<'_, E>) -> Verdict {
        self(attempt)
    }
}

/// The default decision: retry a response whose classification
/// [`should_retry`](Classification::should_retry) — the server's explicit verdict when it gave
/// one (`x-should-retry`, `availability.retryable`, a negative gRPC pushback), else the class:
/// `RateLimited`, `Overloaded`, `Unavailable`, `Timeout`, `ServerError` (but never 501 or
/// 505), and `QuotaExhausted` only with a server delay.
///
/// A transport error is retried only when the request provably never reached the server
/// ([`is_not_sent`]: a refused connection, a failed connect or DNS lookup, an HTTP/2
/// `REFUSED_STREAM`, an error wrapped in [`NotSent`]): a POST that reached the server before
/// the connection broke may have started a generation that is billed, and sending it again
/// bills it twice. [`Idempotent`] retries every transport error, for requests safe to repeat.
/// Errors are inspected through a `tower::BoxError` (what [`RateLimitLayer`](crate::RateLimitLayer)
/// and most tower middleware return), `std::io::Error` and reqwest-middleware's error;
/// another error type is not inspected, so not retried.
///
/// The rate limiter's own refusals ([`RateLimited`](crate::limit::RateLimited),
/// [`CostExceedsLimit`](crate::limit::CostExceedsLimit)) are never retried: a
/// [`RateLimitLayer`](crate::RateLimitLayer) below this one already held the request as long
/// as it may, so another attempt soon would be refused the same way (after a daily cap, for
/// hours). When it refuses a *retry*, the caller gets the server's last response, with a
/// [`RetryInfo`] saying [`StopReason::LimiterRefused`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Standard;

impl<E: 'static> Decide<E> for Standard {
    fn decide(&self, attempt: &Attempt<'_, E>) -> Verdict {
        match attempt.outcome {
            // 501 and 505: the server cannot do this, however often it is asked.
            Outcome::Response { status, .. }
                if status == StatusCode::NOT_IMPLEMENTED
                    || status == StatusCode::HTTP_VERSION_NOT_SUPPORTED =>
            {
                Verdict::Stop
            }
            Outcome::Response { classification, .. } if classification.should_retry() => {
                Verdict::Retry
            }
            Outcome::Response { .. } => Verdict::Stop,
            Outcome::Error(e) if is_limiter_refusal(e) => Verdict::Stop,
            Outcome::Error(e) if error_chain(e).is_some_and(is_not_sent) => Verdict::Retry,
            Outcome::Error(_) => Verdict::Stop,
        }
    }
}

/// [`Standard`], and every transport error retried — also those that may have reached the
/// server. Only for requests that are safe to repeat: an LLM generation that reached the
/// server before the connection broke runs (and is billed) again.
///
/// ```
/// use tower_quota::retry::{Idempotent, RetryAfterLayer};
///
/// let layer = RetryAfterLayer::new().with_decide(Idempotent);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

impl<E: 'static> Decide<E> for Idempotent {
    fn decide(&self, attempt: &Attempt<'_, E>) -> Verdict {
        match attempt.outcome {
            Outcome::Error(e) if !is_limiter_refusal(e) => Verdict::Retry,
            _ => Standard.decide(attempt),
        }
    }
}

/// Marks an error as one that happened before any byte of the request reached the server,
/// so [`Standard`] may retry it. Wrap your connector's or client's errors in it when you know
/// (tower-quota recognises the common cases itself: see [`is_not_sent`]).
///
/// ```
/// use tower_quota::retry::{is_not_sent, NotSent};
///
/// let e = NotSent::new(std::io::Error::other("no route to host"));
/// assert!(is_not_sent(&e));
/// ```
#[derive(Debug)]
pub struct NotSent {
    source: tower::BoxError,
}

impl NotSent {
    /// Wraps `source`.
    pub fn new(source: impl Into<tower::BoxError>) -> NotSent {
        NotSent {
            source: source.into(),
        }
    }
}

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not sent: {}", self.source)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether an error (or any error in its `source()` chain) shows that the request never
/// reached the server, so that sending it again cannot run it twice:
///
/// - a [`NotSent`];
/// - an `std::io::Error` of kind `ConnectionRefused` or `AddrNotAvailable`;
/// - hyper-util's legacy client failing to connect (`client error (Connect)`), its
///   connector's DNS and TCP connect errors (what reqwest and tonic channels report too);
/// - an HTTP/2 `REFUSED_STREAM` (the server refused the stream before processing it).
///
/// A timeout, a reset connection or a closed connection may have come after the server
/// started work: they are not "not sent".
///
/// ```
/// use tower_quota::retry::is_not_sent;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert!(is_not_sent(&refused));
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert!(!is_not_sent(&reset));
/// ```
pub fn is_not_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<NotSent>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        // Foreign types without a dependency on their crates: their messages are stable
        // (hyper-util's `Error` kind `Connect`, its `ConnectError`s, h2's REFUSED_STREAM).
        let text = e.to_string();
        if text == "client error (Connect)"
            || text.starts_with("dns error")
            || text.starts_with("tcp connect error")
            || text.contains("refused stream before processing any application logic")
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error as a `dyn Error`, for the error types a retry layer meets: a boxed error (what
/// the rate limiter and most tower middleware return), `std::io::Error`, the limiter's own.
/// `None` for other types: their errors are not inspected (and not retried by [`Standard`]).
fn error_chain<E: 'static>(e: &E) -> Option<&(dyn std::error::Error + 'static)> {
    use std::any::Any;
    let any = e as &dyn Any;
    if let Some(boxed) = any.downcast_ref::<tower::BoxError>() {
        return Some(&**boxed);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn std::error::Error + Send + Sync + 'static>>() {
        return Some(&**boxed);
    }
    if let Some(io) = any.downcast_ref::<std::io::Error>() {
        return Some(io);
    }
    if let Some(e) = any.downcast_ref::<NotSent>() {
        return Some(e);
    }
    #[cfg(feature = "reqwest-middleware")]
    if let Some(e) = any.downcast_ref::<reqwest_middleware::Error>() {
        // The wrapped error itself: `Error`'s transparent `source` skips it.
        return Some(match e {
            reqwest_middleware::Error::Middleware(e) => e.as_ref(),
            reqwest_middleware::Error::Reqwest(e) => e,
        });
    }
    None
}

pub(crate) fn is_limiter_refusal<E: 'static>(e: &E) -> bool {
    use crate::limit::{AcquireError, CostExceedsLimit, RateLimited};
    use std::any::Any;

    let any = e as &dyn Any;
    if any.is::<RateLimited>() || any.is::<CostExceedsLimit>() {
        return true;
    }
    let mut next = match any.downcast_ref::<AcquireError>() {
        Some(e) => Some(e as &(dyn std::error::Error + 'static)),
        None => error_chain(e),
    };
    while let Some(err) = next {
        if err.is::<RateLimited>() || err.is::<CostExceedsLimit>() {
            return true;
        }
        if let Some(AcquireError::RateLimited(_) | AcquireError::CostExceedsLimit(_)) =
            err.downcast_ref::<AcquireError>()
        {
            return true;
        }
        next = err.source();
    }
    false
}

// === RetryInfo, StopReason ===

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The response was a success: nothing to retry.
    Success,
    /// The response (or error) is not worth retrying: a non-retryable class, the server's
    /// explicit "do not retry", or the [`Decide`] said so.
    NotRetryable,
    /// The server asked for a delay longer than `max_delay`; the response was returned at once.
    DelayTooLong {
        /// The delay the server asked for.
        requested: Duration,
    },
    /// The maximum number of attempts was made.
    MaxAttempts,
    /// The next attempt would have started after the overall deadline.
    Deadline,
    /// The retry budget is empty: too many retries recently.
    BudgetExhausted,
    /// The request body cannot be sent again: it was larger than the replay cap, or it
    /// failed while it was read.
    NotReplayable,
    /// The rate limiter would not admit the retry within its bounds (a wait past its
    /// `max_delay`, reject mode): the last response is returned as the server sent it.
    LimiterRefused,
}

impl StopReason {
    /// A short, stable, lower-case name for logs and metrics (`"max_attempts"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Success => "success",
            StopReason::NotRetryable => "not_retryable",
            StopReason::DelayTooLong { .. } => "delay_too_long",
            StopReason::MaxAttempts => "max_attempts",
            StopReason::Deadline => "deadline",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::NotReplayable => "not_replayable",
            StopReason::LimiterRefused => "limiter_refused",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::DelayTooLong { requested } => {
                write!(f, "delay_too_long ({:.3}s)", requested.as_secs_f64())
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// How many attempts were made and why retrying stopped, in the extensions of the responses
/// [`RetryAfter`](super::RetryAfter) returns.
///
/// Every response carries one except a success on the first attempt, which has nothing to
/// report (and so the success path allocates nothing). [`RetryInfo::get`] reads it, and
/// gives `1` attempt and [`StopReason::Success`] for such a response.
///
/// ```
/// # use tower_quota::retry::{RetryInfo, StopReason};
/// # fn check(resp: &http::Response<()>) {
/// let info = RetryInfo::get(resp.extensions());
/// if info.stopped == StopReason::BudgetExhausted {
///     eprintln!("gave up after {} attempts: retry budget empty", info.attempts);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryInfo {
    /// Attempts made, the first included (1 when the first response was returned), and
    /// any [`Foreseen`](crate::limit::Foreseen) refusals let off the bound among them.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub stopped: StopReason,
}

impl RetryInfo {
    /// A record of `attempts` attempts, stopped for `stopped`.
    pub fn new(attempts: u32, stopped: StopReason) -> Self {
        RetryInfo { attempts, stopped }
    }

    /// The record in the extensions of a response that [`RetryAfter`](super::RetryAfter)
    /// returned: the inserted one, or one attempt and [`StopReason::Success`] when there is
    /// none (a first-attempt success).
    pub fn get(extensions: &http::Extensions) -> RetryInfo {
        extensions
            .get::<RetryInfo>()
            .copied()
            .unwrap_or(RetryInfo::new(1, StopReason::Success))
    }
}

// === plan ===

/// The bounds and delays of a [`RetryAfterLayer`](crate::RetryAfterLayer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Attempts in all, the first included (at least 1).
    pub(crate) max_attempts: u32,
    /// The longest server delay waited out.
    pub(crate) max_delay: Duration,
    /// No attempt starts later than this after the first.
    pub(crate) deadline: Option<Duration>,
    /// Delays when the server gave none.
    pub(crate) backoff: Backoff,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attempts: 5,
            max_delay: Duration::from_secs(60),
            deadline: None,
            backoff: Backoff::default(),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send the request again after this delay (if the budget allows).
    Retry(Duration),
    /// Return what the attempt produced.
    Stop(StopReason),
}

/// The facts about one finished attempt that [`plan`] needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// Attempts made so far, this one included.
    pub(crate) attempts: u32,
    /// Time since the first attempt started.
    pub(crate) elapsed: Duration,
    /// The response's class (`None` for an error).
    pub(crate) class: Option<QuotaClass>,
    /// The server's delay, if the response carried one.
    pub(crate) server_delay: Option<Duration>,
    /// Whether the request body can be sent again.
    pub(crate) replayable: bool,
}

/// Applies the bounds to a verdict, in this order: the verdict itself, attempts,
/// replayability, `max_delay` (for server-given delays), the deadline. The budget, which has side
/// effects, is left to the caller, for a [`Step::Retry`] only. `rand` is a uniformly random
/// word for the jitter.
pub(crate) fn plan(limits: &Limits, facts: Facts, verdict: Verdict, rand: u64) -> Step {
    let delay = match verdict {
        Verdict::Stop if facts.class == Some(QuotaClass::Success) => {
            return Step::Stop(StopReason::Success)
        }
        Verdict::Stop => return Step::Stop(StopReason::NotRetryable),
        Verdict::Retry => None,
        Verdict::RetryAfter(d) => Some(d),
    };
    if facts.attempts >= limits.max_attempts {
        return Step::Stop(StopReason::MaxAttempts);
    }
    if !facts.replayable {
        return Step::Stop(StopReason::NotReplayable);
    }
    let delay = match (delay, facts.server_delay) {
        (Some(exact), _) => exact,
        (None, Some(server)) if server > limits.max_delay => {
            return Step::Stop(StopReason::DelayTooLong { requested: server })
        }
        // A zero delay (`Retry-After: 0`, a reset already past by this clock, the server's
        // running ahead) is no delay: back to back, the retries would only use up the
        // attempts against a server that has not moved on. The backoff decides, as in
        // OpenAI's SDK (which uses a server delay only when it is above zero).
        (None, Some(server)) if !server.is_zero() => backoff::server_delay(server, rand),
        (None, _) => limits.backoff.delay(facts.attempts, rand),
    };
    if let Some(deadline) = limits.deadline {
        if facts.elapsed.saturating_add(delay) > deadline {
            return Step::Stop(StopReason::Deadline);
        }
    }
    Step::Retry(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Jitter;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(s: u64) -> Duration {
        Duration::from_millis(s)
    }

    fn facts(attempts: u32, class: Option<QuotaClass>, server_delay: Option<Duration>) -> Facts {
        Facts {
            attempts,
            elapsed: Duration::ZERO,
            class,
            server_delay,
            replayable: true,
        }
    }

    fn decide(c: &Classification) -> Verdict {
        let headers = HeaderMap::new();
        Standard.decide(&Attempt::<()>::new(
            1,
            Outcome::Response {
                status: StatusCode::OK,
                headers: &headers,
                classification: c,
            },
        ))
    }

    #[test]
    fn standard_retries_transport_errors_but_not_the_limiters_refusals() {
        use crate::limit::{Key, RateLimited, Reason};
        use tower::BoxError;

        let limited = RateLimited {
            key: Key::of("k"),
            tier: crate::Tier::new("t"),
            reason: Reason::MaxWait,
            available_at: None,
            retry_after: Some(secs(50_000)),
        };
        let error = |e: &BoxError| Standard.decide(&Attempt::new(1, Outcome::Error(e)));
        // Only what provably never reached the server is retried.
        let refused: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(error(&refused), Verdict::Retry);
        let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(error(&reset), Verdict::Stop);
        let marked: BoxError = Box::new(NotSent::new("pool closed before the request was written"));
        assert_eq!(error(&marked), Verdict::Retry);
        assert_eq!(
            Idempotent.decide(&Attempt::new(1, Outcome::Error(&reset))),
            Verdict::Retry
        );
        let refused: BoxError = Box::new(limited.clone());
        assert_eq!(error(&refused), Verdict::Stop);
        // Wrapped in the limiter's own error, or as a plain value.
        let wrapped: BoxError = Box::new(crate::limit::AcquireError::RateLimited(limited.clone()));
        assert_eq!(error(&wrapped), Verdict::Stop);
        assert_eq!(
            Standard.decide(&Attempt::new(1, Outcome::Error(&limited))),
            Verdict::Stop
        );
    }

    #[test]
    fn standard_decision_table() {
        use QuotaClass::*;
        let d = Some(secs(3));
        // (class, server delay, explicit verdict, expected)
        let table = [
            (Success, None, None, Verdict::Stop),
            (RateLimited, None, None, Verdict::Retry),
            (RateLimited, d, None, Verdict::Retry),
            (Overloaded, None, None, Verdict::Retry),
            (Unavailable, None, None, Verdict::Retry),
            (Timeout, None, None, Verdict::Retry),
            (ServerError, None, None, Verdict::Retry),
            (QuotaExhausted, None, None, Verdict::Stop),
            (QuotaExhausted, d, None, Verdict::Retry),
            (Auth, None, None, Verdict::Stop),
            (Auth, d, None, Verdict::Stop),
            (Forbidden, None, None, Verdict::Stop),
            (InvalidRequest, None, None, Verdict::Stop),
            (ClientError, None, None, Verdict::Stop),
            // The server's explicit verdict overrides the class.
            (Unavailable, None, Some(false), Verdict::Stop),
            (RateLimited, d, Some(false), Verdict::Stop),
            (InvalidRequest, None, Some(true), Verdict::Retry),
            (QuotaExhausted, None, Some(true), Verdict::Retry),
        ];
        for (class, delay, retryable, expected) in table {
            let mut c = Classification::new(class);
            if let Some(d) = delay {
                c = c.with_retry_after(d);
            }
            if let Some(r) = retryable {
                c = c.with_retryable(r);
            }
            assert_eq!(decide(&c), expected, "{class} {delay:?} {retryable:?}");
        }
        // An error type that cannot be inspected is not retried.
        let err = Attempt::new(1, Outcome::Error(&"refused"));
        assert_eq!(Standard.decide(&err), Verdict::Stop);
        // 501 and 505 are never retried, whatever their class says.
        let headers = HeaderMap::new();
        let server_error = Classification::new(ServerError);
        for status in [
            StatusCode::NOT_IMPLEMENTED,
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ] {
            let attempt = Attempt::<()>::new(
                1,
                Outcome::Response {
                    status,
                    headers: &headers,
                    classification: &server_error,
                },
            );
            assert_eq!(Standard.decide(&attempt), Verdict::Stop, "{status}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiters_own_refusals_are_not_retried() {
        use crate::limit::{BoxError, Limiter, Mode};
        use crate::{Quota, Tier};
        // A limiter error: retrying it after a backoff only delays the caller (the limiter
        // already held the request as long as it was allowed to).
        let limiter =
            Limiter::new(Tier::new("t").with_quota(Quota::per_minute(1))).with_mode(Mode::Reject);
        let key = crate::limit::Key::of("k");
        limiter.try_acquire(key, 1).unwrap();
        let refused = limiter.try_acquire(key, 1).unwrap_err();
        assert!(refused.as_rate_limited().is_some());
        let boxed: BoxError = refused.into_box();
        assert_eq!(
            Standard.decide(&Attempt::new(1, Outcome::Error(&boxed))),
            Verdict::Stop
        );
        // Any other boxed error may have reached the server: not retried by default.
        let other: BoxError = "connection reset".into();
        assert_eq!(
            Standard.decide(&Attempt::new(1, Outcome::Error(&other))),
            Verdict::Stop
        );
    }

    #[test]
    fn plan_table() {
        use QuotaClass::*;
        let limits = Limits {
            deadline: Some(secs(30)),
            backoff: Backoff::default().with_jitter(Jitter::None),
            ..Limits::default()
        };
        let stop = Step::Stop;
        let rl = Some(RateLimited);
        // (facts, verdict, expected) with rand = 0: no jitter.
        let table = [
            (
                facts(1, Some(Success), None),
                Verdict::Stop,
                stop(StopReason::Success),
            ),
            (
                facts(1, Some(Auth), None),
                Verdict::Stop,
                stop(StopReason::NotRetryable),
            ),
            (
                facts(1, None, None),
                Verdict::Stop,
                stop(StopReason::NotRetryable),
            ),
            // Backoff: 0.5 s, 1 s, 2 s, 4 s after attempts 1..4.
            (facts(1, rl, None), Verdict::Retry, Step::Retry(ms(500))),
            (facts(2, rl, None), Verdict::Retry, Step::Retry(ms(1000))),
            (facts(4, rl, None), Verdict::Retry, Step::Retry(ms(4000))),
            (facts(1, None, None), Verdict::Retry, Step::Retry(ms(500))),
            // Five attempts in all.
            (
                facts(5, rl, None),
                Verdict::Retry,
                stop(StopReason::MaxAttempts),
            ),
            (
                facts(5, rl, Some(secs(1))),
                Verdict::Retry,
                stop(StopReason::MaxAttempts),
            ),
            // The server's delay, as asked (rand 0 adds no jitter).
            (
                facts(1, rl, Some(secs(7))),
                Verdict::Retry,
                Step::Retry(secs(7)),
            ),
            // A zero delay is none: the backoff's first step.
            (
                facts(1, rl, Some(Duration::ZERO)),
                Verdict::Retry,
                Step::Retry(ms(500)),
            ),
            // Within max_delay, beyond the 30 s deadline.
            (
                facts(1, rl, Some(secs(60))),
                Verdict::Retry,
                stop(StopReason::Deadline),
            ),
            (
                facts(1, rl, Some(secs(29))),
                Verdict::Retry,
                Step::Retry(secs(29)),
            ),
            (
                facts(1, rl, Some(secs(61))),
                Verdict::Retry,
                stop(StopReason::DelayTooLong {
                    requested: secs(61),
                }),
            ),
            // An exact delay from the decision wins over the server's and max_delay.
            (
                facts(1, rl, Some(secs(61))),
                Verdict::RetryAfter(secs(2)),
                Step::Retry(secs(2)),
            ),
        ];
        for (i, (f, v, expected)) in table.into_iter().enumerate() {
            assert_eq!(plan(&limits, f, v, 0), expected, "row {i}: {f:?} {v:?}");
        }
    }

    #[test]
    fn plan_not_replayable_and_deadline() {
        let limits = Limits {
            deadline: Some(secs(10)),
            ..Limits::default()
        };
        let mut f = facts(1, Some(QuotaClass::Unavailable), Some(secs(2)));
        f.replayable = false;
        assert_eq!(
            plan(&limits, f, Verdict::Retry, 0),
            Step::Stop(StopReason::NotReplayable)
        );
        f.replayable = true;
        f.elapsed = secs(8);
        assert_eq!(plan(&limits, f, Verdict::Retry, 0), Step::Retry(secs(2)));
        f.elapsed = secs(9);
        assert_eq!(
            plan(&limits, f, Verdict::Retry, 0),
            Step::Stop(StopReason::Deadline)
        );
        // The deadline counts the jitter too.
        f.elapsed = secs(8);
        assert_eq!(
            plan(&limits, f, Verdict::Retry, u64::MAX),
            Step::Stop(StopReason::Deadline)
        );
    }

    /// A zero server delay is no delay: the backoff's step, as without one.
    #[test]
    fn a_zero_server_delay_backs_off() {
        let limits = Limits::default();
        for attempts in 1..4 {
            for rand in [0, u64::MAX / 3, u64::MAX] {
                let zero = facts(
                    attempts,
                    Some(QuotaClass::RateLimited),
                    Some(Duration::ZERO),
                );
                let none = facts(attempts, Some(QuotaClass::RateLimited), None);
                let step = plan(&limits, zero, Verdict::Retry, rand);
                assert_eq!(step, plan(&limits, none, Verdict::Retry, rand));
                assert!(matches!(step, Step::Retry(d) if d >= ms(250)), "{step:?}");
            }
        }
    }

    #[test]
    fn server_delay_jitter_is_upward_and_bounded() {
        let limits = Limits::default();
        let f = facts(1, Some(QuotaClass::RateLimited), Some(secs(5)));
        let mut state = 1u64;
        for _ in 0..10_000 {
            state = state.wrapping_add(backoff::GOLDEN_GAMMA);
            match plan(&limits, f, Verdict::Retry, backoff::splitmix64(state)) {
                Step::Retry(d) => assert!(d >= secs(5) && d <= ms(5_500), "{d:?}"),
                s => panic!("{s:?}"),
            }
        }
    }

    #[test]
    fn stop_reason_names() {
        assert_eq!(StopReason::MaxAttempts.to_string(), "max_attempts");
        assert_eq!(
            StopReason::DelayTooLong {
                requested: ms(1500)
            }
            .to_string(),
            "delay_too_long (1.500s)"
        );
    }
}
