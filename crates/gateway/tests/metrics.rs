//! `/metrics` during and after a session shows the contract metrics with the right
//! values. Counters are read as increases over the idle scrape; the gauges are
//! process-wide, so this file holds this one test: its process has no other sessions.

mod common;

use std::time::Duration;

use common::{query, Harness, FRAME_16K};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_proto::ServiceStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_session_from_start_to_end() {
    let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
    let idle = h.scrape().await;
    assert_eq!(idle.value("hark_sessions_active", &[]), Some(0.0));
    assert_eq!(idle.value("hark_conversations_total", &[("via", "pusher")]), Some(0.0));
    assert_eq!(idle.value("pusher_circuit_breaker_state", &[]), Some(0.0));

    // A refused upgrade is counted by reason.
    assert!(ListenClient::connect(h.addr(), "uid=x&codec=mp3", &[]).await.is_err());

    let mut client = ListenClient::connect(h.addr(), &query("mona", 1), &[]).await.unwrap();
    assert!(
        client
            .wait_for(Duration::from_secs(10), |r| *r == Received::Status(ServiceStatus::Ready))
            .await
    );
    let mut pcm = synth(&[(VOCAB[1], 0), (VOCAB[2], 1)], 16_000);
    pcm.extend(silence(0.5, 16_000));
    client.send_audio(&pcm, FRAME_16K).await.unwrap();
    assert!(
        client.wait_for(Duration::from_secs(10), |r| matches!(r, Received::Created { .. })).await
    );

    let during = h.scrape().await;
    let grew = |name, labels: &[(&str, &str)]| during.increase(&idle, name, labels);
    assert_eq!(during.value("hark_sessions_active", &[]), Some(1.0));
    assert_eq!(during.value("pusher_sessions_connected", &[]), Some(1.0));
    assert_eq!(grew("hark_conversations_total", &[("via", "pusher")]), 1.0);
    assert_eq!(grew("hark_session_rejections_total", &[("reason", "bad_request")]), 1.0);
    assert_eq!(grew("pusher_connect_attempts_total", &[("result", "ok")]), 1.0);
    // One STT result (two speakers, two segments, one message): one latency sample,
    // STT result received → written to the client.
    assert_eq!(grew("hark_transcript_latency_seconds_count", &[]), 1.0);
    assert_eq!(client.segments().len(), 2);
    assert!(grew("hark_runtime_lag_seconds_count", &[]) >= 1.0);

    client.close().await.expect("the closing handshake completes");
    let mut after = h.scrape().await;
    for _ in 0..100 {
        if after.value("hark_sessions_active", &[]) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = h.scrape().await;
    }
    assert_eq!(after.value("hark_sessions_active", &[]), Some(0.0));
    let closed = after.increase(&idle, "hark_sessions_total", &[("outcome", "client_closed")]);
    assert_eq!(closed, 1.0);
    assert_eq!(after.value("pusher_sessions_connected", &[]), Some(0.0));
    assert_eq!(after.value("pusher_sessions_degraded", &[]), Some(0.0));
}
