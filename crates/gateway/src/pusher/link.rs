//! A session's pusher link: exactly one reconnect loop per session.
//!
//! Senders never dial. The session pushes [`LinkCommand`]s into a bounded channel
//! (audio with `try_send`, so a slow or absent pusher costs the session nothing) and
//! this task owns the socket and every decision about it:
//!
//! ```text
//!              ok                              dies (young: counts as a failure)
//!   FirstDial ───▶ Connected ◀──────────┐ ──────────────────────────┐
//!      │ fails /       ▲  ▲   ok        │                           ▼
//!      │ breaker open  │  └────────── Dial ◀────── delay ──── Backoff ◀─┐
//!      │               │ ok            │ fails                    │     │
//!      ▼               │               └──────────────────────────┼─────┘
//!   Degraded ◀─────────┼── budget spent (Attempts) ───────────────┘
//!      │  ▲ fails /    │
//!      │  │ breaker    │
//!      ▼  │ open       │
//!     Probe ───────────┘ (the client is told `recovered`)
//!   (after --degraded-probe-interval, or the breaker closing, through the ramp)
//! ```
//!
//! While not connected, audio (101) and live segments (102) are dropped and counted,
//! and a conversation that ends goes to the durable outbox at once. Whether to
//! redial and how long to wait is [`Attempts`]' decision, as for every link.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use hark_proto::{Ack, ConversationRecord, PusherFrame, Segment, SegmentsPayload, Via};
use hark_resilience::breaker::BreakerState;
use hark_resilience::reconnect::{Attempts, Ended, Next};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Duration, Instant};

use super::conn::{process_frame, segments_frame, Incoming, PusherConn};
use super::dial::{dial_reported, listen_url};
use super::PusherShared;
use crate::metrics::{
    CONVERSATIONS, PUSHER_ACK_ERRORS, PUSHER_CONNECTED, PUSHER_DEGRADED, PUSHER_DROPPED_BYTES,
    PUSHER_DROPPED_FRAMES,
};

/// 104s awaiting their 201 on one session; older ones go to the outbox.
const MAX_PENDING: usize = 16;
/// Live segments are sent to pusher in batches at this period.
const SEGMENT_BATCH_PERIOD: Duration = Duration::from_secs(1);
/// At session end, how long a connected link waits for outstanding 201s before
/// handing the rest to the outbox (less when the session's deadline is nearer).
const ACK_GRACE: Duration = Duration::from_secs(5);
/// Commands fed to the socket before one flush.
const WRITE_BATCH: usize = 32;

/// What the session asks of its link.
#[derive(Debug)]
pub enum LinkCommand {
    /// One finished 101 frame (header and PCM16), built by the session's
    /// [`AudioEncoder`](super::audio::AudioEncoder): the link only sends it.
    Audio(Bytes),
    /// New segments of the current conversation.
    Segments(Vec<Segment>),
    /// The current conversation changed (103).
    ConversationStarted(String),
    /// A conversation ended: process it (104) or hand it to the fallback path.
    ConversationEnded(Box<ConversationRecord>),
    /// The session is ending: everything must be handed off by `deadline`. The
    /// session then closes the channel.
    Finish {
        /// When the session's hand-off must be done.
        deadline: Instant,
    },
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

/// What the link keeps of an outage while it lasts.
#[derive(Debug, Default)]
struct Outage {
    /// The session was told `degraded`, so it is owed a `recovered`.
    told: bool,
}

/// The link's states; each is one async method of [`PusherLink`].
#[derive(Debug)]
enum State {
    /// The session's first dial. It drains no commands: the bounded command queue
    /// holds the first seconds of audio, so pusher gets the stream from its first
    /// sample. A failure starts the session degraded (design §6).
    FirstDial,
    /// One dial after a wait.
    Dial(Outage),
    /// A live link.
    Connected(Box<PusherConn>),
    /// Waiting before the next dial.
    Backoff {
        /// How long.
        delay: Duration,
        /// The outage it is part of.
        outage: Outage,
    },
    /// Dialing nothing; waiting for the probe interval or the breaker to close.
    Degraded(Outage),
    /// One attempt out of degraded mode (HALF_OPEN_PROBE).
    Probe(Outage),
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

/// The conversation pusher should attribute frames to.
#[derive(Debug)]
struct Current {
    /// Its id (re-sent as 103 on every connect).
    id: String,
    /// Pusher missed live segments of it during an outage: when it ends on a live
    /// link, pusher gets all its segments in one 102 before the 104.
    missed: bool,
}

/// One session's pusher link; run it with [`PusherLink::run`] on its own task.
pub struct PusherLink {
    /// Process-wide breaker, ramp, outbox, connector and timings.
    shared: Arc<PusherShared>,
    /// `…/v1/trigger/listen?uid=…&sample_rate=…`.
    url: String,
    /// Commands from the session.
    commands: mpsc::Receiver<LinkCommand>,
    /// Events to the session.
    events: mpsc::Sender<LinkEvent>,
    /// The current conversation, once the session named one.
    current: Option<Current>,
    /// Segments waiting for the next 102.
    batch: Vec<Segment>,
    /// 104s sent and not yet acknowledged, with the records to fall back to.
    pending: VecDeque<ConversationRecord>,
    /// Consecutive failures, and what to do about the next one.
    attempts: Attempts,
    /// When the session's hand-off must be done (from [`LinkCommand::Finish`]).
    deadline: Option<Instant>,
    /// The gauge this link currently counts in.
    gauge: Gauge,
    /// Jitter source for backoff.
    rng: SmallRng,
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
        let attempts = Attempts::new(shared.policy.clone());
        Self {
            shared,
            url,
            commands,
            events,
            current: None,
            batch: Vec::new(),
            pending: VecDeque::new(),
            attempts,
            deadline: None,
            gauge: Gauge::None,
            rng: SmallRng::from_rng(&mut rand::rng()),
            session_id,
        }
    }

