//! The breaker's prober on the paused clock: one probe per HalfOpen, every way a
//! probe can end, and the guarantee that HalfOpen never outlives its probe.

mod common;

use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use hark_resilience::{BreakerState, ProbeOutcome};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use common::*;

#[tokio::test(start_paused = true)]
async fn moves_to_half_open_after_the_cooldown() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let shutdown = CancellationToken::new();
    let prober = breaker.spawn_prober(pending::<ProbeOutcome>, shutdown.clone());

    let (state, at) = next_change(&mut states).await;
    assert_eq!(state, BreakerState::HalfOpen);
    assert_eq!(at, tripped_at + COOLDOWN);
    assert_eq!(breaker.open_until(), None);
    assert!(breaker.allow().is_err(), "sessions never dial in HalfOpen");

    shutdown.cancel();
    prober.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_probe_while_a_thousand_sessions_wait() {
    let (breaker, tripped_at) = tripped();
    let calls = Arc::new(AtomicUsize::new(0));
    let rejections = Arc::new(AtomicUsize::new(0));
    let mut sessions = JoinSet::new();
    for _ in 0..1_000 {
        let breaker = breaker.clone();
        let rejections = Arc::clone(&rejections);
        let mut states = breaker.subscribe();
        sessions.spawn(async move {
            loop {
                if breaker.allow().is_ok() {
                    return Instant::now();
                }
                rejections.fetch_add(1, SeqCst);
                states.changed().await.expect("breaker dropped");
            }
        });
    }
    let shutdown = CancellationToken::new();
    let probe = probe_script(&calls, secs(2), &[ProbeOutcome::Success]);
    let prober = breaker.spawn_prober(probe, shutdown.clone());

    while let Some(allowed_at) = sessions.join_next().await {
        assert_eq!(allowed_at.unwrap(), tripped_at + COOLDOWN + secs(2));
    }
    assert_eq!(calls.load(SeqCst), 1, "exactly one probe for the whole pod");
    // Each session was refused once while Open and once when woken by HalfOpen.
    assert_eq!(rejections.load(SeqCst), 2_000);
    assert_eq!(breaker.state(), BreakerState::Closed);
    shutdown.cancel();
    prober.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(1), &[ProbeOutcome::Success]);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, tripped_at + COOLDOWN));
    assert_eq!(
        next_change(&mut states).await,
        (BreakerState::Closed, tripped_at + COOLDOWN + secs(1))
    );
    assert_eq!(breaker.allow(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_with_a_fresh_cooldown() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let script = &[ProbeOutcome::Failure, ProbeOutcome::Success];
    let probe = probe_script(&calls, secs(5), script);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    let first_probe = tripped_at + COOLDOWN;
    let failed_at = first_probe + secs(5);
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, first_probe));
    assert_eq!(next_change(&mut states).await, (BreakerState::Open, failed_at));
    assert_eq!(breaker.open_until(), Some(failed_at + COOLDOWN));
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, failed_at + COOLDOWN));
    assert_eq!(
        next_change(&mut states).await,
        (BreakerState::Closed, failed_at + COOLDOWN + secs(5))
    );
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_completes_times_out_into_open() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let probe = stuck_probe(&calls, &dropped);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    let half_open_at = tripped_at + COOLDOWN;
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, half_open_at));
    let timed_out_at = half_open_at + PROBE_TIMEOUT;
    assert_eq!(next_change(&mut states).await, (BreakerState::Open, timed_out_at));
    assert_eq!(breaker.open_until(), Some(timed_out_at + COOLDOWN));
    tokio::task::yield_now().await;
    assert!(dropped.load(SeqCst), "the timed-out probe was aborted");
    // And the prober keeps going: the next probe one cooldown later.
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, timed_out_at + COOLDOWN));
    assert_eq!(calls.load(SeqCst), 2);
}
