//! Graceful drain on SIGTERM (design §7): `/ready` turns 503 at once, new upgrades
//! get 503 + `Retry-After`, every live session hands off its conversation and is
//! closed with 1012 — spread over the drain timeout, not all at once — and the
//! process exits 0.

mod common;

use std::time::Duration;

use common::http_get;
use futures::future::join_all;
use hark_fakes::client::{ConnectError, ListenClient, Received};
use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, VOCAB};
use hark_proto::ServiceStatus;
use tokio::time::Instant;

const SESSIONS: usize = 8;
const DRAIN: Duration = Duration::from_secs(8);

async fn drain_hands_off_and_closes_with_1012(pusher_mode: PusherMode) {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    let pusher_up = pusher_mode == PusherMode::Up;
    let pusher = FakePusher::start(FakePusherConfig {
        mode: pusher_mode,
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
        &["--drain-timeout", &format!("{}s", DRAIN.as_secs())],
    );
    let mut hark = common::start(&args).await;
    let addr = hark.client;

    // Live sessions, each in the middle of a conversation (long conversation timeout).
    let clients = join_all((0..SESSIONS).map(|i| async move {
        let query = format!("uid=drain-{i}&sample_rate=16000&codec=pcm16&conversation_timeout=600");
        let mut c = ListenClient::connect(addr, &query, &[]).await.unwrap();
        assert!(
            c.wait_for(Duration::from_secs(20), |r| *r == Received::Status(ServiceStatus::Ready))
                .await
        );
        let mut pcm =
            synth(&[(VOCAB[i % VOCAB.len()], 0), (VOCAB[(i + 1) % VOCAB.len()], 0)], 16_000);
        pcm.extend(silence(0.5, 16_000));
        c.send_audio(&pcm, 3_200).await.unwrap();
        assert!(c.wait_for(Duration::from_secs(20), |r| matches!(r, Received::Segments(..))).await);
        c
    }))
    .await;
    let (status, _) = http_get(hark.admin, "/ready").await;
    assert_eq!(status, 200);

    let signalled = Instant::now();
    hark.signal("TERM");
    let readers = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let code = c.wait_closed(DRAIN + Duration::from_secs(5)).await;
            (code, Instant::now(), c)
        })
    });
    let readers: Vec<_> = readers.collect();

    // /ready is 503 at once, and new upgrades are refused with 503 + Retry-After.
    let mut ready = 0;
    for _ in 0..50 {
        ready = http_get(hark.admin, "/ready").await.0;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503);
    assert!(signalled.elapsed() < Duration::from_secs(1), "/ready took {:?}", signalled.elapsed());
    match ListenClient::connect(addr, "uid=late&sample_rate=16000&codec=pcm16", &[]).await {
        Err(ConnectError::Refused { status, retry_after, .. }) => {
            assert_eq!(status, 503);
            let secs: u64 = retry_after.expect("Retry-After").parse().expect("delay-seconds");
            assert!(secs >= 1);
        }
        other => panic!("upgrade during drain: {other:?}"),
    }

    // Every client is closed with 1012 within the drain timeout, not all at once.
    let mut close_times = Vec::new();
    let mut created = 0;
    for reader in readers {
        let (code, at, c) = reader.await.unwrap();
        assert_eq!(code, Ok(Some(1012)), "{:?}", c.received);
        assert!(at.duration_since(signalled) <= DRAIN + Duration::from_secs(1));
        close_times.push(at.duration_since(signalled));
        created += c.created().len();
    }
    close_times.sort();
    let spread = *close_times.last().unwrap() - close_times[0];
    assert!(spread >= Duration::from_millis(500), "closes not spread: {close_times:?}");

    // Exit 0.
    let status = tokio::time::timeout(DRAIN + Duration::from_secs(5), hark.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // Every conversation was handed off: to pusher, or to the outbox.
    assert_eq!(created, SESSIONS, "each client was told its conversation was created");
    if pusher_up {
        assert_eq!(pusher.stats().conversations_processed, SESSIONS as u64);
    } else {
        let records = std::fs::read_dir(outbox.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "rec"))
            .count();
        assert_eq!(records, SESSIONS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_to_pusher() {
    drain_hands_off_and_closes_with_1012(PusherMode::Up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_to_the_outbox_when_pusher_is_down() {
    drain_hands_off_and_closes_with_1012(PusherMode::Refuse).await;
}
