//! One live pusher WebSocket, speaking design §4: frames out in batches with one
//! flush, frames in decoded, a conversation handed over as 103 → 102 → 104, and
//! its 201 awaited. The session links and the outbox drainer both use it, so the
//! hand-over is written once.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hark_proto::{Ack, ConversationRecord, ProcessRequest, PusherFrame, SegmentsPayload};
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{send_all, Conn};

/// What arrived from pusher.
#[derive(Debug)]
pub enum Incoming {
    /// A 201.
    Ack(Ack),
    /// Anything else that is not an error (pongs, other frames); proof of life.
    Other,
    /// The link ended or failed, with why.
    Closed(String),
}

/// A live pusher link.
pub struct PusherConn {
    conn: Conn,
}

impl std::fmt::Debug for PusherConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PusherConn")
    }
}

impl PusherConn {
    /// Wraps a dialed connection.
    pub fn new(conn: Conn) -> Self {
        Self { conn }
    }

    /// Feeds `frames` and flushes once, bounded by `limit`.
    pub async fn send(&mut self, frames: Vec<Bytes>, limit: Duration) -> Result<(), String> {
        send_all(&mut self.conn, frames.into_iter().map(Message::Binary), limit).await
    }

    /// A WebSocket ping, bounded by `limit`.
    pub async fn ping(&mut self, limit: Duration) -> Result<(), String> {
        send_all(&mut self.conn, [Message::Ping(Bytes::new())], limit).await
    }

    /// The next message from pusher. Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        match self.conn.next().await {
            Some(Ok(Message::Binary(bytes))) => match PusherFrame::decode(bytes) {
                Ok(PusherFrame::Ack(ack)) => Incoming::Ack(ack),
                Ok(other) => {
                    tracing::debug!(code = other.code(), "unexpected frame from pusher");
                    Incoming::Other
                }
                Err(error) => {
                    tracing::warn!(%error, "undecodable frame from pusher");
                    Incoming::Other
                }
            },
            Some(Ok(Message::Close(frame))) => {
                Incoming::Closed(format!("pusher closed the link: {frame:?}"))
            }
            Some(Ok(_)) => Incoming::Other,
            Some(Err(error)) => Incoming::Closed(error.to_string()),
            None => Incoming::Closed("pusher ended the stream".into()),
        }
    }

    /// Hands a whole conversation over and waits for its 201, all within `limit`:
    /// the outbox drainer's replay.
    pub async fn hand_over(
        &mut self,
        record: &ConversationRecord,
        limit: Duration,
    ) -> Result<Ack, String> {
        let exchange = async {
            self.send(conversation_frames(record), limit).await?;
            loop {
                match self.recv().await {
                    Incoming::Ack(ack) if ack.conversation_id == record.conversation_id => {
                        return Ok(ack)
                    }
                    Incoming::Ack(_) | Incoming::Other => {}
                    Incoming::Closed(reason) => return Err(reason),
                }
            }
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no 201 within {limit:?}")),
        }
    }

    /// Closes the link politely, bounded by `limit`.
    pub async fn close(mut self, limit: Duration) {
        use futures::SinkExt;
        let _ = tokio::time::timeout(limit, self.conn.close()).await;
    }

    /// Drops a dead link with a reset (see [`crate::connect::WsConn::abort`]).
    pub fn abort(self) {
        self.conn.abort();
    }
}

/// 103, then 102 with every segment (if any), then 104: a conversation as pusher
/// needs it when it saw none of it live.
pub fn conversation_frames(record: &ConversationRecord) -> Vec<Bytes> {
    let id = &record.conversation_id;
    let mut frames = vec![PusherFrame::Conversation(id.clone()).encode()];
    if !record.segments.is_empty() {
        frames.push(segments_frame(record));
    }
    frames.push(process_frame(record));
    frames
}

/// A 102 with every segment of `record`.
pub fn segments_frame(record: &ConversationRecord) -> Bytes {
    PusherFrame::Segments(SegmentsPayload {
        segments: record.segments.clone(),
        memory_id: record.conversation_id.clone(),
    })
    .encode()
}

/// The 104 for `record`.
pub fn process_frame(record: &ConversationRecord) -> Bytes {
    PusherFrame::Process(ProcessRequest {
        conversation_id: record.conversation_id.clone(),
        language: record.language.clone(),
    })
    .encode()
}
