//! Schema migrations: the SQL files under `crates/store/migrations/`, applied in
//! order, each once, in one transaction that holds an advisory lock.
//!
//! Two pods starting at once both open a transaction and ask for
//! `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`; the second waits until the first
//! commits, then finds every version already in `hark_schema_migrations` and
//! applies nothing. A failed migration rolls back whole. A database with
//! versions this build does not know (a newer pod migrated it during a rolling
//! upgrade) is used as it is: migrations only ever add.

use deadpool_postgres::Object;

use super::db_error;
use crate::error::StoreError;

/// `(version, name, SQL)` of every migration, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "outbox", include_str!("../../migrations/001_outbox.sql")),
    (2, "parked", include_str!("../../migrations/002_parked.sql")),
];

/// The advisory lock key migrations hold (`"harkmigr"` as a big-endian i64).
pub const MIGRATION_LOCK_KEY: i64 = 0x6861_726b_6d69_6772;

/// Applies what is missing; returns how many migrations it applied.
pub(super) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hark_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db_error)?;
    let rows = tx
        .query("SELECT version, name FROM hark_schema_migrations", &[])
        .await
        .map_err(db_error)?;
    let applied: Vec<(i32, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let mut count = 0;
    for &(version, name, sql) in MIGRATIONS {
        if let Some((_, applied_name)) = applied.iter().find(|(v, _)| *v == version) {
            if applied_name != name {
                return Err(StoreError::Schema(format!(
                    "migration {version} is recorded as {applied_name:?}, this build calls it {name:?}"
                )));
            }
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Schema(format!("migration {version} ({name}): {}", db_error(e)))
        })?;
        tx.execute(
            "INSERT INTO hark_schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(db_error)?;
        count += 1;
    }
    if let Some(newest) = applied.iter().map(|(v, _)| *v).max() {
        let known = MIGRATIONS.iter().map(|(v, _, _)| *v).max().unwrap_or(0);
        if newest > known {
            tracing::warn!(
                newest,
                known,
                "database schema is newer than this build; using it as it is"
            );
        }
    }
    tx.commit().await.map_err(db_error)?;
    if count > 0 {
        tracing::info!(applied = count, "postgres schema migrated");
    }
    Ok(())
}
