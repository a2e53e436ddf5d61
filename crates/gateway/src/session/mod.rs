//! One client session: its own task, owning the client socket's read half, the
//! STT link, the pusher link and the current conversation.
//!
//! ```text
//!  client ◀─frames─▶ session ──audio (try_send)──▶ STT link ──▶ provider
//!                     │  ▲                                        │
//!                     │  └──────── runs ◀─────────────────────────┘
//!                     └──audio, segments, 103/104 (try_send)──▶ pusher link ──▶ pusher
//!                                         ▲ degraded / recovered / handed off
//! ```
//!
//! The session reads and writes the client socket itself (`client`): what it has
//! for the client is queued on its own stack and written by the same `select!` that
//! reads, so a transcript crosses no task boundary on its way out.
//!
//! Nothing here waits on pusher: the link is fed with `try_send` and what it cannot
//! take is dropped and counted. The client is never closed because of pusher.

mod client;
mod conversation;
mod handoff;
mod outcome;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hark_proto::client::{segments_to_json, KEEPALIVE_MAX_BYTES};
use hark_proto::{ListenParams, ProcessingStatus, ServerEvent, ServiceStatus};
use rand::Rng;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use client::{ClientEvent, ClientOut, ClientWs, Outbound};
pub use conversation::Conversation;
use handoff::Handoff;
pub use outcome::Outcome;

use crate::admission::AdmissionGuard;
use crate::metrics::{
    CLIENT_MESSAGES, DECODE_FAILURES, PUSHER_DROPPED_FRAMES, SESSIONS_TOTAL, STT_DROPPED_BYTES,
};
use crate::pusher::link::{LinkCommand, LinkEvent};
use crate::stt::{SttEvent, SttStartError};
use crate::Shared;

