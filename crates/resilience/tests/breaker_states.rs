//! The breaker's state machine without a prober: the sliding failure window,
//! Retry-After, and what sessions' reports may and may not change.

use std::num::NonZeroU32;
use std::time::Duration;

use hark_resilience::{Breaker, BreakerConfig, BreakerOpen, BreakerState};
use tokio::time::{advance, Instant};

const COOLDOWN: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(30);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

fn config(threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: NonZeroU32::new(threshold).unwrap(),
        window: WINDOW,
        cooldown: COOLDOWN,
        retry_after_max: RETRY_AFTER_MAX,
        probe_timeout: Duration::from_secs(10),
    }
}

fn breaker() -> Breaker {
    Breaker::new(config(20))
}

fn fail(breaker: &Breaker, times: usize) {
    for _ in 0..times {
        breaker.record_failure();
    }
}

#[tokio::test(start_paused = true)]
async fn starts_closed_and_allows() {
    let breaker = breaker();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.allow(), Ok(()));
    assert_eq!(breaker.open_until(), None);
}

#[tokio::test(start_paused = true)]
async fn trips_exactly_at_the_threshold() {
    let breaker = breaker();
    let mut states = breaker.subscribe();
    fail(&breaker, 19);
    assert_eq!(breaker.state(), BreakerState::Closed, "one below threshold");
    assert_eq!(breaker.allow(), Ok(()));
    assert!(!states.has_changed().unwrap());

    breaker.record_failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.allow(), Err(BreakerOpen));
    assert_eq!(breaker.open_until(), Some(Instant::now() + COOLDOWN));
    assert!(states.has_changed().unwrap());
    assert_eq!(*states.borrow_and_update(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn threshold_of_one_trips_on_the_first_failure() {
    let breaker = Breaker::new(config(1));
    breaker.record_failure();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_spread_beyond_the_window_do_not_trip() {
    let breaker = breaker();
    // One failure every 2 s: at most 15 ever fall inside a 30 s window.
    for _ in 0..200 {
        breaker.record_failure();
        advance(Duration::from_secs(2)).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_are_evicted() {
    let breaker = breaker();
    fail(&breaker, 19);
    advance(WINDOW).await;
    // The 19 are now a full window old: this is failure number 1, not 20.
    breaker.record_failure();
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 18);
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.record_failure();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_just_inside_the_window_still_count() {
    let breaker = breaker();
    fail(&breaker, 19);
    advance(WINDOW - Duration::from_millis(1)).await;
    breaker.record_failure();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn stray_reports_while_open_change_nothing() {
    let breaker = breaker();
    fail(&breaker, 20);
    let until = breaker.open_until().unwrap();
    let states = breaker.subscribe();

    advance(Duration::from_secs(10)).await;
    fail(&breaker, 100);
    assert_eq!(breaker.open_until(), Some(until), "failure must not extend Open");
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!states.has_changed().unwrap());
}

#[tokio::test(start_paused = true)]
async fn open_without_a_prober_stays_open() {
    let breaker = breaker();
    fail(&breaker, 20);
    advance(COOLDOWN * 3).await;
    // Only the prober leaves Open; sessions keep being refused.
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.allow(), Err(BreakerOpen));
}

#[tokio::test(start_paused = true)]
async fn retry_after_shorter_than_cooldown_opens_for_the_cooldown() {
    let breaker = breaker();
    breaker.record_retry_after(Duration::from_secs(10));
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.open_until(), Some(Instant::now() + COOLDOWN));
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_cooldown_wins() {
    let breaker = breaker();
    breaker.record_retry_after(Duration::from_secs(120));
    assert_eq!(breaker.open_until(), Some(Instant::now() + Duration::from_secs(120)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_clamped_to_its_max() {
    let breaker = breaker();
    breaker.record_retry_after(Duration::from_secs(3600));
    assert_eq!(breaker.open_until(), Some(Instant::now() + RETRY_AFTER_MAX));
    // Even an absurd value cannot overflow.
    let other = Breaker::new(BreakerConfig { retry_after_max: Duration::MAX, ..config(20) });
    other.record_retry_after(Duration::MAX);
    assert_eq!(other.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn shorter_retry_after_does_not_shorten_an_open_period() {
    let breaker = breaker();
    breaker.record_retry_after(Duration::from_secs(250));
    let until = breaker.open_until().unwrap();
    advance(Duration::from_secs(10)).await;
    breaker.record_retry_after(Duration::from_secs(100));
    assert_eq!(breaker.open_until(), Some(until));
    breaker.record_retry_after(Duration::ZERO);
    assert_eq!(breaker.open_until(), Some(until));
}

#[tokio::test(start_paused = true)]
async fn longer_retry_after_extends_an_open_period_quietly() {
    let breaker = breaker();
    fail(&breaker, 20);
    let states = breaker.subscribe();
    advance(Duration::from_secs(10)).await;
    breaker.record_retry_after(Duration::from_secs(200));
    assert_eq!(breaker.open_until(), Some(Instant::now() + Duration::from_secs(200)));
    // Still Open: no transition is published.
    assert!(!states.has_changed().unwrap());
}

#[test]
fn state_labels_and_gauge_values() {
    let all = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];
    let labels: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    assert_eq!(labels, ["closed", "open", "half_open"]);
    let gauges: Vec<f64> = all.iter().map(|s| s.as_gauge()).collect();
    assert_eq!(gauges, [0.0, 1.0, 2.0]);
    assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
    assert_eq!(BreakerOpen.to_string(), "circuit breaker is open");
}

#[test]
fn default_config_matches_the_design() {
    let config = BreakerConfig::default();
    assert_eq!(config.failure_threshold.get(), 20);
    assert_eq!(config.window, Duration::from_secs(30));
    assert_eq!(config.cooldown, Duration::from_secs(60));
    assert_eq!(config.retry_after_max, Duration::from_secs(300));
}
