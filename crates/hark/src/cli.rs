//! The command line (design §8): every flag also reads `HARK_<FLAG>` from the
//! environment, durations are human-readable, and everything is validated into a
//! [`GatewayConfig`] before any socket is bound.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hark_gateway::auth::JwtConfig;
use hark_gateway::config::{
    AuthConfig, FairUseConfig, GatewayConfig, Limits, OutboxConfig, PusherConfig, SttConfig,
    SttReconnect,
};
use hark_gateway::fairuse::Allowance;

/// Hark: a real-time WebSocket transcription relay.
///
/// App clients stream PCM audio to /v4/listen; Hark streams it to a speech-to-text
/// provider and sends the transcript back live, while feeding finished
/// conversations to pusher. When pusher is down, transcripts keep flowing and
/// conversations go to a durable outbox.
///
/// Every flag can also be set with an environment variable HARK_<FLAG> (for
/// example HARK_PUSHER_URL). Durations take units: 250ms, 3s, 2m, 1h.
#[derive(Debug, Parser)]
#[command(name = "hark", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Whether `--stt-url` came from the command line or the environment (not its
    /// default): it selects the Deepgram-compatible engine. Set by [`Cli::parse_args`].
    #[arg(skip)]
    pub stt_url_given: bool,

    /// Address for app clients (WebSocket /v4/listen).
    #[arg(long, env = "HARK_LISTEN", default_value = "127.0.0.1:8080", help_heading = "Listeners")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /ready.
    #[arg(
        long,
        env = "HARK_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090",
        help_heading = "Listeners"
    )]
    pub admin_listen: SocketAddr,

    /// Speech-to-text engine. Default: deepgram when --stt-url or an API key is
    /// given, otherwise the embedded local engine.
    #[arg(long, env = "HARK_STT", value_enum, help_heading = "Speech to text")]
    pub stt: Option<SttKind>,

    /// Deepgram-compatible streaming endpoint.
    #[arg(
        long,
        env = "HARK_STT_URL",
        help_heading = "Speech to text",
        default_value = "wss://api.deepgram.com/v1/listen"
    )]
    pub stt_url: String,

    /// API key, sent as "Authorization: Token <key>" (also read from DEEPGRAM_API_KEY).
    #[arg(long, env = "HARK_STT_API_KEY", hide_env_values = true, help_heading = "Speech to text")]
    pub stt_api_key: Option<String>,

    /// STT model name.
    #[arg(long, env = "HARK_STT_MODEL", default_value = "nova-3", help_heading = "Speech to text")]
    pub stt_model: String,

    /// Failed STT connects in a row (or streams that died within 10 s) before the
    /// session is closed with 1013.
    #[arg(long, env = "HARK_STT_RECONNECT_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Speech to text")]
    pub stt_reconnect_max_attempts: u32,

    /// First STT reconnect backoff ceiling (full jitter below it).
    #[arg(long, env = "HARK_STT_RECONNECT_BASE", default_value = "250ms", value_parser = duration, help_heading = "Speech to text")]
    pub stt_reconnect_base: Duration,

    /// Largest STT reconnect backoff ceiling.
    #[arg(long, env = "HARK_STT_RECONNECT_MAX", default_value = "5s", value_parser = duration, help_heading = "Speech to text")]
    pub stt_reconnect_max: Duration,

    /// Local engine: decoder threads, i.e. concurrent sessions it can transcribe.
    #[arg(long, env = "HARK_STT_DECODERS", default_value_t = NonZeroUsize::new(2).unwrap(), help_heading = "Speech to text")]
    pub stt_decoders: NonZeroUsize,

    /// Local engine: acoustic model directory (default: the packaged en-us model).
    #[arg(long, env = "HARK_STT_MODEL_DIR", help_heading = "Speech to text")]
    pub stt_model_dir: Option<PathBuf>,

    /// Pusher base URL (ws://host:port). Unset: no pusher; every conversation
    /// takes the fallback path.
    #[arg(long, env = "HARK_PUSHER_URL", help_heading = "Pusher")]
    pub pusher_url: Option<String>,

    /// Bound on TCP connect + WebSocket handshake to pusher.
    #[arg(long, env = "HARK_PUSHER_CONNECT_TIMEOUT", default_value = "3s", value_parser = duration, help_heading = "Pusher")]
    pub pusher_connect_timeout: Duration,

    /// WebSocket ping period on a live pusher link.
    #[arg(long, env = "HARK_PUSHER_PING_INTERVAL", default_value = "10s", value_parser = duration, help_heading = "Pusher")]
    pub pusher_ping_interval: Duration,

    /// A pusher link silent (no pong, no frame) this long is dead.
    #[arg(long, env = "HARK_PUSHER_PING_TIMEOUT", default_value = "20s", value_parser = duration, help_heading = "Pusher")]
    pub pusher_ping_timeout: Duration,

    /// Heartbeat frame (100) period on a live pusher link.
    #[arg(long, env = "HARK_PUSHER_HEARTBEAT_INTERVAL", default_value = "20s", value_parser = duration, help_heading = "Pusher")]
    pub pusher_heartbeat_interval: Duration,

    /// Connect failures within --breaker-window that open the pod breaker.
    #[arg(
        long,
        env = "HARK_BREAKER_FAILURE_THRESHOLD",
        default_value = "20",
        help_heading = "Pusher resilience"
    )]
    pub breaker_failure_threshold: NonZeroU32,

    /// Sliding window for counting connect failures.
    #[arg(long, env = "HARK_BREAKER_WINDOW", default_value = "30s", value_parser = duration, help_heading = "Pusher resilience")]
    pub breaker_window: Duration,

    /// How long the breaker stays open before its single probe.
    #[arg(long, env = "HARK_BREAKER_COOLDOWN", default_value = "60s", value_parser = duration, help_heading = "Pusher resilience")]
    pub breaker_cooldown: Duration,

    /// Upper bound on an honoured Retry-After from pusher.
    #[arg(long, env = "HARK_RETRY_AFTER_MAX", default_value = "300s", value_parser = duration, help_heading = "Pusher resilience")]
    pub retry_after_max: Duration,

    /// Reconnect attempts after a live link fails, before the session goes degraded.
    #[arg(
        long,
        env = "HARK_RECONNECT_MAX_ATTEMPTS",
        default_value_t = 6,
        help_heading = "Pusher resilience"
    )]
    pub reconnect_max_attempts: u32,

    /// First reconnect backoff ceiling (full jitter below it).
    #[arg(long, env = "HARK_RECONNECT_BASE", default_value = "1s", value_parser = duration, help_heading = "Pusher resilience")]
    pub reconnect_base: Duration,

    /// Largest reconnect backoff ceiling.
    #[arg(long, env = "HARK_RECONNECT_MAX", default_value = "60s", value_parser = duration, help_heading = "Pusher resilience")]
    pub reconnect_max: Duration,

    /// How often a degraded session tries pusher once more.
    #[arg(long, env = "HARK_DEGRADED_PROBE_INTERVAL", default_value = "60s", value_parser = duration, help_heading = "Pusher resilience")]
    pub degraded_probe_interval: Duration,

    /// Pod-wide reconnects per second once the breaker closes (recovery ramp).
    #[arg(
        long,
        env = "HARK_RECOVERY_RATE",
        default_value = "50",
        help_heading = "Pusher resilience"
    )]
    pub recovery_rate: NonZeroU32,

    /// Directory of the durable fallback outbox.
    #[arg(
        long,
        env = "HARK_OUTBOX_DIR",
        default_value = "./hark-data/outbox",
        help_heading = "Fallback path"
    )]
    pub outbox_dir: PathBuf,

    /// Outbox size at which new records are refused, alerted and logged in full
    /// (e.g. 512MiB, 2GB).
    #[arg(long, env = "HARK_OUTBOX_MAX_BYTES", default_value = "1GiB", value_parser = bytes, help_heading = "Fallback path")]
    pub outbox_max_bytes: u64,

    /// Outbox records replayed per second, at most.
    #[arg(
        long,
        env = "HARK_OUTBOX_REPLAY_RATE",
        default_value = "20",
        help_heading = "Fallback path"
    )]
    pub outbox_replay_rate: NonZeroU32,

    /// With --database-url: how long a pod's claim on a shared-outbox record lasts;
    /// a crashed claimer's records are delivered by a peer after it. Keep it well
    /// above one delivery (10 s).
    #[arg(long, env = "HARK_OUTBOX_CLAIM_LEASE", default_value = "60s", value_parser = duration, help_heading = "Fallback path")]
    pub outbox_claim_lease: Duration,

    /// Deliver outbox records by HTTP POST (JSON, Idempotency-Key header) to this
    /// URL instead of replaying them to pusher.
    #[arg(long, env = "HARK_FALLBACK_URL", help_heading = "Fallback path")]
    pub fallback_url: Option<String>,

    /// Postgres URL (postgres://user:pass@host:5432/db?sslmode=…) for the fleet's
    /// shared outbox and parked conversations, so no pod's disk holds the only
    /// copy. Unset: both stay in this process (the outbox on --outbox-dir).
    #[arg(long, env = "HARK_DATABASE_URL", hide_env_values = true, help_heading = "Fallback path")]
    pub database_url: Option<String>,

    /// Open sessions per process; more get 503 + Retry-After.
    #[arg(long, env = "HARK_MAX_SESSIONS", default_value = "1000", help_heading = "Limits")]
    pub max_sessions: NonZeroUsize,

    /// Open sessions per user; more get 429 + Retry-After.
    #[arg(long, env = "HARK_MAX_SESSIONS_PER_USER", default_value = "5", help_heading = "Limits")]
    pub max_sessions_per_user: NonZeroUsize,

    /// Largest client frame; bigger closes the session with 1009.
    #[arg(long, env = "HARK_MAX_FRAME_BYTES", default_value = "64KiB", value_parser = bytes, help_heading = "Limits")]
    pub max_frame_bytes: u64,

    /// Segments kept per conversation; past this the conversation is split.
    #[arg(
        long,
        env = "HARK_MAX_CONVERSATION_SEGMENTS",
        default_value = "5000",
        help_heading = "Limits"
    )]
    pub max_conversation_segments: NonZeroUsize,

    /// Messages queued to a client before it is closed as a slow consumer (1008).
    #[arg(long, env = "HARK_CLIENT_QUEUE", default_value = "512", help_heading = "Limits")]
    pub client_queue: NonZeroUsize,

    /// Largest client text frame; bigger closes the session with 1009.
    #[arg(long, env = "HARK_MAX_TEXT_BYTES", default_value = "64KiB", value_parser = bytes, help_heading = "Limits")]
    pub max_text_bytes: u64,

    /// Bound on reading the upgrade request and completing the WebSocket handshake
    /// (slow clients are dropped after it).
    #[arg(long, env = "HARK_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration, help_heading = "Limits")]
    pub handshake_timeout: Duration,

    /// Upgrades per second from one client IP, with a burst of twice that; more get
    /// 429 + Retry-After. 0 turns the limit off.
    #[arg(long, env = "HARK_UPGRADE_RATE_PER_IP", default_value_t = 100, help_heading = "Limits")]
    pub upgrade_rate_per_ip: u32,

    /// Frames per second one client may send, with bursts of twice that; a flood of
    /// tiny frames closes the session with 1008 (a 100 ms-frame client sends 10/s).
    #[arg(
        long,
        env = "HARK_MAX_FRAMES_PER_SECOND",
        default_value = "200",
        help_heading = "Limits"
    )]
    pub max_frames_per_second: NonZeroU32,

    /// Audio frames in a row that do not decode as the session's codec before it
    /// is closed with 1003 (each is skipped and counted).
    #[arg(long, env = "HARK_MAX_DECODE_FAILURES", default_value = "50", help_heading = "Limits")]
    pub max_decode_failures: NonZeroU32,

    /// A client silent (no audio, no keep-alive) this long is closed with 1001.
    #[arg(long, env = "HARK_INACTIVITY_TIMEOUT", default_value = "90s", value_parser = duration, help_heading = "Limits")]
    pub inactivity_timeout: Duration,

    /// On SIGTERM/SIGINT, time given to live sessions to hand off and close (1012).
    #[arg(long, env = "HARK_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration, help_heading = "Lifecycle")]
    pub drain_timeout: Duration,

    /// Client authentication.
    #[arg(
        long,
        env = "HARK_AUTH",
        value_enum,
        default_value = "none",
        help_heading = "Authentication"
    )]
    pub auth: AuthKind,

    /// HS256 shared secret for --auth jwt (file contents; at least 32 bytes).
    #[arg(long, env = "HARK_JWT_SECRET_FILE", help_heading = "Authentication")]
    pub jwt_secret_file: Option<PathBuf>,

    /// JWKS document with RS256/ES256 public keys for --auth jwt; reloaded when the
    /// file changes.
    #[arg(long, env = "HARK_JWKS_FILE", help_heading = "Authentication")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL with RS256/ES256 public keys for --auth jwt (https://, or http:// on a
    /// trusted network). Fetched at start (start-up fails if it cannot be), cached per
    /// its Cache-Control, re-fetched when a token names an unknown kid (at most once a
    /// minute). Not together with --jwks-file.
    #[arg(long, env = "HARK_JWKS_URL", help_heading = "Authentication")]
    pub jwks_url: Option<String>,

    /// Required `aud` claim (unset: not checked).
    #[arg(long, env = "HARK_JWT_AUDIENCE", help_heading = "Authentication")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim (unset: not checked).
    #[arg(long, env = "HARK_JWT_ISSUER", help_heading = "Authentication")]
    pub jwt_issuer: Option<String>,

    /// JWT claim holding the user's plan (for quotas); missing means the default plan.
    #[arg(long, env = "HARK_PLAN_CLAIM", default_value = "plan", help_heading = "Authentication")]
    pub plan_claim: String,

    /// Redis URL (redis://[user:pass@]host:6379[/db]) that makes
    /// --max-sessions-per-user and the quotas hold across the fleet. Unset: limits
    /// are per process, quotas use a local budget.
    #[arg(long, env = "HARK_REDIS_URL", hide_env_values = true, help_heading = "Fair use")]
    pub redis_url: Option<String>,

    /// A plan and its audio allowance per --quota-window: NAME=DURATION (e.g.
    /// free=2h) or NAME=unlimited (no quota call at all). Repeatable; a
    /// comma-separated list in the environment. No plan: no quota.
    #[arg(long, env = "HARK_QUOTA_PLAN", value_delimiter = ',', value_parser = quota_plan, help_heading = "Fair use")]
    pub quota_plan: Vec<(String, Allowance)>,

    /// Plan of a token without a --plan-claim (or naming an unknown plan).
    #[arg(long, env = "HARK_DEFAULT_PLAN", default_value = "free", help_heading = "Fair use")]
    pub default_plan: String,

    /// Length of a quota window; windows align to multiples of it since the Unix
    /// epoch in UTC (1d: midnight UTC).
    #[arg(long, env = "HARK_QUOTA_WINDOW", default_value = "1d", value_parser = duration, help_heading = "Fair use")]
    pub quota_window: Duration,

    /// Seconds of audio a session leases from the quota at a time; the overshoot
    /// bound is one lease per live session.
    #[arg(long, env = "HARK_QUOTA_LEASE", default_value = "30s", value_parser = duration, help_heading = "Fair use")]
    pub quota_lease: Duration,

    /// Allow --auth none on a non-loopback address (anyone can connect as any uid).
    #[arg(long, env = "HARK_ALLOW_ANONYMOUS", help_heading = "Authentication")]
    pub allow_anonymous: bool,

    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(
        long,
        env = "HARK_LOG_FORMAT",
        value_enum,
        default_value = "text",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
}

