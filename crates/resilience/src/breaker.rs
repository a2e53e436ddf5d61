//! The pod-wide circuit breaker for pusher (design.md §6, "Pod breaker").
//!
//! One [`Breaker`] per process, shared by every session. Sessions ask
//! [`Breaker::allow`] before dialling, report how their dials went, and wait on
//! [`Breaker::subscribe`] for the state to change instead of polling. Only the
//! breaker's own prober task ([`Breaker::spawn_prober`], in the `prober`
//! submodule) ever leaves `Open`.
//!
//! ```text
//! CLOSED    ── ≥ threshold dial failures in window, or Retry-After ──▶ OPEN
//! OPEN      ── open period over (the prober's step) ─────────────────▶ HALF_OPEN
//! OPEN      ── a longer Retry-After ──▶ OPEN, ending later (not a transition)
//! HALF_OPEN ── probe succeeded ──────────────────────────────────────▶ CLOSED
//! HALF_OPEN ── probe failed, timed out, panicked or was cancelled ───▶ OPEN (fresh cooldown)
//! HALF_OPEN ── Retry-After from the probe or any upgrade ────────────▶ OPEN (≥ cooldown)
//! ```
//!
//! Every state change goes through one function (`Breaker::enter`), which sets
//! the `pusher_circuit_breaker_state` gauge, counts
//! `pusher_circuit_breaker_transitions_total{to}`, stamps
//! `pusher_circuit_breaker_last_transition_timestamp_seconds{to}`, logs the reason
//! and publishes the new state on the watch channel.

mod prober;
mod types;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use self::prober::ProbeEnd;
pub use self::types::{BreakerConfig, BreakerOpen, BreakerState, ProbeOutcome};

/// Gauge: 0 closed, 1 open, 2 half-open.
pub const STATE_METRIC: &str = "pusher_circuit_breaker_state";
/// Counter, labelled `to` = `closed` | `open` | `half_open`.
pub const TRANSITIONS_METRIC: &str = "pusher_circuit_breaker_transitions_total";
/// Gauge, labelled `to`: Unix time in seconds of the latest transition into that
/// state. With the counter, a scraper reconstructs every transition and its instant
/// (one per state per scrape interval is the most a cooldown of a second or more allows).
pub const LAST_TRANSITION_METRIC: &str = "pusher_circuit_breaker_last_transition_timestamp_seconds";
/// Counter: dials skipped because the breaker was not closed.
pub const REJECTIONS_METRIC: &str = "pusher_circuit_breaker_rejections_total";

/// Deadlines are capped this far ahead so absurd configured durations cannot
/// overflow `Instant` arithmetic (about 30 years, as tokio does for "never").
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The pod circuit breaker. Cheap to clone (an `Arc` inside); one per process,
/// shared by all sessions.
#[derive(Clone)]
pub struct Breaker {
    /// State shared by every clone and by the prober task.
    shared: Arc<Shared>,
}

/// What every clone of a [`Breaker`] points at.
struct Shared {
    /// Timing, fixed at construction.
    config: BreakerConfig,
    /// The state machine. Held only for a few instructions, never across `.await`.
    core: Mutex<Core>,
    /// Publishes every state change; written only while `core` is locked, so the
    /// published value always equals the machine's state.
    state_tx: watch::Sender<BreakerState>,
}

/// The lock-protected part of the breaker.
struct Core {
    /// Current state and the data that belongs to it.
    machine: Machine,
    /// Id for the next probe, so a late result of an old probe is recognised as stale.
    next_probe: u64,
}

/// The breaker's state machine: each state carries exactly the data it needs.
enum Machine {
    /// Dials allowed. `failures` holds the instants of recent dial failures, oldest
    /// first, never older than `window` and never more than `failure_threshold`.
    Closed { failures: VecDeque<Instant> },
    /// No dials until `until`.
    Open { until: Instant },
    /// Probe number `probe` is running.
    HalfOpen { probe: u64 },
}

impl Machine {
    fn closed() -> Self {
        Self::Closed { failures: VecDeque::new() }
    }

