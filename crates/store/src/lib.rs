//! Hark's shared engines (design.md §6a): what makes the fallback path, open
//! conversations and fair use fleet-wide, and never sits on the hot path.
//!
//! A session talks to these stores at its start, about once a minute while it
//! runs, and at its end — never per audio frame or per transcript. Every call runs
//! under a [`budget::Budget`] (a timeout, a small breaker, the `hark_store_*`
//! metrics); when a store is down the caller falls back to local state.
//!
//! - [`outbox`] — [`SharedOutbox`]: fallback records keyed by conversation id,
//!   claimed with a lease by any pod's drainer, kept as tombstones once delivered.
//! - [`parking`] — [`ParkingLot`]: open conversations parked by a session that
//!   ended early, resumed by the user's next session, or finished into the outbox.
//! - [`fair`] — [`SessionCap`] and [`QuotaStore`]: the fleet-wide per-user session
//!   cap and audio quota.
//! - [`quota`] — pure accounting: windows, the per-session meter, local budgets
//!   while Redis is down, and the driver a session owns.
//! - [`pg`] — Postgres implementation of the outbox and the parking lot.
//! - [`redis`] — Redis implementation of the cap and the quota (one Lua script
//!   per multi-step update, every key of a user in one cluster slot).
//! - [`memory`] — the in-memory twin of both, with the same semantics.
//! - `testing` (feature `testing`) — real Postgres and Redis servers for tests.

pub mod budget;
pub mod clock;
pub mod error;
pub mod fair;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod parking;
pub mod pg;
pub mod quota;
pub mod redis;
#[cfg(feature = "testing")]
pub mod testing;

pub use budget::{Budget, BudgetConfig, StoreKind};
pub use clock::WallClock;
pub use error::StoreError;
pub use fair::{LeaseGrant, QuotaStore, SessionCap, SessionGrant, SessionRefresh, Settle};
pub use memory::{ExpiredParking, MemoryStore};
pub use outbox::{Claimed, Inserted, OutboxStats, SharedOutbox};
pub use parking::{ParkedConversation, ParkingLot};
pub use pg::{PgConfig, PgStore};
pub use redis::{RedisConfig, RedisStore};
