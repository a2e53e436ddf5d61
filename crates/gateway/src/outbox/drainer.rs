//! The outbox drainer: replays pending records to pusher (103, 102 with every
//! segment, 104, wait for the 201) or POSTs them to `--fallback-url`, at a bounded
//! rate, deleting a record only once it was accepted.
//!
//! It runs on its own task, never a session's, does its file I/O on the blocking
//! pool, and dials pusher only while the pod breaker is closed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hark_resilience::breaker::Breaker;
use hark_resilience::reconnect::{Attempts, Next, ReconnectPolicy};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::deliver;
pub use super::deliver::{Delivery, ReplaySink};
use super::{Entry, Outbox, OutboxError};
use crate::metrics::OUTBOX_REPLAYED;

/// Rescan the directory this often even without a wake-up (records restored by an
/// operator, say).
const RESCAN: Duration = Duration::from_secs(30);

/// The drainer task's state.
pub struct Drainer {
    /// The records.
    outbox: Arc<Outbox>,
    /// Their destination.
    sink: ReplaySink,
    /// Pod breaker (pusher sink only): no dial while it is not closed.
    breaker: Option<Breaker>,
    /// Records per second, at most.
    rate: NonZeroU32,
    /// Waits after a failed delivery (never gives up: the breaker gates it).
    policy: ReconnectPolicy,
    /// Process shutdown.
    shutdown: CancellationToken,
}

impl Drainer {
    /// Creates the drainer.
    /// `policy` is the pusher links' own (`--reconnect-base`/`--reconnect-max`),
    /// without their attempt budget.
    pub fn new(
        outbox: Arc<Outbox>,
        sink: ReplaySink,
        breaker: Option<Breaker>,
        rate: NonZeroU32,
        policy: ReconnectPolicy,
        shutdown: CancellationToken,
    ) -> Self {
        let policy = ReconnectPolicy { max_failures: None, ..policy };
        Self { outbox, sink, breaker, rate, policy, shutdown }
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        if matches!(self.sink, ReplaySink::None) {
            tracing::info!("no pusher and no --fallback-url: outbox records stay on disk");
            return;
        }
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut attempts = Attempts::new(self.policy.clone());
        let pace = Duration::from_secs_f64(1.0 / f64::from(self.rate.get()));
        while !self.shutdown.is_cancelled() {
            if !deliver::wait_for_breaker(self.breaker.as_ref(), &self.shutdown).await {
                return;
            }
            let entries = match self.outbox.list().await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::error!(%error, "cannot list the outbox");
                    Vec::new()
                }
            };
            if entries.is_empty() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = self.outbox.written() => {}
                    () = tokio::time::sleep(RESCAN) => {}
                }
                continue;
            }
            for entry in entries {
                if self.shutdown.is_cancelled() || !deliver::breaker_closed(self.breaker.as_ref()) {
                    break;
                }
                match self.deliver_entry(&entry).await {
                    Some(Delivery::Failed(reason)) => {
                        metrics::counter!(OUTBOX_REPLAYED, "result" => "error").increment(1);
                        let Next::Retry(delay) = attempts.dial_failed(&mut rng) else {
                            unreachable!("the drainer's policy has no budget")
                        };
                        tracing::info!(%reason, ?delay, "outbox replay failed; backing off");
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        break;
                    }
                    Some(_) => attempts.reset(),
                    None => {}
                }
                tokio::time::sleep(pace).await;
            }
        }
    }

    /// Reads, delivers and settles one record. `None` when the file was unreadable.
    async fn deliver_entry(&self, entry: &Entry) -> Option<Delivery> {
        let record = match self.outbox.read(entry).await {
            Ok(record) => record,
            Err(OutboxError::Corrupt { .. }) => return None,
            Err(error) => {
                tracing::error!(%error, file = %entry.path.display(), "cannot read outbox record");
                return None;
            }
        };
        let delivery = self.sink.deliver(&record, self.breaker.as_ref()).await?;
        match &delivery {
            Delivery::Accepted => {
                if let Err(error) = self.outbox.remove(entry).await {
                    tracing::error!(%error, "delivered record could not be deleted");
                }
                metrics::counter!(OUTBOX_REPLAYED, "result" => "ok").increment(1);
                tracing::info!(conversation = %record.conversation_id, "outbox record delivered");
            }
            Delivery::Rejected(reason) => {
                metrics::counter!(OUTBOX_REPLAYED, "result" => "rejected").increment(1);
                tracing::error!(conversation = %record.conversation_id, %reason, "outbox record refused downstream; quarantining it");
                let _ = self.outbox.quarantine(entry).await;
            }
            Delivery::Failed(_) => {}
        }
        Some(delivery)
    }
}
