//! The Deepgram-compatible link (design §5): `Authorization: Token`, binary audio,
//! `KeepAlive` after 5 s without audio, `CloseStream` at the end (then the remaining
//! results are read), reconnect with backoff on any failure.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hark_proto::deepgram::{Control, SttMessage};
use hark_resilience::backoff::Backoff;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::SttEvent;
use crate::config::SttReconnect;
use crate::metrics::{STT_DROPPED_BYTES, STT_RECONNECTS};

/// Send `KeepAlive` after this long without audio.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(5);
/// Bound on connect + handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// WebSocket ping period; the link is dead after `DEAD_AFTER` without any frame.
const PING_EVERY: Duration = Duration::from_secs(5);
/// See `PING_EVERY`.
const DEAD_AFTER: Duration = Duration::from_secs(15);
/// After `CloseStream`, wait this long for the final results.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A stream that dies younger than this counts as a failed connect, so a provider
/// that accepts and drops at once is not redialed at full speed forever.
const STABLE_AFTER: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a stream ended.
enum End {
    /// The session closed the audio channel; results flushed.
    Finished,
    /// The socket failed.
    Lost(String),
}

/// One session's link to a Deepgram-compatible provider.
pub struct DeepgramLink {
    /// Listen URL with query.
    url: String,
    /// API key for `Authorization: Token`.
    api_key: Option<String>,
    /// Reconnect budget.
    reconnect: SttReconnect,
    /// Bytes per second of the session's audio.
    bytes_per_second: f64,
    /// For logs.
    session_id: Arc<str>,
    /// Audio from the session.
    audio: mpsc::Receiver<Bytes>,
    /// Events to the session.
    events: mpsc::Sender<SttEvent>,
    /// Seconds of audio received from the session so far (its audio clock).
    position: f64,
}

impl DeepgramLink {
    /// Creates the link.
    pub fn new(
        url: String,
        api_key: Option<String>,
        reconnect: SttReconnect,
        sample_rate: u32,
        session_id: Arc<str>,
        audio: mpsc::Receiver<Bytes>,
        events: mpsc::Sender<SttEvent>,
    ) -> Self {
        Self {
            url,
            api_key,
            reconnect,
            bytes_per_second: f64::from(sample_rate) * 2.0,
            session_id,
            audio,
            events,
            position: 0.0,
        }
    }

