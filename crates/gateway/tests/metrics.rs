//! `/metrics` during and after a session shows the contract metrics with the right
//! values (this file is its own process, so the registry holds only this test).

mod common;

use std::time::Duration;

use common::{metric_value, query, Harness, FRAME_16K};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_proto::ServiceStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_session_from_start_to_end() {
    let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
    let (_, idle) = h.admin_get("/metrics").await;
    assert_eq!(metric_value(&idle, "hark_sessions_active"), 0.0);
    assert_eq!(metric_value(&idle, r#"hark_conversations_total{via="pusher"}"#), 0.0);
    assert_eq!(metric_value(&idle, "pusher_circuit_breaker_state"), 0.0);

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

    let (_, during) = h.admin_get("/metrics").await;
    assert_eq!(metric_value(&during, "hark_sessions_active"), 1.0);
    assert_eq!(metric_value(&during, "pusher_sessions_connected"), 1.0);
    assert_eq!(metric_value(&during, r#"hark_conversations_total{via="pusher"}"#), 1.0);
    assert_eq!(
        metric_value(&during, r#"hark_session_rejections_total{reason="bad_request"}"#),
        1.0
    );
    assert_eq!(metric_value(&during, r#"pusher_connect_attempts_total{result="ok"}"#), 1.0);
    // One STT result (two speakers, two segments, one message): one latency sample,
    // STT result received → written to the client.
    assert_eq!(metric_value(&during, "hark_transcript_latency_seconds_count"), 1.0);
    assert_eq!(client.segments().len(), 2);
    assert!(metric_value(&during, "hark_runtime_lag_seconds_count") >= 1.0);

    client.close().await.expect("the closing handshake completes");
    let mut after = String::new();
    for _ in 0..100 {
        after = h.admin_get("/metrics").await.1;
        if metric_value(&after, "hark_sessions_active") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric_value(&after, "hark_sessions_active"), 0.0);
    assert_eq!(metric_value(&after, r#"hark_sessions_total{outcome="client_closed"}"#), 1.0);
    assert_eq!(metric_value(&after, "pusher_sessions_connected"), 0.0);
    assert_eq!(metric_value(&after, "pusher_sessions_degraded"), 0.0);
}
