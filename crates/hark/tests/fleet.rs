//! Two real `hark` processes sharing one real Postgres (started by the test from
//! Debian's packages; it fails, never skips, without them): the fallback path and
//! open conversations outlive the pod that had them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{metric, Hark};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, VOCAB};
use hark_proto::pusher as codes;
use hark_proto::{ServiceStatus, Via};
use hark_store::testing::PgServer;

const WAIT: Duration = Duration::from_secs(30);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A fake STT, a fake pusher in `mode`, and Postgres.
struct Fleet {
    stt: FakeStt,
    pusher: FakePusher,
    pg: PgServer,
}

impl Fleet {
    async fn start(mode: PusherMode) -> Self {
        let pg = PgServer::start();
        let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
        let pusher =
            FakePusher::start(FakePusherConfig { mode, record: true, ..Default::default() })
                .await
                .unwrap();
        Self { stt, pusher, pg }
    }

    /// A pod with its own outbox directory.
    async fn pod(&self, outbox: &Path, extra: &[&str]) -> Hark {
        let url = self.pg.url();
        let mut flags = vec![
            "--database-url",
            url.as_str(),
            "--breaker-cooldown",
            "1s",
            "--degraded-probe-interval",
            "1s",
            "--outbox-claim-lease",
            "3s",
        ];
        flags.extend_from_slice(extra);
        let args =
            common::fake_upstream_args(&self.stt.url(), Some(&self.pusher.url()), outbox, &flags);
        common::start(&args).await
    }
}

fn query(uid: &str, conversation_timeout: u32) -> String {
    format!("uid={uid}&sample_rate=16000&codec=pcm16&conversation_timeout={conversation_timeout}")
}

/// Says `words` and waits until the client has them back as transcript.
async fn speak(client: &mut ListenClient, words: &[usize]) {
    let spoken: Vec<(&str, u32)> = words.iter().map(|&i| (VOCAB[i], 0)).collect();
    let mut pcm = synth(&spoken, 16_000);
    pcm.extend(silence(0.5, 16_000));
    let want = client.words().len() + words.len();
    client.send_audio(&pcm, 3_200).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.words().len() < want {
        assert!(tokio::time::Instant::now() < deadline, "no transcript: {:?}", client.received);
        client.wait_for(Duration::from_millis(200), |r| matches!(r, Received::Segments(..))).await;
    }
}

