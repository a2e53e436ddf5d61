//! WebSocket settings for Hark's three sockets.
//!
//! tokio-tungstenite's defaults suit a browser, not a relay: a 64 MiB message limit
//! and an unbounded write buffer would let one peer hold hundreds of megabytes of a
//! pod. Each link gets limits sized for what it really carries.
//!
//! [`close_handshake`] is the one way Hark ends a WebSocket it chose to close.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::prefixed::Prefixed;

/// Installs rustls' `ring` crypto provider as the process default, once, so `wss://`
/// STT and pusher URLs work (rustls is built without a default provider, and `ring`
/// needs no cmake). Harmless if another provider was installed first.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client's transport: the TCP stream, with the request head hark read itself
/// replayed to the WebSocket handshake.
pub type ClientIo = Prefixed<TcpStream>;

/// Client sockets: small text frames out, audio frames in (≤ `max_frame_bytes`).
pub fn client_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // One audio frame (typically 3–32 KiB) fits the first read.
        .read_buffer_size(32 * 1024)
        // Transcript messages are small; batch them but flush at 16 KiB.
        .write_buffer_size(16 * 1024)
        // A client that stops reading gets 1 MiB of slack before writes fail.
        .max_write_buffer_size(1024 * 1024)
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_frame_bytes))
}

/// The STT link: audio out, JSON results in (results are a few KiB; 1 MiB is plenty).
pub fn stt_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_frame_size(Some(1024 * 1024))
        .max_message_size(Some(1024 * 1024))
}

/// The pusher link: audio and segments out, small acks in.
pub fn pusher_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(64 * 1024)
        // A stalled pusher costs at most 2 MiB per session before the link fails
        // and the session goes degraded.
        .max_write_buffer_size(2 * 1024 * 1024)
        .max_frame_size(Some(256 * 1024))
        .max_message_size(Some(256 * 1024))
}

/// Turns off Nagle's algorithm (transcripts and audio are latency-bound) and sets
/// TCP keepalive so half-open peers are found by the kernel too.
pub fn tune(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set");
    }
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(error) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keepalive not set");
    }
}

/// How a close that Hark started ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The peer answered with its Close: the RFC 6455 closing handshake completed.
    Acknowledged,
    /// The peer went away (EOF or a socket error) before answering.
    PeerGone,
    /// No answer within the bound.
    TimedOut,
}

/// Closes a WebSocket the RFC 6455 way: sends a Close with `code` and `reason`
/// (cut to the 123 bytes a Close frame holds, on a character boundary), reads and
/// discards whatever the peer still sends until its Close or EOF, at most `bound`,
/// then shuts the TCP stream (server side first, as RFC 6455 §7.1.1 asks). The
/// peer sees exactly `code` and `reason`, never 1006.
pub async fn close_handshake<S>(
    mut ws: WebSocketStream<S>,
    code: u16,
    reason: &str,
    bound: Duration,
) -> CloseOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason[..end].to_owned().into() };
    let handshake = async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return CloseOutcome::PeerGone;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return CloseOutcome::Acknowledged,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return CloseOutcome::PeerGone,
            }
        }
    };
    let outcome = tokio::time::timeout(bound, handshake).await.unwrap_or(CloseOutcome::TimedOut);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.get_mut().shutdown()).await;
    outcome
}
