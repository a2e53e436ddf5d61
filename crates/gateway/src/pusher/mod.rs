//! The pusher side of Hark: dialing, the per-session link state machine, and the
//! pod breaker's prober.

pub mod dial;
pub mod link;
pub mod probe;

use std::sync::Arc;

use hark_resilience::backoff::Backoff;
use hark_resilience::breaker::Breaker;
use hark_resilience::ramp::RecoveryRamp;

use crate::config::PusherConfig;
use crate::outbox::Outbox;

/// What every session's pusher link shares with the others on this process.
pub struct PusherShared {
    /// Timings and URL.
    pub config: PusherConfig,
    /// The pod breaker: while open, no session dials.
    pub breaker: Breaker,
    /// Paces reconnects after the breaker closes.
    pub ramp: RecoveryRamp,
    /// Backoff schedule of the reconnect loop.
    pub backoff: Backoff,
    /// Where conversations go when pusher cannot take them.
    pub outbox: Arc<Outbox>,
}
