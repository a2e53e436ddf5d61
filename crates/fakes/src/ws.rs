//! Socket and WebSocket settings shared by the fakes, and the bounded close.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::ErrorResponse;
use tokio_tungstenite::tungstenite::http::{header, Response, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A server-side WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Time a client gets to send its upgrade request once TCP is accepted.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one outgoing message may take to reach the kernel; a peer that does not read
/// for this long is dropped rather than allowed to pin a task.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a close handshake may take (our close frame out, the peer's echo back).
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time `shutdown()` waits for every connection task to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections a fake serves at once; further connects wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 10_000;

/// WebSocket settings for a fake's server side.
///
/// Small read buffers keep thousands of idle links cheap; writes go out at once
/// (results and acks are latency-sensitive and small); the write buffer is capped so
/// a peer that stops reading produces an error instead of unbounded memory.
pub(crate) fn server_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Per-socket options for an accepted connection.
pub(crate) fn tune(stream: &TcpStream) {
    // Acks and results are tiny; Nagle would hold them for the peer's delayed ACK.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "TCP_NODELAY failed");
    }
}

/// An HTTP answer refusing an upgrade, with an optional verbatim `Retry-After`.
pub(crate) fn refusal(
    status: StatusCode,
    reason: &str,
    retry_after: Option<&str>,
) -> ErrorResponse {
    let mut response = Response::new(Some(format!("{reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    if let Some(value) = retry_after {
        // Values are validated when the mode is set; an invalid one is left out.
        if let Ok(value) = header::HeaderValue::from_str(value) {
            headers.insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// Sends `msg`, bounded by [`WRITE_TIMEOUT`]. `false` means the link is unusable.
pub(crate) async fn send(ws: &mut Ws, msg: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)).await, Ok(Ok(())))
}

/// Closes with `code`/`reason` and waits (bounded) for the peer's echo, reading and
/// discarding whatever it still sends, so the close frame is not lost to a reset.
pub(crate) async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame { code, reason: reason.to_owned().into() };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
