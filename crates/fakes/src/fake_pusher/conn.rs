//! One accepted TCP connection of the fake pusher: held unanswered, refused at the
//! upgrade, or served as a link until it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hark_proto::pusher::{Ack, PusherFrame};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::time::DelayQueue;

use super::stats::Recorder;
use super::{PusherMode, Shared, LISTEN_PATH, NAME};
use crate::ws::{self, Ws};

/// Longest a `blackhole`/`stall` socket is held before it is dropped.
const HOLD_LIMIT: Duration = Duration::from_secs(600);
/// Largest frame accepted (a 102 replayed with a whole conversation can be large).
const MAX_MESSAGE: usize = 16 << 20;
/// Delayed acks one link may have pending in `slow-ack`; beyond, 104s go unacked
/// (and the client resends them after reconnecting).
const MAX_PENDING_ACKS: usize = 10_000;

/// Counts a TCP connection from accept to drop.
struct TcpOpen<'a>(&'a Recorder);

impl Drop for TcpOpen<'_> {
    fn drop(&mut self) {
        self.0.tcp_closed();
    }
}

/// Counts a WebSocket link (and its uid) while it is open.
struct LinkOpen<'a>(&'a Recorder, &'a str);

impl Drop for LinkOpen<'_> {
    fn drop(&mut self) {
        self.0.link_closed(self.1);
    }
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, _permit: OwnedSemaphorePermit) {
    shared.recorder.tcp_accepted();
    let _tcp = TcpOpen(&shared.recorder);
    let mut mode = shared.mode.subscribe();
    if mode.borrow_and_update().holds_new_connections() {
        return hold(&shared, stream, &mut mode).await;
    }
    let check = |req: &Request| check_upgrade(&shared, req);
    let accepted = ws::accept(stream, check, MAX_MESSAGE, &shared.life.cancel, NAME).await;
    let Some((ws, uid)) = accepted else { return };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.recorder.link_opened(&uid);
    let _link = LinkOpen(&shared.recorder, &uid);
    tracing::debug!(conn, %uid, "fake pusher link open");
    let drops = shared.drops.subscribe();
    Link { ws, shared: &shared, conn, uid: &uid, acks: DelayQueue::new() }.run(mode, drops).await;
    tracing::debug!(conn, %uid, "fake pusher link over");
}

/// Keeps the socket open without answering (the client's handshake hangs) until the
/// mode changes, the hold limit passes, the client gives up, or shutdown; then drops
/// it. Bytes the client sends are read and discarded only to notice it leaving.
async fn hold(shared: &Shared, mut stream: TcpStream, mode: &mut watch::Receiver<PusherMode>) {
    let limit = tokio::time::sleep(HOLD_LIMIT);
    tokio::pin!(limit);
    let mut discard = [0u8; 4096];
    loop {
        tokio::select! {
            _ = shared.life.cancel.cancelled() => return,
            () = &mut limit => return,
            read = stream.read(&mut discard) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || !mode.borrow_and_update().holds_new_connections() {
                    return;
                }
            }
        }
    }
}

/// Counts the request, then refuses it if the mode says so or it is malformed.
/// `Ok` is the uid.
fn check_upgrade(shared: &Shared, req: &Request) -> Result<String, ErrorResponse> {
    let recorder = &shared.recorder;
    recorder.handshake();
    let refuse = |status, reason: &str, retry_after: Option<&str>| {
        recorder.rejected();
        ws::refusal(status, reason, retry_after)
    };
    match &*shared.mode.borrow() {
        PusherMode::Http429 { retry_after } => {
            let reason = "fake pusher is rate limiting";
            return Err(refuse(StatusCode::TOO_MANY_REQUESTS, reason, retry_after.as_deref()));
        }
        PusherMode::Http503 { retry_after } => {
            let reason = "fake pusher is overloaded";
            return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, reason, retry_after.as_deref()));
        }
        _ => {}
    }
    if req.uri().path() != LISTEN_PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "pusher listens on /v1/trigger/listen", None));
    }
    let query = req.uri().query().unwrap_or("");
    let mut uid = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "uid" => uid = Some(value.into_owned()),
            "sample_rate" if !value.parse::<u32>().is_ok_and(|r| r > 0) => {
                let reason = "sample_rate must be a positive integer";
                return Err(refuse(StatusCode::BAD_REQUEST, reason, None));
            }
            _ => {}
        }
    }
    match uid {
        Some(uid) if !uid.is_empty() => Ok(uid),
        _ => Err(refuse(StatusCode::BAD_REQUEST, "uid is required", None)),
    }
}

