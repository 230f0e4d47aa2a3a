//! Wall-clock time, read through one trait so that tests can move it.
//!
//! Durations and timers use tokio's clock (which tests pause and advance); the
//! timestamps that are stored and shown to people come from a [`Clock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

/// A point in wall-clock time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is (nothing if it is not after it).
    pub const fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whole seconds since the Unix epoch (as certificates and the revocation
    /// list count them).
    pub fn unix_seconds(self) -> i64 {
        i64::try_from(self.0 / 1000).unwrap_or(i64::MAX)
    }

    /// As people read it: UTC to the second, in RFC 3339 form
    /// (`2026-11-29T05:12:50Z`). [`shown`] does it for a time on the wire.
    pub fn rfc3339(self) -> String {
        let seconds = self.unix_seconds();
        time::OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            // Beyond the year 9999: no reader will mind the raw number.
            .unwrap_or_else(|| format!("@{seconds}"))
    }

    /// This timestamp moved `by` earlier, saturating at the epoch.
    pub fn before(self, by: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(by.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// This timestamp moved `by` later, saturating at the end of time.
    pub fn after(self, by: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// Where the current wall-clock time comes from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock that reads `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(start.0)))
    }

    /// Moves the clock `by` later.
    pub fn advance(&self, by: Duration) {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A time in milliseconds since the Unix epoch, as the wire carries it, shown
/// as people read it ([`Timestamp::rfc3339`]): the command line's and the web
/// pages' one way to show a time.
pub fn shown(unix_millis: u64) -> String {
    Timestamp::from_unix_millis(unix_millis).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_utc() {
        assert_eq!(
            Timestamp::from_unix_millis(0).rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_795_929_170_818).rfc3339(),
            "2026-11-29T05:12:50Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(951_782_400_000).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }
}
