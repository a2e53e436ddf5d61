//! Socket and WebSocket settings shared by the fakes, the bounded upgrade and the
//! bounded close.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{header, Response, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// A server-side WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Time a client gets to send its upgrade request once TCP is accepted.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one outgoing message may take to reach the kernel; a peer that does not read
/// for this long is dropped rather than allowed to pin a task.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a close handshake may take (our close frame out, the peer's echo back).
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// WebSocket settings for a fake's server side.
///
/// Small read buffers keep thousands of idle links cheap; writes go out at once
/// (results and acks are latency-sensitive and small); the write buffer is capped so
/// a peer that stops reading produces an error instead of unbounded memory.
fn server_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Upgrades an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`] and by the
/// fake's shutdown. `check` sees the request and refuses it or returns what the
/// stream needs from it (`T`); `None` when the upgrade did not happen (refused,
/// failed, timed out, or shutting down).
pub(crate) async fn accept<T>(
    stream: TcpStream,
    check: impl FnOnce(&Request) -> Result<T, ErrorResponse> + Unpin,
    max_message: usize,
    cancel: &CancellationToken,
    name: &str,
) -> Option<(Ws, T)> {
    tune(&stream);
    let mut checked = None;
    let callback = |req: &Request, resp: Response<()>| -> Result<Response<()>, ErrorResponse> {
        checked = Some(check(req)?);
        Ok(resp)
    };
    let config = server_config(max_message);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = tokio::select! {
        _ = cancel.cancelled() => None,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Ok(ws)) => Some(ws),
            Ok(Err(err)) => {
                tracing::debug!(%err, "{name} handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("{name} handshake timed out");
                None
            }
        },
    };
    Some((ws?, checked?))
}

/// Per-socket options for an accepted connection.
fn tune(stream: &TcpStream) {
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
