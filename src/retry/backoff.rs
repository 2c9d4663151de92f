//! Exponential backoff with jitter, the upward jitter added to server delays, and the small
//! PRNG both draw from.
//!
//! Everything here is pure: randomness comes in as a `u64` drawn by the caller, so the
//! functions are deterministic and testable with tables and proptests.

use std::time::Duration;

/// How a backoff delay is spread out, so that many clients that failed together do not
/// come back together.
///
/// For a nominal delay `d` (see [`Backoff`]):
///
/// | jitter | delay drawn uniformly from |
/// |---|---|
/// | [`Full`](Jitter::Full) | `[0, d]` |
/// | [`Equal`](Jitter::Equal) (default) | `[d/2, d]` |
/// | [`None`](Jitter::None) | exactly `d` |
///
/// Full jitter spreads clients the most and has the lowest total load on the server, but some
/// retries come back almost at once; equal jitter keeps at least half of the nominal wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, d]` ("full jitter").
    Full,
    /// Uniform in `[d/2, d]` ("equal jitter").
    #[default]
    Equal,
    /// No jitter: exactly `d`.
    None,
}

/// Exponential backoff used when the server did not say how long to wait.
///
/// The nominal delay before retry `n` (`n = 1` for the first retry) is
/// `min(base · 2ⁿ⁻¹, cap)`; the [`Jitter`] then spreads it. The defaults, a 0.5 s base and an
/// 8 s cap with equal jitter, are close to the OpenAI and LiteLLM clients' own
/// (`min(0.5 · 2ⁿ, 8)` s).
///
/// ```
/// use std::time::Duration;
/// use tower_quota::retry::{Backoff, Jitter};
///
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(Jitter::None);
/// assert_eq!(b.nominal(1), Duration::from_millis(100));
/// assert_eq!(b.nominal(3), Duration::from_millis(400));
/// assert_eq!(b.nominal(30), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base` and growing to at most `cap`, with equal jitter.
    /// A `cap` below `base` is raised to `base`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            jitter: Jitter::Equal,
        }
    }

    /// Sets the jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry `retry` (1 for the first retry) before jitter:
    /// `min(base · 2^(retry-1), cap)`.
    pub fn nominal(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let nanos = self.base.as_nanos().saturating_mul(u128::from(factor));
        if nanos >= self.cap.as_nanos() {
            self.cap
        } else {
            // nanos < cap, which fits a Duration.
            duration_from_nanos(nanos)
        }
    }

    /// The jittered delay before retry `retry`, from the random word `rand`.
    pub fn delay(&self, retry: u32, rand: u64) -> Duration {
        let d = self.nominal(retry);
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => scale(d, rand),
            Jitter::Equal => {
                let half = d / 2;
                half + scale(d - half, rand)
            }
        }
    }
}

/// The largest upward jitter added to a server-given delay, as a fraction (10 %) …
pub(crate) const SERVER_JITTER_DIVISOR: u32 = 10;
/// … and in absolute terms (1 s).
pub(crate) const SERVER_JITTER_MAX: Duration = Duration::from_secs(1);

/// A server-given delay plus an upward jitter uniform in `[0, min(delay / 10, 1 s)]`: never
/// earlier than the server asked, and many clients told the same delay do not all come back
/// in the same millisecond.
pub(crate) fn server_delay(delay: Duration, rand: u64) -> Duration {
    delay.saturating_add(scale(max_server_jitter(delay), rand))
}

/// The largest jitter [`server_delay`] adds to `delay`.
pub(crate) fn max_server_jitter(delay: Duration) -> Duration {
    (delay / SERVER_JITTER_DIVISOR).min(SERVER_JITTER_MAX)
}

