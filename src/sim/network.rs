//! The network between the clients and the simulator: a one-way delay each way.

use std::time::Duration;

use super::rng::SplitMix64;

/// A one-way delay: a base plus a uniform jitter, `base + U[0, jitter]`, drawn per request
/// from the simulator's seed.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::Delay;
///
/// let far = Delay::new(Duration::from_millis(150), Duration::from_millis(200));
/// assert_eq!(far.max(), Duration::from_millis(350));
/// assert_eq!(Delay::fixed(Duration::from_millis(5)).jitter(), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Delay {
    base: Duration,
    jitter: Duration,
}

impl Delay {
    /// No delay at all.
    pub const ZERO: Delay = Delay {
        base: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    /// `base` plus a uniform draw in `[0, jitter]`.
    pub const fn new(base: Duration, jitter: Duration) -> Delay {
        Delay { base, jitter }
    }

    /// Always `base`.
    pub const fn fixed(base: Duration) -> Delay {
        Delay::new(base, Duration::ZERO)
    }

    /// The shortest delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The width of the uniform jitter.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The longest delay, `base + jitter`.
    pub fn max(&self) -> Duration {
        self.base + self.jitter
    }

    /// The same delay in a world `factor` times faster.
    pub fn scaled_down(&self, factor: u32) -> Delay {
        Delay::new(self.base / factor, self.jitter / factor)
    }

    /// One draw (always consumes one number, so streams stay aligned).
    pub(crate) fn draw(&self, rng: &mut SplitMix64) -> Duration {
        let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        self.base + Duration::from_nanos(rng.range_u64(0, nanos))
    }
}

/// The network a request crosses: an inbound one-way delay (client → simulator) before the
/// simulator sees it, and an outbound one (simulator → client) after it answered.
///
/// The simulator decides a request when it **arrives**, after its inbound delay, as a real
/// server does: two requests sent a window apart may arrive less than a window apart. Both
/// delays are drawn per request, in the order requests are sent, from the simulator's
/// [seed](super::SimulatorBuilder::seed), on a stream of their own (the upstream latency and
/// faults keep theirs).
///
/// The same model runs in process (on the tokio clock, so paused time stays deterministic)
/// and over loopback with [`Simulator::serve`](super::Simulator::serve), where it adds to
/// whatever the real connection takes.
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::{Delay, Network, Simulator, Tier};
///
/// // 300 ms round trip, split in half, plus 0–200 ms of jitter on each leg.
/// let leg = Delay::new(Duration::from_millis(150), Duration::from_millis(200));
/// let sim = Simulator::builder()
///     .key("sk-test", Tier::openrouter_free())
///     .network(Network::symmetric(leg))
///     .build();
/// assert_eq!(sim.network().round_trip_base(), Duration::from_millis(300));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Network {
    inbound: Delay,
    outbound: Delay,
}

impl Network {
    /// No delay either way: the simulator decides a request the instant it is sent.
    pub const fn none() -> Network {
        Network {
            inbound: Delay::ZERO,
            outbound: Delay::ZERO,
        }
    }

    /// `inbound` on the way to the simulator, `outbound` on the way back.
    pub const fn new(inbound: Delay, outbound: Delay) -> Network {
        Network { inbound, outbound }
    }

    /// The same delay each way.
    pub const fn symmetric(leg: Delay) -> Network {
        Network::new(leg, leg)
    }

    /// The delay from client to simulator.
    pub fn inbound(&self) -> Delay {
        self.inbound
    }

    /// The delay from simulator to client.
    pub fn outbound(&self) -> Delay {
        self.outbound
    }

    /// The shortest round trip, both bases.
    pub fn round_trip_base(&self) -> Duration {
        self.inbound.base + self.outbound.base
    }

    /// The same network in a world `factor` times faster.
    pub fn scaled_down(&self, factor: u32) -> Network {
        Network::new(
            self.inbound.scaled_down(factor),
            self.outbound.scaled_down(factor),
        )
    }

    /// Draws the inbound and outbound delays of the request sent `n`-th.
    pub(crate) fn draw(&self, seed: u64, n: u64) -> (Duration, Duration) {
        // A stream apart from the upstream stage's: turning the network on does not change
        // which requests get which fault.
        let mut rng = SplitMix64::for_request(seed ^ 0x6e65_7477_6f72_6b00, n);
        let inbound = self.inbound.draw(&mut rng);
        let outbound = self.outbound.draw(&mut rng);
        (inbound, outbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_follow_the_seed() {
        let net = Network::new(
            Delay::new(Duration::from_millis(10), Duration::from_millis(5)),
            Delay::fixed(Duration::from_millis(3)),
        );
        for n in 0..500 {
            let (i, o) = net.draw(9, n);
            assert!(i >= Duration::from_millis(10) && i <= Duration::from_millis(15));
            assert_eq!(o, Duration::from_millis(3));
            assert_eq!(net.draw(9, n), (i, o));
        }
        assert_ne!(net.draw(9, 0), net.draw(10, 0));
        assert_eq!(Network::none().draw(1, 1), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            net.scaled_down(5).inbound(),
            Delay::new(Duration::from_millis(2), Duration::from_millis(1))
        );
    }
}
