//! Metric names (design §7), their descriptions, the Prometheus exporter and the
//! runtime-lag probe.
//!
//! Components emit their own metrics through the `metrics` facade with the names
//! below; this module is the one place that installs the exporter.

use std::sync::OnceLock;
use std::time::Duration;

use hark_resilience::breaker::LAST_TRANSITION_METRIC as BREAKER_LAST_TRANSITION;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Open client sessions.
pub const SESSIONS_ACTIVE: &str = "hark_sessions_active";
/// Ended sessions by `outcome`.
pub const SESSIONS_TOTAL: &str = "hark_sessions_total";
/// Upgrades refused by `reason`.
pub const SESSION_REJECTIONS: &str = "hark_session_rejections_total";
/// Conversations handed off by `via`.
pub const CONVERSATIONS: &str = "hark_conversations_total";
/// STT result received → segment written to the client.
pub const TRANSCRIPT_LATENCY: &str = "hark_transcript_latency_seconds";
/// Scheduling delay of a 100 ms ticker.
pub const RUNTIME_LAG: &str = "hark_runtime_lag_seconds";
/// STT links re-established.
pub const STT_RECONNECTS: &str = "hark_stt_reconnects_total";
/// Audio bytes dropped because the STT link was not up.
pub const STT_DROPPED_BYTES: &str = "hark_stt_dropped_bytes_total";
/// Real pusher dials by `result`.
pub const PUSHER_CONNECT_ATTEMPTS: &str = "pusher_connect_attempts_total";
/// Sessions with a live pusher link.
pub const PUSHER_CONNECTED: &str = "pusher_sessions_connected";
/// Sessions in DEGRADED or HALF_OPEN_PROBE.
pub const PUSHER_DEGRADED: &str = "pusher_sessions_degraded";
/// Pusher-bound bytes dropped by `frame`.
pub const PUSHER_DROPPED_BYTES: &str = "pusher_dropped_bytes_total";
/// Pusher-bound frames dropped by `frame`.
pub const PUSHER_DROPPED_FRAMES: &str = "pusher_dropped_frames_total";
/// 201s carrying an error.
pub const PUSHER_ACK_ERRORS: &str = "pusher_ack_errors_total";
/// Pending fallback records.
pub const OUTBOX_RECORDS: &str = "hark_outbox_records";
/// Bytes of pending fallback records.
pub const OUTBOX_BYTES: &str = "hark_outbox_bytes";
/// The configured outbox capacity.
pub const OUTBOX_MAX_BYTES: &str = "hark_outbox_max_bytes";
/// Outbox deliveries by `result`.
pub const OUTBOX_REPLAYED: &str = "hark_outbox_replayed_total";
/// Outbox files moved to quarantine.
pub const OUTBOX_QUARANTINED: &str = "hark_outbox_quarantined_total";
/// Outbox writes that failed on a filesystem error (each logged in full).
pub const OUTBOX_WRITE_ERRORS: &str = "hark_outbox_write_errors_total";
/// Records the outbox refused because it was full (each logged in full).
pub const OUTBOX_REFUSED: &str = "hark_outbox_refused_total";
/// Records pending in the shared outbox, fleet-wide (`--database-url`).
pub const SHARED_OUTBOX_PENDING: &str = "hark_shared_outbox_pending";
/// Age of the oldest undelivered shared-outbox record, fleet-wide.
pub const SHARED_OUTBOX_OLDEST: &str = "hark_shared_outbox_oldest_seconds";
/// Shared-outbox records this pod claimed for delivery.
pub const SHARED_OUTBOX_CLAIMS: &str = "hark_shared_outbox_claims_total";
/// Refused bearer tokens by `reason` (detail of `hark_session_rejections_total{reason="auth"}`).
pub const AUTH_FAILURES: &str = "hark_auth_failures_total";
/// JWKS URL fetches by `result` (ok, not_modified, error, timeout).
pub const JWKS_FETCHES: &str = "hark_jwks_fetches_total";
/// Usable keys in the JWKS in force (file or URL).
pub const JWKS_KEYS: &str = "hark_jwks_keys";
/// Seconds since the JWKS URL's key set was last confirmed (200 or 304).
pub const JWKS_AGE: &str = "hark_jwks_age_seconds";
/// Client sessions closed, by close `code`.
pub const CLIENT_CLOSES: &str = "hark_client_closes_total";
/// Client text messages by `type` (omi's known types, `other`, `invalid`).
pub const CLIENT_MESSAGES: &str = "hark_client_messages_total";
/// Client audio frames that did not decode, by `codec`.
pub const DECODE_FAILURES: &str = "hark_audio_decode_failures_total";
/// `accept` failures on the client listener (out of file descriptors, mostly).
pub const ACCEPT_ERRORS: &str = "hark_accept_errors_total";

