//! The one injectable wall-clock source.
//!
//! Wall-clock time is read only where the protocol speaks in it (HTTP-dates, epoch resets,
//! UTC-midnight windows). Everything that reads it takes a [`WallClock`], so tests can pin or
//! steer it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A source of wall-clock time: the system clock by default, or any function.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_quota::clock::WallClock;
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let clock = WallClock::fixed(t);
/// assert_eq!(clock.now(), t);
/// ```
#[derive(Clone, Default)]
pub struct WallClock {
    source: Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>,
}

impl WallClock {
    /// The system clock.
    pub fn system() -> Self {
        WallClock { source: None }
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        WallClock {
            source: Some(Arc::new(f)),
        }
    }

    /// A clock that reads `start` now and then advances with `tokio::time::Instant`: under
    /// `tokio::time::pause()` it follows virtual time (the system clock would not move), so
    /// a test can run through a UTC midnight in an instant.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tower_quota::clock::WallClock;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_311_970);
    /// let clock = WallClock::starting_at(start);
    /// tokio::time::sleep(Duration::from_secs(30)).await;
    /// assert_eq!(clock.now(), start + Duration::from_secs(30));
    /// # }
    /// ```
    pub fn starting_at(start: SystemTime) -> Self {
        let base = tokio::time::Instant::now();
        Self::from_fn(move || start + base.elapsed())
    }

    /// A clock stopped at `t`.
    pub fn fixed(t: SystemTime) -> Self {
        Self::from_fn(move || t)
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match &self.source {
            None => SystemTime::now(),
            Some(f) => f(),
        }
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.source.is_some() {
            "WallClock(custom)"
        } else {
            "WallClock(system)"
        })
    }
}
