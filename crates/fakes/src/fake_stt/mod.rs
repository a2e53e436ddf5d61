//! A Deepgram-compatible streaming STT server (design §5) with a deterministic
//! transcription and run-time faults.
//!
//! Every path is accepted (and recorded); `sample_rate` comes from the query
//! (default 16000). What the fake hears is defined in [`transcribe`]: build audio
//! with [`synth`] and [`silence`], predict the words with [`words_for`]. Results are
//! cut when a silence chunk follows words (`speech_final`), when `words_per_result`
//! words are buffered, on `Finalize`, and on `CloseStream` (then `Metadata`, then
//! close 1000). See [`SttFault`] for the faults.

mod control;
mod results;
mod stream;
pub mod transcribe;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{header, StatusCode};

pub use control::serve_control;
pub use transcribe::{silence, synth, words_for, VOCAB};

use crate::server::{self, Lifecycle};
use crate::ws;

/// How the fake names itself in logs.
const NAME: &str = "fake STT";
/// Largest audio frame accepted (1 MiB is 32 s of 16 kHz audio).
const MAX_MESSAGE: usize = 1 << 20;

/// How the fake STT is started.
#[derive(Clone, Debug)]
pub struct FakeSttConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Delay between the audio that completes a result and the result being sent.
    pub latency: Duration,
    /// A result is cut when this many words are buffered (0 counts as 1).
    pub words_per_result: usize,
    /// When set, upgrades must carry `Authorization: Token <key>` (else 401).
    pub api_key: Option<String>,
    /// Pause between answering the upgrade and serving the stream: a fake whose
    /// task is slow to run (a loaded machine), for tests that faults set meanwhile
    /// still reach the stream.
    pub stream_start_delay: Duration,
}

impl Default for FakeSttConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            words_per_result: 4,
            api_key: None,
            stream_start_delay: Duration::ZERO,
        }
    }
}

/// A fault, switchable at run time with [`FakeStt::set_fault`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SttFault {
    /// Normal service.
    #[default]
    None,
    /// Close every open stream with 1011 "NET-0001" now, and every new stream after
    /// its first audio frame while the fault lasts.
    #[serde(rename = "close-1011")]
    Close1011,
    /// Keep sockets open, read and discard raw bytes, send nothing — not even pongs,
    /// so only a ping timeout reveals it. Leaving the fault drops those sockets (their
    /// frame stream was consumed raw and cannot be resumed).
    Stall,
    /// Answer new upgrades with HTTP 503; open streams carry on.
    Refuse,
}

impl SttFault {
    /// The name used by the CLI and the control port.
    pub fn as_str(self) -> &'static str {
        match self {
            SttFault::None => "none",
            SttFault::Close1011 => "close-1011",
            SttFault::Stall => "stall",
            SttFault::Refuse => "refuse",
        }
    }
}

impl fmt::Display for SttFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SttFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [SttFault::None, SttFault::Close1011, SttFault::Stall, SttFault::Refuse]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!("unknown fault {s:?}; expected none, close-1011, stall or refuse")
            })
    }
}

/// Counters of the fake STT.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SttStats {
    /// The fault in force.
    pub fault: SttFault,
    /// Upgrades accepted.
    pub connections: u64,
    /// Upgrades refused (401, 400, 503).
    pub rejected: u64,
    /// Streams open now.
    pub active_streams: u64,
    /// `KeepAlive` messages received.
    pub keepalives: u64,
    /// `Finalize` messages received.
    pub finalizes: u64,
    /// `CloseStream` messages received.
    pub close_streams: u64,
    /// Bytes of audio received.
    pub audio_bytes: u64,
    /// `Results` messages sent.
    pub results_sent: u64,
    /// Streams closed with 1011 by the `close-1011` fault.
    pub closed_1011: u64,
    /// Path of the last upgrade request.
    pub last_path: Option<String>,
    /// Query string of the last upgrade request.
    pub last_query: Option<String>,
    /// `Authorization` header of the last upgrade request.
    pub last_authorization: Option<String>,
}