/// Buckets for latency histograms, in seconds (1 ms … 10 s).
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
///
/// Tests start several gateways in one process; they share this recorder.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            register_zeroes();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(SESSIONS_ACTIVE, "Open client sessions.");
    describe_counter!(SESSIONS_TOTAL, "Ended client sessions by outcome.");
    describe_counter!(SESSION_REJECTIONS, "Upgrades refused by reason.");
    describe_counter!(CONVERSATIONS, "Conversations handed off, via pusher or fallback.");
    describe_histogram!(
        TRANSCRIPT_LATENCY,
        Unit::Seconds,
        "STT result received to segment written to the client."
    );
    describe_histogram!(RUNTIME_LAG, Unit::Seconds, "Scheduling delay of a 100 ms ticker.");
    describe_counter!(STT_RECONNECTS, "STT links re-established.");
    describe_counter!(
        STT_DROPPED_BYTES,
        "Audio bytes dropped while the STT link was down or behind."
    );
    describe_counter!(PUSHER_CONNECT_ATTEMPTS, "Real pusher dials by result.");
    describe_gauge!(PUSHER_CONNECTED, "Sessions with a live pusher link.");
    describe_gauge!(PUSHER_DEGRADED, "Sessions in DEGRADED or HALF_OPEN_PROBE.");
    describe_counter!(PUSHER_DROPPED_BYTES, "Pusher-bound bytes dropped while degraded.");
    describe_counter!(PUSHER_DROPPED_FRAMES, "Pusher-bound frames dropped while degraded.");
    describe_counter!(PUSHER_ACK_ERRORS, "201 acknowledgements carrying an error.");
    describe_gauge!(OUTBOX_RECORDS, "Pending fallback records.");
    describe_gauge!(OUTBOX_BYTES, "Bytes of pending fallback records.");
    describe_gauge!(OUTBOX_MAX_BYTES, "Configured outbox capacity in bytes.");
    describe_gauge!(SHARED_OUTBOX_PENDING, "Records pending in the shared outbox, fleet-wide.");
    describe_gauge!(
        SHARED_OUTBOX_OLDEST,
        Unit::Seconds,
        "Age of the oldest undelivered shared-outbox record, fleet-wide."
    );
    describe_counter!(SHARED_OUTBOX_CLAIMS, "Shared-outbox records this pod claimed.");
    describe_gauge!(
        hark_store::metrics::CONVERSATIONS_PARKED,
        "Open conversations waiting for their user to reconnect."
    );
    describe_counter!(
        hark_store::metrics::CONVERSATIONS_RESUMED,
        "Conversations resumed by a later session."
    );
    describe_counter!(OUTBOX_REPLAYED, "Outbox deliveries by result.");
    describe_counter!(OUTBOX_QUARANTINED, "Corrupt outbox files moved to quarantine.");
    describe_counter!(OUTBOX_WRITE_ERRORS, "Outbox writes that failed on a filesystem error.");
    describe_counter!(OUTBOX_REFUSED, "Records refused because the outbox was full.");
    describe_counter!(AUTH_FAILURES, "Refused bearer tokens by reason.");
    describe_counter!(JWKS_FETCHES, "JWKS URL fetches by result.");
    describe_gauge!(JWKS_KEYS, "Usable keys in the JWKS in force.");
    describe_gauge!(
        JWKS_AGE,
        Unit::Seconds,
        "Seconds since the JWKS URL's key set was last confirmed by a fetch."
    );
    describe_counter!(CLIENT_CLOSES, "Client sessions closed by hark, by close code.");
    describe_counter!(DECODE_FAILURES, "Client audio frames that did not decode, by codec.");
    describe_counter!(
        CLIENT_MESSAGES,
        "Client text messages accepted and ignored, by type (omi's types, other, invalid)."
    );
    describe_counter!(ACCEPT_ERRORS, "Failed accepts on the client listener (e.g. out of fds).");
    describe_gauge!(
        BREAKER_LAST_TRANSITION,
        Unit::Seconds,
        "Unix time of the pusher breaker's latest transition into each state (0: never)."
    );
}

