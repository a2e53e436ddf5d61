//! The Postgres implementation of the shared outbox and the parking lot
//! (`--database-url`).
//!
//! Connections come from a small bounded pool (deadpool-postgres; at most
//! [`PgConfig::pool_size`] per process). Every call runs under the store's
//! [`Budget`]; the schema is brought up to date by the first call that reaches
//! the server (or [`PgStore::ensure_schema`] at start), so a pod that starts while
//! Postgres is down serves on local state and migrates once it is back.
//!
//! **TLS.** `sslmode` in the URL decides, as tokio-postgres reads it: `disable`
//! never uses TLS; `prefer` (the default) uses TLS when the server offers it and
//! plain TCP otherwise; `require` refuses a server without TLS. When TLS is used,
//! rustls verifies the server's certificate chain against the Mozilla root set and
//! its host name — stricter than libpq's `require`, which checks nothing; a
//! server with a private CA needs `sslmode=disable` on a trusted network for now.
//!
//! Times that decide leases and deadlines are the server's `now()`, so the pods'
//! clocks never have to agree; durations cross the wire as whole milliseconds.

mod migrate;
mod outbox;
mod parking;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::config::SslMode;

pub use self::migrate::{MIGRATIONS, MIGRATION_LOCK_KEY};
use crate::budget::{Budget, BudgetConfig, StoreKind};
use crate::clock::WallClock;
use crate::error::StoreError;

/// How to reach Postgres.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/db?sslmode=…` (`--database-url`).
    pub url: String,
    /// Most connections this process holds (default 4: the store is called at
    /// session boundaries and by one drainer, never per frame).
    pub pool_size: usize,
    /// Timeout and breaker.
    pub budget: BudgetConfig,
    /// The pod's wall clock (used only to turn a parked conversation's deadline
    /// into a duration; follows tokio's clock in tests).
    pub clock: WallClock,
}

impl PgConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 4,
            budget: BudgetConfig::postgres(),
            clock: WallClock::system(),
        }
    }
}

/// The Postgres store. Cheap to clone; one per process.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection pool.
    pool: Pool,
    /// Timeout, breaker, metrics.
    budget: Budget,
    /// Set once the schema is up to date.
    schema: OnceCell<()>,
    /// The pod's wall clock.
    clock: WallClock,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("budget", &self.inner.budget)
            .field("schema_ready", &self.inner.schema.initialized())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Builds the store without any I/O: parses the URL, sets up the pool.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the URL does not parse or the pool cannot be built.
    pub fn new(config: PgConfig) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|e| StoreError::Config(format!("--database-url: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.budget.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("hark");
        }
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = if pg.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        } else {
            Manager::from_config(pg, tls()?, manager_config)
        };
        let timeout = Some(config.budget.timeout);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Config(format!("postgres pool: {e}")))?;
        let budget = Budget::new(StoreKind::Postgres, config.budget);
        let inner = Inner { pool, budget, schema: OnceCell::new(), clock: config.clock };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// [`new`](Self::new), then [`ensure_schema`](Self::ensure_schema).
    ///
    /// # Errors
    /// A bad URL, or Postgres unreachable or refusing the migration. A caller
    /// that wants to start anyway keeps the store from `new` instead.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        let store = Self::new(config)?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Applies the migrations under `crates/store/migrations/` that the database
    /// lacks (idempotent, safe when several pods start at once: see [`MIGRATIONS`]).
    ///
    /// # Errors
    /// Postgres unreachable or a migration failed.
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.call("migrate", |_| async { Ok(()) }).await
    }

    /// The store's budget (its breaker state and `hark_store_up`).
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Runs `op` with a pooled connection on an up-to-date schema, under the budget.
    async fn call<T, F, Fut>(&self, name: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.inner
            .budget
            .call(name, async {
                let mut client = self.inner.pool.get().await.map_err(pool_error)?;
                self.inner
                    .schema
                    .get_or_try_init(|| async { migrate::migrate(&mut client).await })
                    .await?;
                op(client).await
            })
            .await
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }
}

/// rustls with the Mozilla roots, on the ring provider the workspace uses.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("postgres TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A driver error: the server or the connection failed the statement.
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    StoreError::Unavailable { store: "postgres", message }
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => db_error(error),
        other => StoreError::Unavailable { store: "postgres", message: other.to_string() },
    }
}

/// A duration as whole milliseconds for `$n::bigint * interval '1 millisecond'`.
pub(crate) fn interval_ms(duration: Duration) -> i64 {
    crate::clock::millis(duration)
}

/// A row limit as the `bigint` LIMIT wants.
pub(crate) fn limit(limit: u32) -> i64 {
    i64::from(limit)
}
