//! Hark's gateway: the client listener and admission, sessions, the STT and pusher
//! links, degraded mode, the fallback outbox, metrics and drain.
//!
//! [`Gateway::start`] binds both listeners and starts the process-wide tasks (the
//! breaker's prober, the outbox drainer, the runtime-lag probe); [`Gateway::drain`]
//! and [`Gateway::wait`] are the shutdown lifecycle.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod config;
pub mod connect;
pub mod continuity;
pub mod drain;
pub mod fairuse;
pub mod fallback;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod prefixed;
pub mod pusher;
pub mod session;
pub mod stt;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hark_resilience::backoff::Backoff;
use hark_resilience::breaker::{Breaker, BreakerConfig};
use hark_resilience::ramp::RecoveryRamp;
use hark_resilience::reconnect::ReconnectPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::config::GatewayConfig;
use crate::connect::{Connector, NetConnector};
use crate::continuity::Continuity;
use crate::fallback::Fallback;
use crate::outbox::drainer::{Drainer, ReplaySink};
use crate::outbox::shared::{Promoter, SharedDrainer};
use crate::outbox::Outbox;
use crate::pusher::PusherShared;
use crate::stt::SttBackend;
use hark_store::{ExpiredParking, MemoryStore, SharedOutbox, WallClock};

/// What every session on this process shares.
pub struct Shared {
    /// The validated configuration.
    pub config: GatewayConfig,
    /// The STT backend.
    pub stt: SttBackend,
    /// Pusher breaker, ramp and timings; `None` without `--pusher-url`.
    pub pusher: Option<Arc<PusherShared>>,
    /// The local fallback outbox (the staging area when a database is configured).
    pub outbox: Arc<Outbox>,
    /// The fallback path: the shared outbox (Postgres) when configured, else local.
    pub fallback: Arc<Fallback>,
    /// Where sessions park open conversations (always on: in Postgres with
    /// `--database-url`, else in this process).
    pub continuity: Option<Arc<Continuity>>,
    /// The fleet-wide session cap and quotas.
    pub fairuse: fairuse::FairUse,
    /// Session limits and drain state.
    pub admission: Arc<Admission>,
    /// Started when the process starts draining.
    pub drain: drain::Drain,
    /// Bearer-token verifier (auth mode `jwt`).
    pub auth: Option<auth::JwtAuth>,
    /// Per-client-IP upgrade rate limit.
    pub ip_limiter: Option<listener::IpLimiter>,
    /// Every task a session starts (its STT and pusher links), so shutdown
    /// can wait for them.
    pub tasks: TaskTracker,
    /// When a drain must be over: set once, by [`Gateway::drain`], to the drain's
    /// start plus `--drain-timeout`.
    pub shutdown_deadline: std::sync::OnceLock<tokio::time::Instant>,
}

