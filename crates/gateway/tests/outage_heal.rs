//! Pusher down from the start, then healed: transcripts flow throughout, the client
//! sees `degraded` then `recovered`, and the conversation that ended during the
//! outage (acknowledged via fallback once on disk) reaches pusher exactly once.

mod common;

use std::time::Duration;

use common::{pusher_timings, query, Harness, FRAME_16K};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_proto::{ProcessingStatus, ServiceStatus, Via};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_ended_during_the_outage_reaches_pusher_exactly_once_after_healing() {
    let h = Harness::start(Some(PusherMode::Refuse), |c| {
        pusher_timings(c, |p| {
            p.breaker_cooldown = Duration::from_secs(2);
            p.degraded_probe_interval = Duration::from_secs(2);
        })
    })
    .await;
    let mut client = ListenClient::connect(h.addr(), &query("erin", 1), &[]).await.unwrap();
    assert!(
        client.wait_for(WAIT, |r| *r == Received::Processing(ProcessingStatus::Degraded)).await
    );

    // A conversation during the outage: transcripts flow, then it is acknowledged
    // via the fallback path once it is on disk.
    let mut pcm = synth(&[(VOCAB[11], 0), (VOCAB[12], 0)], 16_000);
    pcm.extend(silence(0.5, 16_000));
    client.send_audio(&pcm, FRAME_16K).await.unwrap();
    assert!(
        client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await,
        "{:?}",
        client.received
    );
    let (conversation, via) = client.created()[0].clone();
    assert_eq!(via, Via::Fallback);
    assert_eq!(client.words(), vec![VOCAB[11], VOCAB[12]]);
    assert_eq!(h.gateway.shared().outbox.records(), 1);

    // Heal: the session recovers, the outbox is replayed exactly once.
    h.pusher().set_mode(PusherMode::Up);
    assert!(
        client.wait_for(WAIT, |r| *r == Received::Processing(ProcessingStatus::Recovered)).await,
        "{:?}",
        client.received
    );
    assert!(h.pusher().wait_processed(1, WAIT).await, "outbox record never reached pusher");
    assert_eq!(h.pusher().processed_ids(), vec![conversation.clone()]);

    // Transcripts still flow after recovery, and the next conversation goes via pusher.
    client.send_audio(&synth(&[(VOCAB[13], 1)], 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(
        client.wait_for(WAIT, |r| matches!(r, Received::Created { via: Via::Pusher, .. })).await
    );
    assert!(h.pusher().wait_processed(2, WAIT).await);

    // Nothing processed twice, and the replayed record carried every segment.
    let stats = h.pusher().stats();
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.conversations_processed, 2);
    let replayed: Vec<String> = h
        .pusher()
        .frames()
        .into_iter()
        .filter(|f| f.memory_id.as_deref() == Some(conversation.as_str()))
        .flat_map(|f| f.segments.into_iter().map(|s| s.text.to_lowercase()))
        .collect();
    assert_eq!(replayed.join(" "), format!("{} {}", VOCAB[11], VOCAB[12]));
    assert_eq!(h.gateway.shared().outbox.records(), 0, "delivered records are deleted");
    // The omi app shows "listening" only while the last service_status is `ready`:
    // pusher's outage and recovery never touch it.
    assert_eq!(
        client.statuses(),
        vec![ServiceStatus::Initiating, ServiceStatus::SttInitiating, ServiceStatus::Ready]
    );
    assert_eq!(client.processing(), vec![ProcessingStatus::Degraded, ProcessingStatus::Recovered]);
    assert!(!client.received.iter().any(|r| matches!(r, Received::Closed(..))));
    client.close().await.expect("the closing handshake completes");
}
