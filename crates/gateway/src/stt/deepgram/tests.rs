//! The STT link through the in-memory connector, on tokio's paused clock: the
//! reconnect budget (failed dials and streams that die young), a lost link coming
//! back with the audio clock intact, KeepAlive timing, a silent provider found
//! dead, and the CloseStream flush at the end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hark_resilience::backoff::Backoff;
use hark_resilience::reconnect::{Attempts, ReconnectPolicy};
use tokio::sync::mpsc;
use tokio::time::{advance, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{DeepgramLink, LinkSetup};
use crate::connect::memory::{Fault, MemoryConnector, Peer};
use crate::stt::SttEvent;

const MAX_ATTEMPTS: u32 = 4;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

struct Running {
    connector: Arc<MemoryConnector>,
    peers: mpsc::UnboundedReceiver<Peer>,
    audio: Option<crate::stt::queue::AudioTx>,
    events: mpsc::Receiver<SttEvent>,
}

fn start(default: Fault) -> Running {
    let (connector, peers) = MemoryConnector::new(default);
    let policy = ReconnectPolicy::new(
        Some(MAX_ATTEMPTS),
        Backoff::new(Duration::from_millis(250), secs(2)).unwrap(),
    );
    let (audio, audio_rx) = crate::stt::queue::channel(16_000);
    let (events_tx, events) = mpsc::channel(64);
    let setup = LinkSetup {
        connector: connector.clone(),
        url: "ws://stt.test/v1/listen?encoding=linear16".into(),
        api_key: Some("k".into()),
        attempts: Attempts::new(policy),
        sample_rate: 16_000,
        session_id: "s".into(),
    };
    tokio::spawn(DeepgramLink::new(setup, audio_rx, events_tx).run());
    Running { connector, peers, audio: Some(audio), events }
}

async fn step(by: Duration) {
    advance(by).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Advances the clock until an event arrives (at most `limit`).
async fn next_event(run: &mut Running, limit: Duration) -> SttEvent {
    let end = Instant::now() + limit;
    loop {
        if let Ok(event) = run.events.try_recv() {
            return event;
        }
        assert!(Instant::now() < end, "no STT event within {limit:?}");
        step(Duration::from_millis(50)).await;
    }
}

/// The next text frame the provider side receives (answering pings meanwhile).
async fn next_text(peer: &mut Peer) -> String {
    loop {
        match peer.ws.next().await.expect("link open").expect("frame") {
            Message::Text(text) => return text.to_string(),
            _ => continue,
        }
    }
}

/// One word from `start` to `end` seconds, as a Deepgram `Results` message.
fn results(word: &str, start: f64, end: f64) -> Message {
    Message::text(format!(
        r#"{{"type":"Results","start":0.0,"duration":1.0,"is_final":true,"speech_final":true,
           "channel":{{"alternatives":[{{"transcript":"{word}","confidence":1.0,
           "words":[{{"word":"{word}","start":{start},"end":{end},"confidence":1.0,"speaker":0}}]}}]}}}}"#
    ))
}

