//! The fallback outbox survives `kill -9`: a conversation acknowledged via fallback
//! while pusher is down is delivered to pusher exactly once by the next process.

mod common;

use std::time::Duration;

use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, VOCAB};
use hark_proto::Via;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_fallback_conversation_survives_sigkill_and_is_delivered_once() {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    let pusher = FakePusher::start(FakePusherConfig {
        mode: PusherMode::Refuse,
        record: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let args = common::fake_upstream_args(
        &stt.url(),
        Some(&pusher.url()),
        outbox.path(),
        &["--breaker-cooldown", "1s", "--degraded-probe-interval", "2s"],
    );

    let first = common::start(&args).await;
    let query = "uid=grace&sample_rate=16000&codec=pcm16&conversation_timeout=1";
    let mut client = ListenClient::connect(first.client, query, &[]).await.unwrap();
    let mut pcm = synth(&[(VOCAB[20], 0), (VOCAB[21], 1)], 16_000);
    pcm.extend(silence(0.5, 16_000));
    client.send_audio(&pcm, 3_200).await.unwrap();
    assert!(
        client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await,
        "{:?}",
        client.received
    );
    let (conversation, via) = client.created()[0].clone();
    assert_eq!(via, Via::Fallback);

    // kill -9: no drain, no flush, nothing graceful.
    first.signal("KILL");
    let mut first = first;
    let status = first.child.wait().await.unwrap();
    assert!(!status.success());
    drop(client);

    // Pusher comes back; a new process on the same outbox delivers exactly once.
    pusher.set_mode(PusherMode::Up);
    let second = common::start(&args).await;
    assert!(pusher.wait_processed(1, WAIT).await, "the outbox record was not replayed");
    assert_eq!(pusher.processed_ids(), vec![conversation]);
    // Give a duplicate replay every chance to happen before checking there is none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = pusher.stats();
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.conversations_processed, 1);
    let left: Vec<_> = std::fs::read_dir(outbox.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rec"))
        .collect();
    assert!(left.is_empty(), "delivered record deleted: {left:?}");
    drop(second);
}
