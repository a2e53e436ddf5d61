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

/// The `op` labels of Postgres calls.
pub const POSTGRES_OPS: &[&str] = &[
    "migrate",
    "outbox_insert",
    "outbox_claim",
    "outbox_delivered",
    "outbox_release",
    "outbox_stats",
    "outbox_prune",
    "park",
    "resume",
    "claim_expired",
    "count_parked",
];

/// The `op` labels of Redis calls.
pub const REDIS_OPS: &[&str] = &[
    "ping",
    "session_acquire",
    "session_refresh",
    "session_release",
    "quota_lease",
    "quota_renew",
    "quota_commit",
];

/// The `result` labels of `hark_store_calls_total`.
pub const RESULTS: &[&str] = &["ok", "error", "timeout", "rejected"];

/// Registers every `hark_store_*` series of `store` at zero (and
/// `hark_store_up{store}` at 0), so dashboards see 0 rather than a gap before the
/// first call. Call once per configured store at start.
pub fn register(store: crate::budget::StoreKind) {
    let ops = match store {
        crate::budget::StoreKind::Postgres => POSTGRES_OPS,
        crate::budget::StoreKind::Redis => REDIS_OPS,
    };
    let label = store.as_str();
    metrics::gauge!(STORE_UP, "store" => label).set(0.0);
    for op in ops {
        for result in RESULTS {
            metrics::counter!(STORE_CALLS, "store" => label, "op" => *op, "result" => *result)
                .absolute(0);
        }
    }
}
