//! The client writer: the only task that writes to a client socket.
//!
//! The session queues messages into a bounded channel; the writer feeds everything
//! queued and flushes once. A client that does not read fills the queue and is
//! closed with 1008 (the session sends the close out of band, because the queue is
//! full); a write that blocks past its bound ends the writer. At the end the writer
//! hands the write half back, so the session can finish the closing handshake.

use std::time::Duration;

use futures::stream::SplitSink;
use futures::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CLIENT_CLOSES, TRANSCRIPT_LATENCY};

/// Bound on one flush to a client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// At close, bound on sending what is still queued.
const PENDING_FLUSH: Duration = Duration::from_secs(1);
/// At close, bound on sending the Close frame itself.
const CLOSE_SEND: Duration = Duration::from_secs(2);
/// omi's keep-alive text frame; omi apps answer it with a 2-byte binary frame.
pub const TEXT_PING: &str = "ping";
/// Messages fed before one flush.
const BATCH: usize = 64;

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

/// The session's handle on its writer.
#[derive(Debug)]
pub struct ClientTx {
    queue: mpsc::Sender<Outbound>,
    close: Option<oneshot::Sender<(u16, String)>>,
    /// Set when a message found the queue full.
    overflowed: std::cell::Cell<bool>,
    /// Cancelled when the writer ended (socket failed or closed).
    pub dead: CancellationToken,
}

/// The queue is full: the client is not reading.
#[derive(Debug)]
pub struct SlowConsumer;

impl ClientTx {
    /// Queues a message without waiting.
    pub fn send(&self, message: Outbound) -> Result<(), SlowConsumer> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.set(true);
                Err(SlowConsumer)
            }
            // The writer is gone; the session notices through `dead`.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Whether a message ever found the queue full: the client is not reading.
    pub fn is_overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// Queues a text frame.
    pub fn text(&self, text: String) -> Result<(), SlowConsumer> {
        self.send(Outbound::Text { text, received: None })
    }

    /// Closes the socket with `code` after what is queued (or at once, out of band,
    /// if the queue is what failed). Idempotent.
    pub fn close(&mut self, code: u16, reason: &str) {
        if let Some(close) = self.close.take() {
            metrics::counter!(CLIENT_CLOSES, "code" => code_label(code)).increment(1);
            let _ = close.send((code, reason.to_owned()));
        }
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

/// The client socket's write half.
pub type Sink = SplitSink<WebSocketStream<crate::ws::ClientIo>, Message>;

/// Starts the writer task; returns the session's handle and the task. The task
/// gives the write half back when it ends, so the session can reunite the socket and
/// complete the closing handshake; `None` when the socket failed.
pub fn spawn(
    sink: Sink,
    capacity: usize,
    tasks: &tokio_util::task::TaskTracker,
) -> (ClientTx, tokio::task::JoinHandle<Option<Sink>>) {
    let (queue, rx) = mpsc::channel(capacity);
    let (close, close_rx) = oneshot::channel();
    let dead = CancellationToken::new();
    let task = tasks.spawn(run(sink, rx, close_rx, dead.clone()));
    (ClientTx { queue, close: Some(close), overflowed: std::cell::Cell::new(false), dead }, task)
}

/// The writer's loop, over any `Sink` of messages (the client socket's write half
/// in production, an in-memory socket's in tests).
async fn run<Si>(
    mut sink: Si,
    mut rx: mpsc::Receiver<Outbound>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
    dead: CancellationToken,
) -> Option<Si>
where
    Si: futures::Sink<Message, Error = WsError> + Unpin,
{
    let _dead = dead.drop_guard();
    loop {
        let message = tokio::select! {
            biased;
            close = &mut close_rx => return Box::pin(close_socket(sink, rx, close.ok())).await,
            message = rx.recv() => message,
        };
        let Some(message) = message else { return Some(sink) };
        let mut batch = vec![message];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let written = {
            let write = tokio::time::timeout(WRITE_TIMEOUT, write_batch(&mut sink, batch));
            tokio::select! {
                biased;
                // A close preempts a write blocked on a client that does not read: the
                // frames fed so far sit in tungstenite's buffer, ahead of the Close.
                close = &mut close_rx => Err(close.ok()),
                written = write => Ok(written),
            }
        };
        match written {
            Err(close) => return Box::pin(close_socket(sink, rx, close)).await,
            Ok(Ok(Ok(()))) => {}
            // The client's Close came in while this batch was being written (the
            // reader saw it first): the connection is closing, not broken. Answer it
            // as the session would have asked: the echo tungstenite queued goes out.
            Ok(Ok(Err(WsError::Protocol(ProtocolError::SendAfterClosing)))) => {
                return Box::pin(close_socket(sink, rx, Some((1000, String::new())))).await;
            }
            Ok(Ok(Err(error))) => {
                tracing::debug!(%error, "client write failed");
                return None;
            }
            Ok(Err(_)) => {
                tracing::info!("client write blocked past {WRITE_TIMEOUT:?}");
                return None;
            }
        }
    }
}

/// Sends what is queued when it can go quickly, then the Close frame (or, when the
/// client closed first, the reply tungstenite queued for it), each bounded.
async fn close_socket<Si>(
    mut sink: Si,
    mut rx: mpsc::Receiver<Outbound>,
    close: Option<(u16, String)>,
) -> Option<Si>
where
    Si: futures::Sink<Message, Error = WsError> + Unpin,
{
    let mut pending = Vec::new();
    while let Ok(message) = rx.try_recv() {
        pending.push(message);
    }
    let _ = tokio::time::timeout(PENDING_FLUSH, write_batch(&mut sink, pending)).await;
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let close = async {
            match sink.send(Message::Close(Some(frame))).await {
                // The client closed first: tungstenite refuses a Close of ours and
                // holds its echo of the client's (RFC 6455 §5.5.1) until the next
                // flush, which sends it now.
                Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => sink.flush().await,
                other => other,
            }
        };
        let sent = tokio::time::timeout(CLOSE_SEND, close).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(code, "close frame not delivered to the client");
        }
    }
    Some(sink)
}