/// An open link.
struct Link<'a> {
    ws: Ws,
    shared: &'a Shared,
    /// Link id, for recording and logs.
    conn: u64,
    /// The uid from the upgrade query.
    uid: &'a str,
    /// Acks waiting for their `slow-ack` delay.
    acks: DelayQueue<Bytes>,
}

impl Link<'_> {
    async fn run(mut self, mut mode: watch::Receiver<PusherMode>, mut drops: watch::Receiver<u64>) {
        // The mode may have changed during the handshake; `close-1011` closes at once.
        let mut current = mode.borrow_and_update().clone();
        loop {
            let stalled = match current {
                PusherMode::Close1011 => {
                    return ws::close(&mut self.ws, CloseCode::Error, "fake pusher close-1011")
                        .await
                }
                // The process is "gone": drop the socket without a close frame.
                PusherMode::Refuse => return,
                PusherMode::Stall => true,
                _ => false,
            };
            tokio::select! {
                biased;
                _ = self.shared.life.cancel.cancelled() => {
                    return ws::close(&mut self.ws, CloseCode::Away, "fake pusher shutting down").await;
                }
                changed = mode.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    current = mode.borrow_and_update().clone();
                }
                // `drop_links`: gone without a close frame.
                _ = drops.changed() => return,
                Some(expired) = self.acks.next(), if !stalled && !self.acks.is_empty() => {
                    if !self.send_ack(expired.into_inner()).await {
                        return;
                    }
                }
                msg = self.ws.next(), if !stalled => match msg {
                    Some(Ok(msg)) => {
                        if !self.on_message(msg, &current).await {
                            return;
                        }
                    }
                    Some(Err(err)) => {
                        return tracing::debug!(conn = self.conn, %err, "fake pusher read failed");
                    }
                    None => return,
                },
            }
        }
    }

    /// Handles one message; `false` when the link is unusable.
    async fn on_message(&mut self, msg: Message, mode: &PusherMode) -> bool {
        let bytes = match msg {
            Message::Binary(bytes) => bytes,
            Message::Text(_) => {
                self.shared.recorder.text_frame();
                return true;
            }
            // tungstenite answers pings and close frames itself.
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                return true
            }
        };
        let recorder = &self.shared.recorder;
        let Some(PusherFrame::Process(request)) = recorder.frame(self.conn, self.uid, bytes) else {
            return true;
        };
        let id = request.conversation_id;
        if !recorder.process(&id) {
            tracing::info!(conn = self.conn, uid = self.uid, %id, "duplicate 104");
        }
        let ack = PusherFrame::Ack(Ack::ok(id)).encode();
        match mode {
            PusherMode::SlowAck { delay } if self.acks.len() < MAX_PENDING_ACKS => {
                self.acks.insert(ack, *delay);
                true
            }
            PusherMode::SlowAck { .. } => {
                tracing::warn!(conn = self.conn, "too many delayed acks; dropping one");
                true
            }
            _ => self.send_ack(ack).await,
        }
    }

    async fn send_ack(&mut self, ack: Bytes) -> bool {
        let sent = ws::send(&mut self.ws, Message::Binary(ack)).await;
        if sent {
            self.shared.recorder.ack_sent();
        }
        sent
    }
}