/// Registers every contract series with its known labels at zero, so a fresh
/// process exports all of them: "0 rejections" answers a question, a missing
/// series does not, and rate() over a series that appears late loses its first step.
fn register_zeroes() {
    metrics::gauge!(SHARED_OUTBOX_PENDING).set(0.0);
    metrics::gauge!(SHARED_OUTBOX_OLDEST).set(0.0);
    metrics::counter!(SHARED_OUTBOX_CLAIMS).absolute(0);
    metrics::gauge!(hark_store::metrics::CONVERSATIONS_PARKED).set(0.0);
    metrics::counter!(hark_store::metrics::CONVERSATIONS_RESUMED).absolute(0);
    for reason in ["quota", "max_sessions_per_user"] {
        metrics::counter!(hark_store::metrics::QUOTA_REJECTIONS, "reason" => reason).absolute(0);
    }
    for outcome in [
        "client_closed",
        "client_gone",
        "inactivity",
        "frame_too_big",
        "bad_text",
        "text_too_big",
        "protocol_error",
        "flood",
        "slow_consumer",
        "stt_unavailable",
        "drained",
        "quota_exceeded",
        "undecodable",
        "error",
    ] {
        metrics::counter!(SESSIONS_TOTAL, "outcome" => outcome).absolute(0);
    }
    for reason in ["auth", "capacity", "user_limit", "bad_request", "draining", "rate_limit"] {
        metrics::counter!(SESSION_REJECTIONS, "reason" => reason).absolute(0);
    }
    for result in ["ok", "not_modified", "error", "timeout"] {
        metrics::counter!(JWKS_FETCHES, "result" => result).absolute(0);
    }
    for codec in hark_proto::Codec::ALL {
        metrics::counter!(DECODE_FAILURES, "codec" => codec.as_str()).absolute(0);
    }
    let message_types = hark_proto::client::KNOWN_CLIENT_TYPES.iter().copied();
    for kind in message_types.chain(["other", "invalid"]) {
        metrics::counter!(CLIENT_MESSAGES, "type" => kind).absolute(0);
    }
    for via in ["pusher", "fallback"] {
        metrics::counter!(CONVERSATIONS, "via" => via).absolute(0);
    }
    for result in ["ok", "refused", "timeout", "http_429", "http_503", "error"] {
        metrics::counter!(PUSHER_CONNECT_ATTEMPTS, "result" => result).absolute(0);
    }
    for frame in ["101", "102"] {
        metrics::counter!(PUSHER_DROPPED_BYTES, "frame" => frame).absolute(0);
        metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => frame).absolute(0);
    }
    for result in ["ok", "error", "rejected"] {
        metrics::counter!(OUTBOX_REPLAYED, "result" => result).absolute(0);
    }
    for to in ["open", "half_open", "closed"] {
        metrics::counter!("pusher_circuit_breaker_transitions_total", "to" => to).absolute(0);
        // Registers at 0 ("never") without overwriting a transition already stamped.
        metrics::gauge!(BREAKER_LAST_TRANSITION, "to" => to).increment(0.0);
    }
    for counter in [
        STT_RECONNECTS,
        STT_DROPPED_BYTES,
        PUSHER_ACK_ERRORS,
        OUTBOX_QUARANTINED,
        OUTBOX_REFUSED,
        OUTBOX_WRITE_ERRORS,
        ACCEPT_ERRORS,
        "pusher_circuit_breaker_rejections_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for gauge in [PUSHER_CONNECTED, PUSHER_DEGRADED, OUTBOX_RECORDS, OUTBOX_BYTES, JWKS_KEYS] {
        metrics::gauge!(gauge).increment(0.0);
    }
    metrics::gauge!("pusher_circuit_breaker_state").set(0.0);
    // Histograms render once they have a sample; an empty histogram is
    // registered by touching it without recording.
    let _ = metrics::histogram!(TRANSCRIPT_LATENCY);
    let _ = metrics::histogram!(RUNTIME_LAG);
}

/// Measures event-loop health: how late a 100 ms ticker fires.
pub async fn runtime_lag_probe(shutdown: CancellationToken) {
    const PERIOD: Duration = Duration::from_millis(100);
    let mut next = tokio::time::Instant::now() + PERIOD;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let lag = tokio::time::Instant::now().saturating_duration_since(next);
        metrics::histogram!(RUNTIME_LAG).record(lag.as_secs_f64());
        next += PERIOD;
        // After a long stall, measure from now rather than firing a burst.
        let now = tokio::time::Instant::now();
        if next < now {
            next = now + PERIOD;
        }
    }
}
