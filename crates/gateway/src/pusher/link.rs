//! A session's pusher link: exactly one reconnect loop per session.
//!
//! Senders never dial. The session pushes [`LinkCommand`]s into a bounded channel
//! (audio with `try_send`, so a slow or absent pusher costs the session nothing) and
//! this task owns the socket and every decision about it:
//!
//! ```text
//!            first dial fails / breaker open
//!   Dial ───────────────────────────────────────────────▶ Degraded ◀──┐
//!    │ ok                                                   │ probe    │ probe
//!    ▼          failure                   ≥ max attempts    ▼ interval │ fails /
//!  Connected ───────────▶ Backoff ──────────────────────▶ Degraded    │ breaker
//!    ▲                     │  ▲ dial fails                  │ or breaker│ open
//!    │        dial ok      ▼  │                              ▼ closes   │
//!    └──────────────────── Dial (attempt n)           Probe ────────────┘
//!    └──────────────────────────────────────────────── (ok: Recovered)
//! ```
//!
//! While not connected, audio (101) and live segments (102) are dropped and counted,
//! and a conversation that ends goes to the durable outbox at once.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hark_proto::{
    pusher, Ack, ConversationRecord, ProcessRequest, PusherFrame, Segment, SegmentsPayload, Via,
};
use hark_resilience::breaker::BreakerState;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::dial::{dial, listen_url, PusherStream};
use super::PusherShared;
use crate::metrics::{
    CONVERSATIONS, PUSHER_ACK_ERRORS, PUSHER_CONNECTED, PUSHER_DEGRADED, PUSHER_DROPPED_BYTES,
    PUSHER_DROPPED_FRAMES,
};
use crate::outbox::OutboxError;

/// 104s awaiting their 201 on one session; older ones go to the outbox.
const MAX_PENDING: usize = 16;
/// Live segments are sent to pusher in batches at this period.
const SEGMENT_BATCH_PERIOD: Duration = Duration::from_secs(1);
/// At session end, how long a connected link waits for outstanding 201s before
/// handing the rest to the outbox.
const ACK_GRACE: Duration = Duration::from_secs(5);
/// Commands fed to the socket before one flush.
const WRITE_BATCH: usize = 32;
/// A link that dies younger than this did not really recover: it counts as a dial
/// failure and the backoff keeps growing. Without this, a pusher (or proxy) that
/// accepts handshakes and drops them at once would be redialed every second by
/// every session, forever, and never open the breaker.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What the session asks of its link.
#[derive(Debug)]
pub enum LinkCommand {
    /// PCM16 audio (101).
    Audio {
        /// Unix epoch seconds of the buffer's first sample.
        start: f64,
        /// The audio.
        pcm: Bytes,
    },
    /// New segments of the current conversation.
    Segments(Vec<Segment>),
    /// The current conversation changed (103).
    ConversationStarted(String),
    /// A conversation ended: process it (104) or hand it to the fallback path.
    ConversationEnded(Box<ConversationRecord>),
}

/// What the link tells its session.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// Pusher is unavailable; transcription continues.
    Degraded,
    /// Pusher is back after a `Degraded`.
    Recovered,
    /// A conversation was handed off.
    HandedOff {
        /// The conversation.
        conversation_id: String,
        /// Which path took it.
        via: Via,
    },
}

/// The link's states; each is one async method of [`PusherLink`].
#[derive(Debug)]
enum State {
    /// One dial; `attempt` counts dials since the link was last connected.
    Dial { attempt: u32, first: bool },
    /// A live socket.
    Connected(Box<PusherStream>),
    /// Waiting a jittered delay before dial `attempt`.
    Backoff { attempt: u32 },
    /// Dialing nothing; waiting for the probe interval or the breaker to close.
    Degraded,
    /// One attempt out of degraded mode (HALF_OPEN_PROBE).
    Probe,
    /// The session ended.
    Done,
}

/// Which gauge this link is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gauge {
    None,
    Connected,
    Degraded,
}

/// Why a connected socket was given up.
enum Exit {
    /// The session ended.
    Shutdown,
    /// The socket failed; reconnect.
    Failed(String),
}

