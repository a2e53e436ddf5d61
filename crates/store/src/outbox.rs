//! The shared outbox of the fallback path (design.md §6a, "Shared fallback"):
//! conversation records keyed by `conversation_id`, claimed by any pod's drainer
//! under a lease, and kept as tombstones once delivered.
//!
//! Semantics every implementation keeps (and `tests/outbox.rs` checks against
//! both Postgres and the in-memory twin):
//!
//! - [`SharedOutbox::insert`] is durable when it returns, and a repeat insert of a
//!   conversation id is a no-op, with no time window, for as long as its tombstone
//!   is kept (see [`SharedOutbox::prune_tombstones`]).
//! - [`SharedOutbox::claim_due`] hands each due record to one claimer at a time: a
//!   claimed record is invisible to other claimers until its lease runs out, so a
//!   crashed claimer's records come back by themselves.
//! - [`SharedOutbox::mark_delivered`] turns a record into a tombstone (its body is
//!   dropped, its id stays); [`SharedOutbox::release`] gives it back for a retry later.
//! - Delivery is at-least-once (a lease can run out while a slow delivery is still
//!   going on); downstream is idempotent by `conversation_id`.

use std::time::Duration;

use async_trait::async_trait;
use hark_proto::ConversationRecord;

use crate::error::StoreError;

/// What [`SharedOutbox::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The record is new and now pending.
    New,
    /// A record with that id is already pending, claimed, or delivered (a
    /// tombstone): nothing changed.
    AlreadyPresent,
}

/// A record handed to a claimer.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The record to deliver.
    pub record: ConversationRecord,
    /// Claims of this record so far, this one included (1 on the first delivery).
    pub attempts: u32,
}

/// The outbox fleet-wide, for `hark_outbox_*`-style dashboards and alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records not yet delivered (claimed or not).
    pub pending: u64,
    /// Age of the oldest undelivered record, if any.
    pub oldest_age: Option<Duration>,
    /// Delivered records still kept as tombstones.
    pub tombstones: u64,
}

/// The shared outbox. Implemented by [`crate::pg::PgStore`] and [`crate::memory::MemoryStore`].
#[async_trait]
pub trait SharedOutbox: Send + Sync {
    /// Stores `record` durably (committed before this returns), unless a record
    /// with the same `conversation_id` is already there, pending or delivered.
    async fn insert(&self, record: &ConversationRecord) -> Result<Inserted, StoreError>;

    /// Claims up to `limit` due records for `pod` for `lease`: oldest first, none
    /// that another claimer holds under an unexpired lease, none whose retry time
    /// has not come.
    async fn claim_due(
        &self,
        pod: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records that pusher acknowledged the conversation (its 201) or the HTTP
    /// sink accepted it: the record becomes a tombstone. `false` if it was unknown
    /// or already delivered.
    async fn mark_delivered(&self, conversation_id: &str) -> Result<bool, StoreError>;

    /// Gives a record `pod` claimed back after a failed delivery; it is due again
    /// `retry_in` from now (measured on the store's clock). `false` if `pod` no
    /// longer holds it (its lease ran out and a peer claimed it): nothing changed.
    async fn release(
        &self,
        pod: &str,
        conversation_id: &str,
        retry_in: Duration,
    ) -> Result<bool, StoreError>;

    /// Pending records fleet-wide and the age of the oldest.
    async fn stats(&self) -> Result<OutboxStats, StoreError>;

    /// Deletes up to `limit` tombstones delivered more than `older_than` ago;
    /// returns how many. After that a repeat insert of such an id is new again.
    async fn prune_tombstones(&self, older_than: Duration, limit: u32) -> Result<u64, StoreError>;
}

/// How long delivered records are kept as tombstones by default: 7 days (see
/// `docs/decisions.md`, "tombstone retention").
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
