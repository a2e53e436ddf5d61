//! How a session ended: the `outcome` label of `hark_sessions_total` and the close
//! code and reason the client gets.

/// How a session ended (`hark_sessions_total{outcome}`), with the close it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client closed with a Close frame (answered with its own code).
    ClientClosed,
    /// The client's TCP stream ended without a Close frame.
    ClientGone,
    /// No audio or keep-alive for `--inactivity-timeout` (1001).
    Inactive,
    /// A frame over `--max-frame-bytes` (1009).
    FrameTooBig,
    /// A text frame that is not UTF-8 (1007).
    BadText,
    /// A text frame over `--max-text-bytes` (1009).
    TextTooBig,
    /// More frames per second than `--max-frames-per-second` allows (1008).
    Flood,
    /// A WebSocket protocol violation: bad opcode, unmasked frame, stray
    /// continuation (1002).
    Protocol,
    /// The client does not read (1008).
    SlowConsumer,
    /// STT could not be reached within its budget (1013).
    SttUnavailable,
    /// Drain on SIGTERM (1012).
    Drained,
    /// The user's audio quota ran out mid-session (1008).
    QuotaExceeded,
    /// `--max-decode-failures` audio frames in a row did not decode (1003).
    Undecodable,
    /// The socket failed.
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::ClientClosed => "client_closed",
            Outcome::ClientGone => "client_gone",
            Outcome::Inactive => "inactivity",
            Outcome::FrameTooBig => "frame_too_big",
            Outcome::BadText => "bad_text",
            Outcome::TextTooBig => "text_too_big",
            Outcome::Protocol => "protocol_error",
            Outcome::Flood => "flood",
            Outcome::SlowConsumer => "slow_consumer",
            Outcome::SttUnavailable => "stt_unavailable",
            Outcome::Drained => "drained",
            Outcome::QuotaExceeded => "quota_exceeded",
            Outcome::Undecodable => "undecodable",
            Outcome::Error => "error",
        }
    }

    /// The close this session sends, if it is the one closing.
    pub fn close(self) -> Option<(u16, &'static str)> {
        match self {
            // The reply to a client's Close echoes its code (tungstenite does that);
            // a client gone without one may only have half-closed.
            Outcome::ClientClosed | Outcome::ClientGone | Outcome::Error => Some((1000, "")),
            Outcome::Inactive => Some((1001, "inactivity timeout")),
            Outcome::FrameTooBig => Some((1009, "frame too big")),
            Outcome::BadText => Some((1007, "text frame is not valid UTF-8")),
            Outcome::TextTooBig => Some((1009, "text frame too big")),
            Outcome::Protocol => Some((1002, "WebSocket protocol error")),
            Outcome::Flood => Some((1008, "too many frames per second")),
            Outcome::SlowConsumer => Some((1008, "client is not reading; reconnect")),
            Outcome::SttUnavailable => {
                Some((1013, "transcription unavailable; retry with jittered backoff"))
            }
            Outcome::Drained => Some((1012, "server restarting; reconnect with jittered backoff")),
            Outcome::Undecodable => {
                Some((1003, "audio frames do not decode as the codec the session named"))
            }
            Outcome::QuotaExceeded => {
                Some((1008, "audio quota used up for this period; see quota_exceeded.retry_after"))
            }
        }
    }
}
