//! The pusher link's state machine through the in-memory connector, on tokio's
//! paused clock: the attempt budget, degraded probing, the recovery ramp, young
//! links counting as failures, the breaker's gates and Retry-After, and pending
//! 104s resent after a reconnect. No sockets, no wall-clock waits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_proto::{Ack, ConversationRecord, PusherFrame};
use hark_resilience::backoff::Backoff;
use hark_resilience::breaker::{Breaker, BreakerConfig, BreakerState, ProbeOutcome};
use hark_resilience::ramp::RecoveryRamp;
use hark_resilience::reconnect::{ReconnectPolicy, STABLE_AFTER};
use tokio::sync::mpsc;
use tokio::time::{advance, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{LinkCommand, LinkEvent, PusherLink};
use crate::config::PusherConfig;
use crate::connect::memory::{Fault, MemoryConnector, Peer};
use crate::outbox::Outbox;
use crate::pusher::PusherShared;

const MAX_ATTEMPTS: u32 = 3;
const PROBE_INTERVAL: Duration = Duration::from_secs(20);
const COOLDOWN: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(threshold: u32, recovery_rate: u32) -> PusherConfig {
    let nz = |n| NonZeroU32::new(n).unwrap();
    PusherConfig {
        url: "ws://pusher.test".into(),
        breaker_failure_threshold: nz(threshold),
        breaker_window: secs(30),
        breaker_cooldown: COOLDOWN,
        retry_after_max: secs(300),
        reconnect_max_attempts: MAX_ATTEMPTS,
        reconnect_base: secs(1),
        reconnect_max: secs(4),
        degraded_probe_interval: PROBE_INTERVAL,
        recovery_rate: nz(recovery_rate),
        connect_timeout: CONNECT_TIMEOUT,
        ping_interval: secs(10),
        ping_timeout: PING_TIMEOUT,
        heartbeat_interval: secs(20),
    }
}

/// Everything a link needs, wired to a scripted connector.
struct Rig {
    shared: Arc<PusherShared>,
    connector: Arc<MemoryConnector>,
    peers: mpsc::UnboundedReceiver<Peer>,
    _outbox: tempfile::TempDir,
}

async fn rig(default: Fault, threshold: u32, recovery_rate: u32) -> Rig {
    let (connector, peers) = MemoryConnector::new(default);
    let config = config(threshold, recovery_rate);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(Outbox::open(dir.path().to_path_buf(), 1 << 20).await.unwrap());
    let breaker = Breaker::new(BreakerConfig {
        failure_threshold: config.breaker_failure_threshold,
        window: config.breaker_window,
        cooldown: config.breaker_cooldown,
        retry_after_max: config.retry_after_max,
        probe_timeout: secs(10),
    });
    let shared = Arc::new(PusherShared {
        policy: ReconnectPolicy::new(
            Some(config.reconnect_max_attempts),
            Backoff::new(config.reconnect_base, config.reconnect_max).unwrap(),
        ),
        ramp: RecoveryRamp::new(config.recovery_rate, 7),
        config,
        connector: connector.clone(),
        breaker,
        fallback: Arc::new(crate::fallback::Fallback::new(outbox, None)),
    });
    Rig { shared, connector, peers, _outbox: dir }
}

/// A running link: its command queue and its events.
struct Running {
    commands: mpsc::Sender<LinkCommand>,
    events: mpsc::Receiver<LinkEvent>,
    task: tokio::task::JoinHandle<()>,
}

fn start(rig: &Rig, uid: &str) -> Running {
    let (commands, rx) = mpsc::channel(128);
    let (events_tx, events) = mpsc::channel(64);
    let link = PusherLink::new(rig.shared.clone(), uid, 16_000, "s".into(), rx, events_tx);
    Running { commands, events, task: tokio::spawn(link.run()) }
}

/// Lets every ready task run without moving the clock much.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Moves the clock in 100 ms steps, letting tasks run at each.
async fn run_for(duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        advance(Duration::from_millis(100)).await;
        settle().await;
    }
}

/// Advances the clock until the link emits `wanted` (at most `limit`); returns when.
async fn until_event(link: &mut Running, wanted: LinkEvent, limit: Duration) -> Instant {
    let end = Instant::now() + limit;
    loop {
        if let Ok(event) = link.events.try_recv() {
            assert_eq!(event, wanted);
            return Instant::now();
        }
        assert!(Instant::now() < end, "no {wanted:?} within {limit:?}");
        advance(Duration::from_millis(100)).await;
        settle().await;
    }
}

/// The next binary frame the peer receives, decoded (answering pings meanwhile).
async fn next_frame(peer: &mut Peer) -> PusherFrame {
    loop {
        match peer.ws.next().await.expect("link open").expect("frame") {
            Message::Binary(bytes) => return PusherFrame::decode(bytes).expect("valid frame"),
            _ => continue,
        }
    }
}

