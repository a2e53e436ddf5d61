//! One swarm client: connect, stream at real-time pace, read and measure, reconnect
//! after a disconnect, wind down at the end.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hark_proto::client::ServerMessage;
use hark_proto::{ProcessingStatus, ServerEvent, ServiceStatus};
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::audio::{AudioStream, Frame};
use super::codec::Link;
use super::matcher::{Matched, Matcher};
use super::{unix_ms, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on the upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A frame that cannot be written for this long counts as a dead socket.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection ended.
enum End {
    /// The server closed it or the socket failed: reconnect.
    Disconnected,
    /// The run is over.
    Finished,
}

/// Runs client `index` from `start_at` until the swarm winds down.
pub(super) async fn run(shared: Arc<Shared>, index: usize, start_at: Instant) {
    let config = &shared.config;
    tokio::select! {
        () = sleep_until(start_at) => {}
        () = shared.wind_down.cancelled() => return,
    }
    let codec = config.codecs.for_client(index, config.clients);
    let bases = config.urls();
    // Round-robin over the URLs; a failed connect moves on to the next one.
    let mut at_url = index % bases.len();
    shared.agg().per_url.entry(at_url).or_default().clients += 1;
    let seed = config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut audio = AudioStream::new(config.source.clone(), config.sample_rate, config.frame, seed);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut connected_before = false;
    loop {
        if shared.wind_down.is_cancelled() {
            return;
        }
        let url = listen_url(config, &bases[at_url], index, codec);
        let retry = match connect(&url).await {
            Ok(ws) => {
                {
                    let mut agg = shared.agg();
                    agg.sessions_opened += 1;
                    agg.per_url.entry(at_url).or_default().sessions_opened += 1;
                    if connected_before {
                        agg.reconnects += 1;
                    }
                }
                connected_before = true;
                audio.restart();
                // A new session has a new decoder in hark: a new link here too.
                let link = match Link::new(codec, config.sample_rate) {
                    Ok(link) => link,
                    Err(err) => {
                        shared.agg().error(format!("client {index}: {err:#}"));
                        return;
                    }
                };
                match Connection::new(&shared, link, at_url).run(ws, &mut audio).await {
                    End::Finished => return,
                    End::Disconnected if !config.reconnect => return,
                    End::Disconnected => true,
                }
            }
            Err(kind) => {
                let mut agg = shared.agg();
                *agg.connect_failures.entry(kind).or_default() += 1;
                agg.per_url.entry(at_url).or_default().connect_failures += 1;
                at_url = (at_url + 1) % bases.len();
                true
            }
        };
        if retry {
            // As an app would: jittered, so a mass disconnect does not come back at once.
            let delay = Duration::from_millis(rng.random_range(1000..5000));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shared.wind_down.cancelled() => return,
            }
        }
    }
}

fn listen_url(
    config: &super::SwarmConfig,
    base: &str,
    index: usize,
    codec: hark_proto::Codec,
) -> String {
    let base = base.trim_end_matches('/');
    let mut url = format!(
        "{base}/v4/listen?uid={}-{index}&sample_rate={}&codec={}&language=en",
        config.uid_prefix,
        config.sample_rate,
        codec.as_str()
    );
    if let Some(timeout) = config.conversation_timeout {
        url.push_str(&format!("&conversation_timeout={}", timeout.as_secs().max(1)));
    }
    if let Some(extra) = &config.extra_query {
        url.push('&');
        url.push_str(extra.trim_start_matches(['&', '?']));
    }
    url
}

/// Connects; `Err` is the failure kind for the report.
async fn connect(url: &str) -> Result<Ws, String> {
    let connect = tokio_tungstenite::connect_async_with_config(url, None, true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => Err(format!("http_{}", response.status().as_u16())),
        Ok(Err(WsError::Io(err))) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("refused".into())
        }
        Ok(Err(_)) => Err("error".into()),
        Err(_) => Err("timeout".into()),
    }
}

