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