/// One session's pusher link; run it with [`PusherLink::run`] on its own task.
pub struct PusherLink {
    /// Process-wide breaker, ramp, outbox and timings.
    shared: Arc<PusherShared>,
    /// `…/v1/trigger/listen?uid=…&sample_rate=…`.
    url: String,
    /// Commands from the session.
    commands: mpsc::Receiver<LinkCommand>,
    /// Events to the session.
    events: mpsc::Sender<LinkEvent>,
    /// The conversation pusher should attribute frames to (re-sent as 103 on connect).
    conversation: Option<String>,
    /// Segments waiting for the next 102.
    batch: Vec<Segment>,
    /// 104s sent and not yet acknowledged, with the records to fall back to.
    pending: VecDeque<ConversationRecord>,
    /// Whether the session was told `degraded` (so it gets `recovered` later).
    told_degraded: bool,
    /// A conversation whose live segments were (partly) dropped while the link was
    /// down; when it ends on a live link, pusher gets all its segments before 104.
    gap: Option<String>,
    /// The gauge this link currently counts in.
    gauge: Gauge,
    /// Jitter source for backoff.
    rng: SmallRng,
    /// Consecutive links that died younger than `STABLE_AFTER`.
    short_lived: u32,
    /// The session's id, for logs.
    session_id: Arc<str>,
}

impl PusherLink {
    /// Creates the link for one session.
    pub fn new(
        shared: Arc<PusherShared>,
        uid: &str,
        sample_rate: u32,
        session_id: Arc<str>,
        commands: mpsc::Receiver<LinkCommand>,
        events: mpsc::Sender<LinkEvent>,
    ) -> Self {
        let url = listen_url(&shared.config.url, uid, sample_rate);
        Self {
            shared,
            url,
            commands,
            events,
            conversation: None,
            batch: Vec::new(),
            pending: VecDeque::new(),
            told_degraded: false,
            gap: None,
            gauge: Gauge::None,
            rng: SmallRng::from_rng(&mut rand::rng()),
            short_lived: 0,
            session_id,
        }
    }

    /// Runs the state machine until the session closes the command channel.
    pub async fn run(mut self) {
        let mut state = State::Dial { attempt: 0, first: true };
        loop {
            state = match state {
                State::Dial { attempt, first } => self.dial(attempt, first).await,
                State::Connected(ws) => self.connected(*ws).await,
                State::Backoff { attempt } => self.backoff(attempt).await,
                State::Degraded => self.degraded().await,
                State::Probe => self.probe().await,
                State::Done => break,
            };
        }
        // Whatever pusher did not acknowledge goes to the fallback path.
        while let Some(record) = self.pending.pop_front() {
            self.fallback(record).await;
        }
        self.set_gauge(Gauge::None);
    }

    /// Dial: one attempt, unless the breaker forbids it.
    async fn dial(&mut self, attempt: u32, first: bool) -> State {
        if self.shared.breaker.allow().is_err() {
            // A breaker rejection is not a session failure and dials nothing.
            return State::Degraded;
        }
        if first {
            // The session's first dial does not drain commands: the bounded command
            // queue holds the first seconds of audio so pusher gets the stream from
            // its first sample. The dial is bounded by the connect timeout.
            return match self.dial_once().await {
                Ok(ws) => State::Connected(Box::new(ws)),
                // The first connect of a session failing starts it degraded (§6).
                Err(()) => State::Degraded,
            };
        }
        match self.offline_until(self.dial_once()).await {
            None => State::Done,
            Some(Ok(ws)) => State::Connected(Box::new(ws)),
            Some(Err(())) => State::Backoff { attempt: attempt + 1 },
        }
    }

    /// Backoff: a full-jitter delay, then the next dial; degraded after the budget.
    async fn backoff(&mut self, attempt: u32) -> State {
        if attempt > self.shared.config.reconnect_max_attempts {
            return State::Degraded;
        }
        let delay = self.shared.backoff.delay(attempt.saturating_sub(1), &mut self.rng);
        match self.offline_until(sleep_until(Instant::now() + delay)).await {
            None => State::Done,
            Some(()) => State::Dial { attempt, first: false },
        }
    }

    /// Degraded: wait for the probe interval or for the breaker to close.
    async fn degraded(&mut self) -> State {
        self.set_gauge(Gauge::Degraded);
        self.move_pending_to_fallback().await;
        if !self.told_degraded {
            tracing::info!(session = %self.session_id, "pusher unavailable: session degraded, transcripts continue");
            self.told_degraded = true;
            self.emit(LinkEvent::Degraded).await;
        }
        let deadline = Instant::now() + self.shared.config.degraded_probe_interval;
        let mut breaker = self.shared.breaker.subscribe();
        let closes = async move {
            // Wake on a transition *to* Closed; a breaker that is already closed
            // leaves this session to its own probe interval.
            let mut was = *breaker.borrow_and_update();
            loop {
                if breaker.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let now = *breaker.borrow_and_update();
                if now == BreakerState::Closed && was != BreakerState::Closed {
                    return;
                }
                was = now;
            }
        };
        let wake = async {
            tokio::select! {
                () = sleep_until(deadline) => {}
                () = closes => {}
            }
        };
        if self.offline_until(wake).await.is_none() {
            return State::Done;
        }
        // Recovery goes through the pod-wide ramp so degraded sessions do not all
        // come back in the same instant.
        let ramp = self.shared.ramp.clone();
        match self.offline_until(async move { ramp.acquire().await }).await {
            None => State::Done,
            Some(()) => State::Probe,
        }
    }