    /// Runs until the session ends or the retry budget is spent.
    pub async fn run(mut self) {
        let backoff = match Backoff::new(self.reconnect.base, self.reconnect.max) {
            Ok(backoff) => backoff,
            Err(error) => {
                // Validated at start-up; a bad value here is a bug, not a client's fault.
                self.emit(SttEvent::Failed(format!("invalid STT backoff: {error}"))).await;
                return;
            }
        };
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut failures = 0u32;
        let mut connected_before = false;
        loop {
            match self.connect().await {
                Ok(ws) => {
                    if connected_before {
                        metrics::counter!(STT_RECONNECTS).increment(1);
                    }
                    self.emit(SttEvent::Connected { reconnect: connected_before }).await;
                    connected_before = true;
                    let since = Instant::now();
                    let end = self.stream(ws).await;
                    if since.elapsed() >= STABLE_AFTER {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    match end {
                        End::Finished => {
                            self.emit(SttEvent::Finished).await;
                            return;
                        }
                        End::Lost(reason) => {
                            tracing::info!(session = %self.session_id, %reason, "STT link lost; reconnecting");
                            self.emit(SttEvent::Lost(reason.clone())).await;
                            if failures >= self.reconnect.max_attempts {
                                self.emit(SttEvent::Failed(reason)).await;
                                return;
                            }
                        }
                    }
                }
                Err(reason) => {
                    failures += 1;
                    tracing::info!(session = %self.session_id, %reason, failures, "STT connect failed");
                    if failures >= self.reconnect.max_attempts {
                        self.emit(SttEvent::Failed(reason)).await;
                        return;
                    }
                }
            }
            // Wait out the backoff, dropping (and counting) audio meanwhile.
            let deadline = Instant::now() + backoff.delay(failures, &mut rng);
            loop {
                tokio::select! {
                    () = sleep_until(deadline) => break,
                    pcm = self.audio.recv() => match pcm {
                        Some(pcm) => self.drop_audio(&pcm),
                        None => {
                            self.emit(SttEvent::Finished).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Ws, String> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| e.to_string())?;
        if let Some(key) = &self.api_key {
            let value =
                format!("Token {key}").parse().map_err(|_| "API key is not a valid header")?;
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        let connect = tokio_tungstenite::connect_async_with_config(
            request,
            Some(crate::ws::stt_config()),
            true,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT:?}")),
        }
    }

    async fn stream(&mut self, ws: Ws) -> End {
        // Word times from the provider count from the start of *this* stream.
        let offset = self.position;
        let (mut sink, mut stream) = ws.split();
        let mut keepalive = Instant::now() + KEEPALIVE_AFTER;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                pcm = self.audio.recv() => {
                    let Some(pcm) = pcm else {
                        return self.close_stream(sink, stream, offset).await;
                    };
                    self.position += pcm.len() as f64 / self.bytes_per_second;
                    let mut batch = vec![pcm];
                    while batch.len() < 16 {
                        match self.audio.try_recv() {
                            Ok(more) => {
                                self.position += more.len() as f64 / self.bytes_per_second;
                                batch.push(more);
                            }
                            Err(_) => break,
                        }
                    }
                    let write = async {
                        for pcm in batch {
                            sink.feed(Message::Binary(pcm)).await?;
                        }
                        sink.flush().await
                    };
                    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => keepalive = Instant::now() + KEEPALIVE_AFTER,
                        Ok(Err(error)) => return End::Lost(error.to_string()),
                        Err(_) => return End::Lost("audio write blocked".into()),
                    }
                }
                message = stream.next() => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => self.on_text(&text, offset).await,
                        Some(Ok(Message::Close(frame))) => return End::Lost(format!("provider closed: {frame:?}")),
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return End::Lost(error.to_string()),
                        None => return End::Lost("provider ended the stream".into()),
                    }
                }
                () = sleep_until(keepalive) => {
                    keepalive = Instant::now() + KEEPALIVE_AFTER;
                    let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::text(Control::KeepAlive.to_json()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return End::Lost("KeepAlive could not be sent".into());
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > DEAD_AFTER {
                        return End::Lost(format!("provider silent for {DEAD_AFTER:?}"));
                    }
                    let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Bytes::new()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return End::Lost("ping could not be sent".into());
                    }
                }
            }
        }
    }

    /// Sends `CloseStream` and reads the remaining results until the provider
    /// closes or `CLOSE_GRACE` passes.
    async fn close_stream(
        &mut self,
        mut sink: futures::stream::SplitSink<Ws, Message>,
        mut stream: futures::stream::SplitStream<Ws>,
        offset: f64,
    ) -> End {
        let deadline = Instant::now() + CLOSE_GRACE;
        let _ = tokio::time::timeout(
            CLOSE_GRACE,
            sink.send(Message::text(Control::CloseStream.to_json())),
        )
        .await;
        loop {
            tokio::select! {
                () = sleep_until(deadline) => break,
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_text(&text, offset).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        End::Finished
    }

    async fn on_text(&mut self, text: &str, offset: f64) {
        match SttMessage::parse(text) {
            Ok(SttMessage::Results(results)) => {
                let received = Instant::now();
                let mut runs = results.speaker_runs();
                if runs.is_empty() {
                    return;
                }
                for run in &mut runs {
                    run.start += offset;
                    run.end += offset;
                }
                self.emit(SttEvent::Runs { runs, received }).await;
            }
            Ok(SttMessage::Error(error)) => {
                tracing::warn!(session = %self.session_id, description = %error.description, message = %error.message, "STT provider error");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(session = %self.session_id, %error, "unparseable STT message ignored")
            }
        }
    }

    fn drop_audio(&mut self, pcm: &Bytes) {
        self.position += pcm.len() as f64 / self.bytes_per_second;
        metrics::counter!(STT_DROPPED_BYTES).increment(pcm.len() as u64);
    }

    async fn emit(&self, event: SttEvent) {
        let _ = self.events.send(event).await;
    }
}
