//! Fair use fleet-wide (design.md §6a, "Fair use"): the per-user session cap and
//! the audio quota, as the store sees them. What a session does with them is in
//! [`crate::quota`].
//!
//! Semantics every implementation keeps (checked by `tests/fair.rs` against Redis
//! and the in-memory twin):
//!
//! - **Session cap.** A user's open sessions are leases that expire by themselves
//!   `ttl` after their last acquire or refresh, so the sessions of a crashed pod
//!   stop counting within one `ttl`. Expired leases are pruned on every call.
//! - **Quota.** A window's account holds `used` (settled) and `leased`
//!   (outstanding) seconds. A lease grants `min(chunk, limit − used − leased)`,
//!   nothing when that is not positive. Settling converts a session's usage from
//!   leased to used and returns the rest; a lease never settled (its pod crashed)
//!   stays leased, so it counts as used. Total grants never exceed the limit, so
//!   with the store up the only overshoot is what a session consumes between
//!   its lease running out and its next check. The account expires with its
//!   window plus [`WINDOW_KEY_MARGIN`].

use std::time::Duration;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::quota::Window;

/// How long a window's account outlives the window, so usage counted locally
/// during an outage that straddles the window's end can still be reconciled.
pub const WINDOW_KEY_MARGIN: Duration = Duration::from_secs(3600);

/// Default lease of one session in the fleet-wide cap; sessions refresh it about
/// once a minute (`SESSION_REFRESH`), so it survives two missed refreshes.
pub const SESSION_LEASE_TTL: Duration = Duration::from_secs(180);

/// How often a session refreshes its cap lease when nothing else did.
pub const SESSION_REFRESH: Duration = Duration::from_secs(60);

/// The answer to [`SessionCap::acquire_session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionGrant {
    /// The session holds a lease now (or already held one).
    Granted {
        /// The user's open sessions, this one included.
        open: u32,
    },
    /// The user is at the cap.
    AtCap {
        /// When the soonest lease of the user's sessions expires (an upper bound on
        /// the wait if nothing refreshes it; a hint for `Retry-After`).
        retry_after: Duration,
        /// The user's open sessions.
        open: u32,
    },
}

/// The fleet-wide per-user session cap.
#[async_trait]
pub trait SessionCap: Send + Sync {
    /// Takes a lease for `session_id` if the user has fewer than `max` open
    /// sessions. Re-acquiring a held lease refreshes it and is always granted.
    async fn acquire_session(
        &self,
        uid: &str,
        session_id: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<SessionGrant, StoreError>;

    /// Extends the lease of a running session by `ttl`. The session is running,
    /// so it is re-added even if its lease had expired (the store was unreachable
    /// for longer than `ttl`), whatever the cap: returns whether it was still held.
    async fn refresh_session(
        &self,
        uid: &str,
        session_id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Ends the lease of a session.
    async fn release_session(&self, uid: &str, session_id: &str) -> Result<(), StoreError>;
}

/// The answer to a quota lease or renewal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LeaseGrant {
    /// `seconds` of audio granted (at most the chunk asked for); `remaining` is
    /// what the window had left after this grant, fleet-wide.
    Granted {
        /// Seconds granted.
        seconds: f64,
        /// Seconds left in the window after the grant.
        remaining: f64,
    },
    /// The window is used up (settled plus outstanding leases reach the limit).
    Exhausted {
        /// Until the window ends.
        retry_after: Duration,
    },
}

/// Usage a session reports: `used` seconds of audio are settled as used, and
/// `release` seconds of its lease are given up (returned or converted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settle {
    /// Seconds of audio used since the last settle.
    pub used: f64,
    /// Seconds of the session's lease given up by this settle.
    pub release: f64,
}

/// Also refresh a session's cap lease in the same store call.
#[derive(Clone, Copy, Debug)]
pub struct SessionRefresh<'a> {
    /// The session.
    pub session_id: &'a str,
    /// Its new lease.
    pub ttl: Duration,
}

/// The fleet-wide audio quota.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Leases up to `chunk` seconds of the user's `window` (of `limit` seconds).
    async fn lease(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        chunk: Duration,
    ) -> Result<LeaseGrant, StoreError>;

    /// Settles `settle` and leases up to `chunk` more, in one call; refreshes the
    /// session's cap lease too when `session` is given (one store call a minute
    /// for both).
    async fn renew(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        settle: Settle,
        chunk: Duration,
        session: Option<SessionRefresh<'_>>,
    ) -> Result<LeaseGrant, StoreError>;

    /// Settles `settle` for good (the session ended, or its window did); returns
    /// the seconds of lease given back unused (`release − used`, at least 0).
    async fn commit(&self, uid: &str, window: Window, settle: Settle) -> Result<f64, StoreError>;
}

/// Seconds of audio as whole milliseconds, as both stores keep them (rounded,
/// never negative), so Redis and the twin agree to the millisecond.
pub(crate) fn secs_to_ms(seconds: f64) -> i64 {
    if seconds.is_finite() && seconds > 0.0 {
        // Saturating float-to-int cast; amounts are far below i64::MAX ms.
        (seconds * 1000.0).round() as i64
    } else {
        0
    }
}

/// Whole milliseconds as seconds.
pub(crate) fn ms_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}
