//! WebSocket settings for Hark's three sockets.
//!
//! tokio-tungstenite's defaults suit a browser, not a relay: a 64 MiB message limit
//! and an unbounded write buffer would let one peer hold hundreds of megabytes of a
//! pod. Each link gets limits sized for what it really carries.
//!
//! [`close_handshake`] is the one way Hark ends a WebSocket it chose to close.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        // The read buffer is allocated up front for every session and grows only
        // for a frame that needs more: a 20 ms device frame is 40–640 bytes, a
        // 100 ms PCM16 frame 3.2 KB.
        .read_buffer_size(4 * 1024)
        // Transcript messages are small; batch them but flush at 4 KiB.
        .write_buffer_size(4 * 1024)
        // A client that stops reading gets 1 MiB of slack before writes fail.
        .max_write_buffer_size(1024 * 1024)
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_frame_bytes))
}

/// The STT link: audio out, JSON results in (results are a few KiB; 1 MiB is plenty).
pub fn stt_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Results are a few KiB; a longer one grows the buffer for that read.
        .read_buffer_size(4 * 1024)
        // Audio is written as it comes (latency), in batches of what is queued,
        // flushed at 4 KiB: tungstenite keeps its write buffer's high-water
        // capacity for the socket's life, so a burst after a stall must not grow
        // it to the whole batch (the heap profile in docs/benchmarks.md).
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_frame_size(Some(1024 * 1024))
        .max_message_size(Some(1024 * 1024))
}

/// The pusher link: audio and segments out, small acks in.
pub fn pusher_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Pusher sends only 201 acks.
        .read_buffer_size(1024)
        // 101s of ~100 ms (3.2 KB at 16 kHz), a 102 now and then; flushed at
        // 4 KiB for the same reason as the STT link's.
        .write_buffer_size(4 * 1024)
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

/// The kernel send buffer asked for a client socket (Linux doubles it). What goes
/// to a client is transcripts and events, about a kilobyte a second; left to
/// autotuning, a client that stops reading could pin up to `tcp_wmem`'s maximum
/// (4 MiB) of kernel memory before its queue filled and it was closed 1008.
pub const CLIENT_SEND_BUFFER: usize = 16 * 1024;

/// Fixes a client socket's kernel send buffer at [`CLIENT_SEND_BUFFER`].
pub fn bound_client_send_buffer(stream: &TcpStream) {
    if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(CLIENT_SEND_BUFFER) {
        tracing::debug!(%error, "SO_SNDBUF not set");
    }
}

/// Bound on waiting for a client's Close reply and its end of the TCP stream.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How a close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The peer answered with its Close (or we answered its): the RFC 6455 closing
    /// handshake completed.
    Acknowledged,
    /// The peer went away (EOF or a socket error) before answering.
    PeerGone,
    /// No answer within the bound.
    TimedOut,
}

/// Closes a WebSocket the RFC 6455 way: sends a Close with `code` and `reason`
/// (cut to the 123 bytes a Close frame holds, on a character boundary), then
/// [`finish_close`]. The peer sees exactly `code` and `reason`, never 1006.
pub async fn close_handshake<S>(
    mut ws: WebSocketStream<S>,
    code: u16,
    reason: &str,
    bound: Duration,
) -> CloseOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + bound;
    let frame = CloseFrame { code: CloseCode::from(code), reason: close_reason(reason).into() };
    match tokio::time::timeout_at(deadline, ws.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => {}
        // The peer closed first: its Close is answered (echoed) by the flush in
        // `finish_close` instead of ours.
        Ok(Err(tokio_tungstenite::tungstenite::Error::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::SendAfterClosing,
        ))) => {}
        Ok(Err(_)) => return CloseOutcome::PeerGone,
        Err(_) => return CloseOutcome::TimedOut,
    }
    finish_close(ws, deadline.saturating_duration_since(tokio::time::Instant::now())).await
}

/// `reason` cut to the 123 bytes a Close frame holds, on a character boundary.
pub fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Finishes a WebSocket whose Close frame has been sent (Hark's own, or the reply
/// to the client's): reads until the peer's Close or the end of the stream, then
/// shuts our side of TCP first (RFC 6455 §7.1.1) and drains what the peer still
/// sends until it closes too, all within `bound`.
///
/// Dropping the socket at once would be wrong twice over: the peer never sees the
/// handshake complete (it reports 1006), and unread bytes in our receive buffer turn
/// the close into a TCP reset that can destroy the Close frame in flight.
pub async fn finish_close<S>(mut ws: WebSocketStream<S>, bound: Duration) -> CloseOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + bound;
    // A Close queued behind a client that was not reading goes out as soon as the
    // client reads again; reading below does not push tungstenite's buffer.
    if tokio::time::timeout_at(deadline, ws.flush()).await.is_err() {
        let _ = tokio::time::timeout(Duration::from_millis(100), ws.get_mut().shutdown()).await;
        return CloseOutcome::TimedOut;
    }
    let outcome = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => break CloseOutcome::Acknowledged,
            Ok(Some(Ok(_))) => {}
            // After answering the peer's Close, tungstenite ends the stream.
            Ok(None) => break CloseOutcome::Acknowledged,
            Ok(Some(Err(_))) => break CloseOutcome::PeerGone,
            Err(_) => break CloseOutcome::TimedOut,
        }
    };
    let io = ws.get_mut();
    let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
    let mut discard = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, io.read(&mut discard)).await {
        if n == 0 {
            break;
        }
    }
    outcome
}
