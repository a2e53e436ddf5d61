//! The gateway's I/O seam: the pusher link, the STT link, the breaker's probe and
//! the outbox drainer dial upstream through a [`Connector`], which yields a boxed
//! `Sink + Stream` of WebSocket messages ([`Conn`]).
//!
//! Production uses [`NetConnector`] (TCP, TLS for `wss://`, tungstenite). Tests hand
//! the links an in-memory connector that scripts faults — refuse, hang, answer 429,
//! accept then die, stall — so the link state machines run on tokio's paused clock.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Sink, SinkExt, Stream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A live upstream WebSocket: messages in and out.
pub trait WsConn:
    Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send + Unpin
{
    /// Drops a dead link. Over TCP this is a reset (SO_LINGER 0) instead of a
    /// graceful FIN, so a stalled peer that wakes up later finds the connection gone
    /// and does not act on frames (a 104, say) that Hark has already handed to the
    /// fallback path.
    fn abort(self: Box<Self>) {}
}

/// A boxed [`WsConn`].
pub type Conn = Box<dyn WsConn>;

/// A future that dials.
pub type Dialing = Pin<Box<dyn Future<Output = Result<Conn, DialError>> + Send>>;

/// Something that opens upstream WebSockets.
pub trait Connector: Send + Sync + 'static {
    /// Opens one connection for `request` (a WebSocket client request, with any
    /// extra headers), with `config` as its socket limits. Unbounded in time: the
    /// caller applies its timeout ([`dial`]).
    fn connect(&self, request: Request, config: WebSocketConfig) -> Dialing;
}

/// Why a dial failed, classified so breakers and metrics count kinds, not strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Nothing listens (ECONNREFUSED).
    #[error("connection refused")]
    Refused,
    /// TCP connect or handshake took longer than the connect timeout.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// The peer is shedding load (HTTP 429 or 503), with its raw `Retry-After`.
    #[error("HTTP {status} on upgrade (Retry-After {retry_after:?})")]
    Overloaded {
        /// 429 or 503.
        status: u16,
        /// The `Retry-After` header as sent, if any.
        retry_after: Option<String>,
    },
    /// Any other HTTP status on the upgrade (401, 404, 500…).
    #[error("HTTP {0} on upgrade")]
    Status(u16),
    /// Anything else (DNS, reset, bad handshake, TLS).
    #[error("{0}")]
    Other(String),
}

impl DialError {
    /// The `result` label of `pusher_connect_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            DialError::Refused => "refused",
            DialError::Timeout(_) => "timeout",
            DialError::Overloaded { status: 429, .. } => "http_429",
            DialError::Overloaded { .. } => "http_503",
            DialError::Status(_) | DialError::Other(_) => "error",
        }
    }

    /// The `Retry-After` delay the peer asked for (RFC 9110, both forms), clamped
    /// to `max`; `None` when there was none or it did not parse.
    pub fn retry_after(&self, max: Duration) -> Option<Duration> {
        match self {
            DialError::Overloaded { retry_after: Some(value), .. } => {
                hark_resilience::retry_after::parse_retry_after(value, SystemTime::now(), max)
            }
            _ => None,
        }
    }
}

/// Dials once through `connector`, bounded by `timeout` (TCP connect + TLS +
/// WebSocket handshake together).
pub async fn dial(
    connector: &dyn Connector,
    request: Request,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Conn, DialError> {
    match tokio::time::timeout(timeout, connector.connect(request, config)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout(timeout)),
    }
}

/// Feeds every message and flushes once, bounded by `limit`.
pub async fn send_all<S>(
    sink: &mut S,
    messages: impl IntoIterator<Item = Message>,
    limit: Duration,
) -> Result<(), String>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let work = async {
        let mut fed = false;
        for message in messages {
            sink.feed(message).await?;
            fed = true;
        }
        if fed {
            sink.flush().await?;
        }
        Ok::<(), WsError>(())
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("write blocked for {limit:?}")),
    }
}

/// The real network: TCP (tuned, see [`crate::ws::tune`]), TLS for `wss://`
/// (rustls with ring and the webpki roots), then the WebSocket handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetConnector;

impl Connector for NetConnector {
    fn connect(&self, request: Request, config: WebSocketConfig) -> Dialing {
        Box::pin(async move {
            let uri = request.uri();
            let host = uri.host().ok_or_else(|| DialError::Other("URL has no host".into()))?;
            let tls = uri.scheme_str() == Some("wss");
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await.map_err(
                |e| match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => DialError::Refused,
                    _ => DialError::Other(e.to_string()),
                },
            )?;
            crate::ws::tune(&tcp);
            match tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), None)
                .await
            {
                Ok((ws, _response)) => Ok(Box::new(ws) as Conn),
                Err(WsError::Http(response)) => {
                    let status = response.status().as_u16();
                    if status == 429 || status == 503 {
                        let retry_after = response
                            .headers()
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        Err(DialError::Overloaded { status, retry_after })
                    } else {
                        Err(DialError::Status(status))
                    }
                }
                Err(e) => Err(DialError::Other(e.to_string())),
            }
        })
    }
}

impl WsConn for WebSocketStream<MaybeTlsStream<TcpStream>> {
    fn abort(self: Box<Self>) {
        let tcp = match self.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
            _ => return,
        };
        if let Err(error) = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(%error, "SO_LINGER not set on a dead link");
        }
    }
}

#[cfg(test)]
pub mod memory;