/// STT engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SttKind {
    /// A Deepgram-compatible streaming API (--stt-url, --stt-api-key).
    Deepgram,
    /// The embedded PocketSphinx engine (no account needed).
    Local,
}

/// Authentication modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// uid from the query string; for local use only.
    None,
    /// Authorization: Bearer <JWT>; the uid is the token's `sub`.
    Jwt,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `NAME=DURATION` or `NAME=unlimited` (`--quota-plan`).
fn quota_plan(s: &str) -> Result<(String, Allowance), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=DURATION or NAME=unlimited")?;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok_name {
        return Err(format!("plan name {name:?}: 1-64 letters, digits, '-', '_' or '.'"));
    }
    let allowance = if value == "unlimited" {
        Allowance::Unlimited
    } else {
        let limit = duration(value)?;
        if limit.is_zero() {
            return Err("a plan's allowance must be above 0 (or unlimited)".into());
        }
        Allowance::Limit(limit)
    };
    Ok((name.to_owned(), allowance))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use units, e.g. 250ms, 3s, 2m)"))
}

fn bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (e.g. 64KiB, 1GiB)"))
}

/// A flag value that parsed but does not make sense; the message names the flag.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid(message()))
    }
}

impl Cli {
    /// Parses the process's arguments and environment, noting which values were
    /// given rather than defaulted (clap's `value_source`).
    pub fn parse_args() -> Result<Self, clap::Error> {
        Self::parse_args_from(std::env::args_os())
    }

