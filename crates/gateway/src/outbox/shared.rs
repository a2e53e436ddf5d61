//! The fleet's side of the fallback path (`--database-url`): every pod's drainer
//! claims due records from the shared outbox in Postgres, under a lease, and
//! delivers them; a promoter moves records this pod had to fsync locally (while
//! Postgres was unreachable) into Postgres once it is back.
//!
//! - A claim is `FOR UPDATE SKIP LOCKED` with a lease (`--outbox-claim-lease`,
//!   60 s by default, well over one delivery's 10 s): a record whose
//!   claimer crashed comes back when the lease runs out, and a peer delivers it.
//! - A record is marked delivered only after pusher's 201 (or the HTTP sink's 2xx);
//!   a failed delivery gives it back with backoff. Delivery is at-least-once;
//!   `conversation_id` is the idempotency key downstream.
//! - Replays are paced per pod (`--outbox-replay-rate`) and gated by the pod
//!   breaker, exactly as the local drainer's.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hark_resilience::breaker::Breaker;
use hark_resilience::reconnect::{Attempts, Next, ReconnectPolicy};
use hark_store::SharedOutbox;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::deliver::{self, Delivery, ReplaySink};
use super::Outbox;
use crate::metrics::{
    OUTBOX_REPLAYED, SHARED_OUTBOX_CLAIMS, SHARED_OUTBOX_OLDEST, SHARED_OUTBOX_PENDING,
};

/// How often an idle drainer asks for due records.
const POLL: Duration = Duration::from_secs(2);
/// A record downstream refused for good waits this long before it is tried again
/// (there is no quarantine in a shared table; an operator sees it in the logs and
/// in `hark_outbox_replayed_total{result="rejected"}`).
const REJECTED_RETRY: Duration = Duration::from_secs(3600);
/// How often the promoter looks for local records to move.
const PROMOTE_EVERY: Duration = Duration::from_secs(5);
/// How often the fleet-wide gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Delivers the shared outbox's due records from this pod.
pub struct SharedDrainer {
    /// The fleet's outbox.
    shared: Arc<dyn SharedOutbox>,
    /// This pod's name in claims.
    pod: String,
    /// Where records go.
    sink: ReplaySink,
    /// Pod breaker (pusher sink only).
    breaker: Option<Breaker>,
    /// Records per second, at most.
    rate: NonZeroU32,
    /// How long a claim holds a record (`--outbox-claim-lease`).
    lease: Duration,
    /// Backoff after a failed delivery.
    policy: ReconnectPolicy,
    /// Process shutdown.
    shutdown: CancellationToken,
}

