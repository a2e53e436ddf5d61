//! A client of Hark's `/v4/listen` protocol, as an app would speak it: upgrade with
//! a query, stream PCM frames, read transcripts and events. Used by `swarm` and by
//! the integration tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hark_proto::client::ServerMessage;
use hark_proto::{ProcessingStatus, Segment, ServerEvent, ServiceStatus, Via};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Hark refused the upgrade.
    #[error("HTTP {status}: {body}")]
    Refused {
        /// Status code.
        status: u16,
        /// `Retry-After`, if sent.
        retry_after: Option<String>,
        /// Other headers of interest (`X-Rate-Limit-Reason`).
        rate_limit_reason: Option<String>,
        /// The one-line reason.
        body: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What the client received, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A transcript update, with when it arrived.
    Segments(Vec<Segment>, Instant),
    /// A `service_status` event.
    Status(ServiceStatus),
    /// A `processing_status` event.
    Processing(ProcessingStatus),
    /// `quota_exceeded`, with its `retry_after` seconds.
    QuotaExceeded(u64),
    /// A conversation was handed off.
    Created {
        /// Its id.
        conversation_id: String,
        /// Which path.
        via: Via,
    },
    /// The server closed the socket with this code and reason.
    Closed(Option<u16>, String),
}

/// A connected app client.
pub struct ListenClient {
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    /// Everything received so far.
    pub received: Vec<Received>,
}

impl std::fmt::Debug for ListenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenClient").field("received", &self.received.len()).finish()
    }
}

/// Builds `ws://addr/v4/listen?query`.
pub fn listen_url(addr: SocketAddr, query: &str) -> String {
    format!("ws://{addr}/v4/listen?{query}")
}

impl ListenClient {
    /// Connects with optional extra headers (e.g. `Authorization`).
    pub async fn connect(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, ConnectError> {
        let mut request = listen_url(addr, query)
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ConnectError::Other(e.to_string()))?;
            let value = value.parse().map_err(|_| ConnectError::Other("bad header".into()))?;
            request.headers_mut().insert(name, value);
        }
        let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => {
                let (sink, stream) = ws.split();
                Ok(Self { sink, stream, received: Vec::new() })
            }
            Ok(Err(WsError::Http(response))) => {
                let header = |name: &str| {
                    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                };
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .unwrap_or_default();
                Err(ConnectError::Refused {
                    status: response.status().as_u16(),
                    retry_after: header("retry-after"),
                    rate_limit_reason: header("x-rate-limit-reason"),
                    body,
                })
            }
            Ok(Err(error)) => Err(ConnectError::Other(error.to_string())),
            Err(_) => Err(ConnectError::Other("connect timed out".into())),
        }
    }

    /// Sends one binary frame.
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), WsError> {
        self.sink.send(Message::Binary(frame)).await
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.sink.send(Message::text(text)).await
    }

    /// Sends `pcm` in frames of `frame_bytes`, as fast as the socket takes them.
    pub async fn send_audio(&mut self, pcm: &[u8], frame_bytes: usize) -> Result<(), WsError> {
        for chunk in pcm.chunks(frame_bytes.max(2)) {
            self.sink.feed(Message::Binary(Bytes::copy_from_slice(chunk))).await?;
        }
        self.sink.flush().await
    }

    /// Reads the next message (or `None` at the end of the stream / after `limit`).
    pub async fn next(&mut self, limit: Duration) -> Option<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??;
            let received = match message {
                Ok(Message::Text(text)) => match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Segments(s)) => Received::Segments(s, Instant::now()),
                    Ok(ServerMessage::Event(ServerEvent::ServiceStatus { status, .. })) => {
                        Received::Status(status)
                    }
                    Ok(ServerMessage::Event(ServerEvent::ProcessingStatus { status, .. })) => {
                        Received::Processing(status)
                    }
                    Ok(ServerMessage::Event(ServerEvent::ConversationCreated {
                        conversation_id,
                        via,
                    })) => Received::Created { conversation_id, via },
                    // `auth_response` belongs to /v4/web/listen, which this client
                    // does not speak.
                    Ok(ServerMessage::Event(ServerEvent::QuotaExceeded { retry_after })) => {
                        Received::QuotaExceeded(retry_after)
                    }
                    Ok(ServerMessage::Event(ServerEvent::AuthResponse { .. })) | Err(_) => continue,
                },
                Ok(Message::Close(frame)) => closed(frame),
                Ok(_) => continue,
                Err(error) => Received::Closed(None, error.to_string()),
            };
            self.received.push(received.clone());
            return Some(received);
        }
    }

    /// Reads until `done` holds for a received message; `false` on timeout/close.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Received) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Received::Closed(..)) | None => return false,
                Some(received) if done(&received) => return true,
                Some(_) => {}
            }
        }
    }

    /// Reads until the server closes; returns the close code (`None` when the
    /// socket ended without a close frame), or `Err(())` if `limit` passed first.
    pub async fn wait_closed(&mut self, limit: Duration) -> Result<Option<u16>, ()> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Received::Closed(code, _)) => return Ok(code),
                Some(_) => {}
                None if Instant::now() >= deadline => return Err(()),
                None => return Ok(None),
            }
        }
    }

    /// Closes the socket with 1000 and completes the closing handshake: the server
    /// must answer with its own Close and then end the TCP stream. `Err` says how
    /// the handshake failed (what a browser reports as 1006, `wasClean=false`);
    /// `Ok` carries everything received.
    pub async fn close(mut self) -> Result<Vec<Received>, String> {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        self.sink
            .send(Message::Close(Some(frame)))
            .await
            .map_err(|e| format!("send Close: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = None;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) if answered.is_none() => {
                    return Err("no Close from the server within 10 s".into())
                }
                Err(_) => return Err("the server answered but kept the TCP stream open".into()),
                // After the server's Close, the stream ends when the server closes TCP.
                Ok(None) | Ok(Some(Err(WsError::ConnectionClosed))) if answered.is_some() => break,
                Ok(None) | Ok(Some(Err(WsError::ConnectionClosed))) => {
                    return Err("the stream ended without the server's Close (1006)".into())
                }
                Ok(Some(Err(error))) => {
                    return Err(format!("closing handshake failed (1006): {error}"))
                }
                Ok(Some(Ok(Message::Close(frame)))) => answered = Some(closed(frame)),
                Ok(Some(Ok(_))) => {}
            }
        }
        self.received.extend(answered);
        Ok(self.received)
    }

    /// All words received so far, in order.
    pub fn words(&self) -> Vec<String> {
        self.segments()
            .iter()
            .flat_map(|s| s.text.split_whitespace().map(|w| w.to_lowercase()))
            .collect()
    }

    /// All segments received so far.
    pub fn segments(&self) -> Vec<Segment> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Segments(s, _) => Some(s.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// `processing_status` events received so far.
    pub fn processing(&self) -> Vec<ProcessingStatus> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Processing(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// `service_status` events received so far.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Status(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// Conversations created so far.
    pub fn created(&self) -> Vec<(String, Via)> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Created { conversation_id, via } => Some((conversation_id.clone(), *via)),
                _ => None,
            })
            .collect()
    }
}

fn closed(frame: Option<CloseFrame>) -> Received {
    match frame {
        Some(frame) => Received::Closed(Some(u16::from(frame.code)), frame.reason.to_string()),
        None => Received::Closed(None, String::new()),
    }
}
