//! The Deepgram-compatible link (design §5): `Authorization: Token`, binary audio,
//! `KeepAlive` after 5 s without audio, `CloseStream` at the end (then the remaining
//! results are read), reconnect with backoff on any failure within the
//! `--stt-reconnect-*` budget ([`Attempts`], as for every link).
//!
//! ```text
//!   Connect ──ok──▶ Streaming ──session ends──▶ CloseStream ──▶ Finished
//!     ▲  │ fails        │ lost (young: counts as a failure)
//!     │  ▼              ▼
//!     └── Backoff ◀─────┘        budget spent ──▶ Failed (session closes 1013)
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hark_proto::deepgram::{Control, SttMessage};
use hark_resilience::reconnect::{Attempts, Next};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::queue::AudioRx;
use super::SttEvent;
use crate::connect::{self, send_all, Conn, Connector};
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
/// Audio frames sent per flush.
const AUDIO_BATCH: usize = 16;

/// How a stream ended.
enum End {
    /// The session closed the audio channel; results flushed.
    Finished,
    /// The socket failed.
    Lost(String),
}

/// One session's link to a Deepgram-compatible provider.
pub struct DeepgramLink {
    /// How to dial.
    connector: Arc<dyn Connector>,
    /// Listen URL with query.
    url: String,
    /// API key for `Authorization: Token`.
    api_key: Option<String>,
    /// Consecutive failures under the `--stt-reconnect-*` budget.
    attempts: Attempts,
    /// Bytes per second of the session's audio.
    bytes_per_second: f64,
    /// For logs.
    session_id: Arc<str>,
    /// Audio from the session.
    audio: AudioRx,
    /// Events to the session.
    events: mpsc::Sender<SttEvent>,
    /// Seconds of audio received from the session so far (its audio clock).
    position: f64,
}

/// How one session's STT link is set up.
pub struct LinkSetup {
    /// How to dial.
    pub connector: Arc<dyn Connector>,
    /// Listen URL with query.
    pub url: String,
    /// API key for `Authorization: Token`.
    pub api_key: Option<String>,
    /// The reconnect budget.
    pub attempts: Attempts,
    /// The session's audio rate.
    pub sample_rate: u32,
    /// For logs.
    pub session_id: Arc<str>,
}

impl DeepgramLink {
    /// Creates the link.
    pub fn new(setup: LinkSetup, audio: AudioRx, events: mpsc::Sender<SttEvent>) -> Self {
        Self {
            connector: setup.connector,
            url: setup.url,
            api_key: setup.api_key,
            attempts: setup.attempts,
            bytes_per_second: f64::from(setup.sample_rate) * 2.0,
            session_id: setup.session_id,
            audio,
            events,
            position: 0.0,
        }
    }

    /// Runs until the session ends or the retry budget is spent.
    pub async fn run(mut self) {
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut connected_once = false;
        loop {
            let next = match Box::pin(self.connect()).await {
                Ok(conn) => {
                    if connected_once {
                        metrics::counter!(STT_RECONNECTS).increment(1);
                    }
                    self.emit(SttEvent::Connected { reconnect: connected_once }).await;
                    connected_once = true;
                    let since = Instant::now();
                    match self.stream(conn).await {
                        End::Finished => {
                            self.emit(SttEvent::Finished).await;
                            return;
                        }
                        End::Lost(reason) => {
                            tracing::info!(session = %self.session_id, %reason, "STT link lost; reconnecting");
                            self.emit(SttEvent::Lost(reason.clone())).await;
                            (self.attempts.link_ended(since.elapsed(), &mut rng).next(), reason)
                        }
                    }
                }
                Err(reason) => {
                    let next = self.attempts.dial_failed(&mut rng);
                    tracing::info!(session = %self.session_id, %reason, failures = self.attempts.failures(), "STT connect failed");
                    (next, reason)
                }
            };
            let delay = match next {
                (Next::Retry(delay), _) => delay,
                (Next::Exhausted, reason) => {
                    self.emit(SttEvent::Failed(reason)).await;
                    return;
                }
            };
            // Wait out the backoff, dropping (and counting) audio meanwhile.
            let deadline = Instant::now() + delay;
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

    async fn connect(&self) -> Result<Conn, String> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| e.to_string())?;
        if let Some(key) = &self.api_key {
            let value =
                format!("Token {key}").parse().map_err(|_| "API key is not a valid header")?;
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        connect::dial(&*self.connector, request, crate::ws::stt_config(), CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
    }

    async fn stream(&mut self, mut conn: Conn) -> End {
        // Word times from the provider count from the start of *this* stream.
        let offset = self.position;
        // Timers are pinned once and moved, never rebuilt per frame: the keep-alive
        // fires 5 s after the last audio, liveness 15 s after the last frame in.
        let keepalive = sleep(KEEPALIVE_AFTER);
        tokio::pin!(keepalive);
        let mut last_audio = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut last_seen = Instant::now();
        let mut batch = Vec::with_capacity(AUDIO_BATCH);
        loop {
            tokio::select! {
                pcm = self.audio.recv() => {
                    let Some(pcm) = pcm else {
                        return Box::pin(self.close_stream(conn, offset)).await;
                    };
                    self.position += pcm.len() as f64 / self.bytes_per_second;
                    batch.push(Message::Binary(pcm));
                    while batch.len() < AUDIO_BATCH {
                        match self.audio.try_recv() {
                            Some(more) => {
                                self.position += more.len() as f64 / self.bytes_per_second;
                                batch.push(Message::Binary(more));
                            }
                            None => break,
                        }
                    }
                    match send_all(&mut conn, batch.drain(..), WRITE_TIMEOUT).await {
                        Ok(()) => last_audio = Instant::now(),
                        Err(reason) => return End::Lost(reason),
                    }
                }
                message = conn.next() => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => self.on_text(&text, offset).await,
                        Some(Ok(Message::Close(frame))) => return End::Lost(format!("provider closed: {frame:?}")),
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return End::Lost(error.to_string()),
                        None => return End::Lost("provider ended the stream".into()),
                    }
                }
                () = &mut keepalive => {
                    let due = last_audio + KEEPALIVE_AFTER;
                    if due > Instant::now() {
                        keepalive.as_mut().reset(due);
                        continue;
                    }
                    keepalive.as_mut().reset(Instant::now() + KEEPALIVE_AFTER);
                    let keep = [Message::text(Control::KeepAlive.to_json())];
                    if send_all(&mut conn, keep, WRITE_TIMEOUT).await.is_err() {
                        return End::Lost("KeepAlive could not be sent".into());
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > DEAD_AFTER {
                        return End::Lost(format!("provider silent for {DEAD_AFTER:?}"));
                    }
                    if send_all(&mut conn, [Message::Ping(Bytes::new())], WRITE_TIMEOUT).await.is_err() {
                        return End::Lost("ping could not be sent".into());
                    }
                }
            }
        }
    }

    /// Sends `CloseStream` and reads the remaining results until the provider
    /// closes or the grace passes (the session stops listening at its own
    /// hand-off deadline, which may come first).
    async fn close_stream(&mut self, mut conn: Conn, offset: f64) -> End {
        let deadline = Instant::now() + CLOSE_GRACE;
        let close = [Message::text(Control::CloseStream.to_json())];
        let _ = send_all(&mut conn, close, CLOSE_GRACE).await;
        loop {
            tokio::select! {
                () = sleep_until(deadline) => break,
                message = conn.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_text(&text, offset).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
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

#[cfg(test)]
mod tests;