    /// Runs the state machine until the session closes the command channel.
    pub async fn run(mut self) {
        let mut state = State::FirstDial;
        loop {
            // Only the connected state is kept inline: the link's task is as big
            // as its largest state for the session's life, and dialling, backoff,
            // degraded waiting and probing are rare; each is boxed while it runs.
            state = match state {
                State::FirstDial => Box::pin(self.first_dial()).await,
                State::Dial(outage) => Box::pin(self.dial(outage)).await,
                State::Connected(conn) => self.connected(*conn).await,
                State::Backoff { delay, outage } => Box::pin(self.backoff(delay, outage)).await,
                State::Degraded(outage) => Box::pin(self.degraded(outage)).await,
                State::Probe(outage) => Box::pin(self.probe(outage)).await,
                State::Done => break,
            };
        }
        // Whatever pusher did not acknowledge goes to the fallback path.
        while let Some(record) = self.pending.pop_front() {
            self.fallback(record).await;
        }
        self.set_gauge(Gauge::None);
    }

    /// FirstDial: one attempt, unless the breaker forbids it.
    async fn first_dial(&mut self) -> State {
        if self.shared.breaker.allow().is_err() {
            // A breaker rejection is not a session failure and dials nothing.
            return State::Degraded(Outage::default());
        }
        match self.dial_once().await {
            Ok(conn) => self.online(conn, Outage::default()).await,
            Err(()) => State::Degraded(Outage::default()),
        }
    }

    /// Dial: one attempt; on failure the budget decides between Backoff and Degraded.
    async fn dial(&mut self, outage: Outage) -> State {
        if self.shared.breaker.allow().is_err() {
            return State::Degraded(outage);
        }
        match self.offline_until(self.dial_once()).await {
            None => State::Done,
            Some(Ok(conn)) => self.online(conn, outage).await,
            Some(Err(())) => {
                let next = self.attempts.dial_failed(&mut self.rng);
                after(next, outage)
            }
        }
    }

    /// Backoff: a jittered delay, then the next dial.
    async fn backoff(&mut self, delay: Duration, outage: Outage) -> State {
        match self.offline_until(sleep_until(Instant::now() + delay)).await {
            None => State::Done,
            Some(()) => State::Dial(outage),
        }
    }

    /// Degraded: tell the session once, then wait for the probe interval or for the
    /// breaker to close.
    async fn degraded(&mut self, mut outage: Outage) -> State {
        self.set_gauge(Gauge::Degraded);
        self.move_pending_to_fallback().await;
        if !outage.told {
            tracing::info!(session = %self.session_id, "pusher unavailable: session degraded, transcripts continue");
            outage.told = true;
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
            Some(()) => State::Probe(outage),
        }
    }

