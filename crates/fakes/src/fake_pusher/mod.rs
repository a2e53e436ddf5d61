//! A pusher speaking design §4 at `/v1/trigger/listen?uid=&sample_rate=`, with fault
//! modes switchable at run time and counters that show how its clients behaved.
//!
//! Every 104 is acked with a 201 (after the delay in `slow-ack`); the conversation is
//! marked processed when its first 104 *arrives*, so a 104 resent after an ack was
//! lost counts as a duplicate — exactly what at-least-once delivery produces, and
//! what tests assert on. See [`PusherMode`] for the faults.

mod conn;
mod control;
mod modes;
mod stats;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

pub use control::serve_control;
pub use modes::{ModeError, ModeSpec, PusherMode, DEFAULT_ACK_DELAY};
pub use stats::{PusherStats, RecordedFrame};

use crate::server::{self, Lifecycle};
use stats::Recorder;

/// How the fake names itself in logs.
const NAME: &str = "fake pusher";
/// Path of pusher's listen endpoint.
pub const LISTEN_PATH: &str = "/v1/trigger/listen";
/// Listen backlog of the (re)bound port.
const BACKLOG: u32 = 1024;
/// How often a failed re-bind after `refuse` is retried.
const REBIND_RETRY: Duration = Duration::from_millis(200);

/// How the fake pusher is started.
#[derive(Clone, Debug)]
pub struct FakePusherConfig {
    /// Address to listen on; port 0 picks a free one (kept across `refuse`).
    pub listen: SocketAddr,
    /// The mode at start.
    pub mode: PusherMode,
    /// Record every decoded frame for [`FakePusher::frames`].
    pub record: bool,
}

impl Default for FakePusherConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 0)), mode: PusherMode::Up, record: false }
    }
}