/// One open socket's state.
struct Connection<'a> {
    shared: &'a Shared,
    /// This session's encoder, and its twin of hark's decoder for the matcher.
    link: Link,
    matcher: Matcher,
    /// Talk stretches that produced transcript on this connection.
    blocks: BTreeSet<u64>,
    /// Conversations announced on this connection.
    created: u64,
    /// Whether the latest `processing_status` is `degraded`.
    degraded: bool,
    /// The latest `service_status` (the omi app shows "listening" only while it
    /// is `ready`).
    service: Option<ServiceStatus>,
    /// Index of the URL this socket is on.
    url: usize,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, link: Link, url: usize) -> Self {
        Self {
            shared,
            link,
            matcher: Matcher::new(shared.config.sample_rate),
            blocks: BTreeSet::new(),
            created: 0,
            degraded: false,
            service: None,
            url,
        }
    }

    async fn run(mut self, ws: Ws, audio: &mut AudioStream) -> End {
        {
            let mut agg = self.shared.agg();
            agg.connected += 1;
            agg.connected_peak = agg.connected_peak.max(agg.connected);
        }
        let (mut sink, mut stream) = ws.split();
        let end = self.stream(&mut sink, &mut stream, audio).await;
        let end = match end {
            Some(end) => end,
            None => {
                // Wind-down: no more audio; wait for open conversations, then close.
                self.settle(&mut sink, &mut stream).await;
                self.close(&mut sink, &mut stream).await;
                End::Finished
            }
        };
        self.finish(&end);
        end
    }

    /// Streams until the socket ends (`Some`) or the wind-down begins (`None`).
    async fn stream(
        &mut self,
        sink: &mut SplitSink<Ws, Message>,
        stream: &mut SplitStream<Ws>,
        audio: &mut AudioStream,
    ) -> Option<End> {
        let mut ticker = tokio::time::interval(self.shared.config.frame);
        loop {
            tokio::select! {
                biased;
                () = self.shared.abort.cancelled() => return Some(End::Finished),
                () = self.shared.wind_down.cancelled() => return None,
                message = stream.next() => {
                    if let Some(code) = self.on_message(message) {
                        self.disconnected(code);
                        return Some(End::Disconnected);
                    }
                }
                _ = ticker.tick() => {
                    let pcm = match audio.next_frame() {
                        Frame::Audio(pcm) => pcm,
                        Frame::KeepAlive => {
                            if let Err(code) = send(sink, Message::Binary(Bytes::from_static(&[0, 0]))).await {
                                self.disconnected(code);
                                return Some(End::Disconnected);
                            }
                            self.shared.agg().keepalives += 1;
                            continue;
                        }
                        Frame::Idle => continue,
                    };
                    let encoded = match self.link.encode(&pcm) {
                        Ok(encoded) => encoded,
                        Err(err) => {
                            self.shared.agg().error(format!("{err:#}"));
                            return Some(End::Finished);
                        }
                    };
                    let (frames, wire) = (encoded.frames.len(), encoded.frames.iter().map(Bytes::len).sum::<usize>());
                    for frame in encoded.frames {
                        if let Err(code) = send(sink, Message::Binary(frame)).await {
                            self.disconnected(code);
                            return Some(End::Disconnected);
                        }
                    }
                    // The matcher hears what hark will decode (and fake-stt hear).
                    let words = self.matcher.sent(&encoded.decoded, Instant::now(), unix_ms(), audio.block());
                    let mut agg = self.shared.agg();
                    agg.frames_sent += frames as u64;
                    agg.audio_bytes += pcm.len() as u64;
                    agg.wire_bytes += wire as u64;
                    agg.words_sent += words as u64;
                }
            }
        }
    }

    /// Keep-alives until every word sent was transcribed and every talk stretch
    /// with transcript was announced, or the conversation timeout plus the settle
    /// time passed.
    async fn settle(&mut self, sink: &mut SplitSink<Ws, Message>, stream: &mut SplitStream<Ws>) {
        let config = &self.shared.config;
        let deadline =
            Instant::now() + config.conversation_timeout.unwrap_or(Duration::ZERO) + config.settle;
        let mut keepalive = tokio::time::interval(Duration::from_secs(1));
        // Words still in flight may open a stretch not counted yet: wait for them too.
        while (self.created as usize) < self.blocks.len() || self.matcher.pending() > 0 {
            tokio::select! {
                () = self.shared.abort.cancelled() => return,
                () = sleep_until(deadline) => return,
                message = stream.next() => {
                    if let Some(code) = self.on_message(message) {
                        self.disconnected(code);
                        return;
                    }
                }
                _ = keepalive.tick() => {
                    if send(sink, Message::Binary(Bytes::from_static(&[0, 0]))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Closes normally and reads what is left until the server's close.
    async fn close(&mut self, sink: &mut SplitSink<Ws, Message>, stream: &mut SplitStream<Ws>) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "swarm done".into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                let _ = self.on_message(Some(Ok(message)));
            }
        })
        .await;
    }

    /// Handles one message; `Some(code)` when the socket ended.
    fn on_message(&mut self, message: Option<Result<Message, WsError>>) -> Option<String> {
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Some(
                    frame.map_or_else(|| "no_code".into(), |f| u16::from(f.code).to_string()),
                )
            }
            Some(Ok(_)) => return None,
            Some(Err(_)) | None => return Some("none".into()),
        };
        // omi's text keep-alive; the swarm streams audio, so it needs no answer.
        if text.as_str() == "ping" {
            return None;
        }
        let now = Instant::now();
        let mut agg = self.shared.agg();
        if self.shared.config.plain {
            agg.plain_messages += 1;
            return None;
        }
        match ServerMessage::parse(&text) {
            Ok(ServerMessage::Segments(segments)) => {
                agg.segment_messages += 1;
                for segment in &segments {
                    for word in segment.text.split_whitespace() {
                        match self.matcher.received(word, now) {
                            Matched::Word { sent, skipped } => {
                                let latency = now.saturating_duration_since(sent.at);
                                agg.latency.record(latency);
                                agg.window.record(latency);
                                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                                agg.samples.push((sent.unix_ms, micros));
                                agg.words_matched += 1;
                                agg.words_lost += skipped as u64;
                                self.blocks.insert(sent.block);
                            }
                            Matched::Unmatched => agg.words_unmatched += 1,
                        }
                    }
                }
            }
            Ok(ServerMessage::Event(ServerEvent::ServiceStatus { status, .. })) => {
                *agg.statuses.entry(wire_name(status)).or_default() += 1;
                self.service = Some(status);
            }
            Ok(ServerMessage::Event(ServerEvent::ProcessingStatus { status, .. })) => {
                *agg.processing.entry(wire_name(status)).or_default() += 1;
                let degraded = status == ProcessingStatus::Degraded;
                if degraded != self.degraded {
                    if degraded {
                        agg.degraded_now += 1;
                    } else {
                        agg.degraded_now = agg.degraded_now.saturating_sub(1);
                    }
                    self.degraded = degraded;
                }
            }
            Ok(ServerMessage::Event(ServerEvent::ConversationCreated { conversation_id, via })) => {
                *agg.created.entry(via.as_str().to_owned()).or_default() += 1;
                *agg.per_url
                    .entry(self.url)
                    .or_default()
                    .created
                    .entry(via.as_str().to_owned())
                    .or_default() += 1;
                agg.created_ids.push((
                    conversation_id,
                    via.as_str().to_owned(),
                    unix_ms(),
                    self.url,
                ));
                self.created += 1;
            }
            // Only /v4/web/listen sends it; the swarm uses /v4/listen.
            Ok(ServerMessage::Event(ServerEvent::AuthResponse { .. })) => {}
            // Quotas are not part of a load test's workload; the close that follows
            // (1008) is counted as a disconnect.
            Ok(ServerMessage::Event(ServerEvent::QuotaExceeded { .. })) => {}
            Err(err) => agg.error(format!("unparseable message from hark: {err}")),
        }
        None
    }

    fn disconnected(&mut self, code: String) {
        let mut agg = self.shared.agg();
        agg.disconnect_times.push((unix_ms(), code.clone()));
        agg.per_url.entry(self.url).or_default().disconnects += 1;
        *agg.disconnects.entry(code).or_default() += 1;
        let missing = (self.blocks.len() as u64).saturating_sub(self.created);
        agg.blocks_cut_by_disconnect += missing;
        // Counted once: `finish` sees an empty set.
        agg.blocks_with_transcript += self.blocks.len() as u64;
        self.blocks.clear();
        self.created = 0;
    }

    /// Final accounting for this connection.
    fn finish(&mut self, end: &End) {
        let mut agg = self.shared.agg();
        agg.connected = agg.connected.saturating_sub(1);
        agg.words_lost += self.matcher.expired;
        let blocks = self.blocks.len() as u64;
        agg.blocks_with_transcript += blocks;
        agg.blocks_without_created += blocks.saturating_sub(self.created);
        if self.degraded {
            agg.degraded_now = agg.degraded_now.saturating_sub(1);
            if matches!(end, End::Finished) {
                agg.ended_degraded += 1;
            }
        }
        if matches!(end, End::Finished) && self.service != Some(ServiceStatus::Ready) {
            agg.ended_not_ready += 1;
        }
    }
}

/// Sends one message, bounded; `Err` is the disconnect code.
async fn send(sink: &mut SplitSink<Ws, Message>, message: Message) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("none".into()),
        Err(_) => Err("send_timeout".into()),
    }
}

/// The wire name of a status (`degraded`, `stt_initiating`, …).
pub(super) fn wire_name<S: serde::Serialize + std::fmt::Debug>(status: S) -> String {
    let status = &status;
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status:?}"))
}