/// `d · (rand / 2⁶⁴)`: uniform in `[0, d)` (and `d` itself never exceeded).
fn scale(d: Duration, rand: u64) -> Duration {
    let nanos = d.as_nanos().min(u128::from(u64::MAX));
    duration_from_nanos((nanos * u128::from(rand)) >> 64)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// SplitMix64's output function: turns a counter into a well-mixed 64-bit word.
///
/// The services keep one atomic counter, advance it by the golden gamma on each draw and mix
/// the result with this, which gives an independent stream per service without a lock.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's increment.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seed from the process's random hash keys and the time, for services built without
/// [`with_seed`](crate::RetryAfterLayer::with_seed).
pub(crate) fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn nominal_doubles_then_caps() {
        let b = Backoff::default();
        let table = [
            (0, 500),
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (5, 8000),
            (6, 8000),
            (64, 8000),
            (u32::MAX, 8000),
        ];
        for (retry, ms) in table {
            assert_eq!(b.nominal(retry), MS(ms), "retry {retry}");
        }
    }

    #[test]
    fn jitter_extremes() {
        let b = Backoff::default();
        // rand = 0 gives the low end, rand = MAX the high end (exclusive by < 1 ns).
        assert_eq!(b.with_jitter(Jitter::Full).delay(2, 0), Duration::ZERO);
        assert_eq!(b.with_jitter(Jitter::Equal).delay(2, 0), MS(500));
        assert_eq!(b.with_jitter(Jitter::None).delay(2, 0), MS(1000));
        let hi = b.with_jitter(Jitter::Full).delay(2, u64::MAX);
        assert!(hi < MS(1000) && hi > MS(999), "{hi:?}");
        let hi = b.with_jitter(Jitter::Equal).delay(2, u64::MAX);
        assert!(hi < MS(1000) && hi > MS(999), "{hi:?}");
    }

    #[test]
    fn server_jitter_table() {
        let table = [
            // (delay ms, max jitter ms)
            (0, 0),
            (100, 10),
            (2_000, 200),
            (10_000, 1_000),
            (60_000, 1_000),
        ];
        for (d, j) in table {
            assert_eq!(max_server_jitter(MS(d)), MS(j), "{d} ms");
            assert_eq!(server_delay(MS(d), 0), MS(d));
            assert!(server_delay(MS(d), u64::MAX) <= MS(d + j));
        }
    }

    #[test]
    fn backoff_bounds_over_many_seeds() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
            let b = Backoff::default().with_jitter(jitter);
            let mut state = 42u64;
            for _ in 0..20_000 {
                state = state.wrapping_add(GOLDEN_GAMMA);
                let r = splitmix64(state);
                for retry in 1..=8 {
                    let nominal = b.nominal(retry);
                    let d = b.delay(retry, r);
                    assert!(d <= nominal, "{jitter:?} {retry}: {d:?} > {nominal:?}");
                    let low = match jitter {
                        Jitter::Full => Duration::ZERO,
                        Jitter::Equal => nominal / 2,
                        Jitter::None => nominal,
                    };
                    assert!(d >= low, "{jitter:?} {retry}: {d:?} < {low:?}");
                    assert!(d <= b.cap());
                }
            }
        }
    }

    #[test]
    fn splitmix_spreads_full_jitter() {
        // The mean of full jitter over many draws is near half the nominal delay, and both
        // quarters at the ends are hit: the PRNG is not stuck.
        let b = Backoff::default().with_jitter(Jitter::Full);
        let mut state = 7u64;
        let (mut sum, mut low, mut high) = (0f64, 0, 0);
        let n = 10_000;
        for _ in 0..n {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let d = b.delay(1, splitmix64(state)).as_secs_f64();
            sum += d;
            low += usize::from(d < 0.125);
            high += usize::from(d > 0.375);
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.25).abs() < 0.01, "mean {mean}");
        assert!(low > 2_000 && high > 2_000, "{low} {high}");
    }

    #[test]
    fn cap_below_base_is_raised() {
        let b = Backoff::new(MS(300), MS(100));
        assert_eq!(b.cap(), MS(300));
        assert_eq!(b.nominal(5), MS(300));
    }

    proptest! {
        #[test]
        fn delay_within_nominal(base_ms in 0u64..100_000, cap_ms in 0u64..1_000_000,
                                retry in 0u32..200, rand: u64) {
            let b = Backoff::new(MS(base_ms), MS(cap_ms));
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
                let b = b.with_jitter(jitter);
                let d = b.delay(retry, rand);
                prop_assert!(d <= b.nominal(retry));
                prop_assert!(d >= b.nominal(retry) / 2 || jitter == Jitter::Full);
                prop_assert!(b.nominal(retry) <= b.cap());
                prop_assert!(b.nominal(retry) >= b.base().min(b.cap()));
            }
        }

        #[test]
        fn nominal_is_monotonic(base_ms in 1u64..10_000, cap_ms in 0u64..1_000_000, retry in 1u32..100) {
            let b = Backoff::new(MS(base_ms), MS(cap_ms));
            prop_assert!(b.nominal(retry) <= b.nominal(retry + 1));
        }

        #[test]
        fn server_delay_never_early(ms in 0u64..10_000_000, rand: u64) {
            let d = MS(ms);
            let s = server_delay(d, rand);
            prop_assert!(s >= d);
            prop_assert!(s - d <= max_server_jitter(d));
            prop_assert!(s - d <= SERVER_JITTER_MAX);
        }
    }
}
