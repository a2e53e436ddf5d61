//! Wire types and codecs for Hark's three links.
//!
//! - [`client`]: the app client's `/v4/listen` protocol — upgrade query, transcript
//!   segments, status and conversation events.
//! - [`pusher`]: binary frames to and from pusher (`u32` little-endian code + payload).
//! - [`deepgram`]: the Deepgram-compatible STT streaming protocol.
//!
//! Nothing here does I/O; every type round-trips through its codec, and the golden
//! frames in `proto/testdata/` pin the bytes on the wire. See `proto/README.md` for the
//! protocol reference written for client and pusher implementers.

pub mod client;
pub mod deepgram;
pub mod pusher;
pub mod record;

pub use client::{
    Codec, ListenParams, ProcessingStatus, QueryError, Segment, ServerEvent, ServiceStatus, Via,
};
pub use pusher::{Ack, FrameError, ProcessRequest, PusherFrame, SegmentsPayload};
pub use record::ConversationRecord;