/// Keep-alive period towards the client: omi's text `"ping"` (which omi apps
/// answer with a 2-byte keep-alive, so a muted app never hits the inactivity
/// timeout) and a WebSocket ping for other clients, as omi's backend does every 10 s.
const CLIENT_PING: Duration = Duration::from_secs(10);
/// How often the session sends pusher the 101 it is building, however short.
const AUDIO_TICK: Duration = Duration::from_secs(1);
/// At session end, how long to wait for the STT provider's last results.
const STT_FLUSH: Duration = Duration::from_secs(7);
/// At session end, how long to wait for the pusher link to hand everything off.
const LINK_FLUSH: Duration = Duration::from_secs(15);

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
    pass: crate::fairuse::Pass,
    decoder: Box<dyn hark_codec::Decoder>,
) {
    let started = Instant::now();
    tracing::info!(session = %who.session_id, uid = %who.uid, sample_rate = params.sample_rate, "session started");
    let mut ws = ws;
    let client = ClientOut::new(shared.config.limits.client_queue.get());
    let mut session = Session::new(shared.clone(), params, who, client, decoder);
    if !pass.is_empty() {
        let meter = crate::fairuse::spawn(pass, session.bytes_per_second, &shared.tasks);
        session.fair_use = Some(meter);
    }
    let outcome = session.run(&mut ws).await;
    let who = session.who.clone();
    let broken = session.client.is_broken();
    drop(session);
    // The session sent the Close (or the reply to the client's); the handshake
    // completes before TCP closes.
    let closed = if outcome != Outcome::Error && !broken {
        let linger = crate::ws::CLOSE_LINGER
            .min(shared.end_by(crate::ws::CLOSE_LINGER).saturating_duration_since(Instant::now()));
        // Boxed, like every end-of-session step: its 4 KiB drain buffer would
        // otherwise be part of the task for the session's life.
        Some(Box::pin(crate::ws::finish_close(ws, linger)).await)
    } else {
        None
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

/// One session's state, owned by its task.
struct Session {
    /// What every session on the process shares.
    shared: Arc<Shared>,
    /// The validated upgrade query.
    params: ListenParams,
    /// Who it is for.
    who: Identity,
    /// What is queued for the client, and the state of writing it.
    client: ClientOut,
    /// Seconds of audio received (the session's audio clock).
    audio_position: f64,
    /// Bytes per second of the client's PCM.
    bytes_per_second: f64,
    /// The conversation being built.
    conversation: Conversation,
    /// When the current conversation ends for lack of new transcript.
    conversation_deadline: Option<Instant>,
    /// Where conversations go (the pusher link and/or the outbox).
    handoff: Handoff,
    /// The session's fair use (quota and fleet-wide cap), when configured.
    fair_use: Option<crate::fairuse::Meter>,
    /// `Retry-After` of a quota that ran out mid-session.
    quota_retry: Option<Duration>,
    /// Turns the client's codec into PCM16, chosen once at the upgrade.
    decoder: Box<dyn hark_codec::Decoder>,
    /// Audio frames in a row that did not decode.
    decode_failures: u32,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        params: ListenParams,
        who: Identity,
        client: ClientOut,
        decoder: Box<dyn hark_codec::Decoder>,
    ) -> Self {
        let bytes_per_second = f64::from(params.sample_rate) * 2.0;
        let handoff = Handoff::start(&shared, &who.uid, params.sample_rate, who.session_id.clone());
        Self {
            shared,
            params,
            who,
            client,
            audio_position: 0.0,
            bytes_per_second,
            conversation: Conversation::new(0.0),
            conversation_deadline: None,
            handoff,
            fair_use: None,
            quota_retry: None,
            decoder,
            decode_failures: 0,
        }
    }

    async fn run(&mut self, ws: &mut ClientWs) -> Outcome {
        self.status(ServiceStatus::Initiating, "session accepted");
        // The client hears of its session before a fleet call can delay it.
        if self.shared.continuity.is_some() {
            self.client.flush(ws).await;
        }
        self.resume_parked().await;
        self.status(ServiceStatus::SttInitiating, "connecting to speech recognition");
        let stt = self.shared.stt.open(
            &self.params.language,
            self.params.sample_rate,
            self.who.session_id.clone(),
            &self.shared.tasks,
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
                return Box::pin(self.finish(ws, None, Outcome::SttUnavailable)).await;
            }
        };
        self.handoff.conversation_started(self.conversation.id.clone());

        let limits = self.shared.config.limits.clone();
        // A client that answers every ping never reaches the inactivity timeout.
        let mut ping = tokio::time::interval(CLIENT_PING.min(limits.inactivity_timeout / 3));
        ping.reset();
        let mut frames = FrameBudget::new(limits.max_frames_per_second.get());
        // The 101 being built goes to pusher at least once a second.
        let pushing = self.handoff.has_link();
        let mut audio_tick = tokio::time::interval(AUDIO_TICK);
        audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        audio_tick.reset();
        // Every wait is one future pinned for the whole session and moved with
        // `reset`, never rebuilt per frame: the timer wheel and the drain token's
        // locks stay off the per-frame path. Inactivity is checked lazily:
        // a frame only stamps `last_heard`; the timer, when it fires, moves itself to
        // the real deadline.
        let mut last_heard = Instant::now();
        let inactivity = sleep(limits.inactivity_timeout);
        let conversation_end = sleep(Duration::ZERO);
        let drain_close = sleep(Duration::ZERO);
        // Polled on every turn, but only one atomic load once registered (`drain`).
        let drained = self.shared.drain.watch();
        // A flush to the client blocked past `WRITE_TIMEOUT` ends the session; the
        // timer moves only when the client's socket blocks anew.
        let write_stall = sleep(Duration::ZERO);
        let mut stall_timer_at: Option<Instant> = None;
        tokio::pin!(inactivity, conversation_end, drain_close, drained, write_stall);
        let mut draining = false;
        let mut conversation_timer_at: Option<Instant> = None;
        let exhausted = self.fair_use.as_mut().and_then(crate::fairuse::Meter::take_exhausted);
        let mut quota_live = exhausted.is_some();
        let quota = async move {
            match exhausted {
                Some(rx) => rx.await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(quota);

        let outcome = loop {
            // The conversation timer follows the deadline, moved only when it changed.
            if self.conversation_deadline != conversation_timer_at {
                if let Some(at) = self.conversation_deadline {
                    conversation_end.as_mut().reset(at);
                }
                conversation_timer_at = self.conversation_deadline;
            }
            let blocked = self.client.blocked_since();
            if blocked != stall_timer_at {
                if let Some(at) = blocked {
                    write_stall.as_mut().reset(at + client::WRITE_TIMEOUT);
                }
                stall_timer_at = blocked;
            }
            tokio::select! {
                io = std::future::poll_fn(|cx| self.client.poll_io(ws, cx)) => match io {
                    ClientEvent::WriteFailed(error) => {
                        tracing::debug!(session = %self.who.session_id, %error, "client write failed");
                        break Outcome::Error;
                    }
                    ClientEvent::Read(message) => match message {
                    Some(Ok(Message::Binary(_) | Message::Text(_))) if !frames.take() => break Outcome::Flood,
                    Some(Ok(Message::Binary(data))) => {
                        last_heard = Instant::now();
                        if data.len() > KEEPALIVE_MAX_BYTES && !self.on_frame(data, &stt.audio) {
                            break Outcome::Undecodable;
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        if text.len() > limits.max_text_bytes.get() {
                            break Outcome::TextTooBig;
                        }
                        last_heard = Instant::now();
                        let kind = hark_proto::client::client_text_label(&text);
                        metrics::counter!(CLIENT_MESSAGES, "type" => kind).increment(1);
                        tracing::debug!(session = %self.who.session_id, kind, "client message ignored");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // Answer at once: the client is waiting for the reply, and
                        // handing off the conversation can take seconds.
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        Box::pin(self.client.close(ws, code, "")).await;
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
                },
                event = stt.events.recv() => match event {
                    Some(SttEvent::Connected { reconnect }) => {
                        let text = if reconnect { "speech recognition reconnected" } else { "transcribing" };
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
                event = self.handoff.next_event() => self.on_link_event(event),
                () = &mut conversation_end, if self.conversation_deadline.is_some() => {
                    self.end_conversation();
                }
                () = &mut inactivity => {
                    let due = last_heard + limits.inactivity_timeout;
                    if due <= Instant::now() {
                        break Outcome::Inactive;
                    }
                    inactivity.as_mut().reset(due);
                }
                _ = ping.tick() => { let _ = self.client.send(Outbound::Ping); }
                _ = audio_tick.tick(), if pushing => self.handoff.flush_audio(),
                () = &mut drained, if !draining => {
                    // Spread closes over the first half of the drain timeout so
                    // clients do not all reconnect to the next pod in one second.
                    draining = true;
                    let spread = self.shared.config.drain_timeout.mul_f64(0.5);
                    let delay = spread.mul_f64(rand::rng().random::<f64>());
                    drain_close.as_mut().reset(Instant::now() + delay);
                }
                () = &mut drain_close, if draining => break Outcome::Drained,
                () = &mut write_stall, if stall_timer_at.is_some() => {
                    if self.client.blocked_since().is_some_and(|at| at + client::WRITE_TIMEOUT <= Instant::now()) {
                        tracing::info!(session = %self.who.session_id, "client write blocked past {:?}", client::WRITE_TIMEOUT);
                        break Outcome::Error;
                    }
                }
                retry = &mut quota, if quota_live => match retry {
                    Some(retry_after) => {
                        self.quota_retry = Some(retry_after);
                        break Outcome::QuotaExceeded;
                    }
                    // The fair-use task ended early (a store fault): stop watching.
                    None => quota_live = false,
                },
            }
            if self.client.is_overflowed() {
                break Outcome::SlowConsumer;
            }
        };
        // No more audio will come: commit the quota now rather than after the
        // hand-off (seconds later), so the user's next upgrade, on any pod, is not
        // refused for a lease this session no longer needs.
        if let Some(meter) = self.fair_use.as_mut() {
            meter.finish();
        }
        Box::pin(self.finish(ws, Some(stt), outcome)).await
    }

    /// Hands everything off and closes the client, within the process's shutdown
    /// deadline when it is draining.
    async fn finish(
        &mut self,
        ws: &mut ClientWs,
        stt: Option<crate::stt::SttLink>,
        outcome: Outcome,
    ) -> Outcome {
        // 1. Flush STT: close its audio, collect the last results.
        if let Some(stt) = stt {
            let crate::stt::SttLink { audio, mut events } = stt;
            drop(audio);
            let deadline = self.shared.end_by(STT_FLUSH);
            loop {
                tokio::select! {
                    () = sleep_until(deadline) => break,
                    event = events.recv() => match event {
                        Some(SttEvent::Runs { runs, received }) => self.on_runs(&runs, received),
                        Some(SttEvent::Finished) | Some(SttEvent::Failed(_)) | None => break,
                        Some(_) => {}
                    },
                    // The last transcripts go out as they come, not after the
                    // hand-off; a write that fails leaves the client broken.
                    _ = std::future::poll_fn(|cx| self.client.poll_write(ws, cx)), if self.client.has_pending() => {}
                }
            }
        }
        if let Some(retry_after) = self.quota_retry {
            let retry_after = retry_after.as_secs().max(1);
            let _ = self.client.text(ServerEvent::QuotaExceeded { retry_after }.to_json());
        }
        // 2. Park the conversation for the user's next session, or end it; 3. let
        //    the link (and the fallback path) take everything.
        if !self.park(outcome).await {
            self.end_conversation();
        }
        for event in self.handoff.finish(self.shared.end_by(LINK_FLUSH)).await {
            self.on_link_event(event);
        }
        // 4. Close the client.
        if outcome == Outcome::Undecodable {
            let codec = self.decoder.codec().as_str();
            let reason = format!("audio frames do not decode as {codec}");
            self.client.close(ws, 1003, &reason).await;
        } else if let Some((code, reason)) = outcome.close() {
            self.client.close(ws, code, reason).await;
        }
        outcome
    }

    /// Continues the user's parked conversation, if there is exactly one.
    async fn resume_parked(&mut self) {
        let Some(continuity) = self.shared.continuity.clone() else { return };
        let Some(parked) = continuity.resume(&self.who.uid).await else { return };
        let (conversation, remaining) = Conversation::resumed(parked);
        tracing::info!(session = %self.who.session_id, conversation = %conversation.id, segments = conversation.len(), "conversation resumed");
        // Starting afresh, the session's first conversation had no transcript yet.
        self.conversation = conversation;
        self.conversation_deadline = Some(Instant::now() + remaining);
    }

    /// Parks the open conversation when the session ends before it does. `false`
    /// when there is nothing to park, this end must hand it off (a drain without a
    /// database), or the lot refused it.
    async fn park(&mut self, outcome: Outcome) -> bool {
        let Some(continuity) = self.shared.continuity.clone() else { return false };
        let hand_off_now = outcome == Outcome::QuotaExceeded
            || (outcome == Outcome::Drained && !continuity.durable());
        if self.conversation.is_empty() || hand_off_now {
            return false;
        }
        let conversation =
            std::mem::replace(&mut self.conversation, Conversation::new(self.audio_position));
        let parked = conversation.into_parked(
            &self.who.uid,
            &self.params.language,
            self.params.sample_rate,
            &self.who.session_id,
            self.params.conversation_timeout,
        );
        let parked_ok = continuity.park(&parked).await;
        if parked_ok {
            tracing::info!(session = %self.who.session_id, conversation = %parked.conversation_id, "conversation parked for the user's next session");
            self.conversation_deadline = None;
        } else {
            // Put it back: `end_conversation` hands it off.
            let (conversation, _) = Conversation::resumed(parked);
            self.conversation = conversation;
        }
        parked_ok
    }

    /// Decodes one client audio frame and relays it. A frame that does not decode
    /// is skipped and counted; `false` once `--max-decode-failures` came in a row.
    fn on_frame(&mut self, frame: Bytes, stt: &crate::stt::queue::AudioTx) -> bool {
        match self.decoder.decode(frame) {
            Ok(pcm) => {
                self.decode_failures = 0;
                if !pcm.is_empty() {
                    self.on_audio(pcm, stt);
                }
                true
            }
            Err(error) => {
                let codec = self.decoder.codec().as_str();
                metrics::counter!(DECODE_FAILURES, "codec" => codec).increment(1);
                self.decode_failures += 1;
                if self.decode_failures == 1 {
                    tracing::debug!(session = %self.who.session_id, codec, %error, "audio frame skipped: it does not decode");
                }
                self.decode_failures < self.shared.config.limits.max_decode_failures.get()
            }
        }
    }

    /// Relays decoded PCM16: times come from decoded samples, never encoded bytes.
    fn on_audio(&mut self, data: Bytes, stt: &crate::stt::queue::AudioTx) {
        let duration = data.len() as f64 / self.bytes_per_second;
        self.audio_position += duration;
        // 101 carries the Unix time of the buffer's first sample: omi's pusher uses
        // it as the chunk timestamp for cloud sync. The buffer has just arrived, so
        // its first sample was captured `duration` ago (a vDSO clock read, no lock).
        let start = unix_seconds() - duration;
        if let Some(meter) = &self.fair_use {
            meter.add(data.len());
        }
        // The 101 copies what it needs first; the buffer itself goes to STT.
        self.handoff.audio(start, &data);
        let len = data.len();
        if !stt.try_send(data) {
            metrics::counter!(STT_DROPPED_BYTES).increment(len as u64);
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
        if !self.handoff.offer(LinkCommand::Segments(segments)) {
            metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => "102").increment(1);
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
        self.handoff.conversation_ended(record);
        self.handoff.conversation_started(next_id);
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
