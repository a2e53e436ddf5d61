//! Every other way a probe can end — abort, shutdown, panic, Retry-After — and
//! the reports that arrive while a probe runs. None may leave the breaker stuck.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use hark_resilience::{BreakerState, ProbeOutcome};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use common::*;

#[tokio::test(start_paused = true)]
async fn aborted_prober_leaves_the_breaker_open_and_a_new_one_can_close_it() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let prober = breaker.spawn_prober(stuck_probe(&calls, &dropped), CancellationToken::new());

    let half_open_at = wait_for(&mut states, BreakerState::HalfOpen).await;
    assert_eq!(half_open_at, tripped_at + COOLDOWN);
    sleep(secs(1)).await;
    let aborted_at = Instant::now();
    prober.abort();
    assert!(prober.await.unwrap_err().is_cancelled());

    assert_eq!(breaker.state(), BreakerState::Open, "not stuck in HalfOpen");
    assert_eq!(breaker.open_until(), Some(aborted_at + COOLDOWN));
    tokio::task::yield_now().await;
    assert!(dropped.load(SeqCst), "the probe itself was cancelled too");

    let successes = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&successes, secs(1), &[ProbeOutcome::Success]);
    let _replacement = breaker.spawn_prober(probe, CancellationToken::new());
    let closed_at = wait_for(&mut states, BreakerState::Closed).await;
    assert_eq!(closed_at, aborted_at + COOLDOWN + secs(1));
    assert_eq!((calls.load(SeqCst), successes.load(SeqCst)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_probe_counts_as_failure_and_ends_the_task() {
    let (breaker, _) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let prober = breaker.spawn_prober(stuck_probe(&calls, &dropped), shutdown.clone());

    wait_for(&mut states, BreakerState::HalfOpen).await;
    shutdown.cancel();
    prober.await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.open_until(), Some(Instant::now() + COOLDOWN));
    tokio::task::yield_now().await;
    assert!(dropped.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_idle_ends_the_task_promptly() {
    let breaker = hark_resilience::Breaker::new(config());
    let shutdown = CancellationToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(1), &[ProbeOutcome::Success]);
    let prober = breaker.spawn_prober(probe, shutdown.clone());
    sleep(secs(5)).await;
    let cancelled_at = Instant::now();
    shutdown.cancel();
    prober.await.unwrap();
    assert_eq!(Instant::now(), cancelled_at);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(calls.load(SeqCst), 0, "a closed breaker is never probed");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_counts_as_failure_and_the_prober_survives() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = {
        let calls = Arc::clone(&calls);
        move || {
            let n = calls.fetch_add(1, SeqCst);
            async move {
                sleep(secs(1)).await;
                assert!(n > 0, "probe {n} blew up (expected by this test)");
                ProbeOutcome::Success
            }
        }
    };
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    let first = tripped_at + COOLDOWN;
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, first));
    let panicked_at = first + secs(1);
    assert_eq!(next_change(&mut states).await, (BreakerState::Open, panicked_at));
    let closed_at = wait_for(&mut states, BreakerState::Closed).await;
    assert_eq!(closed_at, panicked_at + COOLDOWN + secs(1));
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_closure_that_panics_counts_as_failure() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = {
        let calls = Arc::clone(&calls);
        move || {
            let n = calls.fetch_add(1, SeqCst);
            assert!(n > 0, "probe construction blew up (expected by this test)");
            std::future::ready(ProbeOutcome::Success)
        }
    };
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    let closed_at = wait_for(&mut states, BreakerState::Closed).await;
    assert_eq!(closed_at, tripped_at + COOLDOWN * 2);
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn probe_retry_after_opens_for_the_longer_of_cooldown_and_delay_clamped() {
    let cases = [(secs(5), COOLDOWN), (secs(200), secs(200)), (secs(3_600), RETRY_AFTER_MAX)];
    for (delay, held) in cases {
        let (breaker, tripped_at) = tripped();
        let mut states = breaker.subscribe();
        let calls = Arc::new(AtomicUsize::new(0));
        let script = [ProbeOutcome::RetryAfter(delay), ProbeOutcome::Success];
        let shutdown = CancellationToken::new();
        let prober = breaker.spawn_prober(probe_script(&calls, secs(1), &script), shutdown.clone());

        let answered_at = tripped_at + COOLDOWN + secs(1);
        wait_for(&mut states, BreakerState::HalfOpen).await;
        assert_eq!(next_change(&mut states).await, (BreakerState::Open, answered_at));
        assert_eq!(breaker.open_until(), Some(answered_at + held), "{delay:?}");
        assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, answered_at + held));
        shutdown.cancel();
        prober.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_during_half_open_reopens_and_the_probe_result_is_ignored() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(5), &[ProbeOutcome::Success]);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    wait_for(&mut states, BreakerState::HalfOpen).await;
    sleep(secs(1)).await;
    breaker.record_retry_after(secs(120));
    let reopened_at = tripped_at + COOLDOWN + secs(1);
    assert_eq!(next_change(&mut states).await, (BreakerState::Open, reopened_at));
    // The probe's success at +5 s is stale: the next change is the next HalfOpen.
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, reopened_at + secs(120)));
    assert_eq!(next_change(&mut states).await, (BreakerState::Closed, reopened_at + secs(125)));
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn stray_session_reports_during_half_open_change_nothing() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(5), &[ProbeOutcome::Success]);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    wait_for(&mut states, BreakerState::HalfOpen).await;
    for _ in 0..100 {
        breaker.record_failure();
        assert!(breaker.allow().is_err());
    }
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(
        next_change(&mut states).await,
        (BreakerState::Closed, tripped_at + COOLDOWN + secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_while_the_prober_sleeps_delays_the_probe() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(1), &[ProbeOutcome::Success]);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    sleep(secs(30)).await;
    breaker.record_retry_after(secs(120));
    assert_eq!(next_change(&mut states).await, (BreakerState::HalfOpen, tripped_at + secs(150)));
}

#[tokio::test(start_paused = true)]
async fn two_probers_still_probe_once_per_half_open() {
    let (breaker, tripped_at) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let script = &[ProbeOutcome::Failure, ProbeOutcome::Success];
    let _a = breaker.spawn_prober(probe_script(&calls, secs(1), script), CancellationToken::new());
    let _b = breaker.spawn_prober(probe_script(&calls, secs(1), script), CancellationToken::new());

    let closed_at = wait_for(&mut states, BreakerState::Closed).await;
    assert_eq!(closed_at, tripped_at + COOLDOWN + secs(1) + COOLDOWN + secs(1));
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_prober_handles_repeated_trips() {
    let (breaker, _) = tripped();
    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = probe_script(&calls, secs(1), &[ProbeOutcome::Success]);
    let _prober = breaker.spawn_prober(probe, CancellationToken::new());

    for round in 1..=3 {
        wait_for(&mut states, BreakerState::Closed).await;
        assert_eq!(calls.load(SeqCst), round);
        for _ in 0..3 {
            breaker.record_failure();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
