//! The pusher side of Hark: dialing, one live link ([`conn::PusherConn`]), the
//! per-session link state machine, and the pod breaker's prober.

pub mod audio;
pub mod conn;
pub mod dial;
pub mod link;
pub mod probe;

use std::sync::Arc;

use hark_resilience::breaker::Breaker;
use hark_resilience::ramp::RecoveryRamp;
use hark_resilience::reconnect::ReconnectPolicy;

use crate::config::PusherConfig;
use crate::connect::Connector;
use crate::fallback::Fallback;

/// What every session's pusher link shares with the others on this process.
pub struct PusherShared {
    /// Timings and URL.
    pub config: PusherConfig,
    /// How links dial (the network, or a test's script).
    pub connector: Arc<dyn Connector>,
    /// The pod breaker: while open, no session dials.
    pub breaker: Breaker,
    /// Paces reconnects after the breaker closes.
    pub ramp: RecoveryRamp,
    /// Each link's reconnect budget: `--reconnect-max-attempts` failures with
    /// backoff between `--reconnect-base` and `--reconnect-max`, then degraded.
    pub policy: ReconnectPolicy,
    /// Where conversations go when pusher cannot take them.
    pub fallback: Arc<Fallback>,
}
