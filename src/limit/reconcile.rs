//! Token reservations corrected to the usage the server reports: [`Reconcile`], and the hook
//! that carries one request's reservation from the limiter to its response body.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::cost::Cost;
use super::key::Key;
use super::limiter::Limiter;
use super::quota::Tier;
use crate::tokens::{BodyEnd, OnUsage, Usage};

/// How a token reservation is corrected once the response reports its `usage` (see
/// [`RateLimitLayer::with_reconcile`](super::RateLimitLayer::with_reconcile)).
///
/// A request that counts tokens reserves an estimate when it is admitted: its prompt's
/// estimated tokens in, its `max_tokens` out. Servers differ in what they count:
/// Anthropic's output-tokens limit and LiteLLM's `tpm` count what was really used, so the
/// unused part of the reservation should be given back; OpenAI counts `max_tokens` whatever
/// the completion, so giving it back would over-admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reconcile {
    /// Correct the reservation to the usage both ways: refund what was not used, charge what
    /// the estimate missed (the default). The reservation is given back as of the admission
    /// and the usage counted from the answer's end, as a server that counts usage when an
    /// answer is done (LiteLLM's `tpm`) holds it; one that corrects as of the arrival
    /// (Anthropic) is covered too, the answer's latency longer.
    #[default]
    Usage,
    /// Correct the input to the usage both ways, keep the output reserved (charging only
    /// what passed it): for servers that count the prompt as their tokenizer does plus the
    /// request's `max_tokens` whatever the completion, on arrival — OpenAI. Corrected as of
    /// the admission.
    KeepMaxTokens,
    /// Keep the reservation as it was.
    Off,
}

/// What correcting one admission takes, once it is known when it was admitted.
struct Pending {
    limiter: Limiter,
    key: Key,
    tier: Tier,
    reserved: Cost,
    mode: Reconcile,
    admitted: Option<Instant>,
}

/// One request's reservation, carried in its extensions from the rate limiter to the
/// classification layer, which wraps the response body to report its usage.
#[derive(Clone)]
pub(crate) struct UsageHook(Arc<Mutex<Option<Pending>>>);

impl UsageHook {
    pub(crate) fn new(
        limiter: Limiter,
        key: Key,
        tier: Tier,
        reserved: Cost,
        mode: Reconcile,
    ) -> Self {
        UsageHook(Arc::new(Mutex::new(Some(Pending {
            limiter,
            key,
            tier,
            reserved,
            mode,
            admitted: None,
        }))))
    }

    /// The request was admitted at `at` (the admission whose count is corrected).
    pub(crate) fn admitted(&self, at: Instant) {
        if let Some(p) = self.lock().as_mut() {
            p.admitted = Some(at);
        }
    }

    /// The response was refused before any generation (a 4xx: the server counted nothing):
    /// the whole reservation is given back, unless the mode keeps it.
    pub(crate) fn refused(&self) {
        self.report(Some(Usage::new(0, 0)), BodyEnd::Complete);
    }

    /// The callback a [`UsageBody`](crate::tokens::UsageBody) calls at the body's end.
    pub(crate) fn on_usage(self) -> OnUsage {
        Box::new(move |usage, end| self.report(usage, end))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Corrects the reservation to `usage`, once. A body that did not end whole reported a
    /// lower bound: it may charge, never refund. No usage: the reservation stands.
    fn report(&self, usage: Option<Usage>, end: BodyEnd) {
        let Some(p) = self.lock().take() else {
            return;
        };
        let (Some(usage), Some(admitted)) = (usage, p.admitted) else {
            return;
        };
        let Some((r_in, r_out)) = p.reserved.token_counts() else {
            return;
        };
        let (u_in, u_out) = (usage.counted_input(), usage.output);
        let actual = match (p.mode, end) {
            (Reconcile::Off, _) => return,
            (Reconcile::Usage, BodyEnd::Complete) => Cost::tokens(u_in, u_out),
            (Reconcile::KeepMaxTokens, BodyEnd::Complete) => Cost::tokens(u_in, u_out.max(r_out)),
            // A body cut short reported a lower bound: charge, never refund.
            _ => Cost::tokens(u_in.max(r_in), u_out.max(r_out)),
        };
        // `Usage` counts the usage from now, when the answer is done, as a server that counts
        // it then does (LiteLLM's `tpm`), which also covers one that corrects as of the
        // arrival (Anthropic); `KeepMaxTokens` corrects as of the admission, as OpenAI counts
        // on arrival.
        let counted = (p.mode == Reconcile::Usage).then(Instant::now);
        if let Some(learning) = p
            .limiter
            .reconcile_counted(p.key, &p.tier, admitted, p.reserved, actual, counted)
        {
            // A store that answers later: the correction goes on in the background (the
            // body's reader is not held up for it), bounded by the learn timeout.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(learning);
            }
        }
    }
}

impl std::fmt::Debug for UsageHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageHook").finish_non_exhaustive()
    }
}
