//! Wall-clock time that follows tokio's clock, so a paused-clock test moves it too.
//!
//! Shared stores compare times across pods, so what they store is wall-clock time
//! (milliseconds since the Unix epoch). Read through [`WallClock`], that time is
//! anchored once to the system clock and then advanced by `tokio::time::Instant`:
//! a test that pauses tokio's clock and advances it an hour sees the wall clock
//! an hour later, and a parked conversation or a quota lease expire on cue.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, moving with tokio's clock. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Wall time at `base`, in milliseconds since the epoch.
    base_ms: u64,
    /// The tokio instant that `base_ms` corresponds to.
    base: Instant,
}

impl WallClock {
    /// A clock anchored to the system clock now.
    pub fn system() -> Self {
        Self::starting_at(system_now_ms())
    }

    /// A clock that reads `ms` now (tests pin it, e.g. just before UTC midnight).
    pub fn starting_at(ms: u64) -> Self {
        Self { base_ms: ms, base: Instant::now() }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::system()
    }
}

/// The system clock in milliseconds since the epoch (0 if it reads before 1970).
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in whole milliseconds, saturating (for SQL intervals and Lua arguments).
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let clock = WallClock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms(), 1_000 + 3_600_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(WallClock::system().now_ms() > 1_577_836_800_000);
    }
}
