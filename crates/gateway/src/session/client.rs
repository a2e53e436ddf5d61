//! The client socket's write side, driven by the session's own task.
//!
//! The session owns the whole client socket: no writer task, no channel, no
//! split lock. What it has for the client goes into [`ClientOut`], a bounded queue
//! on the session's own stack; the session's `select!` polls [`ClientOut::poll_io`],
//! which feeds everything queued into tungstenite, flushes once, and then reads.
//! A client that does not read leaves its socket unwritable: the queue fills and
//! the session closes it with 1008; a flush blocked past [`WRITE_TIMEOUT`] ends the
//! session. At the end the session sends what is queued and the Close itself,
//! each bounded, and finishes the closing handshake on the same socket.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::{CLIENT_CLOSES, TRANSCRIPT_LATENCY};

/// Bound on one blocked flush to a client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At close, bound on sending what is still queued.
const PENDING_FLUSH: Duration = Duration::from_secs(1);
/// At close, bound on sending the Close frame itself.
const CLOSE_SEND: Duration = Duration::from_secs(2);
/// omi's keep-alive text frame; omi apps answer it with a 2-byte binary frame.
pub const TEXT_PING: &str = "ping";

/// The client socket.
pub type ClientWs = WebSocketStream<crate::ws::ClientIo>;

/// What a client socket runs on: TCP in production, an in-memory pipe in tests.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Io for T {}

/// A message for the client.
#[derive(Debug)]
pub enum Outbound {
    /// A JSON event or transcript; `received` is when the STT result arrived.
    Text {
        /// The frame text.
        text: String,
        /// For transcript latency.
        received: Option<Instant>,
    },
    /// Keep-alive: omi's text `"ping"` and a WebSocket ping.
    Ping,
}

/// The queue is full: the client is not reading.
#[derive(Debug)]
pub struct SlowConsumer;

/// What the client socket did, as the session's `select!` sees it.
#[derive(Debug)]
pub enum ClientEvent {
    /// A message (or the end, or a read error) from the client.
    Read(Option<Result<Message, WsError>>),
    /// Writing failed: the socket is broken.
    WriteFailed(WsError),
}

/// What the session has for its client, and the state of writing it.
#[derive(Debug)]
pub struct ClientOut {
    /// Messages not yet fed to tungstenite, at most `capacity`.
    queue: VecDeque<Outbound>,
    capacity: usize,
    /// Set when a message found the queue full.
    overflowed: bool,
    /// Fed to tungstenite and not yet flushed.
    dirty: bool,
    /// When the current flush first found the socket unwritable.
    blocked_at: Option<Instant>,
    /// STT arrival times of the transcripts in the flush under way.
    latencies: Vec<Instant>,
    /// The close code once a close was asked for (later asks are ignored).
    closed: Option<u16>,
    /// A write failed: nothing more is written.
    broken: bool,
}

impl ClientOut {
    /// An empty queue of at most `capacity` messages (it allocates on first use).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity,
            overflowed: false,
            dirty: false,
            blocked_at: None,
            latencies: Vec::new(),
            closed: None,
            broken: false,
        }
    }

    /// Queues a message without waiting.
    pub fn send(&mut self, message: Outbound) -> Result<(), SlowConsumer> {
        if self.closed.is_some() || self.broken {
            return Ok(());
        }
        if self.queue.len() >= self.capacity {
            self.overflowed = true;
            return Err(SlowConsumer);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Queues a text frame.
    pub fn text(&mut self, text: String) -> Result<(), SlowConsumer> {
        self.send(Outbound::Text { text, received: None })
    }

    /// Whether a message ever found the queue full: the client is not reading.
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether something is queued or fed and not yet flushed.
    pub fn has_pending(&self) -> bool {
        !self.broken && (self.dirty || !self.queue.is_empty())
    }

    /// When the flush under way found the socket unwritable, if it is blocked.
    pub fn blocked_since(&self) -> Option<Instant> {
        self.blocked_at
    }

    /// Feeds what is queued into tungstenite and flushes it. `Ready(Ok)` once all
    /// of it is on the socket, `Pending` while the socket is not writable.
    pub fn poll_write<S: Io>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        if self.broken {
            return Poll::Pending;
        }
        match self.poll_write_inner(ws, cx) {
            Poll::Ready(Ok(())) => {
                self.blocked_at = None;
                if !self.latencies.is_empty() {
                    let histogram = metrics::histogram!(TRANSCRIPT_LATENCY);
                    for received in self.latencies.drain(..) {
                        histogram.record(received.elapsed().as_secs_f64());
                    }
                }
                Poll::Ready(Ok(()))
            }
            // The client's Close came in (the reader sees it next): the connection
            // is closing, not broken; what was queued cannot go out any more.
            Poll::Ready(Err(WsError::Protocol(ProtocolError::SendAfterClosing))) => {
                self.queue.clear();
                self.latencies.clear();
                self.dirty = false;
                self.blocked_at = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                self.broken = true;
                self.queue.clear();
                Poll::Ready(Err(error))
            }
            Poll::Pending => {
                self.blocked_at.get_or_insert_with(Instant::now);
                Poll::Pending
            }
        }
    }

    fn poll_write_inner<S: Io>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        while !self.queue.is_empty() {
            std::task::ready!(ws.poll_ready_unpin(cx))?;
            match self.queue.pop_front() {
                Some(Outbound::Text { text, received }) => {
                    ws.start_send_unpin(Message::text(text))?;
                    if let Some(received) = received {
                        self.latencies.push(received);
                    }
                }
                Some(Outbound::Ping) => {
                    ws.start_send_unpin(Message::text(TEXT_PING))?;
                    ws.start_send_unpin(Message::Ping(bytes::Bytes::new()))?;
                }
                None => {}
            }
            self.dirty = true;
        }
        if self.dirty {
            std::task::ready!(ws.poll_flush_unpin(cx))?;
            self.dirty = false;
        }
        Poll::Ready(Ok(()))
    }

    /// One step of the client socket for the session's `select!`: writes what is
    /// queued, then reads. Never ready with a write that merely completed.
    pub fn poll_io<S: Io>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        cx: &mut Context<'_>,
    ) -> Poll<ClientEvent> {
        if let Poll::Ready(Err(error)) = self.poll_write(ws, cx) {
            return Poll::Ready(ClientEvent::WriteFailed(error));
        }
        ws.poll_next_unpin(cx).map(ClientEvent::Read)
    }

    /// Writes what is queued, for at most [`PENDING_FLUSH`]: before the session
    /// waits on something other than the socket.
    pub async fn flush<S: Io>(&mut self, ws: &mut WebSocketStream<S>) {
        if self.has_pending() {
            let pending = std::future::poll_fn(|cx| self.poll_write(ws, cx));
            let _ = tokio::time::timeout(PENDING_FLUSH, pending).await;
        }
    }

    /// Closes the socket with `code`: sends what is queued when it can go quickly,
    /// then the Close frame (or, when the client closed first, the reply tungstenite
    /// queued for it), each bounded. Once: later calls only return.
    pub async fn close<S: Io>(&mut self, ws: &mut WebSocketStream<S>, code: u16, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(code);
        metrics::counter!(CLIENT_CLOSES, "code" => code_label(code)).increment(1);
        if self.broken {
            return;
        }
        self.flush(ws).await;
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        let close = async {
            match ws.send(Message::Close(Some(frame))).await {
                // The client closed first: tungstenite refuses a Close of ours and
                // holds its echo of the client's (RFC 6455 §5.5.1) until the next
                // flush, which sends it now.
                Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => ws.flush().await,
                other => other,
            }
        };
        let sent = tokio::time::timeout(CLOSE_SEND, close).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(code, "close frame not delivered to the client");
        }
    }

    /// Whether a write failed.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// The `code` label of `hark_client_closes_total`: Hark's own codes as numbers; the
