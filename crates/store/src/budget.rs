//! The budget every shared-store call runs under (design.md §6a): a timeout, a
//! small per-store breaker, and the `hark_store_*` metrics.
//!
//! A store call is an event with a budget. [`Budget::call`] refuses at once while
//! the store's breaker is open (the caller falls back to local state, and the call
//! costs nothing), bounds the call by [`BudgetConfig::timeout`], and counts it in
//! `hark_store_calls_total{store,op,result}`.
//!
//! The breaker counts *consecutive* outages (unlike the pusher breaker's sliding
//! window: a store serves every session's start and end, so one failure in a
//! row of successes is noise, while a handful in a row means it is gone):
//!
//! ```text
//! CLOSED ── failure_threshold outages in a row ──▶ OPEN
//! OPEN   ── cooldown over, next call admitted as the one trial ──▶ TRIAL
//! TRIAL  ── the trial answered ──▶ CLOSED
//! TRIAL  ── the trial failed, timed out or was cancelled ──▶ OPEN (fresh cooldown)
//! ```
//!
//! While OPEN or TRIAL every other call is rejected. There is no prober task: the
//! first call after the cooldown is the trial, so a store nobody needs is never
//! dialled. A result of a call admitted before the breaker opened changes nothing
//! (only the trial decides), which keeps the machine deterministic.
//!
//! `hark_store_up{store}` is 1 once a call has been answered while CLOSED, and 0
//! before the first answer and whenever the breaker leaves CLOSED: 0 means Hark is
//! running on local state. The state is published on a `watch` channel
//! ([`Budget::subscribe`]) using `hark_resilience`'s [`BreakerState`]
//! (`Trial` is published as `HalfOpen`).

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hark_resilience::BreakerState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::StoreError;
use crate::metrics::{STORE_CALLS, STORE_UP};

/// Which shared engine a budget guards; its `store` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// The fleet's Postgres (`--database-url`).
    Postgres,
    /// The fleet's Redis (`--redis-url`).
    Redis,
}

impl StoreKind {
    /// The `store` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timeout and breaker settings of one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bound on one call, from asking for a connection to the last byte of the answer.
    pub timeout: Duration,
    /// Outages in a row that open the breaker.
    pub failure_threshold: NonZeroU32,
    /// How long the breaker stays open before one trial call is let through.
    pub cooldown: Duration,
}

const THREE: NonZeroU32 = NonZeroU32::new(3).unwrap();

impl BudgetConfig {
    /// Redis: 250 ms a call (an in-datacentre Redis answers in well under a
    /// millisecond, and an upgrade waits on this), 3 outages in a row open it for 5 s.
    pub fn redis() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            failure_threshold: THREE,
            cooldown: Duration::from_secs(5),
        }
    }

    /// Postgres: 2 s a call (a commit waits for the server's fsync, and a fallback
    /// record waits on this before the local disk takes over), 3 outages in a row
    /// open it for 10 s.
    pub fn postgres() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            failure_threshold: THREE,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// The budget of one store: cheap to clone, one per store per process.
#[derive(Clone)]
pub struct Budget {
    /// State shared by every clone.
    inner: Arc<Inner>,
}

/// What every clone of a [`Budget`] points at.
struct Inner {
    /// The store's label.
    store: StoreKind,
    /// Settings, fixed at construction.
    config: BudgetConfig,
    /// The breaker. Held for a few instructions, never across `.await`.
    core: Mutex<Machine>,
    /// Publishes every state change; written only while `core` is locked.
    state_tx: watch::Sender<BreakerState>,
}

/// The breaker's state machine.
#[derive(Debug)]
enum Machine {
    /// Calls go through. `failures`: outages in a row; `answered`: whether a call
    /// has been answered since the breaker last closed (drives `hark_store_up`).
    Closed { failures: u32, answered: bool },
    /// No calls until `until`.
    Open { until: Instant },
    /// The one trial call is in flight.
    Trial,
}

impl Machine {
    fn state(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::Trial => BreakerState::HalfOpen,
        }
    }
}

/// How an admitted call ended, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The store answered (even with an error about the data).
    Answered,
    /// The store did not answer: unreachable, failed, timed out, or the call was dropped.
    Outage,
}

impl Budget {
    /// A closed breaker for `store`; `hark_store_up{store}` starts at 0 until the
    /// store first answers.
    pub fn new(store: StoreKind, config: BudgetConfig) -> Self {
        metrics::gauge!(STORE_UP, "store" => store.as_str()).set(0.0);
        let (state_tx, _) = watch::channel(BreakerState::Closed);
        let core = Mutex::new(Machine::Closed { failures: 0, answered: false });
        Self { inner: Arc::new(Inner { store, config, core, state_tx }) }
    }

    /// The store this budget guards.
    pub fn store(&self) -> StoreKind {
        self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.inner.config
    }

    /// The breaker's current state.
    pub fn state(&self) -> BreakerState {
        *self.inner.state_tx.borrow()
    }