fn record(id: &str) -> ConversationRecord {
    ConversationRecord {
        version: ConversationRecord::VERSION,
        conversation_id: id.into(),
        uid: "u".into(),
        language: "en".into(),
        sample_rate: 16_000,
        session_id: "s".into(),
        started_at_ms: 0,
        finished_at_ms: 1,
        segments: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_dial_starts_degraded_and_only_the_probe_interval_dials_again() {
    let rig = rig(Fault::Refuse, 100, 50).await;
    let mut link = start(&rig, "u");
    assert_eq!(link.events.recv().await, Some(LinkEvent::Degraded));
    assert_eq!(rig.connector.dials(), 1, "no retries after a failed first dial");
    run_for(PROBE_INTERVAL - secs(1)).await;
    assert_eq!(rig.connector.dials(), 1, "degraded: nothing before the probe interval");
    run_for(secs(2)).await;
    assert_eq!(rig.connector.dials(), 2, "one probe per interval");
    run_for(PROBE_INTERVAL).await;
    assert_eq!(rig.connector.dials(), 3);
    // Told once: no second `degraded` while the outage lasts.
    assert!(link.events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_lost_link_redials_within_its_budget_then_degrades() {
    let mut rig = rig(Fault::Accept, 100, 50).await;
    let mut link = start(&rig, "u");
    let peer = rig.peers.recv().await.unwrap();
    // A link that lived past STABLE_AFTER dies: a fresh outage, full budget.
    run_for(STABLE_AFTER + secs(1)).await;
    rig.connector.set_default(Fault::Refuse);
    drop(peer);
    // Backoff ceilings 1, 2, 4 s: the budget (3 failures) is spent within 8 s.
    let degraded_at = until_event(&mut link, LinkEvent::Degraded, secs(8)).await;
    assert_eq!(rig.connector.dials(), 1 + MAX_ATTEMPTS as usize, "first dial + the budget");
    run_for(PROBE_INTERVAL - secs(1) - (Instant::now() - degraded_at)).await;
    assert_eq!(rig.connector.dials(), 1 + MAX_ATTEMPTS as usize, "degraded dials nothing");
    // Pusher is back: the next probe reconnects and the session hears `recovered`.
    rig.connector.set_default(Fault::Accept);
    until_event(&mut link, LinkEvent::Recovered, secs(3)).await;
    assert!(rig.peers.recv().await.is_some());
    drop(link.commands);
    let _ = link.task.await;
}

#[tokio::test(start_paused = true)]
async fn links_that_die_young_count_as_failures_and_feed_the_breaker() {
    // A pusher (or proxy) that accepts and drops at once must not be redialed
    // every second forever: each young death is a failure for the budget and for
    // the breaker.
    let mut rig = rig(Fault::Accept, 3, 50).await;
    let mut link = start(&rig, "u");
    let dropper = tokio::spawn(async move {
        while let Some(peer) = rig.peers.recv().await {
            drop(peer);
        }
    });
    until_event(&mut link, LinkEvent::Degraded, secs(15)).await;
    // Each dial was accepted and each link died young: the budget ran out after
    // MAX_ATTEMPTS of them, and the breaker (threshold 3) counted them too.
    assert_eq!(rig.connector.dials(), MAX_ATTEMPTS as usize);
    assert_eq!(rig.shared.breaker.state(), BreakerState::Open, "3 young deaths trip it");
    dropper.abort();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_means_no_dial_at_all() {
    let rig = rig(Fault::Accept, 2, 50).await;
    rig.shared.breaker.record_failure();
    rig.shared.breaker.record_failure();
    assert_eq!(rig.shared.breaker.state(), BreakerState::Open);
    let mut link = start(&rig, "u");
    assert_eq!(link.events.recv().await, Some(LinkEvent::Degraded));
    run_for(PROBE_INTERVAL * 3).await;
    assert_eq!(rig.connector.dials(), 0, "while open, sessions dial nothing");
}

#[tokio::test(start_paused = true)]
async fn retry_after_opens_the_breaker_for_that_long() {
    let rig = rig(Fault::Overloaded(429, Some("30".into())), 100, 50).await;
    let mut link = start(&rig, "u");
    assert_eq!(link.events.recv().await, Some(LinkEvent::Degraded));
    assert_eq!(rig.shared.breaker.state(), BreakerState::Open);
    let until = rig.shared.breaker.open_until().unwrap();
    let left = until - Instant::now();
    assert!(
        left > secs(29) && left <= secs(30),
        "{left:?}: the longer of cooldown and Retry-After"
    );
    run_for(secs(25)).await;
    assert_eq!(rig.connector.dials(), 1, "no dial while pusher asked to wait");
}

#[tokio::test(start_paused = true)]
async fn a_dial_that_hangs_is_bounded_by_the_connect_timeout() {
    let rig = rig(Fault::Hang, 100, 50).await;
    let started = Instant::now();
    let mut link = start(&rig, "u");
    assert_eq!(link.events.recv().await, Some(LinkEvent::Degraded));
    assert_eq!(started.elapsed(), CONNECT_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn degraded_links_come_back_through_the_ramp_when_the_breaker_closes() {
    // 12 sessions degraded behind an open breaker; the prober's probe succeeds after
    // the cooldown, and the sessions come back at the ramp's 4 per second, not at once.
    let mut rig = rig(Fault::Refuse, 100, 4).await;
    let stop = CancellationToken::new();
    let _prober = rig.shared.breaker.spawn_prober(|| async { ProbeOutcome::Success }, stop.clone());
    let mut links: Vec<Running> = (0..12).map(|i| start(&rig, &format!("u{i}"))).collect();
    for link in &mut links {
        assert_eq!(link.events.recv().await, Some(LinkEvent::Degraded));
    }
    rig.connector.set_default(Fault::Accept);
    for _ in 0..100 {
        rig.shared.breaker.record_retry_after(COOLDOWN);
    }
    let opened = Instant::now();
    let mut back = Vec::new();
    // Kept open: a dropped peer would be a young death, and its redial would count.
    let mut alive = Vec::new();
    while back.len() < 12 {
        // Biased: a peer already waiting is stamped before the clock moves on.
        tokio::select! {
            biased;
            peer = rig.peers.recv() => {
                alive.push(peer.unwrap());
                back.push(Instant::now() - opened);
            }
            () = run_for(Duration::from_millis(10)) => {}
        }
        assert!(Instant::now() - opened < secs(30), "only {} back", back.len());
    }
    let first = back[0];
    assert!(first >= COOLDOWN, "nobody before the breaker closed: {first:?}");
    // At most 4 in any second (the 100 ms steps of this clock can merge two
    // neighbours), so 12 take over 2.5 s instead of arriving in one instant.
    for (i, at) in back.iter().enumerate() {
        let within = back[i..].iter().filter(|t| **t - *at < Duration::from_millis(900)).count();
        assert!(within <= 4, "{within} reconnects within 0.9 s from {at:?}: {back:?}");
    }
    assert!(back[11] - first >= Duration::from_millis(2_500), "{back:?}");
    assert_eq!(rig.connector.dials(), 24, "one probe each, no redials");
    for link in &mut links {
        assert_eq!(link.events.recv().await, Some(LinkEvent::Recovered));
    }
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_pending_104_is_resent_after_a_reconnect_and_acked_once() {
    let mut rig = rig(Fault::Accept, 100, 50).await;
    let mut link = start(&rig, "u");
    let mut peer = rig.peers.recv().await.unwrap();
    link.commands.send(LinkCommand::ConversationStarted("c1".into())).await.unwrap();
    link.commands.send(LinkCommand::ConversationEnded(Box::new(record("c1")))).await.unwrap();
    link.commands.send(LinkCommand::ConversationStarted("c2".into())).await.unwrap();
    assert_eq!(next_frame(&mut peer).await, PusherFrame::Conversation("c1".into()));
    assert!(
        matches!(next_frame(&mut peer).await, PusherFrame::Process(p) if p.conversation_id == "c1")
    );
    // Pusher dies before acknowledging; the link comes back and resends the 104
    // right after the 103 of the *current* conversation.
    run_for(STABLE_AFTER + secs(1)).await;
    drop(peer);
    run_for(secs(2)).await;
    let mut peer = rig.peers.recv().await.unwrap();
    assert_eq!(next_frame(&mut peer).await, PusherFrame::Conversation("c2".into()));
    assert!(
        matches!(next_frame(&mut peer).await, PusherFrame::Process(p) if p.conversation_id == "c1")
    );
    let ack =
        PusherFrame::Ack(Ack { conversation_id: "c1".into(), success: Some(true), error: None });
    peer.ws.send(Message::Binary(ack.encode())).await.unwrap();
    let created =
        LinkEvent::HandedOff { conversation_id: "c1".into(), via: hark_proto::Via::Pusher };
    assert_eq!(link.events.recv().await, Some(created));
    // The session ends: nothing is pending, nothing goes to the outbox.
    drop(link.commands);
    tokio::spawn(async move { while peer.ws.next().await.is_some() {} });
    link.task.await.unwrap();
    assert!(link.events.recv().await.is_none());
    assert_eq!(rig.shared.fallback.local().records(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_pusher_is_dropped_after_the_ping_timeout() {
    let mut rig = rig(Fault::Accept, 100, 50).await;
    let _link = start(&rig, "u");
    // Never polled: the peer reads nothing and answers no ping.
    let _stalled = rig.peers.recv().await.unwrap();
    run_for(PING_TIMEOUT - secs(1)).await;
    assert_eq!(rig.connector.dials(), 1, "still within the ping timeout");
    run_for(secs(3)).await;
    assert_eq!(rig.connector.dials(), 2, "dead link found and redialed");
}