    /// Probe: one attempt out of degraded mode.
    async fn probe(&mut self) -> State {
        if self.shared.breaker.allow().is_err() {
            return State::Degraded;
        }
        match self.offline_until(self.dial_once()).await {
            None => State::Done,
            Some(Ok(ws)) => State::Connected(Box::new(ws)),
            Some(Err(())) => State::Degraded,
        }
    }

    /// One real dial, reported to the breaker. Borrows nothing from `self` so it can
    /// run while commands are handled.
    fn dial_once(&self) -> impl std::future::Future<Output = Result<PusherStream, ()>> + 'static {
        let shared = self.shared.clone();
        let url = self.url.clone();
        let session = self.session_id.clone();
        async move {
            let config = &shared.config;
            match dial(&url, config.connect_timeout, config.retry_after_max).await {
                Ok(ws) => {
                    shared.breaker.record_success();
                    Ok(ws)
                }
                Err(error) => {
                    tracing::debug!(session = %session, %error, "pusher dial failed");
                    match error.retry_after() {
                        Some(delay) => shared.breaker.record_retry_after(delay),
                        None => shared.breaker.record_failure(),
                    }
                    Err(())
                }
            }
        }
    }

    /// Connected: stream frames until the socket fails or the session ends.
    async fn connected(&mut self, ws: PusherStream) -> State {
        self.set_gauge(Gauge::Connected);
        if std::mem::take(&mut self.told_degraded) {
            tracing::info!(session = %self.session_id, "pusher link recovered");
            self.emit(LinkEvent::Recovered).await;
        }
        let since = Instant::now();
        let (mut sink, mut stream) = ws.split();
        let exit = self.stream_frames(&mut sink, &mut stream).await;
        if matches!(exit, Exit::Failed(_)) {
            if let Ok(ws) = sink.reunite(stream) {
                abort(ws);
            }
            return self.after_failure(exit, since.elapsed());
        }
        match exit {
            Exit::Shutdown => {
                self.await_acks(&mut sink, &mut stream).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                State::Done
            }
            Exit::Failed(_) => unreachable!("handled above"),
        }
    }

    fn after_failure(&mut self, exit: Exit, lived: Duration) -> State {
        if let Exit::Failed(reason) = exit {
            tracing::info!(session = %self.session_id, %reason, ?lived, "pusher link lost; reconnecting");
        }
        self.set_gauge(Gauge::None);
        if lived >= STABLE_AFTER {
            self.short_lived = 0;
            return State::Backoff { attempt: 1 };
        }
        // Accepted then dropped: as bad as a failed dial, for the breaker and for
        // this session's backoff.
        self.shared.breaker.record_failure();
        self.short_lived += 1;
        State::Backoff { attempt: self.short_lived + 1 }
    }

    async fn stream_frames(
        &mut self,
        sink: &mut SplitSink<PusherStream, Message>,
        stream: &mut SplitStream<PusherStream>,
    ) -> Exit {
        let config = self.shared.config.clone();
        // On (re)connect: tell pusher the current conversation, resend pending 104s.
        let mut opening = Vec::new();
        if let Some(id) = &self.conversation {
            opening.push(PusherFrame::Conversation(id.clone()).encode());
        }
        for record in &self.pending {
            opening.push(process_frame(record));
        }
        if let Err(reason) = write(sink, opening, config.ping_timeout).await {
            return Exit::Failed(reason);
        }

        let mut last_seen = Instant::now();
        let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
        let mut ping = tokio::time::interval(config.ping_interval);
        let mut batch_tick = tokio::time::interval(SEGMENT_BATCH_PERIOD);
        for timer in [&mut heartbeat, &mut ping, &mut batch_tick] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.reset();
        }
        loop {
            let mut out = Vec::new();
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return self.flush_on_exit(sink).await };
                    self.encode_command(command, &mut out);
                    // Batch whatever else is already queued into the same flush.
                    while out.len() < WRITE_BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => self.encode_command(command, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                message = stream.next() => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Binary(bytes))) => self.on_frame(bytes).await,
                        Some(Ok(Message::Close(frame))) => {
                            return Exit::Failed(format!("pusher closed the link: {frame:?}"));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Exit::Failed(error.to_string()),
                        None => return Exit::Failed("pusher ended the stream".into()),
                    }
                }
                _ = heartbeat.tick() => out.push(PusherFrame::Heartbeat.encode()),
                _ = batch_tick.tick() => self.take_batch(&mut out),
                _ = ping.tick() => {
                    if let Err(reason) = write_ping(sink, config.ping_timeout).await {
                        return Exit::Failed(reason);
                    }
                }
                // Liveness: nothing (pong, ack, anything) for the ping timeout.
                () = sleep_until(last_seen + config.ping_timeout) => {
                    return Exit::Failed(format!("no pong or frame for {:?}", config.ping_timeout));
                }
            }
            if let Err(reason) = write(sink, out, config.ping_timeout).await {
                return Exit::Failed(reason);
            }
            // Bounded: a pusher that never acks pushes its oldest 104s to the outbox.
            while self.pending.len() > MAX_PENDING {
                if let Some(record) = self.pending.pop_front() {
                    self.fallback(record).await;
                }
            }
        }
    }

    /// Encodes one command for a live link.
    fn encode_command(&mut self, command: LinkCommand, out: &mut Vec<Bytes>) {
        match command {
            LinkCommand::Audio { start, pcm } => out.push(pusher::encode_audio(start, &pcm)),
            LinkCommand::Segments(segments) => self.batch.extend(segments),
            LinkCommand::ConversationStarted(id) => {
                self.take_batch(out);
                out.push(PusherFrame::Conversation(id.clone()).encode());
                self.conversation = Some(id);
            }
            LinkCommand::ConversationEnded(record) => {
                self.take_batch(out);
                if self.gap.as_deref() == Some(record.conversation_id.as_str()) {
                    // Pusher missed live segments of this conversation during an
                    // outage: send them all (ids are stable, so repeats are harmless).
                    self.gap = None;
                    out.push(
                        PusherFrame::Segments(SegmentsPayload {
                            segments: record.segments.clone(),
                            memory_id: record.conversation_id.clone(),
                        })
                        .encode(),
                    );
                }
                out.push(process_frame(&record));
                self.pending.push_back(*record);
            }
        }
    }

    /// Moves the segment batch into a 102 frame.
    fn take_batch(&mut self, out: &mut Vec<Bytes>) {
        if self.batch.is_empty() {
            return;
        }
        let Some(memory_id) = self.conversation.clone() else {
            self.batch.clear();
            return;
        };
        let segments = std::mem::take(&mut self.batch);
        out.push(PusherFrame::Segments(SegmentsPayload { segments, memory_id }).encode());
    }

    /// Session ended while connected: send the last batch.
    async fn flush_on_exit(&mut self, sink: &mut SplitSink<PusherStream, Message>) -> Exit {
        let mut out = Vec::new();
        self.take_batch(&mut out);
        let _ = write(sink, out, self.shared.config.ping_timeout).await;
        Exit::Shutdown
    }

    /// Waits (bounded) for the 201s of pending conversations after the session ended.
    async fn await_acks(
        &mut self,
        _sink: &mut SplitSink<PusherStream, Message>,
        stream: &mut SplitStream<PusherStream>,
    ) {
        let deadline = Instant::now() + ACK_GRACE;
        while !self.pending.is_empty() {
            tokio::select! {
                () = sleep_until(deadline) => return,
                message = stream.next() => match message {
                    Some(Ok(Message::Binary(bytes))) => self.on_frame(bytes).await,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }

    /// Handles a frame from pusher (201s; anything else is logged).
    async fn on_frame(&mut self, bytes: Bytes) {
        match PusherFrame::decode(bytes) {
            Ok(PusherFrame::Ack(ack)) => self.on_ack(ack).await,
            Ok(other) => tracing::debug!(code = other.code(), "unexpected frame from pusher"),
            Err(error) => {
                tracing::warn!(session = %self.session_id, %error, "undecodable frame from pusher")
            }
        }
    }

    async fn on_ack(&mut self, ack: Ack) {
        let Some(index) =
            self.pending.iter().position(|r| r.conversation_id == ack.conversation_id)
        else {
            tracing::debug!(conversation = %ack.conversation_id, "201 for no pending conversation");
            return;
        };
        let record = self.pending.remove(index).expect("index is in range");
        if ack.is_success() {
            metrics::counter!(CONVERSATIONS, "via" => "pusher").increment(1);
            self.emit(LinkEvent::HandedOff {
                conversation_id: record.conversation_id,
                via: Via::Pusher,
            })
            .await;
        } else {
            // Pusher could not process it; keep it durable so an operator or a
            // later replay can, rather than losing it.
            metrics::counter!(PUSHER_ACK_ERRORS).increment(1);
            tracing::warn!(
                session = %self.session_id,
                conversation = %record.conversation_id,
                error = ack.error.as_deref().unwrap_or("success=false"),
                "pusher refused a conversation; sending it down the fallback path"
            );
            self.fallback(record).await;
        }
    }

    /// Runs `fut` while handling commands the disconnected way. `None` when the
    /// session ended meanwhile.
    async fn offline_until<F: std::future::Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                output = &mut fut => return Some(output),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_offline(command).await,
                    None => return None,
                },
            }
        }
    }

    /// A command while not connected: drop and count what pusher would have had,
    /// send ended conversations down the fallback path.
    async fn handle_offline(&mut self, command: LinkCommand) {
        match command {
            LinkCommand::Audio { pcm, .. } => count_drop("101", pcm.len() + 12),
            LinkCommand::Segments(segments) => {
                // The session keeps the segments for the fallback record.
                let bytes: usize = segments.iter().map(|s| s.text.len() + 128).sum();
                count_drop("102", bytes);
                self.gap.clone_from(&self.conversation);
            }
            LinkCommand::ConversationStarted(id) => {
                self.batch.clear();
                self.conversation = Some(id);
            }
            LinkCommand::ConversationEnded(record) => self.fallback(*record).await,
        }
    }

    async fn move_pending_to_fallback(&mut self) {
        while let Some(record) = self.pending.pop_front() {
            self.fallback(record).await;
        }
    }

    /// Hands a record to the durable outbox; the session is told once it is on disk.
    async fn fallback(&mut self, record: ConversationRecord) {
        let conversation_id = record.conversation_id.clone();
        match self.shared.outbox.write(&record).await {
            Ok(()) => {
                metrics::counter!(CONVERSATIONS, "via" => "fallback").increment(1);
                self.emit(LinkEvent::HandedOff { conversation_id, via: Via::Fallback }).await;
            }
            Err(OutboxError::Full { .. }) | Err(_) => {
                // The outbox logged the full record and counted the refusal; the
                // client is not told it was created, because it was not.
            }
        }
    }

    async fn emit(&self, event: LinkEvent) {
        // The session drains events until the link ends; a gone session just
        // means nobody is left to tell.
        let _ = self.events.send(event).await;
    }

    fn set_gauge(&mut self, gauge: Gauge) {
        if self.gauge == gauge {
            return;
        }
        match self.gauge {
            Gauge::Connected => metrics::gauge!(PUSHER_CONNECTED).decrement(1.0),
            Gauge::Degraded => metrics::gauge!(PUSHER_DEGRADED).decrement(1.0),
            Gauge::None => {}
        }
        match gauge {
            Gauge::Connected => metrics::gauge!(PUSHER_CONNECTED).increment(1.0),
            Gauge::Degraded => metrics::gauge!(PUSHER_DEGRADED).increment(1.0),
            Gauge::None => {}
        }
        self.gauge = gauge;
    }
}

