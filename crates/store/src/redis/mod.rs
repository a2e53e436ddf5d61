//! The Redis implementation of the fleet-wide session cap and the audio quota
//! (`--redis-url`).
//!
//! **Keys.** Every key of a user carries the user as a hash tag, so all of them
//! live in one cluster slot and one script may touch several:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `hark:{<uid>}:sessions` | sorted set | session id → lease expiry (ms, Redis clock); expires with its longest lease |
//! | `hark:{<uid>}:quota:<window start, s>` | hash | `used`, `leased`: ms of audio; expires at window end + 1 h |
//!
//! `%`, `{` and `}` in a uid are percent-encoded in keys, so the tag always ends
//! at the first `}` and two uids never share a key.
//!
//! **Scripts.** Every multi-step update is one Lua script (`session_acquire`,
//! `session_refresh`, `quota_lease`, `quota_commit` beside this file), run with
//! `EVALSHA` through the crate's [`Script`], which loads it with `SCRIPT LOAD`
//! and retries when the server answers `NOSCRIPT` (a restarted or failed-over
//! Redis has no scripts). Times that decide leases are Redis's `TIME`. Releasing
//! a session is one `ZREM`.
//!
//! **Connection.** One multiplexed connection per process (the crate's
//! connection manager), made lazily on the first call and re-made in the
//! background after an I/O error, so a pod starts and serves while Redis is down.
//! `rediss://` (TLS) is not built in yet; a single node (or a proxy) for now:
//! the keys are already cluster-ready.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};
use async_trait::async_trait;

use crate::budget::{Budget, BudgetConfig, StoreKind};
use crate::clock::{millis, WallClock};
use crate::error::StoreError;
use crate::fair::{
    ms_to_secs, secs_to_ms, LeaseGrant, QuotaStore, SessionCap, SessionGrant, SessionRefresh,
    Settle,
};
use crate::quota::Window;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (`--redis-url`).
    pub url: String,
    /// Timeout and breaker.
    pub budget: BudgetConfig,
    /// The pod's wall clock (for `Retry-After` to a window's end).
    pub clock: WallClock,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), budget: BudgetConfig::redis(), clock: WallClock::system() }
    }
}

/// The scripts, hashed once.
struct Scripts {
    session_acquire: Script,
    session_refresh: Script,
    quota_lease: Script,
    quota_commit: Script,
}

/// The Redis store. Cheap to clone; one per process.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The multiplexed connection (cloned per call).
    conn: ConnectionManager,
    /// Timeout, breaker, metrics.
    budget: Budget,
    /// Wall time.
    clock: WallClock,
    /// The Lua scripts.
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("budget", &self.inner.budget).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Builds the store without any I/O (the connection is made on the first call).
    ///
    /// # Errors
    /// [`StoreError::Config`] when the URL does not parse.
    pub fn new(config: RedisConfig) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(config.url.as_str())
            .map_err(|e| StoreError::Config(format!("--redis-url: {e}")))?;
        let timeout = config.budget.timeout;
        // Reconnects are the manager's (in the background, after an I/O error);
        // a call never waits longer than its budget for one.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| StoreError::Config(format!("--redis-url: {e}")))?;
        let scripts = Scripts {
            session_acquire: Script::new(include_str!("session_acquire.lua")),
            session_refresh: Script::new(include_str!("session_refresh.lua")),
            quota_lease: Script::new(include_str!("quota_lease.lua")),
            quota_commit: Script::new(include_str!("quota_commit.lua")),
        };
        let budget = Budget::new(StoreKind::Redis, config.budget);
        Ok(Self { inner: Arc::new(Inner { conn, budget, clock: config.clock, scripts }) })
    }

    /// The store's budget (its breaker state and `hark_store_up`).
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// One `PING` under the budget (a start-up check; sessions never need it).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        self.inner
            .budget
            .call("ping", async move {
                ::redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(redis_error)?;
                Ok(())
            })
            .await
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

/// The hash-tag form of a uid: `%`, `{` and `}` percent-encoded.
fn tag(uid: &str) -> String {
    let mut out = String::with_capacity(uid.len());
    for c in uid.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// `hark:{<uid>}:sessions`.
pub fn sessions_key(uid: &str) -> String {
    format!("hark:{{{}}}:sessions", tag(uid))
}

/// `hark:{<uid>}:quota:<window start in seconds>`.
pub fn quota_key(uid: &str, window: Window) -> String {
    format!("hark:{{{}}}:quota:{}", tag(uid), window.start_secs())
}

fn redis_error(error: RedisError) -> StoreError {
    use ::redis::ErrorKind;
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Data(error.to_string()),
        _ => StoreError::Unavailable { store: "redis", message: error.to_string() },
    }
}

fn clamp_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn expiry(window: Window) -> i64 {
    i64::try_from(window.expires_at_ms()).unwrap_or(i64::MAX)
}

