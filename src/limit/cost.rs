//! [`Cost`]: what one request counts in each quota of its tier.

use crate::headers::Dimension;
use crate::tokens::RequestFacts;

/// The output tokens reserved for a request whose body names no maximum
/// (`max_tokens`, `max_completion_tokens`, `max_output_tokens`); see
/// [`RateLimitLayer::with_default_max_tokens`](super::RateLimitLayer::with_default_max_tokens).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// What one request counts, per [`Dimension`] of a quota.
///
/// - A quota of [`Dimension::Requests`] counts 1, whatever the cost.
/// - [`Cost::weight`]`(n)`: every other quota counts `n` (the cost of a
///   [`with_cost`](super::RateLimitLayer::with_cost) function returning a number).
/// - [`Cost::tokens`]`(input, output)`: a quota of [`Dimension::InputTokens`] counts
///   `input`, one of [`Dimension::OutputTokens`] counts `output`, and one of
///   [`Dimension::Tokens`] (or a named dimension) counts both.
///
/// Without a cost function, a request whose JSON body was read (the
/// [`RetryAfterLayer`](crate::RetryAfterLayer) and the reqwest middleware read it once, into a
/// [`RequestFacts`] extension) costs [`Cost::estimate`]: its prompt's estimated tokens and its
/// output cap; any other request costs `Cost::weight(1)`.
///
/// ```
/// use tower_quota::headers::Dimension;
/// use tower_quota::limit::Cost;
///
/// let cost = Cost::tokens(1_200, 800);
/// assert_eq!(cost.count(&Dimension::Requests), 1);
/// assert_eq!(cost.count(&Dimension::InputTokens), 1_200);
/// assert_eq!(cost.count(&Dimension::OutputTokens), 800);
/// assert_eq!(cost.count(&Dimension::Tokens), 2_000);
/// assert_eq!(Cost::from(5).count(&Dimension::Tokens), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cost {
    weight: u64,
    tokens: Option<(u64, u64)>,
}

impl Cost {
    /// Every weighted quota counts `n`.
    pub const fn weight(n: u64) -> Cost {
        Cost {
            weight: n,
            tokens: None,
        }
    }

    /// `input` tokens in and `output` tokens out (or reserved for the answer).
    pub const fn tokens(input: u64, output: u64) -> Cost {
        Cost {
            weight: input.saturating_add(output),
            tokens: Some((input, output)),
        }
    }

    /// The built-in estimate of a request from its body: the prompt's estimated tokens
    /// ([`RequestFacts::estimated_input_tokens`]) in, its output cap out (else
    /// `default_max_tokens`).
    pub fn estimate(facts: &RequestFacts, default_max_tokens: u64) -> Cost {
        Cost::tokens(
            facts.estimated_input_tokens(),
            facts.output_reservation(default_max_tokens),
        )
    }

    /// The input and output tokens, for a token cost.
    pub const fn token_counts(&self) -> Option<(u64, u64)> {
        self.tokens
    }

    /// What a quota of `dimension` counts.
    pub fn count(&self, dimension: &Dimension) -> u64 {
        match (dimension, self.tokens) {
            (Dimension::Requests, _) => 1,
            (Dimension::InputTokens, Some((input, _))) => input,
            (Dimension::OutputTokens, Some((_, output))) => output,
            _ => self.weight,
        }
    }
}

impl Default for Cost {
    /// One request: `Cost::weight(1)`.
    fn default() -> Cost {
        Cost::weight(1)
    }
}

impl From<u64> for Cost {
    /// `Cost::weight(n)`.
    fn from(n: u64) -> Cost {
        Cost::weight(n)
    }
}
