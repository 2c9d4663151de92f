//! Retry budgets: tower's [`Budget`] trait and [`TpsBudget`], plus [`NoBudget`].
//!
//! A budget caps retries as a share of recent traffic, so that a failing upstream is not
//! hammered by every request retrying at once. [`RetryAfter`](super::RetryAfter)
//! [`deposit`](Budget::deposit)s once per request (its first attempt) and
//! [`withdraw`](Budget::withdraw)s once per retry; when a withdrawal is refused the last
//! response is returned with [`StopReason::BudgetExhausted`](super::StopReason).
//!
//! The default is [`TpsBudget::default()`]: retries may add 20 % to the requests of the last
//! 10 seconds, plus 10 retries a second regardless. It keeps time with `tokio::time::Instant`,
//! so it follows paused time in tests. One budget is shared by every service a layer makes.

pub use tower::retry::budget::{Budget, TpsBudget};

/// A budget that never runs out: retries are bounded by attempts, `max_delay` and the
/// deadline only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBudget;

impl Budget for NoBudget {
    fn deposit(&self) {}

    fn withdraw(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_budget_always_allows() {
        NoBudget.deposit();
        assert!((0..1000).all(|_| NoBudget.withdraw()));
    }
}
