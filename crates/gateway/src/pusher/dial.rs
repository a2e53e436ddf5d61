//! Dialing pusher: TCP connect + WebSocket handshake under one timeout, with every
//! failure classified so the breaker and metrics count kinds, not strings.

use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::metrics::PUSHER_CONNECT_ATTEMPTS;

/// A live pusher socket.
pub type PusherStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Nothing listens (ECONNREFUSED).
    #[error("pusher refused the connection")]
    Refused,
    /// TCP connect or handshake took longer than the connect timeout.
    #[error("pusher did not complete the handshake within {0:?}")]
    Timeout(Duration),
    /// Pusher is shedding load; `retry_after` is the parsed, clamped delay if any.
    #[error("pusher answered HTTP {status} (Retry-After {retry_after:?})")]
    Overloaded {
        /// 429 or 503.
        status: u16,
        /// The parsed `Retry-After`, clamped to `--retry-after-max`.
        retry_after: Option<Duration>,
    },
    /// Anything else (DNS, reset, bad handshake, other HTTP status).
    #[error("pusher dial failed: {0}")]
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
            DialError::Other(_) => "error",
        }
    }

    /// The `Retry-After` delay pusher asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DialError::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The listen URL for a user: `<base>/v1/trigger/listen?uid=…&sample_rate=…`.
pub fn listen_url(base: &str, uid: &str, sample_rate: u32) -> String {
    let query = form_urlencoded_pair(uid, sample_rate);
    format!("{}/v1/trigger/listen?{query}", base.trim_end_matches('/'))
}

fn form_urlencoded_pair(uid: &str, sample_rate: u32) -> String {
    let mut out = String::from("uid=");
    for b in uid.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(&format!("&sample_rate={sample_rate}"));
    out
}

/// Dials pusher once: connect + handshake bounded by `timeout`. Counts the attempt
/// in `pusher_connect_attempts_total{result}`.
pub async fn dial(
    url: &str,
    timeout: Duration,
    retry_after_max: Duration,
) -> Result<PusherStream, DialError> {
    let result = match tokio::time::timeout(timeout, dial_inner(url, retry_after_max)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout(timeout)),
    };
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::counter!(PUSHER_CONNECT_ATTEMPTS, "result" => label).increment(1);
    result
}

async fn dial_inner(url: &str, retry_after_max: Duration) -> Result<PusherStream, DialError> {
    let request = url.into_client_request().map_err(|e| DialError::Other(e.to_string()))?;
    let uri = request.uri();
    let host = uri.host().ok_or_else(|| DialError::Other("pusher URL has no host".into()))?;
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            DialError::Refused
        } else {
            DialError::Other(e.to_string())
        }
    })?;
    crate::ws::tune(&tcp);
    // TLS when the URL says wss://, plain TCP otherwise.
    let handshake = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(crate::ws::pusher_config()),
        None,
    );
    match handshake.await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            if status == 429 || status == 503 {
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        hark_resilience::retry_after::parse_retry_after(
                            v,
                            SystemTime::now(),
                            retry_after_max,
                        )
                    });
                Err(DialError::Overloaded { status, retry_after })
            } else {
                Err(DialError::Other(format!("HTTP {status} on upgrade")))
            }
        }
        Err(e) => Err(DialError::Other(e.to_string())),
    }
}