    /// Probe: one attempt out of degraded mode.
    async fn probe(&mut self, outage: Outage) -> State {
        if self.shared.breaker.allow().is_err() {
            return State::Degraded(outage);
        }
        match self.offline_until(self.dial_once()).await {
            None => State::Done,
            Some(Ok(conn)) => {
                self.attempts.reset();
                self.online(conn, outage).await
            }
            Some(Err(())) => State::Degraded(outage),
        }
    }

    /// A dial succeeded: the session hears `recovered` if it was told `degraded`.
    async fn online(&mut self, conn: PusherConn, outage: Outage) -> State {
        if outage.told {
            tracing::info!(session = %self.session_id, "pusher link recovered");
            self.emit(LinkEvent::Recovered).await;
        }
        State::Connected(Box::new(conn))
    }

    /// One real dial, reported to the breaker. Borrows nothing from `self` so it can
    /// run while commands are handled.
    fn dial_once(&self) -> impl std::future::Future<Output = Result<PusherConn, ()>> + 'static {
        let shared = self.shared.clone();
        let url = self.url.clone();
        let session = self.session_id.clone();
        async move {
            let dialed =
                dial_reported(&*shared.connector, &url, &shared.config, &shared.breaker).await;
            dialed.map(PusherConn::new).map_err(|error| {
                tracing::debug!(session = %session, %error, "pusher dial failed");
            })
        }
    }

    /// Connected: stream frames until the socket fails or the session ends.
    async fn connected(&mut self, mut conn: PusherConn) -> State {
        self.set_gauge(Gauge::Connected);
        let since = Instant::now();
        match self.stream_frames(&mut conn).await {
            Exit::Shutdown => {
                self.await_acks(&mut conn).await;
                conn.close(Duration::from_secs(1)).await;
                State::Done
            }
            Exit::Failed(reason) => {
                conn.abort();
                let lived = since.elapsed();
                tracing::info!(session = %self.session_id, %reason, ?lived, "pusher link lost; reconnecting");
                self.set_gauge(Gauge::None);
                match self.attempts.link_ended(lived, &mut self.rng) {
                    Ended::AfterStable(next) => after(next, Outage::default()),
                    Ended::Young(next) => {
                        // Accepted then dropped: as bad as a failed dial, for the
                        // breaker too.
                        self.shared.breaker.record_failure();
                        after(next, Outage::default())
                    }
                }
            }
        }
    }

    async fn stream_frames(&mut self, conn: &mut PusherConn) -> Exit {
        let config = self.shared.config.clone();
        // On (re)connect: tell pusher the current conversation, resend pending 104s.
        let mut opening = Vec::new();
        if let Some(current) = &self.current {
            opening.push(PusherFrame::Conversation(current.id.clone()).encode());
        }
        opening.extend(self.pending.iter().map(process_frame));
        if let Err(reason) = conn.send(opening, config.ping_timeout).await {
            return Exit::Failed(reason);
        }

        let mut last_seen = Instant::now();
        // Liveness: one pinned timer, moved to the real deadline only when it fires
        // (frames arrive far more often than the timeout; none of them touches the
        // timer wheel).
        let liveness = tokio::time::sleep(config.ping_timeout);
        tokio::pin!(liveness);
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
                    let Some(command) = command else { return self.flush_on_exit(conn).await };
                    self.encode_command(command, &mut out);
                    // Batch whatever else is already queued into the same flush.
                    while out.len() < WRITE_BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => self.encode_command(command, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                incoming = conn.recv() => {
                    last_seen = Instant::now();
                    match incoming {
                        Incoming::Ack(ack) => self.on_ack(ack).await,
                        Incoming::Other => {}
                        Incoming::Closed(reason) => return Exit::Failed(reason),
                    }
                }
                _ = heartbeat.tick() => out.push(PusherFrame::Heartbeat.encode()),
                _ = batch_tick.tick() => self.take_batch(&mut out),
                _ = ping.tick() => {
                    if let Err(reason) = conn.ping(config.ping_timeout).await {
                        return Exit::Failed(reason);
                    }
                }
                () = &mut liveness => {
                    let due = last_seen + config.ping_timeout;
                    if due <= Instant::now() {
                        return Exit::Failed(format!("no pong or frame for {:?}", config.ping_timeout));
                    }
                    liveness.as_mut().reset(due);
                }
            }
            if let Err(reason) = conn.send(out, config.ping_timeout).await {
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
            LinkCommand::Audio(frame) => out.push(frame),
            LinkCommand::Segments(segments) => self.batch.extend(segments),
            LinkCommand::ConversationStarted(id) => {
                self.take_batch(out);
                out.push(PusherFrame::Conversation(id.clone()).encode());
                self.current = Some(Current { id, missed: false });
            }
            LinkCommand::ConversationEnded(record) => {
                self.take_batch(out);
                if self.current_missed(&record.conversation_id) {
                    // Pusher missed live segments of this conversation during an
                    // outage: send them all (ids are stable, so repeats are harmless).
                    out.push(segments_frame(&record));
                }
                out.push(process_frame(&record));
                self.pending.push_back(*record);
            }
            LinkCommand::Finish { deadline } => self.deadline = Some(deadline),
        }
    }

