//! Typed, validated configuration of the gateway.
//!
//! The `hark` binary parses flags and environment into this once, before any socket
//! is bound; nothing below it ever sees a string where a type belongs.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// Where transcripts come from.
#[derive(Clone, Debug)]
pub enum SttConfig {
    /// A Deepgram-compatible streaming endpoint.
    Deepgram {
        /// `wss://api.deepgram.com/v1/listen` or a compatible server.
        url: String,
        /// Sent as `Authorization: Token <key>`.
        api_key: Option<String>,
        /// The `model` query parameter.
        model: String,
        /// The link's reconnect budget.
        reconnect: SttReconnect,
    },
    /// The embedded engine (crate `hark-stt-local`).
    Local {
        /// Decoder threads, one per concurrent session.
        decoders: NonZeroUsize,
        /// Acoustic model directory; `None` = the packaged en-us model.
        model_dir: Option<PathBuf>,
    },
}

/// The STT link's reconnect budget: after this many failed connects (or streams that
/// died young) in a row, the session is closed 1013.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SttReconnect {
    /// Failed attempts in a row before the link gives up.
    pub max_attempts: u32,
    /// First backoff ceiling (full jitter below it).
    pub base: Duration,
    /// Largest backoff ceiling.
    pub max: Duration,
}

impl Default for SttReconnect {
    fn default() -> Self {
        Self { max_attempts: 8, base: Duration::from_millis(250), max: Duration::from_secs(5) }
    }
}

/// Timing and limits of the pusher link and its breaker (design §6).
#[derive(Clone, Debug)]
pub struct PusherConfig {
    /// Base URL, e.g. `ws://pusher:8080`; `/v1/trigger/listen` is appended.
    pub url: String,
    /// Failures in `breaker_window` that open the breaker.
    pub breaker_failure_threshold: NonZeroU32,
    /// Sliding window for counting failures.
    pub breaker_window: Duration,
    /// How long the breaker stays open before its single probe.
    pub breaker_cooldown: Duration,
    /// Upper bound on an honoured `Retry-After`.
    pub retry_after_max: Duration,
    /// Dials per outage before a session goes degraded.
    pub reconnect_max_attempts: u32,
    /// First backoff ceiling.
    pub reconnect_base: Duration,
    /// Largest backoff ceiling.
    pub reconnect_max: Duration,
    /// How often a degraded session tries once more.
    pub degraded_probe_interval: Duration,
    /// Pod-wide reconnects per second after the breaker closes.
    pub recovery_rate: NonZeroU32,
    /// Bound on TCP connect + WebSocket handshake.
    pub connect_timeout: Duration,
    /// WebSocket ping period on a live link.
    pub ping_interval: Duration,
    /// A link with no pong (or any frame) for this long is dead.
    pub ping_timeout: Duration,
    /// 100-frame period on a live link.
    pub heartbeat_interval: Duration,
}

/// The fallback path's outbox (design §6).
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Directory holding one file per pending record.
    pub dir: PathBuf,
    /// Size at which new records are refused (alerted, logged, never silently dropped).
    pub max_bytes: u64,
    /// Deliver records by HTTP POST here instead of replaying them to pusher.
    pub fallback_url: Option<String>,
    /// Records replayed per second at most.
    pub replay_rate: NonZeroU32,
    /// How long a pod's claim on a shared-outbox record lasts (`--database-url`):
    /// a crashed claimer's records come back to the fleet after it.
    pub claim_lease: Duration,
}

/// Admission and input limits (design §3, §7).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open sessions per process.
    pub max_sessions: NonZeroUsize,
    /// Open sessions per user.
    pub max_sessions_per_user: NonZeroUsize,
    /// Largest binary frame from a client.
    pub max_frame_bytes: NonZeroUsize,
    /// Segments a conversation keeps before it is split.
    pub max_conversation_segments: NonZeroUsize,
    /// A client silent this long is closed with 1001.
    pub inactivity_timeout: Duration,
    /// Messages queued to a client before it counts as a slow consumer (1008).
    pub client_queue: NonZeroUsize,
    /// Largest text frame from a client (1009 above it).
    pub max_text_bytes: NonZeroUsize,
    /// Bound on reading the HTTP upgrade request and completing the handshake.
    pub handshake_timeout: Duration,
    /// Upgrades per second from one client IP (burst twice that); `None` = off.
    pub upgrade_rate_per_ip: Option<NonZeroU32>,
    /// Frames per second one client may send (burst twice that); a flood closes 1008.
    pub max_frames_per_second: NonZeroU32,
    /// Audio frames in a row that do not decode before the session closes 1003.
    pub max_decode_failures: NonZeroU32,
}

