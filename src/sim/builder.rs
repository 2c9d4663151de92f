//! [`SimulatorBuilder`]: accounts, time, price, latency, network, faults, seed.

use std::time::{Duration, SystemTime};

use super::config::{Account, Faults, Tier};
use super::network::Network;
use super::simulator::Simulator;
use super::tokens::Completions;

/// Configures a [`Simulator`]; from [`Simulator::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_quota::sim::{Account, Delay, Faults, Network, Simulator, Tier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sim = Simulator::builder()
///     .key("sk-free", Tier::openrouter_free())
///     .account(Account::new("sk-paid").with_tier(Tier::unlimited()).with_credits(1.0))
///     .minute(Duration::from_secs(2)) // demo speed: 20 requests per 2 s
///     .latency(Duration::from_millis(20), Duration::from_millis(80))
///     .network(Network::symmetric(Delay::new(Duration::from_millis(5), Duration::from_millis(10))))
///     .faults(Faults::none().with_bad_gateway(0.05))
///     .seed(42)
///     .build();
/// # let _ = sim;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SimulatorBuilder {
    pub(crate) accounts: Vec<Account>,
    pub(crate) minute: Duration,
    pub(crate) start_wall: Option<SystemTime>,
    pub(crate) price: f64,
    pub(crate) latency: (Duration, Duration),
    pub(crate) network: Network,
    pub(crate) faults: Faults,
    pub(crate) seed: u64,
    pub(crate) provider: String,
    pub(crate) completions: Completions,
    pub(crate) deviation: f64,
    pub(crate) default_max_tokens: u64,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        SimulatorBuilder::new()
    }
}

impl SimulatorBuilder {
    /// No accounts, real-length minutes, the system clock, a price of 0.001 credits per paid
    /// request, no latency, no network delay, no faults, seed 0; completions uniform in
    /// `50..=max_tokens`, a tokenizer within 15 % of bytes / 4, 4096 tokens when a request
    /// sets no `max_tokens`.
    pub fn new() -> Self {
        SimulatorBuilder {
            accounts: Vec::new(),
            minute: Duration::from_secs(60),
            start_wall: None,
            price: 0.001,
            latency: (Duration::ZERO, Duration::ZERO),
            network: Network::none(),
            faults: Faults::none(),
            seed: 0,
            provider: "Simulated".to_string(),
            completions: Completions::default(),
            deviation: 0.15,
            default_max_tokens: 4_096,
        }
    }

    /// Adds an account.
    pub fn account(mut self, account: Account) -> Self {
        self.accounts.push(account);
        self
    }

    /// Adds a one-key account on `tier`, with unlimited credits.
    pub fn key(self, key: impl Into<String>, tier: Tier) -> Self {
        self.account(Account::new(key).with_tier(tier))
    }

    /// How long a minute lasts, for demos: with `Duration::from_secs(2)`, every rolling
    /// window is 30 times shorter (20 requests per minute become 20 per 2 s). UTC-daily caps
    /// still follow the wall clock.
    pub fn minute(mut self, minute: Duration) -> Self {
        self.minute = minute;
        self
    }

    /// What the wall clock reads when the simulator is built; it then advances with the tokio
    /// clock (so paused-time tests can start 30 s before a UTC midnight). Defaults to
    /// `SystemTime::now()`.
    pub fn start_wall_time(mut self, start: SystemTime) -> Self {
        self.start_wall = Some(start);
        self
    }

    /// What one paid-model completion costs, in credits (`:free` models cost nothing).
    pub fn price_per_request(mut self, price: f64) -> Self {
        self.price = price;
        self
    }

    /// Upstream latency — the time the model takes, after the request was decided — drawn
    /// uniformly in `[min, max]` from the seed, for completions and the upstream faults (429,
    /// 502). The platform's own answers (401, 402, its 429s, 503) leave at once. The time on
    /// the wire is the [network](Self::network)'s, on top.
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = (min, max.max(min));
        self
    }

    /// The network between clients and the simulator: an inbound delay before a request
    /// arrives and is decided, an outbound one before its answer reaches the client (see
    /// [`Network`]). Default: none, a request is decided the instant it is sent.
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Faults to inject.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The seed of latency, network delays and faults: the `n`-th request sent draws its
    /// network delays, and the `n`-th that reaches the upstream stage its latency and faults,
    /// from streams of their own, so one seed and one request order give one run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The `provider_name` of upstream errors and completions (default `Simulated`).
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.provider = name.into();
        self
    }

    /// How long completions are, drawn per admitted request from the seed below its
    /// `max_tokens` (default [`Completions::uniform(50)`](Completions::uniform)).
    pub fn completions(mut self, completions: Completions) -> Self {
        self.completions = completions;
        self
    }

    /// How far the server's tokenizer strays from a quarter of the prompt's bytes: a factor
    /// in `[1 − deviation, 1 + deviation]` drawn from the text and the seed (default 0.15; see
    /// [`Simulator::prompt_tokens`]).
    pub fn tokenizer_deviation(mut self, deviation: f64) -> Self {
        self.deviation = deviation.clamp(0.0, 0.99);
        self
    }

    /// The `max_tokens` of a request that sets none (nor `max_completion_tokens`), as a
    /// server reserves the model's longest output (default 4096).
    pub fn default_max_tokens(mut self, max_tokens: u64) -> Self {
        self.default_max_tokens = max_tokens;
        self
    }

    /// Builds the simulator. Its clocks start now (the tokio clock, paused or not).
    pub fn build(self) -> Simulator {
        Simulator::from_builder(self)
    }
}
