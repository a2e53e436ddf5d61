//! One client session: its own task, owning the client socket's read half, the
//! STT link, the pusher link and the current conversation.
//!
//! ```text
//!  client ─frames─▶ session ──audio (try_send)──▶ STT link ──▶ provider
//!     ▲               │  ▲                                        │
//!     │               │  └──────── runs ◀─────────────────────────┘
//!   writer ◀─queue────┤
//!                     └──audio, segments, 103/104 (try_send)──▶ pusher link ──▶ pusher
//!                                         ▲ degraded / recovered / handed off
//! ```
//!
//! Nothing here waits on pusher: the link is fed with `try_send` and what it cannot
//! take is dropped and counted. The client is never closed because of pusher.

mod conversation;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::StreamExt;
use hark_proto::client::{segments_to_json, KEEPALIVE_MAX_BYTES};
use hark_proto::{
    ConversationRecord, ListenParams, ProcessingStatus, ServerEvent, ServiceStatus, Via,
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use conversation::Conversation;
use writer::{ClientTx, Outbound};

use crate::admission::AdmissionGuard;
use crate::metrics::{
    CLIENT_MESSAGES, CONVERSATIONS, PUSHER_DROPPED_BYTES, PUSHER_DROPPED_FRAMES, SESSIONS_TOTAL,
    STT_DROPPED_BYTES,
};
use crate::pusher::link::{LinkCommand, LinkEvent, PusherLink};
use crate::stt::{SttEvent, SttStartError};
use crate::Shared;

/// Commands queued to the pusher link before audio is dropped.
const LINK_QUEUE: usize = 128;
/// Keep-alive period towards the client: omi's text `"ping"` (which omi apps
/// answer with a 2-byte keep-alive, so a muted app never hits the inactivity
/// timeout) and a WebSocket ping for other clients, as omi's backend does every 10 s.
const CLIENT_PING: Duration = Duration::from_secs(10);
/// At session end, how long to wait for the STT provider's last results.
const STT_FLUSH: Duration = Duration::from_secs(7);
/// At session end, how long to wait for the pusher link to hand everything off.
const LINK_FLUSH: Duration = Duration::from_secs(15);
/// Bound on the writer's last flush and Close frame (its own steps are bounded).
const WRITER_END: Duration = Duration::from_secs(5);

/// How a session ended (`hark_sessions_total{outcome}`), with the close it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The client closed with a Close frame (answered with its own code).
    ClientClosed,
    /// The client's TCP stream ended without a Close frame.
    ClientGone,
    /// No audio or keep-alive for `--inactivity-timeout` (1001).
    Inactive,
    /// A frame over `--max-frame-bytes` (1009).
    FrameTooBig,
    /// A text frame that is not UTF-8 (1007).
    BadText,
    /// A text frame over `--max-text-bytes` (1009).
    TextTooBig,
    /// More frames per second than `--max-frames-per-second` allows (1008).
    Flood,
    /// A WebSocket protocol violation: bad opcode, unmasked frame, stray
    /// continuation (1002).
    Protocol,
    /// The client does not read (1008).
    SlowConsumer,
    /// STT could not be reached within its budget (1013).
    SttUnavailable,
    /// Drain on SIGTERM (1012).
    Drained,
    /// The socket failed.
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::ClientClosed => "client_closed",
            Outcome::ClientGone => "client_gone",
            Outcome::Inactive => "inactivity",
            Outcome::FrameTooBig => "frame_too_big",
            Outcome::BadText => "bad_text",
            Outcome::TextTooBig => "text_too_big",
            Outcome::Protocol => "protocol_error",
            Outcome::Flood => "flood",
            Outcome::SlowConsumer => "slow_consumer",
            Outcome::SttUnavailable => "stt_unavailable",
            Outcome::Drained => "drained",
            Outcome::Error => "error",
        }
    }

    /// The close this session sends, if it is the one closing.
    fn close(self) -> Option<(u16, &'static str)> {
        match self {
            // The reply to a client's Close echoes its code (tungstenite does that);
            // a client gone without one may only have half-closed.
            Outcome::ClientClosed | Outcome::ClientGone | Outcome::Error => Some((1000, "")),
            Outcome::Inactive => Some((1001, "inactivity timeout")),
            Outcome::FrameTooBig => Some((1009, "frame too big")),
            Outcome::BadText => Some((1007, "text frame is not valid UTF-8")),
            Outcome::TextTooBig => Some((1009, "text frame too big")),
            Outcome::Protocol => Some((1002, "WebSocket protocol error")),
            Outcome::Flood => Some((1008, "too many frames per second")),
            Outcome::SlowConsumer => Some((1008, "client is not reading; reconnect")),
            Outcome::SttUnavailable => {
                Some((1013, "transcription unavailable; retry with jittered backoff"))
            }
            Outcome::Drained => Some((1012, "server restarting; reconnect with jittered backoff")),
        }
    }
}

