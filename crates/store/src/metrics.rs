//! Names of the metrics this crate emits (design.md §7); the exporter is the binary's.

/// Gauge `{store}`: 1 while the store answers, 0 while Hark runs on local state.
pub const STORE_UP: &str = "hark_store_up";
/// Counter `{store,op,result}`: calls to the shared stores; result is `ok`,
/// `error`, `timeout` or `rejected` (breaker open, not attempted).
pub const STORE_CALLS: &str = "hark_store_calls_total";
/// Gauge: open conversations waiting for their user to reconnect (set by
/// `count_parked`).
pub const CONVERSATIONS_PARKED: &str = "hark_conversations_parked";
/// Counter: conversations resumed by a later session (counted by `resume`).
pub const CONVERSATIONS_RESUMED: &str = "hark_conversations_resumed_total";
/// Counter `{reason}`: upgrades or sessions stopped by quota or the fleet-wide
/// cap. Counted by the gateway, which decides to refuse; named here for it.
pub const QUOTA_REJECTIONS: &str = "hark_quota_rejections_total";
