//! [`ParkingLot`] on Postgres: table `hark_parked` (migration 002), finishing
//! into `hark_outbox` in the same transaction.

use std::time::Duration;

use async_trait::async_trait;
use hark_proto::ConversationRecord;
use tokio_postgres::types::Json;

use super::{db_error, interval_ms, limit, PgStore};
use crate::error::StoreError;
use crate::metrics::{CONVERSATIONS_PARKED, CONVERSATIONS_RESUMED};
use crate::parking::{ParkedConversation, ParkingLot};

const PARK: &str = "INSERT INTO hark_parked (conversation_id, uid, conversation, deadline)
     VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')
     ON CONFLICT (conversation_id) DO UPDATE
        SET uid = EXCLUDED.uid, conversation = EXCLUDED.conversation,
            deadline = EXCLUDED.deadline, parked_at = now()";

// FOR UPDATE: a second resume of the same user waits for this one, then finds
// the row gone; claim_expired skips rows locked here.
const LIVE: &str = "SELECT conversation_id, conversation FROM hark_parked
      WHERE uid = $1 AND deadline > now() FOR UPDATE";

const TAKE: &str = "DELETE FROM hark_parked WHERE conversation_id = $1";

const FINISH_NOW: &str =
    "UPDATE hark_parked SET deadline = now() WHERE uid = $1 AND deadline > now()";

const EXPIRED: &str = "SELECT conversation_id, conversation FROM hark_parked
      WHERE deadline <= now() ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED";

const INTO_OUTBOX: &str =
    "INSERT INTO hark_outbox (conversation_id, uid, record) VALUES ($1, $2, $3)
     ON CONFLICT (conversation_id) DO NOTHING";

// A row that does not decode is set aside for a day (and logged in full) rather
// than blocking every later claim.
const SET_ASIDE: &str =
    "UPDATE hark_parked SET deadline = now() + interval '1 day' WHERE conversation_id = $1";

const COUNT: &str = "SELECT count(*) FROM hark_parked";

#[async_trait]
impl ParkingLot for PgStore {
    async fn park(&self, conversation: &ParkedConversation) -> Result<(), StoreError> {
        let remaining: Duration = conversation.remaining(self.now_ms());
        self.call("park", |client| async move {
            let statement = client.prepare_cached(PARK).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
                &conversation.conversation_id,
                &conversation.uid,
                &Json(conversation),
                &interval_ms(remaining),
            ];
            client.execute(&statement, &params).await.map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn resume(&self, uid: &str) -> Result<Option<ParkedConversation>, StoreError> {
        let resumed = self
            .call("resume", |mut client| async move {
                let tx = client.transaction().await.map_err(db_error)?;
                let rows = tx.query(LIVE, &[&uid]).await.map_err(db_error)?;
                let taken = match rows.as_slice() {
                    [] => None,
                    [row] => {
                        let id: String = row.get(0);
                        let Json(conversation): Json<ParkedConversation> = row
                            .try_get(1)
                            .map_err(|e| StoreError::Data(format!("parked {id}: {e}")))?;
                        tx.execute(TAKE, &[&id]).await.map_err(db_error)?;
                        Some(conversation)
                    }
                    several => {
                        tracing::info!(
                            uid,
                            parked = several.len(),
                            "several parked conversations; resuming none, finishing all"
                        );
                        tx.execute(FINISH_NOW, &[&uid]).await.map_err(db_error)?;
                        None
                    }
                };
                tx.commit().await.map_err(db_error)?;
                Ok(taken)
            })
            .await?;
        if resumed.is_some() {
            metrics::counter!(CONVERSATIONS_RESUMED).increment(1);
        }
        Ok(resumed)
    }

    async fn claim_expired(
        &self,
        _pod: &str,
        max: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        self.call("claim_expired", |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let rows = tx.query(EXPIRED, &[&limit(max)]).await.map_err(db_error)?;
            let mut records = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.get(0);
                let conversation: Result<Json<ParkedConversation>, _> = row.try_get(1);
                let Ok(Json(conversation)) = conversation else {
                    let raw: Option<serde_json::Value> = row.try_get(1).ok();
                    tracing::error!(conversation = %id, ?raw, "parked conversation does not decode; set aside");
                    tx.execute(SET_ASIDE, &[&id]).await.map_err(db_error)?;
                    continue;
                };
                let record = conversation.into_record();
                tx.execute(INTO_OUTBOX, &[&record.conversation_id, &record.uid, &Json(&record)])
                    .await
                    .map_err(db_error)?;
                tx.execute(TAKE, &[&id]).await.map_err(db_error)?;
                records.push(record);
            }
            tx.commit().await.map_err(db_error)?;
            Ok(records)
        })
        .await
    }

    async fn count_parked(&self) -> Result<u64, StoreError> {
        let count = self
            .call("count_parked", |client| async move {
                let row = client.query_one(COUNT, &[]).await.map_err(db_error)?;
                let count: i64 = row.get(0);
                Ok(u64::try_from(count).unwrap_or(0))
            })
            .await?;
        metrics::gauge!(CONVERSATIONS_PARKED).set(count as f64);
        Ok(count)
    }
}
