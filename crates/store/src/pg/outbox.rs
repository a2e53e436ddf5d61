//! [`SharedOutbox`] on Postgres: table `hark_outbox` (migration 001).

use std::time::Duration;

use async_trait::async_trait;
use hark_proto::ConversationRecord;
use tokio_postgres::types::Json;

use super::{db_error, interval_ms, limit, PgStore};
use crate::error::StoreError;
use crate::outbox::{Claimed, Inserted, OutboxStats, SharedOutbox};

const INSERT: &str = "INSERT INTO hark_outbox (conversation_id, uid, record) VALUES ($1, $2, $3)
     ON CONFLICT (conversation_id) DO NOTHING";

// SKIP LOCKED: concurrent claimers each take different rows instead of queueing
// on one another; a row is claimable when nobody's lease on it is running.
const CLAIM: &str = "WITH due AS (
         SELECT conversation_id FROM hark_outbox
          WHERE delivered_at IS NULL AND available_at <= now()
            AND (lease_until IS NULL OR lease_until <= now())
          ORDER BY available_at, created_at
          LIMIT $3
          FOR UPDATE SKIP LOCKED)
     UPDATE hark_outbox o
        SET claimed_by = $1,
            lease_until = now() + $2::bigint * interval '1 millisecond',
            attempts = o.attempts + 1
       FROM due
      WHERE o.conversation_id = due.conversation_id
  RETURNING o.record, o.attempts, o.available_at, o.created_at";

const DELIVERED: &str = "UPDATE hark_outbox
        SET delivered_at = now(), record = NULL, claimed_by = NULL, lease_until = NULL
      WHERE conversation_id = $1 AND delivered_at IS NULL";

const RELEASE: &str = "UPDATE hark_outbox
        SET claimed_by = NULL, lease_until = NULL,
            available_at = now() + $3::bigint * interval '1 millisecond'
      WHERE conversation_id = $2 AND claimed_by = $1 AND delivered_at IS NULL";

const STATS: &str = "SELECT
        (SELECT count(*) FROM hark_outbox WHERE delivered_at IS NULL),
        (SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8
           FROM hark_outbox WHERE delivered_at IS NULL),
        (SELECT count(*) FROM hark_outbox WHERE delivered_at IS NOT NULL)";

const PRUNE: &str = "DELETE FROM hark_outbox WHERE conversation_id IN (
         SELECT conversation_id FROM hark_outbox
          WHERE delivered_at IS NOT NULL
            AND delivered_at < now() - $1::bigint * interval '1 millisecond'
          ORDER BY delivered_at
          LIMIT $2
          FOR UPDATE SKIP LOCKED)";

#[async_trait]
impl SharedOutbox for PgStore {
    async fn insert(&self, record: &ConversationRecord) -> Result<Inserted, StoreError> {
        self.call("outbox_insert", |client| async move {
            let statement = client.prepare_cached(INSERT).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&record.conversation_id, &record.uid, &Json(record)];
            let rows = client.execute(&statement, &params).await.map_err(db_error)?;
            Ok(if rows == 1 { Inserted::New } else { Inserted::AlreadyPresent })
        })
        .await
    }

    async fn claim_due(
        &self,
        pod: &str,
        lease: Duration,
        max: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.call("outbox_claim", |client| async move {
            let statement = client.prepare_cached(CLAIM).await.map_err(db_error)?;
            let rows = client
                .query(&statement, &[&pod, &interval_ms(lease), &limit(max)])
                .await
                .map_err(db_error)?;
            let mut claimed = Vec::with_capacity(rows.len());
            let mut order = Vec::with_capacity(rows.len());
            for row in rows {
                let record: Option<Json<ConversationRecord>> =
                    row.try_get(0).map_err(|e| StoreError::Data(format!("outbox record: {e}")))?;
                let attempts: i32 = row.get(1);
                let due: std::time::SystemTime = row.get(2);
                let created: std::time::SystemTime = row.get(3);
                if let Some(Json(record)) = record {
                    order.push((due, created));
                    claimed
                        .push(Claimed { record, attempts: u32::try_from(attempts).unwrap_or(0) });
                }
            }
            // RETURNING has no order; hand them out oldest due first.
            let mut paired: Vec<_> = order.into_iter().zip(claimed).collect();
            paired.sort_by_key(|(order, _)| *order);
            Ok(paired.into_iter().map(|(_, c)| c).collect())
        })
        .await
    }

    async fn mark_delivered(&self, conversation_id: &str) -> Result<bool, StoreError> {
        self.call("outbox_delivered", |client| async move {
            let statement = client.prepare_cached(DELIVERED).await.map_err(db_error)?;
            let rows = client.execute(&statement, &[&conversation_id]).await.map_err(db_error)?;
            Ok(rows == 1)
        })
        .await
    }

    async fn release(
        &self,
        pod: &str,
        conversation_id: &str,
        retry_in: Duration,
    ) -> Result<bool, StoreError> {
        self.call("outbox_release", |client| async move {
            let statement = client.prepare_cached(RELEASE).await.map_err(db_error)?;
            let rows = client
                .execute(&statement, &[&pod, &conversation_id, &interval_ms(retry_in)])
                .await
                .map_err(db_error)?;
            Ok(rows == 1)
        })
        .await
    }

    async fn stats(&self) -> Result<OutboxStats, StoreError> {
        self.call("outbox_stats", |client| async move {
            let statement = client.prepare_cached(STATS).await.map_err(db_error)?;
            let row = client.query_one(&statement, &[]).await.map_err(db_error)?;
            let pending: i64 = row.get(0);
            let oldest: Option<f64> = row.get(1);
            let tombstones: i64 = row.get(2);
            Ok(OutboxStats {
                pending: u64::try_from(pending).unwrap_or(0),
                oldest_age: oldest.map(|secs| Duration::from_secs_f64(secs.max(0.0))),
                tombstones: u64::try_from(tombstones).unwrap_or(0),
            })
        })
        .await
    }

    async fn prune_tombstones(&self, older_than: Duration, max: u32) -> Result<u64, StoreError> {
        self.call("outbox_prune", |client| async move {
            let statement = client.prepare_cached(PRUNE).await.map_err(db_error)?;
            client
                .execute(&statement, &[&interval_ms(older_than), &limit(max)])
                .await
                .map_err(db_error)
        })
        .await
    }
}