/// Polls `series` on `pod` until `done` holds for its value, up to `limit`.
async fn metric_until(
    pod: &Hark,
    series: &str,
    limit: Duration,
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = metric(pod, series).await;
        if done(value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(addr: std::net::SocketAddr, query: &str) -> ListenClient {
    let mut client = ListenClient::connect(addr, query, &[]).await.expect("upgrade");
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_record_outlives_its_pod_and_its_disk() {
    let fleet = Fleet::start(PusherMode::Refuse).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fleet.pod(dir_a.path(), &[]).await;
    let b = fleet.pod(dir_b.path(), &[]).await;

    // A conversation ends on pod A while pusher refuses: acknowledged via fallback,
    // which with a database means committed to Postgres.
    let mut client = ready(a.client, &query("ada", 1)).await;
    speak(&mut client, &[3, 4]).await;
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await);
    let (conversation, via) = client.created()[0].clone();
    assert_eq!(via, Via::Fallback);
    assert_eq!(metric(&a, "hark_outbox_records").await, 0.0, "nothing staged on A's disk");

    // Pod A dies with its disk.
    a.signal("KILL");
    drop(client);
    let mut a = a;
    a.child.wait().await.unwrap();
    drop(dir_a);

    // Pusher comes back; pod B delivers it, exactly once.
    fleet.pusher.set_mode(PusherMode::Up);
    assert!(fleet.pusher.wait_processed(1, WAIT).await, "pod B never delivered the record");
    assert_eq!(fleet.pusher.processed_ids(), vec![conversation]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = fleet.pusher.stats();
    assert_eq!((stats.conversations_processed, stats.duplicates), (1, 0));
    assert!(metric(&b, "hark_shared_outbox_claims_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_session_continues_on_the_next_pod_as_one_conversation() {
    let fleet = Fleet::start(PusherMode::Up).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fleet.pod(dir_a.path(), &["--drain-timeout", "4s"]).await;
    let b = fleet.pod(dir_b.path(), &[]).await;

    let mut on_a = ready(a.client, &query("bob", 8)).await;
    speak(&mut on_a, &[1, 2]).await;
    // The 103 travels on A's pusher link, after the transcript the client saw:
    // wait for it to reach pusher rather than read pusher's frames at once.
    let announced = async {
        loop {
            let found = fleet
                .pusher
                .frames()
                .into_iter()
                .find(|f| f.code == codes::CONVERSATION && f.uid == "bob")
                .and_then(|f| f.conversation);
            if let Some(id) = found {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let announced =
        tokio::time::timeout(WAIT, announced).await.expect("A announced the conversation");

    // A rolling deploy: A drains, the client sees 1012 and reconnects to B.
    a.signal("TERM");
    assert_eq!(on_a.wait_closed(Duration::from_secs(10)).await, Ok(Some(1012)));
    let mut on_b = ready(b.client, &query("bob", 8)).await;
    speak(&mut on_b, &[5, 6]).await;

    // One conversation, with the id A announced, segments from both pods, once.
    assert!(
        on_b.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await,
        "{:?}",
        on_b.received
    );
    assert_eq!(on_b.created(), vec![(announced.clone(), Via::Pusher)]);
    let frames = fleet.pusher.frames();
    let words: Vec<String> = frames
        .iter()
        .filter(|f| f.code == codes::SEGMENTS && f.memory_id.as_deref() == Some(announced.as_str()))
        .flat_map(|f| {
            f.segments.iter().flat_map(|s| {
                s.text.to_lowercase().split_whitespace().map(str::to_owned).collect::<Vec<_>>()
            })
        })
        .collect();
    for w in [VOCAB[1], VOCAB[2], VOCAB[5], VOCAB[6]] {
        assert!(words.iter().any(|x| x == w), "{w} missing from {words:?}");
    }
    assert!(
        frames.iter().any(|f| f.code == codes::CONVERSATION
            && f.uid == "bob"
            && f.conversation.as_deref() == Some(announced.as_str())
            && f.conn > 1),
        "B sent a fresh 103 with the same id"
    );
    let stats = fleet.pusher.stats();
    assert_eq!((fleet.pusher.processed_ids(), stats.duplicates), (vec![announced], 0));
    assert_eq!(metric(&b, "hark_conversations_resumed_total").await, 1.0);
    let mut a = a;
    assert!(a.child.wait().await.unwrap().success(), "A exits 0 after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_is_processed_once_after_its_timeout() {
    let fleet = Fleet::start(PusherMode::Up).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = fleet.pod(dir.path(), &[]).await;
    let mut client = ready(pod.client, &query("vera", 3)).await;
    speak(&mut client, &[7, 8]).await;
    // Gone without a Close (the app was killed): the conversation is parked.
    drop(client);
    let parked = metric_until(&pod, "hark_conversations_parked", secs(2), |v| v >= 1.0).await;
    assert_eq!(parked, 1.0, "the conversation was parked");
    assert_eq!(
        fleet.pusher.stats().conversations_processed,
        0,
        "not processed while it may resume"
    );
    // Nobody comes back: after its 3 s timeout it is finished, once.
    assert!(fleet.pusher.wait_processed(1, Duration::from_secs(15)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = fleet.pusher.stats();
    assert_eq!((stats.conversations_processed, stats.duplicates), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_write_time_stages_the_record_on_disk_and_loses_nothing() {
    let mut fleet = Fleet::start(PusherMode::Refuse).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = fleet.pod(dir.path(), &[]).await;
    fleet.pg.stop();

    let mut client = ready(pod.client, &query("dora", 1)).await;
    speak(&mut client, &[9, 10]).await;
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await);
    let (conversation, via) = client.created()[0].clone();
    assert_eq!(via, Via::Fallback, "durable on local disk");
    assert_eq!(metric(&pod, "hark_outbox_records").await, 1.0, "fsynced to the local outbox");
    assert_eq!(metric(&pod, r#"hark_store_up{store="postgres"}"#).await, 0.0);

    // Postgres returns: the record is promoted, then delivered once pusher is up.
    fleet.pg.restart();
    let staged = metric_until(&pod, "hark_outbox_records", secs(20), |v| v == 0.0).await;
    assert_eq!(staged, 0.0, "the staged record reached Postgres");
    fleet.pusher.set_mode(PusherMode::Up);
    assert!(fleet.pusher.wait_processed(1, WAIT).await);
    assert_eq!(fleet.pusher.processed_ids(), vec![conversation]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.pusher.stats().duplicates, 0);
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drainer_killed_mid_replay_leaves_its_claims_to_a_peer() {
    let fleet = Fleet::start(PusherMode::Refuse).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fleet.pod(dir_a.path(), &[]).await;

    // Five conversations wait in Postgres.
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut client = ready(a.client, &query(&format!("kim{i}"), 1)).await;
        speak(&mut client, &[11 + i]).await;
        assert!(client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await);
        ids.push(client.created()[0].0.clone());
        client.close().await.expect("the closing handshake completes");
    }
    // Pusher comes back but holds its acks: A's drainer claims and sends 104s it
    // never sees acknowledged — and is killed mid-replay.
    fleet.pusher.set_mode(PusherMode::SlowAck { delay: Duration::from_secs(60) });
    assert!(fleet.pusher.wait_processed(1, WAIT).await, "A started replaying");
    a.signal("KILL");
    let mut a = a;
    a.child.wait().await.unwrap();
    let seen_by_a = fleet.pusher.stats().conversations_processed;

    // A peer delivers every claimed record once the 3 s lease runs out.
    fleet.pusher.set_mode(PusherMode::Up);
    let b = fleet.pod(dir_b.path(), &[]).await;
    assert!(fleet.pusher.wait_processed(5, WAIT).await, "B delivered A's claims");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut processed = fleet.pusher.processed_ids();
    processed.sort();
    ids.sort();
    assert_eq!(processed, ids, "every conversation reached pusher");
    let stats = fleet.pusher.stats();
    // Honest accounting: a 104 pusher took from A but never acked is sent again by
    // B; the conversation id makes that a duplicate pusher absorbs, never a loss.
    eprintln!(
        "A reached pusher with {seen_by_a} of 5 before it died; pusher-side duplicates: {}",
        stats.duplicates
    );
    assert!(stats.duplicates <= seen_by_a, "only what A had in flight is redelivered");
    let pending = metric_until(&b, "hark_shared_outbox_pending", secs(15), |v| v == 0.0).await;
    assert_eq!(pending, 0.0, "nothing left in the shared outbox");
}
