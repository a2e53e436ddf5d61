//! Helpers shared by the breaker test files: a freshly tripped breaker, watch
//! observers that say *when* a state arrived, and scripted probes.

// Each test file uses a different subset of these.
#![allow(dead_code)]

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use hark_resilience::{Breaker, BreakerConfig, BreakerState, ProbeOutcome};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

pub const COOLDOWN: Duration = Duration::from_secs(60);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// A boxed probe future, so scripted probes have a nameable type.
pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeOutcome> + Send>>;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The configuration the prober tests use (threshold 3).
pub fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: NonZeroU32::new(3).unwrap(),
        window: secs(30),
        cooldown: COOLDOWN,
        retry_after_max: RETRY_AFTER_MAX,
        probe_timeout: PROBE_TIMEOUT,
    }
}

/// A breaker that has just tripped, with the instant it tripped.
pub fn tripped() -> (Breaker, Instant) {
    let breaker = Breaker::new(config());
    for _ in 0..3 {
        breaker.record_failure();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    (breaker, Instant::now())
}

/// Waits for the next published state and says when it arrived.
pub async fn next_change(states: &mut watch::Receiver<BreakerState>) -> (BreakerState, Instant) {
    states.changed().await.expect("breaker dropped");
    (*states.borrow_and_update(), Instant::now())
}

/// Waits until the breaker shows `wanted`; returns when that was seen.
pub async fn wait_for(states: &mut watch::Receiver<BreakerState>, wanted: BreakerState) -> Instant {
    loop {
        if *states.borrow_and_update() == wanted {
            return Instant::now();
        }
        states.changed().await.expect("breaker dropped");
    }
}

/// A probe that counts its invocations in `calls` and answers `outcomes[n]`
/// (the last one repeating) after taking `takes`.
pub fn probe_script(
    calls: &Arc<AtomicUsize>,
    takes: Duration,
    outcomes: &[ProbeOutcome],
) -> impl FnMut() -> ProbeFuture + Send + 'static {
    let calls = Arc::clone(calls);
    let outcomes = outcomes.to_vec();
    move || {
        let n = calls.fetch_add(1, SeqCst);
        let outcome = outcomes[n.min(outcomes.len() - 1)];
        Box::pin(async move {
            sleep(takes).await;
            outcome
        })
    }
}

/// Sets its flag when dropped: proves a probe future was really cancelled.
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// A probe that counts its calls and never completes; `dropped` turns true when
/// the future is dropped.
pub fn stuck_probe(
    calls: &Arc<AtomicUsize>,
    dropped: &Arc<AtomicBool>,
) -> impl FnMut() -> ProbeFuture + Send + 'static {
    let calls = Arc::clone(calls);
    let dropped = Arc::clone(dropped);
    move || {
        calls.fetch_add(1, SeqCst);
        let flag = DropFlag(Arc::clone(&dropped));
        Box::pin(async move {
            let _flag = flag;
            std::future::pending::<ProbeOutcome>().await
        })
    }
}
