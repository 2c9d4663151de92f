//! Foreseen refusals: the blocks (cooldowns, pauses until a reset) this process learned, per
//! key, numbered in the order learned.
//!
//! Requests already on the wire when a 429 comes back cannot be held back; the server refuses
//! them too, for the same reason. Such a refusal says nothing new about whether its request
//! can succeed, so a retry layer need not hold it against the request's attempts (see
//! [`Foreseen`](crate::limit::Foreseen)). It is recognised here: an attempt reads the block
//! number when it is admitted, and its refusal was foreseen when a block on its key was
//! learned after that and still holds.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::limit::key::KeyHasher;

/// In the extensions of a refusal that was foreseen: the response of an attempt that was on
/// the wire when this process learned, from another response, to hold its key back (a
/// cooldown after a 429, a pause until a reset), while that hold still lasts.
///
/// The server refused it for the reason it already gave: it says nothing new about whether
/// the request can succeed. [`RateLimitLayer`](crate::RateLimitLayer) marks such responses
/// (the reqwest middleware too), and [`RetryAfterLayer`](crate::RetryAfterLayer) does not
/// count their attempts against its bound, up to as many again as the bound allows: a burst
/// of requests caught by one cooldown does not use up their attempts, and no request is sent
/// more than twice the bound. The retry still waits as the server asks.
///
/// ```
/// use tower_quota::limit::Foreseen;
///
/// let response = http::Response::new(());
/// assert!(response.extensions().get::<Foreseen>().is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Foreseen;

/// The most keys whose blocks are remembered; beyond it, blocks that ended are dropped, and a
/// new key's block is not remembered while every one still holds (its refusals then count,
/// as they did before).
const MAX_KEYS: usize = 4096;

/// One key's latest block.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Its number: later blocks have larger ones.
    number: u64,
    /// When it ends (the limiter's clock, nanoseconds).
    until: u64,
}

/// The blocks learned, per store key.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    /// The number of the latest block learned on any key (0: none yet).
    latest: AtomicU64,
    by_key: Mutex<HashMap<u64, Block, BuildHasherDefault<KeyHasher>>>,
}

impl Blocks {
    /// The number of the latest block learned: what an attempt reads when it is admitted.
    #[inline]
    pub(super) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// A block of `key` until `until` was learned at `now`.
    pub(super) fn learned(&self, key: u64, until: u64, now: u64) {
        if until <= now {
            return;
        }
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if by_key.len() >= MAX_KEYS && !by_key.contains_key(&key) {
            by_key.retain(|_, b| b.until > now);
            if by_key.len() >= MAX_KEYS {
                return;
            }
        }
        // Numbered under the lock: a key's number only grows.
        let number = self.latest.fetch_add(1, Ordering::AcqRel) + 1;
        let block = by_key.entry(key).or_insert(Block { number, until });
        block.number = number;
        block.until = block.until.max(until);
    }

    /// Whether a refusal of `key` at `now`, of an attempt admitted when the latest block was
    /// `admitted`, was foreseen: a block of the key learned since still holds.
    pub(super) fn foresaw(&self, key: u64, admitted: u64, now: u64) -> bool {
        if self.latest() <= admitted {
            return false; // nothing learned since: no lock taken
        }
        let by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .get(&key)
            .is_some_and(|b| b.number > admitted && b.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_foreseen_only_after_a_block_of_its_key_learned_since_admission() {
        let blocks = Blocks::default();
        let admitted = blocks.latest();
        assert!(!blocks.foresaw(1, admitted, 10), "nothing learned");
        blocks.learned(1, 100, 10);
        assert!(
            blocks.foresaw(1, admitted, 50),
            "learned since, still holds"
        );
        assert!(!blocks.foresaw(1, admitted, 100), "the block ended");
        assert!(!blocks.foresaw(2, admitted, 50), "another key's block");
        // Admitted after the block was learned: its refusal is news.
        let later = blocks.latest();
        assert!(!blocks.foresaw(1, later, 50));
        // A longer block learned later covers both.
        blocks.learned(1, 300, 60);
        assert!(blocks.foresaw(1, later, 200));
        // A shorter block learned later does not shorten it.
        blocks.learned(1, 120, 70);
        assert!(blocks.foresaw(1, later, 250));
        // A block already over teaches nothing.
        let last = blocks.latest();
        blocks.learned(3, 5, 10);
        assert_eq!(blocks.latest(), last);
    }

    #[test]
    fn the_keys_remembered_are_bounded() {
        let blocks = Blocks::default();
        for k in 0..MAX_KEYS as u64 {
            blocks.learned(k, 100, 0);
        }
        let before = blocks.latest();
        // Every block holds: a new key is not remembered.
        blocks.learned(u64::MAX, 100, 50);
        assert!(!blocks.foresaw(u64::MAX, before, 60));
        assert_eq!(blocks.by_key.lock().unwrap().len(), MAX_KEYS);
        // Once they ended, they make room.
        blocks.learned(u64::MAX, 300, 150);
        assert!(blocks.foresaw(u64::MAX, before, 200));
        assert_eq!(blocks.by_key.lock().unwrap().len(), 1);
    }
}
