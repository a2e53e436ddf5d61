//! The one error type every store call returns, saying whether the store is
//! unreachable (fall back to local state) or answered with something unusable.

use std::time::Duration;

/// Why a store call did not give its answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's breaker is open: the call was not attempted (it cost nothing).
    #[error("{store} is treated as down (breaker open); {op} not attempted")]
    Rejected {
        /// `postgres` or `redis`.
        store: &'static str,
        /// The operation refused.
        op: &'static str,
    },
    /// No answer within the call's budget. The call may still have taken effect.
    #[error("{store} {op}: no answer within {timeout:?}")]
    Timeout {
        /// `postgres` or `redis`.
        store: &'static str,
        /// The operation.
        op: &'static str,
        /// The budget it had.
        timeout: Duration,
    },
    /// The store could not be reached or failed the statement (connection refused
    /// or reset, server shutting down, a statement error).
    #[error("{store} unavailable: {message}")]
    Unavailable {
        /// `postgres` or `redis`.
        store: &'static str,
        /// What the client library said.
        message: String,
    },
    /// The store answered, but what it holds does not decode (a row written by an
    /// incompatible version, an unexpected script reply).
    #[error("stored data is invalid: {0}")]
    Data(String),
    /// An in-memory twin is at its capacity.
    #[error("{what} is full ({capacity} entries)")]
    Full {
        /// Which table.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// The schema could not be brought up to date (see `pg::migrate`).
    #[error("schema: {0}")]
    Schema(String),
    /// A store URL or setting that cannot work (found before any I/O).
    #[error("store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether this says the store is unreachable (counted by the store's breaker)
    /// rather than that it answered with something unusable.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Rejected { .. } | Self::Timeout { .. } | Self::Unavailable { .. })
    }

    /// Whether trying again later can help. Everything but bad data and bad
    /// configuration can.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Data(_) | Self::Config(_))
    }

    /// The `result` label of `hark_store_calls_total` for this error.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::Rejected { .. } => "rejected",
            Self::Timeout { .. } => "timeout",
            Self::Unavailable { .. }
            | Self::Data(_)
            | Self::Full { .. }
            | Self::Schema(_)
            | Self::Config(_) => "error",
        }
    }
}