#[tokio::test(start_paused = true)]
async fn refused_connects_spend_the_budget_then_fail_the_session() {
    let mut run = start(Fault::Refuse);
    match next_event(&mut run, secs(20)).await {
        SttEvent::Failed(reason) => assert!(reason.contains("refused"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(run.connector.dials(), MAX_ATTEMPTS as usize);
}

#[tokio::test(start_paused = true)]
async fn streams_that_die_young_count_against_the_budget() {
    let mut run = start(Fault::Accept);
    let mut events = Vec::new();
    let mut peers = 0;
    loop {
        tokio::select! {
            biased;
            peer = run.peers.recv() => { drop(peer); peers += 1; }
            event = run.events.recv() => {
                let event = event.unwrap();
                let failed = matches!(event, SttEvent::Failed(_));
                events.push(event);
                if failed { break; }
            }
            () = step(Duration::from_millis(50)) => {}
        }
    }
    assert_eq!(
        peers, MAX_ATTEMPTS as usize,
        "a provider that drops at once is not redialed forever"
    );
    let connected = events.iter().filter(|e| matches!(e, SttEvent::Connected { .. })).count();
    assert_eq!(connected, MAX_ATTEMPTS as usize);
}

#[tokio::test(start_paused = true)]
async fn a_lost_stream_reconnects_and_keeps_the_audio_clock() {
    let mut run = start(Fault::Accept);
    let mut peer = run.peers.recv().await.unwrap();
    assert!(matches!(
        next_event(&mut run, secs(1)).await,
        SttEvent::Connected { reconnect: false }
    ));
    // Two seconds of audio, then the provider drops after a stable stream.
    let audio = run.audio.as_ref().unwrap();
    assert!(audio.try_send(Bytes::from(vec![0u8; 64_000])));
    let got = peer.ws.next().await.unwrap().unwrap();
    assert_eq!(got.len(), 64_000);
    step(secs(11)).await;
    drop(peer);
    assert!(matches!(next_event(&mut run, secs(1)).await, SttEvent::Lost(_)));
    assert!(matches!(next_event(&mut run, secs(3)).await, SttEvent::Connected { reconnect: true }));
    // Word times from the new stream count from its start: 2 s into the session.
    let mut peer = run.peers.recv().await.unwrap();
    peer.ws.send(results("hello", 0.5, 0.9)).await.unwrap();
    match next_event(&mut run, secs(1)).await {
        SttEvent::Runs { runs, .. } => {
            assert_eq!(runs.len(), 1);
            assert!((runs[0].start - 2.5).abs() < 1e-9, "{runs:?}");
            assert!((runs[0].end - 2.9).abs() < 1e-9, "{runs:?}");
        }
        other => panic!("expected Runs, got {other:?}"),
    }
    assert_eq!(run.connector.dials(), 2);
}

#[tokio::test(start_paused = true)]
async fn keepalive_goes_out_five_seconds_after_the_last_audio() {
    let mut run = start(Fault::Accept);
    let mut peer = run.peers.recv().await.unwrap();
    let begun = Instant::now();
    step(secs(3)).await;
    assert!(run.audio.as_ref().unwrap().try_send(Bytes::from(vec![0u8; 3200])));
    let reader = tokio::spawn(async move {
        let text = next_text(&mut peer).await;
        (text, Instant::now(), peer)
    });
    for _ in 0..200 {
        if reader.is_finished() {
            break;
        }
        step(Duration::from_millis(50)).await;
    }
    let (text, at, _peer) = reader.await.unwrap();
    assert_eq!(text, r#"{"type":"KeepAlive"}"#);
    let after = at - begun;
    assert!(after >= secs(8) && after < Duration::from_millis(8_200), "KeepAlive at {after:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_provider_is_found_dead() {
    let mut run = start(Fault::Accept);
    // Never polled: no pongs, no results.
    let _stalled = run.peers.recv().await.unwrap();
    assert!(matches!(next_event(&mut run, secs(1)).await, SttEvent::Connected { .. }));
    let begun = Instant::now();
    match next_event(&mut run, secs(30)).await {
        SttEvent::Lost(reason) => assert!(reason.contains("silent"), "{reason}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    let after = Instant::now() - begun;
    assert!(after > secs(15) && after <= secs(21), "dead after {after:?}");
}

#[tokio::test(start_paused = true)]
async fn the_end_sends_close_stream_and_relays_the_last_results() {
    let mut run = start(Fault::Accept);
    let mut peer = run.peers.recv().await.unwrap();
    assert!(matches!(next_event(&mut run, secs(1)).await, SttEvent::Connected { .. }));
    drop(run.audio.take());
    let provider = tokio::spawn(async move {
        assert_eq!(next_text(&mut peer).await, r#"{"type":"CloseStream"}"#);
        peer.ws.send(results("bye", 0.1, 0.4)).await.unwrap();
        peer.ws.close(None).await.unwrap();
        while peer.ws.next().await.is_some() {}
    });
    assert!(matches!(next_event(&mut run, secs(2)).await, SttEvent::Runs { .. }));
    assert!(matches!(next_event(&mut run, secs(2)).await, SttEvent::Finished));
    provider.await.unwrap();
}