fn lease_grant(reply: (i64, i64), window: Window, now_ms: u64) -> LeaseGrant {
    let (granted, remaining) = reply;
    if granted > 0 {
        LeaseGrant::Granted {
            seconds: ms_to_secs(granted),
            remaining: ms_to_secs(remaining.max(0)),
        }
    } else {
        LeaseGrant::Exhausted { retry_after: window.retry_after(now_ms) }
    }
}

#[async_trait]
impl SessionCap for RedisStore {
    async fn acquire_session(
        &self,
        uid: &str,
        session_id: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<SessionGrant, StoreError> {
        let mut conn = self.conn();
        let key = sessions_key(uid);
        self.inner
            .budget
            .call("session_acquire", async move {
                let (granted, open, wait): (i64, i64, i64) = self
                    .inner
                    .scripts
                    .session_acquire
                    .key(&key)
                    .arg(session_id)
                    .arg(max)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                let open = clamp_u32(open);
                Ok(if granted == 1 {
                    SessionGrant::Granted { open }
                } else {
                    let retry_after =
                        Duration::from_millis(u64::try_from(wait.max(0)).unwrap_or(0));
                    SessionGrant::AtCap { retry_after, open }
                })
            })
            .await
    }

    async fn refresh_session(
        &self,
        uid: &str,
        session_id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = sessions_key(uid);
        self.inner
            .budget
            .call("session_refresh", async move {
                let held: i64 = self
                    .inner
                    .scripts
                    .session_refresh
                    .key(&key)
                    .arg(session_id)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                Ok(held == 1)
            })
            .await
    }

    async fn release_session(&self, uid: &str, session_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = sessions_key(uid);
        self.inner
            .budget
            .call("session_release", async move {
                ::redis::cmd("ZREM")
                    .arg(&key)
                    .arg(session_id)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(redis_error)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl QuotaStore for RedisStore {
    async fn lease(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        chunk: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        self.renew_as("quota_lease", uid, window, limit, Settle::default(), chunk, None).await
    }

    async fn renew(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        settle: Settle,
        chunk: Duration,
        session: Option<SessionRefresh<'_>>,
    ) -> Result<LeaseGrant, StoreError> {
        self.renew_as("quota_renew", uid, window, limit, settle, chunk, session).await
    }

    async fn commit(&self, uid: &str, window: Window, settle: Settle) -> Result<f64, StoreError> {
        let mut conn = self.conn();
        let key = quota_key(uid, window);
        self.inner
            .budget
            .call("quota_commit", async move {
                let refund: i64 = self
                    .inner
                    .scripts
                    .quota_commit
                    .key(&key)
                    .arg(secs_to_ms(settle.used))
                    .arg(secs_to_ms(settle.release))
                    .arg(expiry(window))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                Ok(ms_to_secs(refund.max(0)))
            })
            .await
    }
}

impl RedisStore {
    /// Lease and renewal are one script: a lease settles nothing.
    #[allow(clippy::too_many_arguments)]
    async fn renew_as(
        &self,
        op: &'static str,
        uid: &str,
        window: Window,
        limit: Duration,
        settle: Settle,
        chunk: Duration,
        session: Option<SessionRefresh<'_>>,
    ) -> Result<LeaseGrant, StoreError> {
        let mut conn = self.conn();
        let quota = quota_key(uid, window);
        let sessions = session.map(|_| sessions_key(uid));
        let clock = self.inner.clock;
        self.inner
            .budget
            .call(op, async move {
                let script = &self.inner.scripts.quota_lease;
                let mut invocation = script.key(&quota);
                if let Some(sessions) = &sessions {
                    invocation.key(sessions);
                }
                invocation
                    .arg(millis(limit))
                    .arg(millis(chunk))
                    .arg(expiry(window))
                    .arg(secs_to_ms(settle.used))
                    .arg(secs_to_ms(settle.release));
                if let Some(refresh) = session {
                    invocation.arg(refresh.session_id).arg(millis(refresh.ttl));
                }
                let reply: (i64, i64) =
                    invocation.invoke_async(&mut conn).await.map_err(redis_error)?;
                Ok(lease_grant(reply, window, clock.now_ms()))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_uid_as_a_hash_tag() {
        let window = Window { start_ms: 1_700_006_400_000, end_ms: 1_700_092_800_000 };
        assert_eq!(sessions_key("u1"), "hark:{u1}:sessions");
        assert_eq!(quota_key("u1", window), "hark:{u1}:quota:1700006400");
    }

    #[test]
    fn braces_in_a_uid_cannot_break_the_tag() {
        assert_eq!(sessions_key("a}b{c%"), "hark:{a%7Db%7Bc%25}:sessions");
        assert_ne!(sessions_key("a}"), sessions_key("a%7D"));
    }
}