    /// Whether `id` is the current conversation and pusher missed some of it.
    fn current_missed(&self, id: &str) -> bool {
        self.current.as_ref().is_some_and(|c| c.id == id && c.missed)
    }

    /// Moves the segment batch into a 102.
    fn take_batch(&mut self, out: &mut Vec<Bytes>) {
        if self.batch.is_empty() {
            return;
        }
        let Some(current) = &self.current else {
            self.batch.clear();
            return;
        };
        let segments = std::mem::take(&mut self.batch);
        let memory_id = current.id.clone();
        out.push(PusherFrame::Segments(SegmentsPayload { segments, memory_id }).encode());
    }

    /// Session ended while connected: send the last batch.
    async fn flush_on_exit(&mut self, conn: &mut PusherConn) -> Exit {
        let mut out = Vec::new();
        self.take_batch(&mut out);
        let _ = conn.send(out, self.grace(self.shared.config.ping_timeout)).await;
        Exit::Shutdown
    }

    /// `limit`, or less if the session's hand-off deadline is nearer.
    fn grace(&self, limit: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => limit.min(deadline.saturating_duration_since(Instant::now())),
            None => limit,
        }
    }

    /// Waits (bounded) for the 201s of pending conversations after the session ended.
    async fn await_acks(&mut self, conn: &mut PusherConn) {
        let deadline = Instant::now() + self.grace(ACK_GRACE);
        while !self.pending.is_empty() {
            tokio::select! {
                () = sleep_until(deadline) => return,
                incoming = conn.recv() => match incoming {
                    Incoming::Ack(ack) => self.on_ack(ack).await,
                    Incoming::Other => {}
                    Incoming::Closed(_) => return,
                }
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
            LinkCommand::Audio(frame) => count_drop("101", frame.len()),
            LinkCommand::Segments(segments) => {
                // The session keeps the segments for the fallback record.
                let bytes: usize = segments.iter().map(|s| s.text.len() + 128).sum();
                count_drop("102", bytes);
                if let Some(current) = &mut self.current {
                    current.missed = true;
                }
            }
            LinkCommand::ConversationStarted(id) => {
                self.batch.clear();
                self.current = Some(Current { id, missed: false });
            }
            LinkCommand::ConversationEnded(record) => self.fallback(*record).await,
            LinkCommand::Finish { deadline } => self.deadline = Some(deadline),
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
        // The outbox logs the full record and counts a refusal (full, I/O error);
        // the client is not told it was created, because it was not.
        // Boxed: the outbox write (file, then Postgres) is rare and large.
        if Box::pin(self.shared.fallback.write(&record)).await.is_ok() {
            metrics::counter!(CONVERSATIONS, "via" => "fallback").increment(1);
            self.emit(LinkEvent::HandedOff { conversation_id, via: Via::Fallback }).await;
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

/// The state after a failure: wait and redial, or degrade once the budget is spent.
fn after(next: Next, outage: Outage) -> State {
    match next {
        Next::Retry(delay) => State::Backoff { delay, outage },
        Next::Exhausted => State::Degraded(outage),
    }
}

fn count_drop(frame: &'static str, bytes: usize) {
    metrics::counter!(PUSHER_DROPPED_BYTES, "frame" => frame).increment(bytes as u64);
    metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => frame).increment(1);
}

#[cfg(test)]
mod tests;