async fn write_batch<Si>(sink: &mut Si, batch: Vec<Outbound>) -> Result<(), WsError>
where
    Si: futures::Sink<Message, Error = WsError> + Unpin,
{
    if batch.is_empty() {
        return Ok(());
    }
    let mut latencies = Vec::new();
    for message in batch {
        match message {
            Outbound::Text { text, received } => {
                sink.feed(Message::text(text)).await?;
                if let Some(received) = received {
                    latencies.push(received);
                }
            }
            Outbound::Ping => {
                sink.feed(Message::text(TEXT_PING)).await?;
                sink.feed(Message::Ping(bytes::Bytes::new())).await?;
            }
        }
    }
    sink.flush().await?;
    for received in latencies {
        metrics::histogram!(TRANSCRIPT_LATENCY).record(received.elapsed().as_secs_f64());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// The race behind a 1006 seen once in twenty CI runs: the client closes right
    /// after the upgrade, the session's reader takes the Close (tungstenite is then
    /// "closed by peer") while the writer is sending the first status events. That
    /// write fails with `SendAfterClosing`; the writer must still send the echo.
    #[tokio::test]
    async fn a_close_read_during_a_write_is_still_answered() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let (sink, mut stream) = server.split();

        client.send(Message::Close(None)).await.unwrap();
        // The reader sees the Close first…
        assert!(matches!(stream.next().await, Some(Ok(Message::Close(None)))));
        // …then the writer has something to write.
        let (queue, rx) = mpsc::channel(8);
        let (_close, close_rx) = oneshot::channel();
        queue.send(Outbound::Text { text: "status".into(), received: None }).await.unwrap();
        let sink = run(sink, rx, close_rx, CancellationToken::new())
            .await
            .expect("the writer hands the write half back");
        drop((sink, stream));
        // The client gets its Close answered, then the end of the stream.
        let answer = client.next().await;
        assert!(matches!(answer, Some(Ok(Message::Close(None)))), "{answer:?}");
        assert!(client.next().await.is_none());
    }
}
