//! The client writer: the only task that writes to a client socket.
//!
//! The session queues messages into a bounded channel; the writer feeds everything
//! queued and flushes once. A client that does not read fills the queue and is
//! closed with 1008 (the session sends the close out of band, because the queue is
//! full); a write that blocks past its bound ends the writer.

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
    /// A WebSocket ping.
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
            metrics::counter!(CLIENT_CLOSES, "code" => code.to_string()).increment(1);
            let _ = close.send((code, reason.to_owned()));
        }
    }
}

type Sink = SplitSink<WebSocketStream<crate::ws::ClientIo>, Message>;

/// Starts the writer task; returns the session's handle and the task.
pub fn spawn(sink: Sink, capacity: usize) -> (ClientTx, tokio::task::JoinHandle<()>) {
    let (queue, rx) = mpsc::channel(capacity);
    let (close, close_rx) = oneshot::channel();
    let dead = CancellationToken::new();
    let task = tokio::spawn(run(sink, rx, close_rx, dead.clone()));
    (ClientTx { queue, close: Some(close), overflowed: std::cell::Cell::new(false), dead }, task)
}

async fn run(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Outbound>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
    dead: CancellationToken,
) {
    let _dead = dead.drop_guard();
    loop {
        tokio::select! {
            biased;
            close = &mut close_rx => {
                // Flush what is already queued when it can go quickly, then close.
                let mut pending = Vec::new();
                while let Ok(message) = rx.try_recv() {
                    pending.push(message);
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), write_batch(&mut sink, pending)).await;
                if let Ok((code, reason)) = close {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame)))).await;
                }
                return;
            }
            message = rx.recv() => {
                let Some(message) = message else { return };
                let mut batch = vec![message];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                match tokio::time::timeout(WRITE_TIMEOUT, write_batch(&mut sink, batch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "client write failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!("client write blocked past {WRITE_TIMEOUT:?}");
                        return;
                    }
                }
            }
        }
    }
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
            Outbound::Ping => sink.feed(Message::Ping(bytes::Bytes::new())).await?,
        }
    }
    sink.flush().await?;
    for received in latencies {
        metrics::histogram!(TRANSCRIPT_LATENCY).record(received.elapsed().as_secs_f64());
    }
    Ok(())
}
