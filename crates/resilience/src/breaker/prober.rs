//! The breaker's prober: the one task per process that decides, by a single
//! probe, whether an `Open` breaker may close (design.md §6, HALF_OPEN).
//!
//! The prober sleeps while the breaker is `Open`, moves it to `HalfOpen` when the
//! open period ends, runs the caller's probe exactly once under
//! `probe_timeout`, and applies the result. However the probe ends — success,
//! failure, Retry-After, timeout, panic, shutdown, or the prober task itself being
//! aborted — the breaker leaves `HalfOpen`: the last two are handled by
//! [`ProbeGuard`], which reopens the breaker when dropped unfinished.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::{Breaker, ProbeOutcome, ProbeStep};

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeEnd {
    /// The probe future returned this outcome.
    Outcome(ProbeOutcome),
    /// The probe ran past `probe_timeout` (the value given) and was aborted.
    TimedOut(Duration),
    /// Creating or polling the probe panicked.
    Panicked,
    /// The prober was shut down or aborted before the probe finished.
    Abandoned,
}

impl fmt::Display for ProbeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Outcome(ProbeOutcome::Success) => f.write_str("probe succeeded"),
            Self::Outcome(ProbeOutcome::Failure) => f.write_str("probe failed"),
            Self::Outcome(ProbeOutcome::RetryAfter(delay)) => {
                write!(f, "probe answered with Retry-After {delay:?}")
            }
            Self::TimedOut(limit) => write!(f, "probe timed out after {limit:?}"),
            Self::Panicked => f.write_str("probe panicked"),
            Self::Abandoned => f.write_str("probe cancelled"),
        }
    }
}

impl Breaker {
    /// Spawns the pod's single prober task: waits until the `Open` period ends,
    /// moves to `HalfOpen`, runs `probe()` exactly once under `probe_timeout`;
    /// `Success` → `Closed`; `Failure`, timeout, panic or cancellation → `Open` with
    /// a fresh cooldown; `RetryAfter(d)` → `Open` for `max(cooldown, min(d,
    /// retry_after_max))`. Then it waits for the next trip. Sessions never probe.
    ///
    /// The task ends when `shutdown` is cancelled (a probe in flight then counts
    /// as failed). If the task is aborted mid-probe, a drop guard reopens the
    /// breaker, so it is never left `HalfOpen`. Spawning a second prober is
    /// harmless: only one of them wins each `Open → HalfOpen` step.
    ///
    /// Must be called from within a tokio runtime.
    pub fn spawn_prober<F, Fut>(&self, probe: F, shutdown: CancellationToken) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ProbeOutcome> + Send + 'static,
    {
        tokio::spawn(self.clone().run_prober(probe, shutdown))
    }

    /// The prober loop, one iteration per thing to wait for.
    async fn run_prober<F, Fut>(self, mut probe: F, shutdown: CancellationToken)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ProbeOutcome> + Send + 'static,
    {
        let mut states = self.subscribe();
        let probe_timeout = self.shared.config.probe_timeout;
        loop {
            // Mark the current state seen *before* reading the machine, so a
            // transition that lands after the read still wakes `changed()`.
            states.borrow_and_update();
            match self.next_probe_step(Instant::now()) {
                ProbeStep::Wait => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        changed = states.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
                // The Open period may be extended meanwhile; the next iteration
                // then simply sleeps again.
                ProbeStep::SleepUntil(until) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = sleep_until(until) => {}
                    }
                }
                ProbeStep::Probe(id) => {
                    let guard = ProbeGuard { breaker: Some(self.clone()), probe: id };
                    tracing::info!(probe = id, "probing pusher");
                    let end = tokio::select! {
                        biased;
                        // Dropping `guard` here reopens the breaker.
                        () = shutdown.cancelled() => return,
                        end = run_probe(&mut probe, probe_timeout) => end,
                    };
                    guard.finish(end);
                }
            }
        }
    }
}

/// Runs one probe under `limit`. The probe runs on its own task, so a panic in it
/// becomes a result instead of killing the prober, and dropping this future
/// (timeout, shutdown, abort) aborts the probe too.
async fn run_probe<F, Fut>(probe: &mut F, limit: Duration) -> ProbeEnd
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    // A panic while *creating* the probe future counts the same as one inside it.
    let Ok(future) = catch_unwind(AssertUnwindSafe(&mut *probe)) else {
        return ProbeEnd::Panicked;
    };
    let mut task = AbortOnDrop(tokio::spawn(future));
    match timeout(limit, &mut task.0).await {
        Ok(Ok(outcome)) => ProbeEnd::Outcome(outcome),
        Ok(Err(error)) if error.is_panic() => ProbeEnd::Panicked,
        // Cancelled from outside: only happens while the runtime shuts down.
        Ok(Err(_)) => ProbeEnd::Abandoned,
        Err(_elapsed) => ProbeEnd::TimedOut(limit),
    }
}

/// Aborts the wrapped task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Owns one `HalfOpen` period. [`ProbeGuard::finish`] applies the probe's result;
/// dropping the guard unfinished (shutdown, task abort, panic) reopens the breaker
/// with a fresh cooldown, so `HalfOpen` can never outlive its probe.
struct ProbeGuard {
    /// `None` once the result has been applied.
    breaker: Option<Breaker>,
    /// The probe this guard stands for; results for other probes are stale.
    probe: u64,
}

impl ProbeGuard {
    /// Applies how the probe ended.
    fn finish(mut self, end: ProbeEnd) {
        if let Some(breaker) = self.breaker.take() {
            breaker.finish_probe(self.probe, end);
        }
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.finish_probe(self.probe, ProbeEnd::Abandoned);
        }
    }
}
