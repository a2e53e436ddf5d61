//! Conversation continuity (design.md §6a): open conversations parked by a
//! session that ended early, resumed by the user's next session on any pod, or
//! finished into the shared outbox once their timeout has passed.
//!
//! Semantics every implementation keeps (checked by `tests/parking.rs` against
//! Postgres and the in-memory twin):
//!
//! - A parked conversation is *live* until `last_transcript_at +
//!   conversation_timeout`; the deadline is fixed when it is parked, from the
//!   parking pod's clock, and kept as a duration on the store's clock (so clock
//!   skew between pods does not move it).
//! - [`ParkingLot::resume`] takes a user's parked conversation only when it is
//!   live and the **only** live one of that user. With two or more live parked
//!   conversations it takes none — it never guesses which device came back and
//!   never merges two — and makes all of them due at once, so they are finished
//!   promptly by [`ParkingLot::claim_expired`] and none is resumed later by a guess.
//!   Conversations still held by a running session are not parked and do not count.
//! - [`ParkingLot::claim_expired`] moves each conversation past its deadline, in
//!   one transaction, into the shared outbox as a finished
//!   [`ConversationRecord`], exactly once however many pods race for it (the
//!   outbox insert is idempotent by id too).

use std::time::Duration;

use async_trait::async_trait;
use hark_proto::{ConversationRecord, Segment};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// An open conversation waiting for its user to come back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedConversation {
    /// The conversation's id; a resuming session keeps it (and sends a fresh 103).
    pub conversation_id: String,
    /// The user.
    pub uid: String,
    /// The session that parked it (becomes the record's `session_id` if it is
    /// finished while parked).
    pub session_id: String,
    /// Language of the conversation.
    pub language: String,
    /// Sample rate of the session's audio.
    pub sample_rate: u32,
    /// Every segment so far, times relative to the conversation's start.
    pub segments: Vec<Segment>,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Wall-clock time of the last transcript, milliseconds since the Unix epoch.
    pub last_transcript_at_ms: u64,
    /// Silence after which the conversation ends (the session's
    /// `conversation_timeout`; "never split" is already capped by the caller).
    #[serde(with = "millis")]
    pub conversation_timeout: Duration,
}

impl ParkedConversation {
    /// How long after `now_ms` it stays live (zero if it is already past).
    pub fn remaining(&self, now_ms: u64) -> Duration {
        let timeout = u64::try_from(self.conversation_timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.last_transcript_at_ms.saturating_add(timeout);
        Duration::from_millis(deadline.saturating_sub(now_ms))
    }

    /// The finished record handed to the outbox when nobody resumed it. It
    /// finished at its last transcript.
    pub fn into_record(self) -> ConversationRecord {
        ConversationRecord {
            version: ConversationRecord::VERSION,
            conversation_id: self.conversation_id,
            uid: self.uid,
            language: self.language,
            sample_rate: self.sample_rate,
            session_id: self.session_id,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.last_transcript_at_ms.max(self.started_at_ms),
            segments: self.segments,
        }
    }
}

/// Where open conversations wait. Implemented by [`crate::pg::PgStore`] and
/// [`crate::memory::MemoryStore`].
#[async_trait]
pub trait ParkingLot: Send + Sync {
    /// Parks `conversation`. Parking an id that is already parked replaces it (a
    /// retried park, or a later state of the same conversation). A conversation
    /// already past its deadline is due for [`ParkingLot::claim_expired`] at once.
    async fn park(&self, conversation: &ParkedConversation) -> Result<(), StoreError>;

    /// Atomically takes the user's parked conversation if it is live and the
    /// only live one (see the module docs for what happens otherwise). Counts
    /// `hark_conversations_resumed_total` when it takes one.
    async fn resume(&self, uid: &str) -> Result<Option<ParkedConversation>, StoreError>;

    /// Finishes up to `limit` parked conversations past their deadline: each is
    /// moved, in one transaction, into the shared outbox, exactly once. Returns
    /// the records moved (for logs and `hark_conversations_total{via}`).
    async fn claim_expired(
        &self,
        pod: &str,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Parked conversations fleet-wide; also sets `hark_conversations_parked`.
    async fn count_parked(&self) -> Result<u64, StoreError>;
}

/// Serde of a `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