/// Drops a dead link with a TCP reset (SO_LINGER 0) instead of a graceful FIN, so
/// a stalled pusher that wakes up later finds the connection reset and does not
/// process frames (a 104, say) that hark has already handed to the fallback path.
fn abort(ws: PusherStream) {
    let tcp = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        tokio_tungstenite::MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
        _ => return,
    };
    if let Err(error) = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "SO_LINGER not set on a dead pusher link");
    }
    drop(ws);
}

fn process_frame(record: &ConversationRecord) -> Bytes {
    PusherFrame::Process(ProcessRequest {
        conversation_id: record.conversation_id.clone(),
        language: record.language.clone(),
    })
    .encode()
}

fn count_drop(frame: &'static str, bytes: usize) {
    metrics::counter!(PUSHER_DROPPED_BYTES, "frame" => frame).increment(bytes as u64);
    metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => frame).increment(1);
}

/// Writes frames with `feed` and one `flush`, bounded by `limit`.
async fn write(
    sink: &mut SplitSink<PusherStream, Message>,
    frames: Vec<Bytes>,
    limit: Duration,
) -> Result<(), String> {
    if frames.is_empty() {
        return Ok(());
    }
    let work = async {
        for frame in frames {
            sink.feed(Message::Binary(frame)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("write blocked for {limit:?}")),
    }
}

async fn write_ping(
    sink: &mut SplitSink<PusherStream, Message>,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, sink.send(Message::Ping(Bytes::new()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("ping blocked for {limit:?}")),
    }
}