impl SharedDrainer {
    /// The drainer for `pod`, claiming for `lease` at a time.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<dyn SharedOutbox>,
        pod: String,
        sink: ReplaySink,
        breaker: Option<Breaker>,
        rate: NonZeroU32,
        lease: Duration,
        policy: ReconnectPolicy,
        shutdown: CancellationToken,
    ) -> Self {
        let policy = ReconnectPolicy { max_failures: None, ..policy };
        Self { shared, pod, sink, breaker, rate, lease, policy, shutdown }
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        if matches!(self.sink, ReplaySink::None) {
            tracing::info!(
                "no pusher and no --fallback-url: shared outbox records stay in the database"
            );
            return;
        }
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut attempts = Attempts::new(self.policy.clone());
        let pace = Duration::from_secs_f64(1.0 / f64::from(self.rate.get()));
        let batch = self.rate.get().clamp(1, 100);
        while !self.shutdown.is_cancelled() {
            if !deliver::wait_for_breaker(self.breaker.as_ref(), &self.shutdown).await {
                return;
            }
            let claimed = match self.shared.claim_due(&self.pod, self.lease, batch).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::debug!(%error, "shared outbox: claim failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            metrics::counter!(SHARED_OUTBOX_CLAIMS).increment(claimed.len() as u64);
            let mut failed = false;
            for claim in claimed {
                let id = claim.record.conversation_id.clone();
                // After a failure the rest of the batch goes back at once rather than
                // sitting out its lease.
                if failed
                    || self.shutdown.is_cancelled()
                    || !deliver::breaker_closed(self.breaker.as_ref())
                {
                    let _ = self.shared.release(&self.pod, &id, Duration::ZERO).await;
                    continue;
                }
                match self.sink.deliver(&claim.record, self.breaker.as_ref()).await {
                    Some(Delivery::Accepted) => {
                        attempts.reset();
                        metrics::counter!(OUTBOX_REPLAYED, "result" => "ok").increment(1);
                        if let Err(error) = self.shared.mark_delivered(&id).await {
                            // The lease runs out and a peer redelivers it: a
                            // duplicate pusher absorbs by id, never a loss.
                            tracing::warn!(conversation = %id, %error, "delivered, but not marked so in the shared outbox");
                        } else {
                            tracing::info!(conversation = %id, attempts = claim.attempts, "shared outbox record delivered");
                        }
                    }
                    Some(Delivery::Rejected(reason)) => {
                        metrics::counter!(OUTBOX_REPLAYED, "result" => "rejected").increment(1);
                        tracing::error!(conversation = %id, %reason, "shared outbox record refused downstream; retrying in an hour");
                        let _ = self.shared.release(&self.pod, &id, REJECTED_RETRY).await;
                    }
                    Some(Delivery::Failed(reason)) => {
                        metrics::counter!(OUTBOX_REPLAYED, "result" => "error").increment(1);
                        let Next::Retry(delay) = attempts.dial_failed(&mut rng) else {
                            unreachable!("the drainer's policy has no budget")
                        };
                        tracing::info!(conversation = %id, %reason, ?delay, "shared outbox replay failed; backing off");
                        let _ = self.shared.release(&self.pod, &id, delay).await;
                        failed = true;
                        tokio::select! {
                            () = self.shutdown.cancelled() => {}
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    None => {}
                }
                tokio::time::sleep(pace).await;
            }
        }
    }
}

/// Moves local outbox records into the shared outbox: records fsynced here while
/// Postgres was unreachable reach the fleet once it is back.
pub struct Promoter {
    /// This pod's outbox.
    local: Arc<Outbox>,
    /// The fleet's.
    shared: Arc<dyn SharedOutbox>,
}

impl Promoter {
    /// A promoter from `local` to `shared`.
    pub fn new(local: Arc<Outbox>, shared: Arc<dyn SharedOutbox>) -> Self {
        Self { local, shared }
    }

    /// Promotes every local record it can now: each is inserted (a no-op if it is
    /// already there) and only then deleted locally. Stops at the first failure;
    /// returns how many moved.
    pub async fn promote_all(&self) -> usize {
        let entries = match self.local.list().await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%error, "cannot list the outbox to promote it");
                return 0;
            }
        };
        let mut moved = 0;
        for entry in entries {
            let Ok(record) = self.local.read(&entry).await else { continue };
            if let Err(error) = self.shared.insert(&record).await {
                tracing::debug!(%error, "promotion paused: shared outbox unavailable");
                break;
            }
            if let Err(error) = self.local.remove(&entry).await {
                tracing::error!(%error, "promoted record could not be deleted locally");
            }
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(records = moved, "local outbox records promoted to the shared outbox");
        }
        moved
    }

    /// Promotes whenever there is something to promote, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if self.local.records() > 0 {
                self.promote_all().await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.local.written() => {}
                () = tokio::time::sleep(PROMOTE_EVERY) => {}
            }
        }
    }
}

/// Publishes the fleet-wide outbox gauges until shutdown.
pub async fn publish_stats(shared: Arc<dyn SharedOutbox>, shutdown: CancellationToken) {
    loop {
        if let Ok(stats) = shared.stats().await {
            metrics::gauge!(SHARED_OUTBOX_PENDING).set(stats.pending as f64);
            metrics::gauge!(SHARED_OUTBOX_OLDEST)
                .set(stats.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(STATS_EVERY) => {}
        }
    }
}