impl Shared {
    /// `limit` from now, or the shutdown deadline if that comes first: every wait
    /// on a session's way out is bounded by both.
    pub fn end_by(&self, limit: Duration) -> tokio::time::Instant {
        let own = tokio::time::Instant::now() + limit;
        self.shutdown_deadline.get().map_or(own, |deadline| own.min(*deadline))
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The outbox directory is unusable.
    #[error("outbox at {dir}: {source}")]
    Outbox {
        /// The directory.
        dir: String,
        /// What failed.
        source: outbox::OutboxError,
    },
    /// The STT backend is unusable.
    #[error("{0}")]
    Stt(#[from] stt::SttStartError),
    /// The JWT secret or JWKS could not be loaded.
    #[error("authentication: {0}")]
    Auth(#[from] auth::AuthSetupError),
    /// `--redis-url` is unusable (it does not parse).
    #[error("redis: {0}")]
    Redis(hark_store::StoreError),
    /// The quota configuration is invalid.
    #[error("quota: {0}")]
    Quota(String),
    /// `--database-url` is unusable (it does not parse).
    #[error("database: {0}")]
    Database(hark_store::StoreError),
    /// A resilience parameter is invalid.
    #[error("invalid reconnect backoff: {0}")]
    Backoff(#[from] hark_resilience::backoff::BackoffError),
}

/// A running gateway.
pub struct Gateway {
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    /// Stops the listeners and background tasks (after drain).
    stop: CancellationToken,
    background: TaskTracker,
}

impl Gateway {
    /// Binds the listeners, opens the outbox and starts the process-wide tasks.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, StartError> {
        let metrics_handle = metrics::install();
        ws::install_tls_provider();
        let connector: Arc<dyn Connector> = Arc::new(NetConnector);
        let stt = SttBackend::from_config(&config.stt, connector.clone()).await?;
        // Keys before sockets: a JWKS URL that cannot be fetched fails the start
        // before the client port is bound (nothing would be served meanwhile).
        let jwt = match &config.auth {
            config::AuthConfig::Jwt(jwt) => Some(auth::JwtAuth::load(jwt.clone()).await?),
            config::AuthConfig::None => None,
        };
        let outbox = Outbox::open(config.outbox.dir.clone(), config.outbox.max_bytes)
            .await
            .map(Arc::new)
            .map_err(|source| StartError::Outbox {
                dir: config.outbox.dir.display().to_string(),
                source,
            })?;
        // The shared engine: built without I/O, so a pod starts (and serves on local
        // state) while Postgres is down; the schema is brought up to date by the
        // first call that reaches it.
        let database = match &config.database_url {
            Some(url) => {
                hark_store::metrics::register(hark_store::StoreKind::Postgres);
                let store = hark_store::PgStore::new(hark_store::PgConfig::new(url.clone()))
                    .map_err(StartError::Database)?;
                if let Err(error) = store.ensure_schema().await {
                    tracing::warn!(%error, "database unavailable at start: serving on local state until it answers");
                }
                Some(store)
            }
            None => None,
        };
        let shared_outbox: Option<Arc<dyn SharedOutbox>> =
            database.clone().map(|store| Arc::new(store) as Arc<dyn SharedOutbox>);
        let fallback = Arc::new(Fallback::new(outbox.clone(), shared_outbox.clone()));
        let pod = pod_name();
        let continuity = Arc::new(match &database {
            Some(store) => {
                Continuity::shared(Arc::new(store.clone()), fallback.clone(), pod.clone())
            }
            None => Continuity::in_process(
                Arc::new(MemoryStore::with_options(
                    IN_PROCESS_PARKING,
                    ExpiredParking::ToCaller,
                    WallClock::system(),
                )),
                fallback.clone(),
                pod.clone(),
            ),
        });
        let (fairuse, redis_budget) = fair_use(&config)?;
        let client = bind_clients(config.listen)
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.admin_listen, source })?;
        let client_addr = client.local_addr().expect("bound socket has an address");
        let admin_addr = admin.local_addr().expect("bound socket has an address");

        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        let pusher = match &config.pusher {
            Some(p) => {
                let breaker = Breaker::new(BreakerConfig {
                    failure_threshold: p.breaker_failure_threshold,
                    window: p.breaker_window,
                    cooldown: p.breaker_cooldown,
                    retry_after_max: p.retry_after_max,
                    probe_timeout: pusher::probe::max_duration(p),
                });
                let (probe_config, probe_connector) = (p.clone(), connector.clone());
                background.spawn(breaker.spawn_prober(
                    move || pusher::probe::probe(probe_config.clone(), probe_connector.clone()),
                    stop.clone(),
                ));
                Some(Arc::new(PusherShared {
                    config: p.clone(),
                    connector: connector.clone(),
                    breaker,
                    ramp: RecoveryRamp::new(p.recovery_rate, rand::random()),
                    policy: ReconnectPolicy::new(
                        Some(p.reconnect_max_attempts),
                        Backoff::new(p.reconnect_base, p.reconnect_max)?,
                    ),
                    fallback: fallback.clone(),
                }))
            }
            None => None,
        };
        let sink = match (&config.outbox.fallback_url, &config.pusher) {
            (Some(url), _) => ReplaySink::Http(url.clone()),
            (None, Some(p)) => ReplaySink::Pusher(p.clone(), connector.clone()),
            (None, None) => ReplaySink::None,
        };
        // The pusher breaker gates replays to pusher only; an HTTP sink has its own
        // backoff and must not wait for pusher.
        let replay_breaker = match &sink {
            ReplaySink::Pusher(..) => pusher.as_ref().map(|p| p.breaker.clone()),
            _ => None,
        };
        // Replays back off like the pusher links (an HTTP sink alone: 1 s to 60 s).
        let replay_policy = match &pusher {
            Some(p) => p.policy.clone(),
            None => ReconnectPolicy::new(
                None,
                Backoff::new(Duration::from_secs(1), Duration::from_secs(60))?,
            ),
        };
        match &shared_outbox {
            // With a database, local records are only staged: the promoter moves
            // them to Postgres, and every pod's drainer delivers from there.
            Some(shared) => {
                let drainer = SharedDrainer::new(
                    shared.clone(),
                    pod.clone(),
                    sink,
                    replay_breaker,
                    config.outbox.replay_rate,
                    config.outbox.claim_lease,
                    replay_policy,
                    stop.clone(),
                );
                background.spawn(drainer.run());
                background.spawn(Promoter::new(outbox.clone(), shared.clone()).run(stop.clone()));
                background.spawn(outbox::shared::publish_stats(shared.clone(), stop.clone()));
            }
            None => {
                let drainer = Drainer::new(
                    outbox.clone(),
                    sink,
                    replay_breaker,
                    config.outbox.replay_rate,
                    replay_policy,
                    stop.clone(),
                );
                background.spawn(drainer.run());
            }
        }
        background.spawn(continuity.clone().run_sweeper(stop.clone()));
        if let Some(budget) = redis_budget {
            background.spawn(fairuse.clone().reconcile(budget, stop.clone()));
        }
        background.spawn(metrics::runtime_lag_probe(stop.clone()));

        let jwt = match jwt {
            Some(verifier) => {
                background.spawn(verifier.spawn_reloader(Duration::from_secs(5), stop.clone()));
                Some(verifier)
            }
            None => None,
        };
        let ip_limiter = config.limits.upgrade_rate_per_ip.map(listener::ip_limiter);
        let admission =
            Admission::new(config.limits.max_sessions, config.limits.max_sessions_per_user);
        let shared = Arc::new(Shared {
            config,
            stt,
            pusher,
            outbox,
            fallback,
            continuity: Some(continuity),
            fairuse,
            admission: admission.clone(),
            drain: drain::Drain::new(),
            auth: jwt,
            ip_limiter,
            tasks: TaskTracker::new(),
            shutdown_deadline: std::sync::OnceLock::new(),
        });
        let sessions = TaskTracker::new();
        background.spawn(listener::serve(client, shared.clone(), sessions.clone(), stop.clone()));
        background.spawn(admin::serve(admin, metrics_handle, admission, stop.clone()));
        tracing::info!(listen = %client_addr, admin = %admin_addr, "hark is listening");
        Ok(Gateway { client_addr, admin_addr, shared, sessions, stop, background })
    }

    /// The client listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// What the sessions share (for tests and diagnostics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts draining: `/ready` turns 503, new upgrades are refused with 503 +
    /// `Retry-After`, and live sessions hand off their conversation and close with
    /// 1012, spread over the drain timeout.
    pub fn drain(&self) {
        if !self.shared.admission.draining() {
            tracing::info!(
                sessions = self.shared.admission.active(),
                timeout = ?self.shared.config.drain_timeout,
                "draining"
            );
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        let _ = self.shared.shutdown_deadline.set(deadline);
        self.shared.admission.start_draining();
        self.shared.drain.start();
    }

    /// Waits for sessions and their tasks to end, until the shutdown deadline (the
    /// drain's start plus `--drain-timeout`; from now if [`Gateway::drain`] was not
    /// called), then stops the listeners and background tasks. Returns the sessions
    /// still open at the deadline.
    pub async fn wait(self) -> usize {
        let deadline = *self
            .shared
            .shutdown_deadline
            .get_or_init(|| tokio::time::Instant::now() + self.shared.config.drain_timeout);
        self.sessions.close();
        self.shared.tasks.close();
        let ended = async {
            self.sessions.wait().await;
            self.shared.tasks.wait().await;
        };
        let open = match tokio::time::timeout_at(deadline, ended).await {
            Ok(()) => 0,
            Err(_) => self.shared.admission.active(),
        };
        // Nothing may stay behind in this process: without a database what is
        // parked here is handed off now; with one, records this pod had to keep on
        // its disk are promoted to Postgres, within what is left of the deadline.
        let leftovers = async {
            if let Some(continuity) = &self.shared.continuity {
                continuity.hand_off_all().await;
            }
            if let Some(shared) = self.shared.fallback.shared() {
                Promoter::new(self.shared.outbox.clone(), shared.clone()).promote_all().await;
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left.max(Duration::from_secs(1)), leftovers).await.is_err() {
            tracing::warn!(
                "shutdown deadline reached before every parked or local record was handed on"
            );
        }
        self.stop.cancel();
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.background.wait()).await;
        open
    }

    /// Drains and waits: the whole shutdown.
    pub async fn shutdown(self) -> usize {
        self.drain();
        self.wait().await
    }
}

/// Builds fair use from the configuration: the Redis store (no I/O yet, so a pod
/// starts while Redis is down), the fleet cap, the plans. Returns Redis's budget
/// for the reconciliation task.
fn fair_use(
    config: &GatewayConfig,
) -> Result<(fairuse::FairUse, Option<hark_store::Budget>), StartError> {
    let fair = &config.fair_use;
    let redis = match &fair.redis_url {
        Some(url) => {
            hark_store::metrics::register(hark_store::StoreKind::Redis);
            Some(
                hark_store::RedisStore::new(hark_store::RedisConfig::new(url.clone()))
                    .map_err(StartError::Redis)?,
            )
        }
        None => None,
    };
    let budget = redis.as_ref().map(|r| r.budget().clone());
    let cap = redis.as_ref().map(|store| fairuse::FleetCap {
        store: Arc::new(store.clone()),
        max: u32::try_from(config.limits.max_sessions_per_user.get()).unwrap_or(u32::MAX),
    });
    let quota = if fair.plans.is_empty() {
        None
    } else {
        let window = hark_store::quota::QuotaWindow::new(fair.window)
            .map_err(|e| StartError::Quota(e.to_string()))?;
        Some(fairuse::Quota {
            plans: fair.plans.iter().cloned().collect(),
            default_plan: fair.default_plan.clone(),
            context: hark_store::quota::QuotaContext {
                fleet: redis.map(|store| Arc::new(store) as Arc<dyn hark_store::QuotaStore>),
                local: Arc::new(hark_store::quota::LocalBudgets::new(LOCAL_QUOTA_USERS)),
                window,
                meter: hark_store::quota::MeterConfig {
                    chunk: fair.lease,
                    ..hark_store::quota::MeterConfig::default()
                },
                clock: WallClock::system(),
            },
        })
    };
    Ok((fairuse::FairUse { cap, quota }, budget))
}

/// Users whose quota this process tracks locally while Redis is down.
const LOCAL_QUOTA_USERS: usize = 100_000;

/// Conversations the in-process parking lot holds (no database): beyond it a
/// session's open conversation is handed off at once instead of parked.
const IN_PROCESS_PARKING: usize = 10_000;

/// This pod's name in shared-outbox and parking claims: Kubernetes sets
/// `HOSTNAME` to the pod's name; elsewhere the host name and process id.
fn pod_name() -> String {
    match std::env::var("HOSTNAME") {
        Ok(name) if !name.is_empty() => name,
        _ => format!("hark-{}", std::process::id()),
    }
}

/// The client listener's accept backlog. tokio's `TcpListener::bind` asks for
/// 1,024; after a pod restart or a network blip every app reconnects within a
/// second or two, and a short queue turns that burst into SYN retransmits (1 s,
/// then 3 s) on top of the apps' own backoff. The kernel caps it at
/// `net.core.somaxconn` (4,096 on current kernels).
pub const CLIENT_BACKLOG: u32 = 4_096;

fn bind_clients(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(CLIENT_BACKLOG)
}