/// codes a client may choose when Hark only echoes its Close are folded, so a client
/// cannot mint label values.
fn code_label(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        1000..=1015 => code.to_string().into(),
        3000..=4999 => "application".into(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// The race behind a 1006 seen once in twenty CI runs: the client closes right
    /// after the upgrade and the session reads the Close (tungstenite is then
    /// "closed by peer") while it still has status events queued. Writing them fails
    /// with `SendAfterClosing`; the session must still send the echo.
    #[tokio::test]
    async fn a_close_read_with_messages_queued_is_still_answered() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;

        client.send(Message::Close(None)).await.unwrap();
        let mut out = ClientOut::new(8);
        // The session reads the Close first…
        let read = std::future::poll_fn(|cx| out.poll_io(&mut server, cx)).await;
        assert!(matches!(read, ClientEvent::Read(Some(Ok(Message::Close(None))))), "{read:?}");
        // …then has a status event queued (it can no longer go out)…
        out.text("status".into()).unwrap();
        assert!(out.has_pending());
        // …and answers the Close.
        out.close(&mut server, 1000, "").await;
        assert!(!out.is_broken());
        drop(server);
        let answer = client.next().await;
        assert!(matches!(answer, Some(Ok(Message::Close(None)))), "{answer:?}");
        assert!(client.next().await.is_none());
    }

    /// A client that does not read: the queue fills to its capacity and refuses
    /// more, and the flush under way reports when it blocked.
    #[tokio::test]
    async fn a_client_that_does_not_read_fills_the_queue() {
        let (server_io, _client_io) = tokio::io::duplex(1024);
        // The production client socket: tungstenite holds at most 1 MiB for it.
        let config = crate::ws::client_config(64 * 1024);
        let mut server =
            WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config)).await;
        let mut out = ClientOut::new(4);
        let text = "x".repeat(16 * 1024);
        let mut refused = false;
        for _ in 0..1024 {
            if out.text(text.clone()).is_err() {
                refused = true;
                break;
            }
            let step = futures::poll!(std::future::poll_fn(|cx| out.poll_io(&mut server, cx)));
            assert!(step.is_pending(), "{step:?}");
        }
        assert!(refused, "the queue never filled");
        assert!(out.is_overflowed());
        assert!(out.blocked_since().is_some());
    }

    /// Queued messages reach a reading client in order, with one flush.
    #[tokio::test]
    async fn queued_messages_arrive_in_order() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let mut out = ClientOut::new(8);
        out.text("one".into()).unwrap();
        out.send(Outbound::Ping).unwrap();
        out.text("two".into()).unwrap();
        let step = futures::poll!(std::future::poll_fn(|cx| out.poll_io(&mut server, cx)));
        assert!(step.is_pending());
        assert!(out.blocked_since().is_none());
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(client.next().await.unwrap().unwrap());
        }
        assert_eq!(
            seen,
            vec![
                Message::text("one"),
                Message::text(TEXT_PING),
                Message::Ping(bytes::Bytes::new()),
                Message::text("two"),
            ]
        );
    }
}
