//! The conversation record handed to the fallback path: stored in the outbox and
//! POSTed as JSON to `--fallback-url`.

use serde::{Deserialize, Serialize};

use crate::client::Segment;

/// Everything needed to process a conversation later, without the session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// Record format version (1).
    pub version: u32,
    /// The conversation's id; the idempotency key downstream.
    pub conversation_id: String,
    /// The user.
    pub uid: String,
    /// Language of the conversation.
    pub language: String,
    /// Sample rate of the session's audio (used when replaying to pusher).
    pub sample_rate: u32,
    /// Hark's id of the session that produced it.
    pub session_id: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Wall-clock end, milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    /// All segments, times relative to the conversation's start.
    pub segments: Vec<Segment>,
}

impl ConversationRecord {
    /// Current format version.
    pub const VERSION: u32 = 1;
}
