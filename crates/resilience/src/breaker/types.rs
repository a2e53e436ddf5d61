//! The breaker's public vocabulary: its configuration, its published state,
//! what a probe can report, and the error sessions get while it is open.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// `--breaker-failure-threshold` default (checked at compile time).
const DEFAULT_FAILURE_THRESHOLD: NonZeroU32 = NonZeroU32::new(20).unwrap();

/// Breaker timing, parsed and validated once from the command line.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Trips `Closed → Open` when at least this many dial failures fall in `window`.
    pub failure_threshold: NonZeroU32,
    /// Length of the sliding failure window.
    pub window: Duration,
    /// How long `Open` lasts before the prober moves to `HalfOpen`.
    pub cooldown: Duration,
    /// Upper bound on any `Retry-After` the breaker honours.
    pub retry_after_max: Duration,
    /// Bound on one probe; a probe that runs longer counts as a failure.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    /// The defaults of design.md §6: 20 failures in 30 s, 60 s cooldown, Retry-After
    /// capped at 300 s, and 10 s for one probe (connect timeout plus a heartbeat).
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(300),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// The published state of the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Sessions may dial.
    Closed,
    /// Nobody dials until the cooldown (or Retry-After) ends.
    Open,
    /// The prober's single probe is in flight; sessions still do not dial.
    HalfOpen,
}

impl BreakerState {
    /// Value for the `pusher_circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }

    /// Label value: `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one probe found out about pusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Handshake (and heartbeat) succeeded: close the breaker.
    Success,
    /// Pusher is still unreachable: open for a fresh cooldown.
    Failure,
    /// Pusher answered 429/503 with this `Retry-After`: open for at least that long.
    RetryAfter(Duration),
}

/// [`Breaker::allow`](super::Breaker::allow) refused: the breaker is open or half-open, so do not dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open")]
pub struct BreakerOpen;
