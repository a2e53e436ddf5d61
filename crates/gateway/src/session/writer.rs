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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
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

async fn run(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Outbound>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
    dead: CancellationToken,
) -> Option<Sink> {
    let _dead = dead.drop_guard();
    loop {
        let message = tokio::select! {
            biased;
            close = &mut close_rx => return close_socket(sink, rx, close.ok()).await,
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
            Err(close) => return close_socket(sink, rx, close).await,
            Ok(Ok(Ok(()))) => {}
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
async fn close_socket(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Outbound>,
    close: Option<(u16, String)>,
) -> Option<Sink> {
    let mut pending = Vec::new();
    while let Ok(message) = rx.try_recv() {
        pending.push(message);
    }
    let _ = tokio::time::timeout(PENDING_FLUSH, write_batch(&mut sink, pending)).await;
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        // After the client's own Close, tungstenite ignores this frame and flushes
        // its echo of the client's instead (RFC 6455 §5.5.1).
        let sent = tokio::time::timeout(CLOSE_SEND, sink.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(code, "close frame not delivered to the client");
        }
    }
    Some(sink)
}

async fn write_batch(
    sink: &mut Sink,
    batch: Vec<Outbound>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
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