/// State shared by the accept loop, the streams and the handle.
#[derive(Debug)]
struct Shared {
    /// The configuration it was started with.
    cfg: FakeSttConfig,
    /// The bound address.
    addr: SocketAddr,
    /// The fault in force; streams watch it.
    fault: watch::Sender<SttFault>,
    /// Counters; never held across an `.await`.
    stats: Mutex<SttStats>,
    /// Bumped after every change to the counters, for [`FakeStt::wait_stats`].
    changes: watch::Sender<u64>,
    /// Shutdown and the tasks it waits for.
    life: Lifecycle,
    /// Source of stream ids (for `Metadata.request_id` and logs).
    next_id: AtomicU64,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut SttStats)) {
        update(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running fake STT server. Clones are handles to the same server.
#[derive(Clone, Debug)]
pub struct FakeStt {
    shared: Arc<Shared>,
}

impl FakeStt {
    /// Binds `cfg.listen` and starts serving.
    pub async fn start(cfg: FakeSttConfig) -> std::io::Result<FakeStt> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cfg,
            addr,
            fault: watch::Sender::new(SttFault::None),
            stats: Mutex::default(),
            changes: watch::Sender::new(0),
            life: Lifecycle::default(),
            next_id: AtomicU64::new(1),
        });
        let serve = {
            let shared = shared.clone();
            move |stream, permit| serve_connection(shared.clone(), stream, permit)
        };
        shared.life.tracker.spawn(server::accept_loop(shared.life.clone(), NAME, listener, serve));
        tracing::info!(%addr, "fake STT listening");
        Ok(FakeStt { shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `ws://ADDR/v1/listen`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/listen", self.shared.addr)
    }

    /// Switches the fault in force.
    pub fn set_fault(&self, fault: SttFault) {
        tracing::info!(%fault, "fake STT fault");
        self.shared.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> SttFault {
        *self.shared.fault.borrow()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SttStats {
        let mut stats = self.shared.stats.lock().unwrap_or_else(PoisonError::into_inner).clone();
        stats.fault = self.fault();
        stats
    }

    /// Waits until `pred` holds for the counters, re-checking after every change
    /// (no polling); `false` on timeout.
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SttStats) -> bool,
    ) -> bool {
        let changes = self.shared.changes.subscribe();
        server::wait_changes(changes, timeout, || pred(&self.stats())).await
    }

    /// Stops accepting, closes open streams with 1001, and waits (bounded) for every
    /// task to end.
    pub async fn shutdown(self) {
        self.shared.life.shutdown(NAME).await;
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, _permit: OwnedSemaphorePermit) {
    // Subscribed before the handshake: a fault set once the client has seen the
    // 101 is a change this stream sees, however late its task is first polled.
    let fault = shared.fault.subscribe();
    let check = |req: &Request| check_upgrade(&shared, req);
    let accepted = ws::accept(stream, check, MAX_MESSAGE, &shared.life.cancel, NAME).await;
    let Some((ws, sample_rate)) = accepted else { return };
    if !shared.cfg.stream_start_delay.is_zero() {
        tokio::time::sleep(shared.cfg.stream_start_delay).await;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.count(|s| s.connections += 1);
    stream::run(ws, shared, fault, id, sample_rate).await;
}

/// Records the request, then checks auth, the fault and the query. `Ok` is the
/// stream's sample rate.
fn check_upgrade(shared: &Shared, req: &Request) -> Result<u32, ErrorResponse> {
    let query = req.uri().query().map(str::to_owned);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    shared.count(|s| {
        s.last_path = Some(req.uri().path().to_owned());
        s.last_query.clone_from(&query);
        s.last_authorization.clone_from(&auth);
    });
    let refuse = |status, reason: &str| {
        shared.count(|s| s.rejected += 1);
        ws::refusal(status, reason, None)
    };
    if let Some(key) = &shared.cfg.api_key {
        if auth.as_deref() != Some(format!("Token {key}").as_str()) {
            return Err(refuse(StatusCode::UNAUTHORIZED, "invalid credentials"));
        }
    }
    if *shared.fault.borrow() == SttFault::Refuse {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "fake STT is refusing streams"));
    }
    let rate = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "sample_rate")
        .map(|(_, v)| v.parse::<u32>().ok().filter(|r| *r > 0))
        .unwrap_or(Some(16_000));
    rate.ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "sample_rate must be a positive integer"))
}
