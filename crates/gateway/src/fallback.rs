//! The fallback path's front door: where a finished conversation goes when pusher
//! cannot take it, and where a client's `conversation_created via fallback` is
//! earned.
//!
//! With `--database-url` a record is committed to the shared outbox in Postgres,
//! keyed by conversation id, so any pod can deliver it even if this one dies with
//! its disk. When Postgres cannot take it within its budget, the record is fsynced
//! to the local outbox instead and promoted to Postgres later
//! ([`crate::outbox::shared::Promoter`]). Without a database the local outbox is
//! the whole path, as before.

use std::sync::Arc;

use hark_proto::ConversationRecord;
use hark_store::SharedOutbox;

use crate::outbox::{Outbox, OutboxError};

/// Where a record was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// Committed to the shared outbox (Postgres).
    Shared,
    /// Fsynced to this pod's outbox directory.
    Local,
}

/// The fallback path of one process.
pub struct Fallback {
    /// This pod's durable outbox: the whole path without a database, the staging
    /// area with one.
    local: Arc<Outbox>,
    /// The fleet's outbox (`--database-url`).
    shared: Option<Arc<dyn SharedOutbox>>,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback").field("shared", &self.shared.is_some()).finish()
    }
}

impl Fallback {
    /// The path over `local`, and `shared` when a database is configured.
    pub fn new(local: Arc<Outbox>, shared: Option<Arc<dyn SharedOutbox>>) -> Self {
        Self { local, shared }
    }

    /// The local outbox.
    pub fn local(&self) -> &Arc<Outbox> {
        &self.local
    }

    /// The shared outbox, if configured.
    pub fn shared(&self) -> Option<&Arc<dyn SharedOutbox>> {
        self.shared.as_ref()
    }

    /// Makes `record` durable: in Postgres when it answers in time (a repeat of a
    /// conversation id is a no-op there), else on local disk. Returns where, once
    /// it would survive a crash; an error only when both refused (the local
    /// outbox logged the record in full).
    pub async fn write(&self, record: &ConversationRecord) -> Result<Durable, OutboxError> {
        if let Some(shared) = &self.shared {
            match shared.insert(record).await {
                Ok(_) => return Ok(Durable::Shared),
                Err(error) => tracing::warn!(
                    conversation = %record.conversation_id, %error,
                    "shared outbox unavailable; writing the record to the local outbox"
                ),
            }
        }
        self.local.write(record).await.map(|()| Durable::Local)
    }
}