/// How clients prove who they are.
// Built once per process; boxing the JWT variant would only make it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// `uid` from the query; for local use.
    None,
    /// `Authorization: Bearer <JWT>`; the uid is the `sub` claim.
    Jwt(crate::auth::JwtConfig),
}

/// Everything the gateway needs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`, `/ready`).
    pub admin_listen: SocketAddr,
    /// The STT backend.
    pub stt: SttConfig,
    /// Pusher, when configured; `None` sends every conversation down the fallback path.
    pub pusher: Option<PusherConfig>,
    /// The outbox.
    pub outbox: OutboxConfig,
    /// Limits.
    pub limits: Limits,
    /// Authentication.
    pub auth: AuthConfig,
    /// Time given to live sessions on SIGTERM before the process exits.
    pub drain_timeout: Duration,
    /// `--database-url`: Postgres for the shared outbox and parked conversations;
    /// `None` keeps both in this process (and the outbox on its disk).
    pub database_url: Option<String>,
    /// Fair use: the fleet-wide cap and quotas (design §6a).
    pub fair_use: FairUseConfig,
}

/// Fleet-wide per-user limits (`--redis-url`, `--quota-*`).
#[derive(Clone, Debug, Default)]
pub struct FairUseConfig {
    /// `--redis-url`; `None`: per-process limits only (and local quota budgets).
    pub redis_url: Option<String>,
    /// `--quota-window`: windows aligned to multiples of it since the epoch (UTC).
    pub window: Duration,
    /// `--quota-plan NAME=DURATION|unlimited`; empty: no quota.
    pub plans: Vec<(String, crate::fairuse::Allowance)>,
    /// `--default-plan`.
    pub default_plan: String,
    /// `--quota-lease`: seconds of audio a session leases at a time.
    pub lease: Duration,
}

impl GatewayConfig {
    /// A configuration for tests and examples: loopback, port 0, the given STT URL,
    /// outbox in `outbox_dir`, fast timings.
    pub fn for_tests(stt_url: &str, pusher_url: Option<&str>, outbox_dir: PathBuf) -> Self {
        let nz = |n: u32| NonZeroU32::new(n).expect("non-zero");
        let nzu = |n: usize| NonZeroUsize::new(n).expect("non-zero");
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            stt: SttConfig::Deepgram {
                url: stt_url.to_owned(),
                api_key: Some("test-key".to_owned()),
                model: "nova-3".to_owned(),
                reconnect: SttReconnect::default(),
            },
            pusher: pusher_url.map(|url| PusherConfig {
                url: url.to_owned(),
                breaker_failure_threshold: nz(20),
                breaker_window: Duration::from_secs(30),
                breaker_cooldown: Duration::from_secs(60),
                retry_after_max: Duration::from_secs(300),
                reconnect_max_attempts: 6,
                reconnect_base: Duration::from_secs(1),
                reconnect_max: Duration::from_secs(60),
                degraded_probe_interval: Duration::from_secs(60),
                recovery_rate: nz(50),
                connect_timeout: Duration::from_secs(3),
                ping_interval: Duration::from_secs(10),
                ping_timeout: Duration::from_secs(20),
                heartbeat_interval: Duration::from_secs(20),
            }),
            outbox: OutboxConfig {
                dir: outbox_dir,
                max_bytes: 1 << 30,
                fallback_url: None,
                replay_rate: nz(20),
                claim_lease: Duration::from_secs(60),
            },
            limits: Limits {
                max_sessions: nzu(10_000),
                max_sessions_per_user: nzu(10_000),
                max_frame_bytes: nzu(64 * 1024),
                max_conversation_segments: nzu(10_000),
                inactivity_timeout: Duration::from_secs(90),
                client_queue: nzu(512),
                max_text_bytes: nzu(64 * 1024),
                handshake_timeout: Duration::from_secs(10),
                upgrade_rate_per_ip: None,
                max_frames_per_second: nz(200),
                max_decode_failures: nz(50),
            },
            auth: AuthConfig::None,
            drain_timeout: Duration::from_secs(30),
            database_url: None,
            fair_use: FairUseConfig {
                window: Duration::from_secs(86_400),
                default_plan: "free".into(),
                lease: Duration::from_secs(30),
                ..FairUseConfig::default()
            },
        }
    }
}