    fn state(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Why the breaker changed state; logged with every transition.
#[derive(Debug)]
enum Reason {
    /// `count` dial failures fell within `window`.
    Failures { count: usize, window: Duration },
    /// An upgrade was answered 429/503 with this (unclamped) `Retry-After`.
    RetryAfter(Duration),
    /// The Open period ended; the prober starts its probe.
    CooldownElapsed,
    /// The probe finished, one way or another.
    Probe(ProbeEnd),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failures { count, window } => {
                write!(f, "{count} connect failures within {window:?}")
            }
            Self::RetryAfter(delay) => write!(f, "pusher sent Retry-After {delay:?}"),
            Self::CooldownElapsed => f.write_str("open period elapsed, probing"),
            Self::Probe(end) => write!(f, "{end}"),
        }
    }
}

/// What the prober should do next (see `prober`).
enum ProbeStep {
    /// Closed, or another prober's probe is running: wait for a state change.
    Wait,
    /// Open: sleep until the Open period ends, then look again.
    SleepUntil(Instant),
    /// The breaker just moved to `HalfOpen` for probe number `.0`; run it.
    Probe(u64),
}

impl Breaker {
    /// Creates a closed breaker and sets the state gauge to 0.
    pub fn new(config: BreakerConfig) -> Self {
        let initial = BreakerState::Closed;
        metrics::gauge!(STATE_METRIC).set(initial.as_gauge());
        let (state_tx, _) = watch::channel(initial);
        let core = Core { machine: Machine::closed(), next_probe: 0 };
        Self { shared: Arc::new(Shared { config, core: Mutex::new(core), state_tx }) }
    }

