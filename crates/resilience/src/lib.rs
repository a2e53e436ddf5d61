//! Hark's resilience toolkit: the pieces that keep a pusher outage from turning
//! into a connection storm (design.md §6).
//!
//! The crate has no sockets and knows nothing of the gateway. Every wait runs on
//! tokio's clock ([`tokio::time::Instant`], [`tokio::time::sleep_until`]) and every
//! random choice takes an injectable RNG or seed, so tests pause time, advance it,
//! and get the same answer every run.
//!
//! The pieces:
//!
//! - [`backoff`] — *how long to wait* between a session's reconnect attempts:
//!   [`Backoff`] is a validated value giving exponential ceilings
//!   (`min(max, base·2ⁿ)`) and full-jitter delays drawn from a caller's RNG. Whether
//!   to retry at all is the caller's decision.
//! - [`retry_after`] — [`parse_retry_after`] reads an RFC 9110 `Retry-After` value
//!   (delay-seconds or HTTP-date) into a clamped [`Duration`](std::time::Duration),
//!   or `None` when it is malformed so exponential backoff applies instead.
//! - [`breaker`] — the pod-wide circuit breaker [`Breaker`]: `Closed → Open` when
//!   enough dial failures fall in a sliding window (or a 429/503 carries
//!   `Retry-After`), `Open → HalfOpen` after the cooldown, and one prober task per
//!   process runs exactly one probe to decide `Closed` or `Open` again. Sessions
//!   never probe; they read [`Breaker::allow`] and wait on
//!   [`Breaker::subscribe`] instead of polling.
//! - [`ramp`] — [`RecoveryRamp`], a pod-wide limiter that lets degraded sessions
//!   reconnect at a bounded, jittered rate once the breaker closes, so recovery is
//!   not a thundering herd.
//! - [`reconnect`] — *whether* to retry: [`Attempts`] counts one link's
//!   consecutive failures (failed dials and links that died young) under a
//!   [`ReconnectPolicy`] and answers retry-after-this-delay or budget-spent; every
//!   reconnect loop in Hark uses it.
//!
//! Metrics (`pusher_circuit_breaker_*`) are emitted through the `metrics` facade;
//! installing an exporter is the binary's job.

pub mod backoff;
pub mod breaker;
pub mod ramp;
pub mod reconnect;
pub mod retry_after;

pub use backoff::{Backoff, BackoffError, Delays};
pub use breaker::{Breaker, BreakerConfig, BreakerOpen, BreakerState, ProbeOutcome};
pub use ramp::RecoveryRamp;
pub use reconnect::{Attempts, Ended, Next, ReconnectPolicy, STABLE_AFTER};
pub use retry_after::parse_retry_after;