/// Who the session is for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Hark's id for the session.
    pub session_id: Arc<str>,
    /// The user.
    pub uid: String,
    /// The user's plan (from the token's plan claim); `None` = the default plan.
    pub plan: Option<String>,
}

/// Runs one session to its end. `guard` holds its admission slot.
pub async fn run(
    ws: WebSocketStream<crate::ws::ClientIo>,
    shared: Arc<Shared>,
    params: ListenParams,
    who: Identity,
    guard: AdmissionGuard,
) {
    let started = Instant::now();
    tracing::info!(session = %who.session_id, uid = %who.uid, sample_rate = params.sample_rate, "session started");
    let (sink, mut stream) = ws.split();
    let (client, writer) = writer::spawn(sink, shared.config.limits.client_queue.get());
    let mut session = Session::new(shared, params, who, client);
    let outcome = session.run(&mut stream).await;
    let who = session.who.clone();
    drop(session);
    // The writer sent the Close (or the reply to the client's) and gives the write
    // half back; the handshake completes on the reunited socket before TCP closes.
    let sink = tokio::time::timeout(WRITER_END, writer).await.ok().and_then(Result::ok).flatten();
    let closed = match sink.map(|sink| sink.reunite(stream)) {
        Some(Ok(ws)) if outcome != Outcome::Error => {
            Some(crate::ws::finish_close(ws, crate::ws::CLOSE_LINGER).await)
        }
        _ => None,
    };
    metrics::counter!(SESSIONS_TOTAL, "outcome" => outcome.label()).increment(1);
    tracing::info!(
        session = %who.session_id, uid = %who.uid,
        duration_s = started.elapsed().as_secs_f64(),
        outcome = outcome.label(),
        close = ?closed,
        "session ended"
    );
    drop(guard);
}

struct Session {
    shared: Arc<Shared>,
    params: ListenParams,
    who: Identity,
    client: ClientTx,
    /// Seconds of audio received (the session's audio clock).
    audio_position: f64,
    /// Bytes per second of the client's PCM.
    bytes_per_second: f64,
    conversation: Conversation,
    /// When the current conversation ends for lack of new transcript.
    conversation_deadline: Option<Instant>,
    /// To the pusher link (None without `--pusher-url`).
    link: Option<mpsc::Sender<LinkCommand>>,
    /// From the pusher link, or from fallback writes when there is no link.
    link_events: mpsc::Receiver<LinkEvent>,
    /// Sender side kept for fallback writes without a link.
    fallback_events: mpsc::Sender<LinkEvent>,
    /// Fallback writes in flight (no-link mode).
    fallback_tasks: tokio::task::JoinSet<()>,
    /// Whether STT has been ready once.
    stt_ready_once: bool,
}

impl Session {
    fn new(shared: Arc<Shared>, params: ListenParams, who: Identity, client: ClientTx) -> Self {
        let (fallback_events, link_events) = mpsc::channel(64);
        let bytes_per_second = f64::from(params.sample_rate) * 2.0;
        Self {
            shared,
            params,
            who,
            client,
            audio_position: 0.0,
            bytes_per_second,
            conversation: Conversation::new(0.0),
            conversation_deadline: None,
            link: None,
            link_events,
            fallback_events,
            fallback_tasks: tokio::task::JoinSet::new(),
            stt_ready_once: false,
        }
    }