/// State shared by the accept loop, the links and the handles.
#[derive(Debug)]
struct Shared {
    /// The bound address; the same port is re-bound after `refuse`.
    addr: SocketAddr,
    /// The listening socket, absent while refusing. Only this slot owns it, so taking
    /// it out closes the port at once (the accept loop polls it through the lock).
    listener: Mutex<Option<TcpListener>>,
    /// The mode in force; links and the accept loop watch it.
    mode: watch::Sender<PusherMode>,
    /// Counters and recording.
    recorder: Recorder,
    /// The runtime the fake runs on, so `set_mode` can bind from any thread.
    runtime: Handle,
    /// Shutdown and the tasks it waits for.
    life: Lifecycle,
    /// Source of link ids.
    next_conn: AtomicU64,
    /// Bumped by [`FakePusher::drop_links`]; every open link watches it and drops its
    /// socket (no close frame) when it changes.
    drops: watch::Sender<u64>,
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Option<TcpListener>> {
        self.listener.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bind(&self) -> std::io::Result<TcpListener> {
        let _runtime = self.runtime.enter();
        bind_reusable(self.addr)
    }

    /// Opens or closes the port to match `mode`.
    fn sync_listener(&self, mode: &PusherMode) {
        let mut slot = self.slot();
        match (mode, slot.is_some()) {
            (PusherMode::Refuse, true) => *slot = None,
            (PusherMode::Refuse, false) | (_, true) => {}
            (_, false) => match self.bind() {
                Ok(listener) => *slot = Some(listener),
                Err(err) => tracing::warn!(%err, addr = %self.addr, "fake pusher re-bind failed"),
            },
        }
    }

    fn needs_rebind(&self) -> bool {
        self.slot().is_none() && *self.mode.borrow() != PusherMode::Refuse
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        match self.slot().as_ref() {
            Some(listener) => listener.poll_accept(cx),
            // Woken by the mode change that brings a listener back.
            None => Poll::Pending,
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so the port can be re-bound while
/// connections accepted on it are still open.
fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A running fake pusher. Clones are handles to the same server.
#[derive(Clone, Debug)]
pub struct FakePusher {
    shared: Arc<Shared>,
}

impl FakePusher {
    /// Binds `cfg.listen` and starts serving in `cfg.mode`.
    pub async fn start(cfg: FakePusherConfig) -> std::io::Result<FakePusher> {
        let listener = bind_reusable(cfg.listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            listener: Mutex::new(Some(listener)),
            mode: watch::Sender::new(cfg.mode.clone()),
            recorder: Recorder::new(cfg.record),
            runtime: Handle::current(),
            life: Lifecycle::default(),
            next_conn: AtomicU64::new(1),
            drops: watch::Sender::new(0),
        });
        shared.sync_listener(&cfg.mode);
        let from = Rebinding { shared: shared.clone(), mode: shared.mode.subscribe() };
        let serve = {
            let shared = shared.clone();
            move |stream, permit| conn::serve(shared.clone(), stream, permit)
        };
        shared.life.tracker.spawn(server::accept_loop(shared.life.clone(), NAME, from, serve));
        tracing::info!(%addr, mode = %cfg.mode, "fake pusher listening");
        Ok(FakePusher { shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `ws://ADDR` (hark appends `/v1/trigger/listen?...`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.shared.addr)
    }

    /// Switches mode. Opening or closing the port (`refuse`) happens before this
    /// returns; links react to the change right after.
    pub fn set_mode(&self, mode: PusherMode) {
        tracing::info!(%mode, "fake pusher mode");
        self.shared.sync_listener(&mode);
        self.shared.mode.send_replace(mode);
    }

    /// The mode in force.
    pub fn mode(&self) -> PusherMode {
        self.shared.mode.borrow().clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PusherStats {
        let mut stats = self.shared.recorder.snapshot();
        stats.mode = self.mode().name().to_owned();
        stats
    }

    /// Every decoded frame in arrival order (empty unless started with `record`).
    pub fn frames(&self) -> Vec<RecordedFrame> {
        self.shared.recorder.frames()
    }

    /// Drops every open WebSocket link at once, without a close frame (as if the
    /// process behind them had restarted); returns how many were open. Combine with a
    /// mode (`http-429`, `blackhole`, …) so clients notice the change: links already
    /// open are otherwise unaffected by those modes.
    pub fn drop_links(&self) -> u64 {
        let open = self.stats().connections_active;
        tracing::info!(open, "fake pusher dropping every open link");
        self.shared.drops.send_modify(|n| *n = n.wrapping_add(1));
        open
    }

    /// Unix milliseconds of every TCP accept at or after `since_ms` (the last hour
    /// is kept): the exact instants dials reached the fake.
    pub fn accept_times(&self, since_ms: u64) -> Vec<u64> {
        self.shared.recorder.accept_times(since_ms)
    }

    /// Conversation ids in the order they were first processed.
    pub fn processed_ids(&self) -> Vec<String> {
        self.shared.recorder.processed_ids()
    }

    /// Waits until at least `n` distinct conversations were processed; `false` on
    /// timeout.
    pub async fn wait_processed(&self, n: usize, timeout: Duration) -> bool {
        self.wait_stats(timeout, |s| s.conversations_processed >= n as u64).await
    }

    /// Waits until at least `n` upgrade requests were seen; `false` on timeout.
    pub async fn wait_handshakes(&self, n: u64, timeout: Duration) -> bool {
        self.wait_stats(timeout, |s| s.handshakes >= n).await
    }

    /// Waits until `pred` holds for the counters, re-checking after every change
    /// (no polling); `false` on timeout.
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&PusherStats) -> bool,
    ) -> bool {
        let changes = self.shared.recorder.changes_watch();
        server::wait_changes(changes, timeout, || pred(&self.stats())).await
    }

    /// Waits until `pred` holds for the recorded frames (started with `record`),
    /// re-checking after every change; `false` on timeout.
    pub async fn wait_frames(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[RecordedFrame]) -> bool,
    ) -> bool {
        let changes = self.shared.recorder.changes_watch();
        server::wait_changes(changes, timeout, || pred(&self.frames())).await
    }

    /// Closes the port, closes links with 1001, drops held sockets, and waits
    /// (bounded) for every task to end.
    pub async fn shutdown(self) {
        self.shared.slot().take();
        self.shared.life.shutdown(NAME).await;
    }
}

/// The fake pusher's connections: from whichever listener the slot holds, re-bound
/// after `refuse` ends (retried until the port is free again).
struct Rebinding {
    shared: Arc<Shared>,
    mode: watch::Receiver<PusherMode>,
}

impl server::Accept for Rebinding {
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        let shared = &self.shared;
        loop {
            let rebind = shared.needs_rebind();
            tokio::select! {
                // The slot may hold a new listener: poll again.
                _ = self.mode.changed() => {}
                () = tokio::time::sleep(REBIND_RETRY), if rebind => {
                    let current = shared.mode.borrow().clone();
                    shared.sync_listener(&current);
                }
                accepted = poll_fn(|cx| shared.poll_accept(cx)) => {
                    return accepted.map(|(stream, _peer)| stream);
                }
            }
        }
    }
}
