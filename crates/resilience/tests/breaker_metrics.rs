//! The breaker's metrics, read back through a small in-memory recorder installed
//! for the test's thread (the paused-clock runtime is single-threaded, so the
//! prober task reports to it too). Series are looked up by the names of the
//! contract (docs/metrics.md), not by the crate's constants, so a renamed metric
//! fails here.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hark_resilience::{Breaker, BreakerState, ProbeOutcome};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio_util::sync::CancellationToken;

use common::*;

/// Keeps every counter and gauge as an atomic, keyed `name{label=value,...}`.
#[derive(Default)]
struct MemoryRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn render(key: &Key) -> String {
    let labels: Vec<String> =
        key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl MemoryRecorder {
    fn counter(&self, key: &str) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters.get(key).map_or(0, |value| value.load(SeqCst))
    }

    fn gauge(&self, key: &str) -> Option<f64> {
        let gauges = self.gauges.lock().unwrap();
        gauges.get(key).map(|bits| f64::from_bits(bits.load(SeqCst)))
    }

    fn transitions(&self, to: BreakerState) -> u64 {
        self.counter(&format!("pusher_circuit_breaker_transitions_total{{to={}}}", to.as_str()))
    }

    fn stamped(&self, to: BreakerState) -> Option<f64> {
        let key = format!(
            "pusher_circuit_breaker_last_transition_timestamp_seconds{{to={}}}",
            to.as_str()
        );
        self.gauge(&key)
    }
}

const STATE: &str = "pusher_circuit_breaker_state";
const REJECTIONS: &str = "pusher_circuit_breaker_rejections_total";

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

impl Recorder for MemoryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(render(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(render(key)).or_default()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_cycle_is_counted() {
    let recorder = MemoryRecorder::default();
    let _installed = metrics::set_default_local_recorder(&recorder);

    let breaker = Breaker::new(config());
    assert_eq!(recorder.gauge(STATE), Some(0.0), "set at new");
    assert_eq!(breaker.allow(), Ok(()));
    assert_eq!(recorder.counter(REJECTIONS), 0);

    let before_trip = unix_now();
    for _ in 0..3 {
        breaker.record_failure();
    }
    assert_eq!(recorder.gauge(STATE), Some(1.0));
    assert_eq!(recorder.transitions(BreakerState::Open), 1);
    // The transition is stamped with the wall clock (the paused tokio clock is
    // for timing only).
    let opened_at = recorder.stamped(BreakerState::Open).expect("the open is stamped");
    assert!((before_trip..=unix_now()).contains(&opened_at), "{opened_at} vs {before_trip}");
    assert_eq!(recorder.stamped(BreakerState::Closed), None, "no close yet");
    for _ in 0..4 {
        assert!(breaker.allow().is_err());
    }
    assert_eq!(recorder.counter(REJECTIONS), 4);
    // Stray failures and an extension are not transitions.
    breaker.record_failure();
    breaker.record_retry_after(secs(120));
    assert_eq!(recorder.transitions(BreakerState::Open), 1);

    let mut states = breaker.subscribe();
    let calls = Arc::new(AtomicUsize::new(0));
    let script = [ProbeOutcome::Failure, ProbeOutcome::Success];
    let shutdown = CancellationToken::new();
    let prober = breaker.spawn_prober(probe_script(&calls, secs(1), &script), shutdown.clone());

    wait_for(&mut states, BreakerState::HalfOpen).await;
    assert_eq!(recorder.gauge(STATE), Some(2.0));
    wait_for(&mut states, BreakerState::Closed).await;
    assert_eq!(recorder.gauge(STATE), Some(0.0));
    assert_eq!(recorder.transitions(BreakerState::HalfOpen), 2);
    assert_eq!(recorder.transitions(BreakerState::Open), 2);
    assert_eq!(recorder.transitions(BreakerState::Closed), 1);
    let half_open_at = recorder.stamped(BreakerState::HalfOpen).unwrap();
    let reopened_at = recorder.stamped(BreakerState::Open).unwrap();
    let closed_at = recorder.stamped(BreakerState::Closed).unwrap();
    // open, half-open, open (the failed probe), half-open, closed: each gauge holds
    // its state's latest transition.
    let order = [opened_at, reopened_at, half_open_at, closed_at, unix_now()];
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");

    shutdown.cancel();
    prober.await.unwrap();
}