    async fn run(
        &mut self,
        stream: &mut SplitStream<WebSocketStream<crate::ws::ClientIo>>,
    ) -> Outcome {
        self.status(ServiceStatus::Initiating, "session accepted");
        self.start_pusher_link();
        self.status(ServiceStatus::SttInitiating, "connecting to speech recognition");
        let stt = self.shared.stt.open(
            &self.params.language,
            self.params.sample_rate,
            self.who.session_id.clone(),
        );
        let mut stt = match stt {
            Ok(stt) => stt,
            Err(error) => {
                let text = match error {
                    SttStartError::Busy => {
                        "all speech decoders are busy; retry with jittered backoff"
                    }
                    SttStartError::Unavailable(_) => "speech recognition unavailable",
                };
                self.status(ServiceStatus::SttInitiating, text);
                tracing::warn!(session = %self.who.session_id, %error, "no STT for session");
                return self.finish(None, Outcome::SttUnavailable).await;
            }
        };
        if let Some(link) = &self.link {
            let _ = link.try_send(LinkCommand::ConversationStarted(self.conversation.id.clone()));
        }

        let limits = self.shared.config.limits.clone();
        let mut inactivity = Instant::now() + limits.inactivity_timeout;
        // A client that answers every ping never reaches the inactivity timeout.
        let mut ping = tokio::time::interval(CLIENT_PING.min(limits.inactivity_timeout / 3));
        ping.reset();
        let drain = self.shared.drain.clone();
        let mut drain_at: Option<Instant> = None;
        let dead = self.client.dead.clone();
        let mut frames = FrameBudget::new(limits.max_frames_per_second.get());

        let outcome = loop {
            let conversation_deadline = self.conversation_deadline;
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(_) | Message::Text(_))) if !frames.take() => break Outcome::Flood,
                    Some(Ok(Message::Binary(data))) => {
                        inactivity = Instant::now() + limits.inactivity_timeout;
                        if data.len() > KEEPALIVE_MAX_BYTES {
                            self.on_audio(data, &stt.audio);
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        if text.len() > limits.max_text_bytes.get() {
                            break Outcome::TextTooBig;
                        }
                        inactivity = Instant::now() + limits.inactivity_timeout;
                        let kind = hark_proto::client::client_text_label(&text);
                        metrics::counter!(CLIENT_MESSAGES, "type" => kind).increment(1);
                        tracing::debug!(session = %self.who.session_id, kind, "client message ignored");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // Answer at once: the client is waiting for the reply, and
                        // handing off the conversation can take seconds.
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        self.client.close(code, "");
                        break Outcome::ClientClosed;
                    }
                    None => break Outcome::ClientGone,
                    Some(Ok(_)) => {}
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => break Outcome::FrameTooBig,
                    Some(Err(WsError::Utf8(_))) => break Outcome::BadText,
                    Some(Err(WsError::Protocol(error))) => {
                        tracing::debug!(session = %self.who.session_id, %error, "client protocol error");
                        break Outcome::Protocol;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(session = %self.who.session_id, %error, "client read failed");
                        break Outcome::Error;
                    }
                },
                event = stt.events.recv() => match event {
                    Some(SttEvent::Connected { reconnect }) => {
                        let text = if reconnect { "speech recognition reconnected" } else { "transcribing" };
                        self.stt_ready_once = true;
                        self.status(ServiceStatus::Ready, text);
                    }
                    Some(SttEvent::Lost(_)) => self.status(ServiceStatus::SttInitiating, "reconnecting to speech recognition"),
                    Some(SttEvent::Runs { runs, received }) => self.on_runs(&runs, received),
                    Some(SttEvent::Failed(reason)) => {
                        tracing::warn!(session = %self.who.session_id, %reason, "STT unavailable");
                        break Outcome::SttUnavailable;
                    }
                    Some(SttEvent::Finished) | None => break Outcome::SttUnavailable,
                },
                Some(event) = self.link_events.recv() => self.on_link_event(event),
                () = sleep_until(conversation_deadline.unwrap_or_else(far_future)), if conversation_deadline.is_some() => {
                    self.end_conversation();
                }
                () = sleep_until(inactivity) => break Outcome::Inactive,
                _ = ping.tick() => { let _ = self.client.send(Outbound::Ping); }
                () = drain.cancelled(), if drain_at.is_none() => {
                    // Spread closes over the first half of the drain timeout so
                    // clients do not all reconnect to the next pod in one second.
                    let spread = self.shared.config.drain_timeout.mul_f64(0.5);
                    let delay = spread.mul_f64(rand::rng().random::<f64>());
                    drain_at = Some(Instant::now() + delay);
                }
                () = sleep_until(drain_at.unwrap_or_else(far_future)), if drain_at.is_some() => break Outcome::Drained,
                () = dead.cancelled() => break Outcome::Error,
            }
            if self.slow_consumer() {
                break Outcome::SlowConsumer;
            }
        };
        self.finish(Some(stt), outcome).await
    }

    /// Hands everything off and closes the client.
    async fn finish(&mut self, stt: Option<crate::stt::SttLink>, outcome: Outcome) -> Outcome {
        // 1. Flush STT: close its audio, collect the last results.
        if let Some(stt) = stt {
            let crate::stt::SttLink { audio, mut events } = stt;
            drop(audio);
            let deadline = Instant::now() + STT_FLUSH;
            loop {
                tokio::select! {
                    () = sleep_until(deadline) => break,
                    event = events.recv() => match event {
                        Some(SttEvent::Runs { runs, received }) => self.on_runs(&runs, received),
                        Some(SttEvent::Finished) | Some(SttEvent::Failed(_)) | None => break,
                        Some(_) => {}
                    }
                }
            }
        }
        // 2. End the conversation; 3. let the link hand everything off.
        self.end_conversation();
        drop(self.link.take());
        let deadline = Instant::now() + LINK_FLUSH;
        while !self.fallback_tasks.is_empty() {
            if tokio::time::timeout_at(deadline, self.fallback_tasks.join_next()).await.is_err() {
                break;
            }
        }
        // Without a link the fallback sender is ours; close it so recv ends.
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.fallback_events, closed_tx));
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.link_events.recv()).await
        {
            self.on_link_event(event);
        }
        // 4. Close the client.
        if let Some((code, reason)) = outcome.close() {
            self.client.close(code, reason);
        }
        outcome
    }

    fn start_pusher_link(&mut self) {
        let Some(pusher) = &self.shared.pusher else { return };
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let link = PusherLink::new(
            pusher.clone(),
            &self.who.uid,
            self.params.sample_rate,
            self.who.session_id.clone(),
            rx,
            self.fallback_events.clone(),
        );
        tokio::spawn(link.run());
        self.link = Some(tx);
    }

    fn on_audio(&mut self, data: Bytes, stt: &mpsc::Sender<Bytes>) {
        let duration = data.len() as f64 / self.bytes_per_second;
        self.audio_position += duration;
        // 101 carries the Unix time of the buffer's first sample: omi's pusher uses
        // it as the chunk timestamp for cloud sync. The buffer has just arrived, so
        // its first sample was captured `duration` ago (a vDSO clock read, no lock).
        let start = unix_seconds() - duration;
        if stt.try_send(data.clone()).is_err() {
            metrics::counter!(STT_DROPPED_BYTES).increment(data.len() as u64);
        }
        if let Some(link) = &self.link {
            let len = data.len();
            if link.try_send(LinkCommand::Audio { start, pcm: data }).is_err() {
                // The link cannot keep up (or pusher is slow): drop, never queue more.
                metrics::counter!(PUSHER_DROPPED_BYTES, "frame" => "101")
                    .increment(len as u64 + 12);
                metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => "101").increment(1);
            }
        }
    }

    fn on_runs(&mut self, runs: &[hark_proto::deepgram::SpeakerRun], received: Instant) {
        let max = self.shared.config.limits.max_conversation_segments.get();
        if self.conversation.len() + runs.len() > max {
            // Never grow without bound: split the conversation.
            self.end_conversation();
        }
        let segments = self.conversation.add_runs(runs);
        if segments.is_empty() {
            return;
        }
        self.conversation_deadline = Some(Instant::now() + self.params.conversation_timeout);
        let _ = self
            .client
            .send(Outbound::Text { text: segments_to_json(&segments), received: Some(received) });
        if let Some(link) = &self.link {
            if link.try_send(LinkCommand::Segments(segments)).is_err() {
                metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => "102").increment(1);
            }
        }
    }

    /// Ends the current conversation (if it has any transcript) and starts the next.
    fn end_conversation(&mut self) {
        self.conversation_deadline = None;
        if self.conversation.is_empty() {
            return;
        }
        let next = Conversation::new(self.audio_position);
        let next_id = next.id.clone();
        let ended = std::mem::replace(&mut self.conversation, next);
        let record = ended.into_record(
            &self.who.uid,
            &self.params.language,
            self.params.sample_rate,
            &self.who.session_id,
        );
        tracing::info!(session = %self.who.session_id, conversation = %record.conversation_id, segments = record.segments.len(), "conversation ended");
        let Some(link) = self.link.clone() else { return self.fallback(record) };
        // A full link queue must not lose a conversation: hand it to the fallback
        // path directly instead.
        if let Err(error) = link.try_send(LinkCommand::ConversationEnded(Box::new(record))) {
            if let LinkCommand::ConversationEnded(record) = error.into_inner() {
                self.fallback(*record);
            }
        }
        let _ = link.try_send(LinkCommand::ConversationStarted(next_id));
    }

    /// Writes a record to the outbox off the session's hot path; the client is told
    /// once it is durable.
    fn fallback(&mut self, record: ConversationRecord) {
        let outbox = self.shared.outbox.clone();
        let events = self.fallback_events.clone();
        self.fallback_tasks.spawn(async move {
            let conversation_id = record.conversation_id.clone();
            if outbox.write(&record).await.is_ok() {
                metrics::counter!(CONVERSATIONS, "via" => "fallback").increment(1);
                let _ =
                    events.send(LinkEvent::HandedOff { conversation_id, via: Via::Fallback }).await;
            }
        });
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Degraded => self.processing(
                ProcessingStatus::Degraded,
                "transcription continues; conversation processing is delayed",
            ),
            LinkEvent::Recovered => {
                self.processing(ProcessingStatus::Recovered, "conversation processing resumed")
            }
            LinkEvent::HandedOff { conversation_id, via } => {
                let event = ServerEvent::ConversationCreated { conversation_id, via };
                let _ = self.client.text(event.to_json());
            }
        }
    }

    fn status(&mut self, status: ServiceStatus, text: &str) {
        let event = ServerEvent::ServiceStatus { status, status_text: text.to_owned() };
        let _ = self.client.text(event.to_json());
    }

    fn processing(&mut self, status: ProcessingStatus, text: &str) {
        let event = ServerEvent::ProcessingStatus { status, status_text: text.to_owned() };
        let _ = self.client.text(event.to_json());
    }

    /// Whether the client's queue overflowed (checked after each event).
    fn slow_consumer(&mut self) -> bool {
        self.client.is_overflowed()
    }
}

/// A per-session token bucket of frames: `rate` per second, bursts of `2 × rate`.
/// Two integers and an `Instant` on the session's own stack; nothing shared.
struct FrameBudget {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl FrameBudget {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self { rate, tokens: 2.0 * rate, refilled: Instant::now() }
    }

    /// Takes one frame's token; `false` when the client is over its budget.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(2.0 * self.rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Wall-clock seconds since the Unix epoch.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
