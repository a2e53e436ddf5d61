//! Pusher frames (hark ↔ pusher), design §4.
//!
//! Every frame is a binary WebSocket message: a `u32` little-endian code followed by
//! the payload. Codes 100–104 go to pusher, 201 comes back.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::client::Segment;

/// Heartbeat (no payload).
pub const HEARTBEAT: u32 = 100;
/// Audio: `f64` LE start time (seconds) + PCM16 LE mono.
pub const AUDIO: u32 = 101;
/// Segments: JSON [`SegmentsPayload`].
pub const SEGMENTS: u32 = 102;
/// Conversation change: UTF-8 conversation id.
pub const CONVERSATION: u32 = 103;
/// Process a conversation: JSON [`ProcessRequest`].
pub const PROCESS: u32 = 104;
/// Acknowledgement of a 104: JSON [`Ack`].
pub const ACK: u32 = 201;

/// Length of the frame code.
pub const HEADER_LEN: usize = 4;
/// Length of the code plus the start time of an audio frame.
pub const AUDIO_HEADER_LEN: usize = HEADER_LEN + 8;

/// Payload of a 102 frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentsPayload {
    /// New segments of the conversation.
    pub segments: Vec<Segment>,
    /// The conversation they belong to.
    pub memory_id: String,
}

/// Payload of a 104 frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRequest {
    /// The conversation to process; pusher's idempotency key.
    pub conversation_id: String,
    /// Its language.
    pub language: String,
}

/// Payload of a 201 frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The conversation acknowledged.
    pub conversation_id: String,
    /// `true` when pusher processed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Why pusher could not process it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Ack {
    /// A successful acknowledgement.
    pub fn ok(conversation_id: impl Into<String>) -> Self {
        Self { conversation_id: conversation_id.into(), success: Some(true), error: None }
    }

    /// Whether pusher reported success (an ack without `error` and without
    /// `success: false`).
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.success != Some(false)
    }
}

/// One pusher frame.
#[derive(Clone, Debug, PartialEq)]
pub enum PusherFrame {
    /// 100.
    Heartbeat,
    /// 101.
    Audio {
        /// Seconds from the start of the session's audio to the first sample.
        start: f64,
        /// PCM16 LE mono.
        pcm: Bytes,
    },
    /// 102.
    Segments(SegmentsPayload),
    /// 103.
    Conversation(String),
    /// 104.
    Process(ProcessRequest),
    /// 201.
    Ack(Ack),
}

/// Why bytes could not be decoded as a pusher frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("frame of {len} bytes is shorter than its {need}-byte header")]
    Short {
        /// Bytes received.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// A code this protocol does not define.
    #[error("unknown pusher frame code {0}")]
    UnknownCode(u32),
    /// A JSON payload that does not parse.
    #[error("bad JSON in frame {code}: {source}")]
    Json {
        /// The frame code.
        code: u32,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A 103 payload that is not UTF-8.
    #[error("conversation id is not UTF-8")]
    Utf8,
    /// An audio start time that is not a finite, non-negative number.
    #[error("audio start time {0} is not a finite non-negative number")]
    BadStart(f64),
}

impl PusherFrame {
    /// The frame's code.
    pub fn code(&self) -> u32 {
        match self {
            PusherFrame::Heartbeat => HEARTBEAT,
            PusherFrame::Audio { .. } => AUDIO,
            PusherFrame::Segments(_) => SEGMENTS,
            PusherFrame::Conversation(_) => CONVERSATION,
            PusherFrame::Process(_) => PROCESS,
            PusherFrame::Ack(_) => ACK,
        }
    }

    /// Encodes the frame for the wire.
    pub fn encode(&self) -> Bytes {
        match self {
            PusherFrame::Heartbeat => {
                const BYTES: [u8; 4] = HEARTBEAT.to_le_bytes();
                Bytes::from_static(&BYTES)
            }
            PusherFrame::Audio { start, pcm } => encode_audio(*start, pcm),
            PusherFrame::Segments(p) => encode_json(SEGMENTS, p),
            PusherFrame::Conversation(id) => {
                let mut buf = BytesMut::with_capacity(HEADER_LEN + id.len());
                buf.put_u32_le(CONVERSATION);
                buf.put_slice(id.as_bytes());
                buf.freeze()
            }
            PusherFrame::Process(p) => encode_json(PROCESS, p),
            PusherFrame::Ack(p) => encode_json(ACK, p),
        }
    }

    /// Decodes a frame. Audio payloads are zero-copy slices of `buf`.
    pub fn decode(buf: Bytes) -> Result<Self, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Short { len: buf.len(), need: HEADER_LEN });
        }
        let code = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let payload = &buf[HEADER_LEN..];
        let json = |code| move |source| FrameError::Json { code, source };
        Ok(match code {
            HEARTBEAT => PusherFrame::Heartbeat,
            AUDIO => {
                if buf.len() < AUDIO_HEADER_LEN {
                    return Err(FrameError::Short { len: buf.len(), need: AUDIO_HEADER_LEN });
                }
                let mut start = [0u8; 8];
                start.copy_from_slice(&buf[HEADER_LEN..AUDIO_HEADER_LEN]);
                let start = f64::from_le_bytes(start);
                if !start.is_finite() || start < 0.0 {
                    return Err(FrameError::BadStart(start));
                }
                PusherFrame::Audio { start, pcm: buf.slice(AUDIO_HEADER_LEN..) }
            }
            SEGMENTS => PusherFrame::Segments(serde_json::from_slice(payload).map_err(json(code))?),
            CONVERSATION => PusherFrame::Conversation(
                std::str::from_utf8(payload).map_err(|_| FrameError::Utf8)?.to_owned(),
            ),
            PROCESS => PusherFrame::Process(serde_json::from_slice(payload).map_err(json(code))?),
            ACK => PusherFrame::Ack(serde_json::from_slice(payload).map_err(json(code))?),
            other => return Err(FrameError::UnknownCode(other)),
        })
    }
}

/// Encodes a 101 frame straight from a PCM slice (the hot path: one copy, one
/// allocation).
pub fn encode_audio(start: f64, pcm: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(AUDIO_HEADER_LEN + pcm.len());
    buf.put_u32_le(AUDIO);
    buf.put_f64_le(start);
    buf.put_slice(pcm);
    buf.freeze()
}

fn encode_json<T: Serialize>(code: u32, payload: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_u32_le(code);
    serde_json::to_writer(&mut buf, payload).expect("pusher payloads always serialize");
    buf.into_inner().freeze()
}

/// Reads just the code of a frame, if it has one.
pub fn peek_code(buf: &[u8]) -> Option<u32> {
    buf.get(..HEADER_LEN).map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]))
}
