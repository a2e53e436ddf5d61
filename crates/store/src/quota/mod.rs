//! Quota accounting, pure: windows, the per-session meter, the local budget used
//! while Redis is down, and the driver that ties them to a [`QuotaStore`].
//!
//! The session's hot path touches only [`QuotaAccount::add`] (one `f64` add per
//! decoded frame). Everything else happens on the session's timer through
//! [`QuotaAccount::poll`], which costs nothing until the meter says a store call
//! is due: at the start (one lease), when the lease is about to run out (a
//! renewal, which also refreshes the session's cap lease), when the window rolls
//! over, and at the end (one commit).
//!
//! - [`QuotaWindow`] / [`Window`]: windows aligned to multiples of their length
//!   since the Unix epoch, in UTC (so `1d` windows start at UTC midnight).
//! - [`QuotaMeter`]: the pure state machine of one session's lease.
//! - [`LocalBudgets`]: per-user budgets of this process while the fleet store is
//!   unreachable, and the usage to reconcile once it is back ([`reconcile`]).
//! - [`QuotaAccount`]: the driver a session owns.
//!
//! [`QuotaStore`]: crate::fair::QuotaStore

mod account;
mod local;
mod meter;

use std::time::Duration;

pub use account::{reconcile, QuotaAccount, QuotaContext, QuotaStatus};
pub use local::{LocalBudgets, Unreconciled};
pub use meter::{Closing, Due, MeterConfig, QuotaMeter, Source};

use crate::fair::WINDOW_KEY_MARGIN;

/// One quota window: `[start_ms, end_ms)` in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First millisecond of the window.
    pub start_ms: u64,
    /// First millisecond after it.
    pub end_ms: u64,
}

impl Window {
    /// Whether `now_ms` falls inside.
    pub fn contains(&self, now_ms: u64) -> bool {
        (self.start_ms..self.end_ms).contains(&now_ms)
    }

    /// Time from `now_ms` until the window ends (0 once it has).
    pub fn retry_after(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.end_ms.saturating_sub(now_ms))
    }

    /// When the window's store account may be deleted: its end plus
    /// [`WINDOW_KEY_MARGIN`], so late reconciliation still lands.
    pub fn expires_at_ms(&self) -> u64 {
        let margin = u64::try_from(WINDOW_KEY_MARGIN.as_millis()).unwrap_or(u64::MAX);
        self.end_ms.saturating_add(margin)
    }

    /// The window's start in whole seconds since the epoch (its store key suffix).
    pub fn start_secs(&self) -> u64 {
        self.start_ms / 1000
    }
}

/// Why a window length was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not a whole number of seconds, or zero.
    #[error("quota window must be a whole number of seconds, at least 1s (got {0:?})")]
    NotWholeSeconds(Duration),
    /// Longer than a year.
    #[error("quota window must be at most 366 days (got {0:?})")]
    TooLong(Duration),
}

/// The length of every quota window (`--quota-window`, default `1d`). Windows
/// are aligned to multiples of the length since the Unix epoch, in UTC: a `1d`
/// window starts at UTC midnight, a `1h` window on the hour. (Lengths that do not
/// divide a day, such as `7h`, still align to the epoch, not to midnight.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaWindow {
    /// Length in milliseconds; a positive multiple of 1,000.
    length_ms: u64,
}

impl QuotaWindow {
    /// One UTC day.
    pub const DAY: Self = Self { length_ms: 86_400_000 };

    /// A window of `length`.
    ///
    /// # Errors
    /// When `length` is not a positive whole number of seconds or exceeds 366 days.
    pub fn new(length: Duration) -> Result<Self, WindowError> {
        if length.is_zero() || length.subsec_nanos() != 0 {
            return Err(WindowError::NotWholeSeconds(length));
        }
        if length > Duration::from_secs(366 * 86_400) {
            return Err(WindowError::TooLong(length));
        }
        Ok(Self { length_ms: length.as_secs() * 1000 })
    }

    /// The window's length.
    pub fn length(&self) -> Duration {
        Duration::from_millis(self.length_ms)
    }

    /// The window that contains `now_ms`.
    pub fn containing(&self, now_ms: u64) -> Window {
        let start_ms = now_ms - now_ms % self.length_ms;
        Window { start_ms, end_ms: start_ms.saturating_add(self.length_ms) }
    }
}

#[cfg(test)]
mod tests;