    /// The configuration the breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.shared.state_tx.borrow()
    }

    /// Published state; sessions wait on `changed()` instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.shared.state_tx.subscribe()
    }

    /// May a session dial now? `Ok` only when `Closed`. Each `Err` counts
    /// `pusher_circuit_breaker_rejections_total`; a rejection is not a failure.
    pub fn allow(&self) -> Result<(), BreakerOpen> {
        if self.state() == BreakerState::Closed {
            return Ok(());
        }
        metrics::counter!(REJECTIONS_METRIC).increment(1);
        Err(BreakerOpen)
    }

    /// A session's dial failed. Trips `Closed → Open` when at least
    /// `failure_threshold` failures fall within `window`. In `Open`/`HalfOpen` it
    /// is a stray result of a dial that began before the trip and changes nothing.
    pub fn record_failure(&self) {
        let now = Instant::now();
        let config = &self.shared.config;
        let threshold = usize::try_from(config.failure_threshold.get()).unwrap_or(usize::MAX);
        let mut core = self.lock();
        let Machine::Closed { failures } = &mut core.machine else {
            tracing::debug!("pusher dial failure while breaker not closed; ignored");
            return;
        };
        while failures.front().is_some_and(|&oldest| now.duration_since(oldest) >= config.window) {
            failures.pop_front();
        }
        failures.push_back(now);
        let count = failures.len();
        if count >= threshold {
            // CLOSED → OPEN: enough failures inside the window.
            let until = deadline(now, config.cooldown);
            let reason = Reason::Failures { count, window: config.window };
            self.enter(&mut core, Machine::Open { until }, reason);
        }
    }

    /// A 429/503 with `Retry-After` on any upgrade: `Open` for
    /// `max(cooldown, min(delay, retry_after_max))`. Extends an existing `Open`
    /// period if that ends later, never shortens it; during `HalfOpen` it reopens
    /// the breaker and the running probe's result is then ignored.
    pub fn record_retry_after(&self, delay: Duration) {
        let now = Instant::now();
        let until = deadline(now, self.retry_after_hold(delay));
        let mut core = self.lock();
        match &mut core.machine {
            // OPEN → OPEN (longer): no transition, just a later end.
            Machine::Open { until: current } => {
                if until > *current {
                    *current = until;
                    tracing::info!(
                        retry_after = ?delay,
                        open_for = ?until.duration_since(now),
                        "pusher circuit breaker open period extended by Retry-After"
                    );
                }
            }
            // CLOSED → OPEN and HALF_OPEN → OPEN: pusher asked us to back off.
            Machine::Closed { .. } | Machine::HalfOpen { .. } => {
                self.enter(&mut core, Machine::Open { until }, Reason::RetryAfter(delay));
            }
        }
    }

    /// When the current `Open` period ends; `None` unless `Open`.
    pub fn open_until(&self) -> Option<Instant> {
        match self.lock().machine {
            Machine::Open { until } => Some(until),
            Machine::Closed { .. } | Machine::HalfOpen { .. } => None,
        }
    }

    /// How long a Retry-After of `delay` keeps the breaker open.
    fn retry_after_hold(&self, delay: Duration) -> Duration {
        let config = &self.shared.config;
        config.cooldown.max(delay.min(config.retry_after_max))
    }

    /// The prober's view: what to do now, moving `Open → HalfOpen` when due.
    fn next_probe_step(&self, now: Instant) -> ProbeStep {
        let mut core = self.lock();
        match core.machine {
            Machine::Closed { .. } | Machine::HalfOpen { .. } => ProbeStep::Wait,
            Machine::Open { until } if until > now => ProbeStep::SleepUntil(until),
            Machine::Open { .. } => {
                // OPEN → HALF_OPEN: the open period is over; exactly one probe.
                let probe = core.next_probe;
                core.next_probe += 1;
                let next = Machine::HalfOpen { probe };
                self.enter(&mut core, next, Reason::CooldownElapsed);
                ProbeStep::Probe(probe)
            }
        }
    }

    /// Applies the result of probe number `probe`, unless the breaker has moved
    /// on since it started (a Retry-After reopened it), in which case it is stale.
    fn finish_probe(&self, probe: u64, end: ProbeEnd) {
        let now = Instant::now();
        let mut core = self.lock();
        if !matches!(core.machine, Machine::HalfOpen { probe: running } if running == probe) {
            tracing::debug!(probe, %end, "stale pusher probe result ignored");
            return;
        }
        let next = match end {
            // HALF_OPEN → CLOSED: pusher is back.
            ProbeEnd::Outcome(ProbeOutcome::Success) => Machine::closed(),
            // HALF_OPEN → OPEN: overloaded, for at least the Retry-After.
            ProbeEnd::Outcome(ProbeOutcome::RetryAfter(delay)) => {
                Machine::Open { until: deadline(now, self.retry_after_hold(delay)) }
            }
            // HALF_OPEN → OPEN: failed, timed out, panicked or cancelled; fresh cooldown.
            ProbeEnd::Outcome(ProbeOutcome::Failure)
            | ProbeEnd::TimedOut(_)
            | ProbeEnd::Panicked
            | ProbeEnd::Abandoned => {
                Machine::Open { until: deadline(now, self.shared.config.cooldown) }
            }
        };
        self.enter(&mut core, next, Reason::Probe(end));
    }

    /// The one place the state changes: metrics, log, watch.
    fn enter(&self, core: &mut Core, next: Machine, reason: Reason) {
        let from = core.machine.state();
        let to = next.state();
        let open_for = match next {
            Machine::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            Machine::Closed { .. } | Machine::HalfOpen { .. } => None,
        };
        core.machine = next;
        metrics::gauge!(STATE_METRIC).set(to.as_gauge());
        metrics::counter!(TRANSITIONS_METRIC, "to" => to.as_str()).increment(1);
        metrics::gauge!(LAST_TRANSITION_METRIC, "to" => to.as_str()).set(unix_seconds());
        match open_for {
            Some(open_for) => {
                tracing::warn!(%from, %to, %reason, ?open_for, "pusher circuit breaker opened")
            }
            None => tracing::info!(%from, %to, %reason, "pusher circuit breaker changed state"),
        }
        self.shared.state_tx.send_replace(to);
    }

    /// Locks the machine. Poisoning would need a panic while the lock is held,
    /// after which the machine still holds a valid state: keep serving from it
    /// rather than panic in every session.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.shared.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("open_until", &self.open_until())
            .field("config", &self.shared.config)
            .finish()
    }
}

/// Now as Unix seconds. A wall-clock stamp for scrapers to read, never used for
/// timing (that is tokio's clock, so tests can pause it).
fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `now + after`, with `after` capped so the addition cannot overflow.
fn deadline(now: Instant, after: Duration) -> Instant {
    now + after.min(FAR_FUTURE)
}
