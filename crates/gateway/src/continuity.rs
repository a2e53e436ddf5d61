//! Conversation continuity (design §6a): a session that ends before its
//! conversation does — a network drop, a 1006, an app's reconnect, a drain when
//! there is a database — **parks** the open conversation instead of finishing it.
//! The user's next session, on any pod, within the conversation's timeout,
//! **resumes** it: same id, a fresh 103, segment times continuing. One nobody
//! resumes is finished after its timeout, through the fallback path, exactly once,
//! by whichever pod's sweeper claims it.
//!
//! Parked conversations live in Postgres with `--database-url`, else in this
//! process (an in-memory lot: a crash loses what is parked there, and a drain
//! hands everything off instead of parking, since no later session could resume
//! it from a process that is going away).
//!
//! Two live sessions of one user each keep their own conversation; when both end,
//! both are parked, and the store resumes neither (it never guesses which device
//! came back, never merges two): both are finished at once instead.

use std::sync::Arc;
use std::time::Duration;

use hark_proto::ConversationRecord;
use hark_store::{MemoryStore, ParkedConversation, ParkingLot};
use tokio_util::sync::CancellationToken;

use crate::fallback::Fallback;
use crate::metrics::CONVERSATIONS;

/// How often the sweeper looks for parked conversations past their timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Conversations finished per sweep, at most.
const SWEEP_BATCH: u32 = 50;

/// Where this process parks open conversations.
pub struct Continuity {
    /// The lot: Postgres, or the in-memory one.
    lot: Arc<dyn ParkingLot>,
    /// The in-memory lot, when that is what `lot` is: its expired conversations
    /// come back to the sweeper for the fallback path.
    memory: Option<Arc<MemoryStore>>,
    /// Where finished conversations go.
    fallback: Arc<Fallback>,
    /// This pod's name in claims.
    pod: String,
}

impl std::fmt::Debug for Continuity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Continuity").field("durable", &self.durable()).finish()
    }
}

impl Continuity {
    /// Parking in Postgres (shared by the fleet, survives this process).
    pub fn shared(lot: Arc<dyn ParkingLot>, fallback: Arc<Fallback>, pod: String) -> Self {
        Self { lot, memory: None, fallback, pod }
    }

    /// Parking in this process.
    pub fn in_process(lot: Arc<MemoryStore>, fallback: Arc<Fallback>, pod: String) -> Self {
        Self { lot: lot.clone(), memory: Some(lot), fallback, pod }
    }

    /// Whether parked conversations outlive this process (so a drain may park).
    pub fn durable(&self) -> bool {
        self.memory.is_none()
    }

    /// Takes the user's parked conversation, if there is exactly one to resume. A
    /// store that does not answer in time means "none": the session starts a new
    /// conversation, and the parked one is finished after its timeout.
    pub async fn resume(&self, uid: &str) -> Option<ParkedConversation> {
        match self.lot.resume(uid).await {
            Ok(parked) => parked,
            Err(error) => {
                tracing::warn!(uid, %error, "cannot look for a parked conversation; starting a new one");
                None
            }
        }
    }

    /// Parks `conversation`; `false` when the lot refused it (full, or the store
    /// is down), and the caller must hand it off instead.
    pub async fn park(&self, conversation: &ParkedConversation) -> bool {
        match self.lot.park(conversation).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(conversation = %conversation.conversation_id, %error, "cannot park; handing the conversation off instead");
                false
            }
        }
    }

    /// Finishes what is past its timeout: Postgres moves each into the shared
    /// outbox in one transaction; the in-memory lot hands each back for the fallback
    /// path here. Returns how many were finished.
    pub async fn sweep(&self) -> usize {
        let records = match self.lot.claim_expired(&self.pod, SWEEP_BATCH).await {
            Ok(records) => records,
            Err(error) => {
                tracing::debug!(%error, "parking sweep failed");
                return 0;
            }
        };
        let finished = records.len();
        for record in records {
            self.finished(record).await;
        }
        let _ = self.lot.count_parked().await;
        finished
    }

    /// A drain without a database: everything parked here is handed off now.
    pub async fn hand_off_all(&self) {
        let Some(memory) = &self.memory else { return };
        for record in memory.take_all_parked() {
            self.finished(record).await;
        }
    }

    /// A parked conversation nobody resumed has ended.
    async fn finished(&self, record: ConversationRecord) {
        let id = record.conversation_id.clone();
        if self.memory.is_some() {
            // Postgres already moved it into the shared outbox; this one is ours.
            if self.fallback.write(&record).await.is_err() {
                // Full outbox: logged in full by the outbox, never silently lost.
                return;
            }
        }
        metrics::counter!(CONVERSATIONS, "via" => "fallback").increment(1);
        tracing::info!(conversation = %id, "parked conversation finished after its timeout");
    }

    /// Sweeps until shutdown.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            self.sweep().await;
        }
    }
}