    /// [`Cli::parse_args`] over the given arguments (the first is the program name).
    pub fn parse_args_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        cli.stt_url_given = !matches!(
            matches.value_source("stt_url"),
            None | Some(clap::parser::ValueSource::DefaultValue)
        );
        Ok(cli)
    }

    /// Validates cross-flag rules and builds the gateway configuration.
    pub fn into_config(self) -> Result<GatewayConfig, Invalid> {
        let zero = Duration::ZERO;
        check(self.reconnect_base > zero, || "--reconnect-base must be above 0".into())?;
        check(self.stt_reconnect_base > zero, || "--stt-reconnect-base must be above 0".into())?;
        check(self.stt_reconnect_max >= self.stt_reconnect_base, || {
            "--stt-reconnect-max must be at least --stt-reconnect-base".into()
        })?;
        check(self.reconnect_max >= self.reconnect_base, || {
            format!(
                "--reconnect-max ({:?}) must be at least --reconnect-base ({:?})",
                self.reconnect_max, self.reconnect_base
            )
        })?;
        for (flag, value) in [
            ("--breaker-window", self.breaker_window),
            ("--breaker-cooldown", self.breaker_cooldown),
            ("--pusher-connect-timeout", self.pusher_connect_timeout),
            ("--pusher-ping-interval", self.pusher_ping_interval),
            ("--pusher-heartbeat-interval", self.pusher_heartbeat_interval),
            ("--degraded-probe-interval", self.degraded_probe_interval),
            ("--inactivity-timeout", self.inactivity_timeout),
            ("--drain-timeout", self.drain_timeout),
        ] {
            check(value > zero, || format!("{flag} must be above 0"))?;
        }
        check(self.pusher_ping_timeout > self.pusher_ping_interval, || {
            format!(
                "--pusher-ping-timeout ({:?}) must be longer than --pusher-ping-interval ({:?})",
                self.pusher_ping_timeout, self.pusher_ping_interval
            )
        })?;
        check((1024..=16 * 1024 * 1024).contains(&self.max_frame_bytes), || {
            format!("--max-frame-bytes {} must be between 1KiB and 16MiB", self.max_frame_bytes)
        })?;
        check(self.outbox_claim_lease >= Duration::from_secs(1), || {
            "--outbox-claim-lease must be at least 1s".into()
        })?;
        check(self.outbox_max_bytes >= 1024 * 1024, || {
            "--outbox-max-bytes must be at least 1MiB".into()
        })?;
        if let Some(url) = &self.pusher_url {
            check(url.starts_with("ws://") || url.starts_with("wss://"), || {
                format!("--pusher-url {url:?} must start with ws:// or wss://")
            })?;
        }
        if let Some(url) = &self.fallback_url {
            check(url.starts_with("http://"), || {
                format!("--fallback-url {url:?} must start with http:// (put TLS in a sidecar)")
            })?;
        }
        check(self.stt_url.starts_with("ws://") || self.stt_url.starts_with("wss://"), || {
            format!("--stt-url {:?} must start with ws:// or wss://", self.stt_url)
        })?;
        check(self.max_text_bytes >= 64 && self.max_text_bytes <= self.max_frame_bytes, || {
            format!(
                "--max-text-bytes {} must be between 64 and --max-frame-bytes",
                self.max_text_bytes
            )
        })?;
        check(self.handshake_timeout > zero, || "--handshake-timeout must be above 0".into())?;
        check(self.jwks_file.is_none() || self.jwks_url.is_none(), || {
            "--jwks-file and --jwks-url cannot be combined: give one source of JWKS keys".into()
        })?;
        if let Some(url) = &self.jwks_url {
            check(url.starts_with("https://") || url.starts_with("http://"), || {
                format!(
                    "--jwks-url {url:?} must start with https:// (or http:// on a trusted network)"
                )
            })?;
        }
        check(!self.plan_claim.is_empty(), || "--plan-claim must not be empty".into())?;
        if !self.quota_plan.is_empty() {
            let default_known = self.quota_plan.iter().any(|(name, _)| *name == self.default_plan);
            check(default_known, || {
                format!(
                    "--default-plan {:?} is not one of the --quota-plan names",
                    self.default_plan
                )
            })?;
        }
        check(hark_store::quota::QuotaWindow::new(self.quota_window).is_ok(), || {
            "--quota-window must be a whole number of seconds between 1s and 366d".into()
        })?;
        check(self.quota_lease >= Duration::from_secs(1), || {
            "--quota-lease must be at least 1s".into()
        })?;
        if self.auth == AuthKind::Jwt {
            let keys = self.jwt_secret_file.is_some()
                || self.jwks_file.is_some()
                || self.jwks_url.is_some();
            check(keys, || {
                "--auth jwt needs --jwt-secret-file (HS256), or --jwks-file or --jwks-url (RS256/ES256)".into()
            })?;
        }
        if self.auth == AuthKind::None && !self.listen.ip().is_loopback() {
            check(self.allow_anonymous, || {
                format!("--auth none on {} would let anyone connect as any user: listen on loopback, use --auth jwt, or pass --allow-anonymous", self.listen)
            })?;
        }

        let api_key = self
            .stt_api_key
            .clone()
            .or_else(|| std::env::var("DEEPGRAM_API_KEY").ok().filter(|k| !k.is_empty()));
        let kind = self.stt.unwrap_or(if api_key.is_some() || self.stt_url_given {
            SttKind::Deepgram
        } else {
            SttKind::Local
        });
        let stt = match kind {
            SttKind::Deepgram => SttConfig::Deepgram {
                url: self.stt_url,
                api_key,
                model: self.stt_model,
                reconnect: SttReconnect {
                    max_attempts: self.stt_reconnect_max_attempts,
                    base: self.stt_reconnect_base,
                    max: self.stt_reconnect_max,
                },
            },
            SttKind::Local => {
                SttConfig::Local { decoders: self.stt_decoders, model_dir: self.stt_model_dir }
            }
        };

        let pusher = self.pusher_url.map(|url| PusherConfig {
            url,
            breaker_failure_threshold: self.breaker_failure_threshold,
            breaker_window: self.breaker_window,
            breaker_cooldown: self.breaker_cooldown,
            retry_after_max: self.retry_after_max,
            reconnect_max_attempts: self.reconnect_max_attempts,
            reconnect_base: self.reconnect_base,
            reconnect_max: self.reconnect_max,
            degraded_probe_interval: self.degraded_probe_interval,
            recovery_rate: self.recovery_rate,
            connect_timeout: self.pusher_connect_timeout,
            ping_interval: self.pusher_ping_interval,
            ping_timeout: self.pusher_ping_timeout,
            heartbeat_interval: self.pusher_heartbeat_interval,
        });
        Ok(GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            stt,
            pusher,
            outbox: OutboxConfig {
                dir: self.outbox_dir,
                max_bytes: self.outbox_max_bytes,
                fallback_url: self.fallback_url,
                replay_rate: self.outbox_replay_rate,
                claim_lease: self.outbox_claim_lease,
            },
            limits: Limits {
                max_sessions: self.max_sessions,
                max_sessions_per_user: self.max_sessions_per_user,
                max_frame_bytes: NonZeroUsize::new(self.max_frame_bytes as usize)
                    .expect("checked above"),
                max_conversation_segments: self.max_conversation_segments,
                inactivity_timeout: self.inactivity_timeout,
                client_queue: self.client_queue,
                max_text_bytes: NonZeroUsize::new(self.max_text_bytes as usize)
                    .expect("checked above"),
                handshake_timeout: self.handshake_timeout,
                upgrade_rate_per_ip: NonZeroU32::new(self.upgrade_rate_per_ip),
                max_frames_per_second: self.max_frames_per_second,
                max_decode_failures: self.max_decode_failures,
            },
            auth: match self.auth {
                AuthKind::None => AuthConfig::None,
                AuthKind::Jwt => AuthConfig::Jwt(JwtConfig {
                    secret_file: self.jwt_secret_file,
                    jwks_file: self.jwks_file,
                    jwks_url: self.jwks_url,
                    audience: self.jwt_audience,
                    issuer: self.jwt_issuer,
                    leeway: Duration::from_secs(30),
                    plan_claim: self.plan_claim,
                    ..JwtConfig::default()
                }),
            },
            drain_timeout: self.drain_timeout,
            database_url: self.database_url,
            fair_use: FairUseConfig {
                redis_url: self.redis_url,
                window: self.quota_window,
                plans: self.quota_plan,
                default_plan: self.default_plan,
                lease: self.quota_lease,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(args: &[&str]) -> SttConfig {
        let cli = Cli::parse_args_from(std::iter::once("hark").chain(args.iter().copied()))
            .expect("valid arguments");
        cli.into_config().expect("valid config").stt
    }

    #[test]
    fn an_explicit_stt_url_selects_the_deepgram_engine_and_the_default_does_not() {
        // The default URL is Deepgram's own, so only a URL that was *given* (flag or
        // environment, clap's value_source) may select the engine.
        std::env::remove_var("HARK_STT_URL");
        std::env::remove_var("DEEPGRAM_API_KEY");
        assert!(matches!(engine(&[]), SttConfig::Local { .. }));
        assert!(matches!(
            engine(&["--stt-url", "ws://127.0.0.1:7001/v1/listen"]),
            SttConfig::Deepgram { .. }
        ));
        assert!(matches!(
            engine(&["--stt-url=ws://127.0.0.1:7001/v1/listen"]),
            SttConfig::Deepgram { .. }
        ));
    }
}