    /// Published state, for waiting on the store's return instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.inner.state_tx.subscribe()
    }

    /// Whether the store is answering: closed, and answered since it last closed
    /// (the value of `hark_store_up`).
    pub fn is_up(&self) -> bool {
        matches!(*self.lock(), Machine::Closed { answered: true, .. })
    }

    /// Whether a call now would be attempted (closed, or open with the cooldown
    /// over so the call would be the trial). Costs nothing.
    pub fn would_attempt(&self) -> bool {
        match *self.lock() {
            Machine::Closed { .. } => true,
            Machine::Open { until } => Instant::now() >= until,
            Machine::Trial => false,
        }
    }

    /// Runs one store call under the budget: refused at once while the breaker is
    /// open, bounded by the timeout, counted by `op` and result.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] while open, [`StoreError::Timeout`] past the
    /// timeout, or the call's own error.
    pub async fn call<T, F>(&self, op: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let store = self.inner.store.as_str();
        let Some(mut ticket) = self.admit() else {
            count(store, op, "rejected");
            return Err(StoreError::Rejected { store, op });
        };
        let timeout = self.inner.config.timeout;
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout { store, op, timeout }),
        };
        let outcome = match &result {
            Err(error) if error.is_outage() => Outcome::Outage,
            Ok(_) | Err(_) => Outcome::Answered,
        };
        ticket.settle(outcome);
        match &result {
            Ok(_) => count(store, op, "ok"),
            Err(error) => {
                count(store, op, error.result_label());
                tracing::debug!(%store, op, %error, "store call failed");
            }
        }
        result
    }

    /// Lets a call through, or not. The returned ticket must be settled; dropping
    /// it unsettled (the caller's future was cancelled) counts as an outage if it
    /// was the trial, so a cancelled trial can never leave the breaker stuck.
    fn admit(&self) -> Option<Ticket<'_>> {
        let now = Instant::now();
        let mut core = self.lock();
        let trial = match *core {
            Machine::Closed { .. } => false,
            Machine::Open { until } if now < until => return None,
            Machine::Trial => return None,
            Machine::Open { .. } => {
                // OPEN → TRIAL: the cooldown is over; this call is the one trial.
                self.enter(&mut core, Machine::Trial, "cooldown over, trial call");
                true
            }
        };
        Some(Ticket { budget: self, trial, settled: false })
    }

    /// Applies the outcome of an admitted call.
    fn settle(&self, trial: bool, outcome: Outcome) {
        let mut core = self.lock();
        let threshold = self.inner.config.failure_threshold.get();
        let next = match (&mut *core, trial, outcome) {
            // TRIAL → CLOSED: the store answered again.
            (Machine::Trial, true, Outcome::Answered) => {
                Some((Machine::Closed { failures: 0, answered: true }, "trial answered"))
            }
            // TRIAL → OPEN: still down; a fresh cooldown.
            (Machine::Trial, true, Outcome::Outage) => Some((
                Machine::Open { until: Instant::now() + self.inner.config.cooldown },
                "trial failed",
            )),
            (Machine::Closed { failures, answered }, false, Outcome::Answered) => {
                *failures = 0;
                if !*answered {
                    *answered = true;
                    self.publish_up(true);
                }
                None
            }
            (Machine::Closed { failures, .. }, false, Outcome::Outage) => {
                *failures = failures.saturating_add(1);
                // CLOSED → OPEN: enough outages in a row.
                (*failures >= threshold).then(|| {
                    let until = Instant::now() + self.inner.config.cooldown;
                    (Machine::Open { until }, "consecutive failures")
                })
            }
            // A call admitted before the breaker left CLOSED: only the trial decides.
            _ => None,
        };
        if let Some((next, reason)) = next {
            self.enter(&mut core, next, reason);
        }
    }

    /// The one place the state changes: gauge, log, watch.
    fn enter(&self, core: &mut Machine, next: Machine, reason: &'static str) {
        let store = self.inner.store.as_str();
        let from = core.state();
        let to = next.state();
        let up = matches!(next, Machine::Closed { answered: true, .. });
        *core = next;
        self.publish_up(up);
        match to {
            BreakerState::Open => tracing::warn!(
                store, %from, %to, reason,
                cooldown = ?self.inner.config.cooldown,
                "store breaker opened: running on local state"
            ),
            BreakerState::Closed => tracing::info!(store, %from, %to, reason, "store is back"),
            BreakerState::HalfOpen => {
                tracing::debug!(store, %from, %to, reason, "store breaker trial")
            }
        }
        self.inner.state_tx.send_replace(to);
    }

    fn publish_up(&self, up: bool) {
        let value = if up { 1.0 } else { 0.0 };
        metrics::gauge!(STORE_UP, "store" => self.inner.store.as_str()).set(value);
    }

    /// Poisoning needs a panic while the lock is held, after which the machine
    /// still holds a valid state: keep using it.
    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.inner.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("store", &self.inner.store)
            .field("machine", &*self.lock())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// An admitted call; see [`Budget::admit`].
struct Ticket<'a> {
    budget: &'a Budget,
    trial: bool,
    settled: bool,
}

impl Ticket<'_> {
    fn settle(&mut self, outcome: Outcome) {
        self.settled = true;
        self.budget.settle(self.trial, outcome);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            self.budget.settle(true, Outcome::Outage);
        }
    }
}

fn count(store: &'static str, op: &'static str, result: &'static str) {
    metrics::counter!(STORE_CALLS, "store" => store, "op" => op, "result" => result).increment(1);
}

#[cfg(test)]
mod tests;
