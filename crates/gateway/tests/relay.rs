//! End to end through real sockets: a WebSocket client streams PCM into the
//! gateway, which relays to a fake Deepgram-compatible STT and a fake pusher.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{query, Harness, FRAME_16K};
use hark_fakes::client::{ConnectError, ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, words_for, VOCAB};
use hark_gateway::outbox;
use hark_proto::{pusher as codes, ConversationRecord, ServiceStatus, Via};

const WAIT: Duration = Duration::from_secs(20);

fn words(indices: &[usize], speakers: &[u32]) -> Vec<(&'static str, u32)> {
    indices.iter().zip(speakers.iter().cycle()).map(|(&i, &s)| (VOCAB[i], s)).collect()
}

async fn ready_client(h: &Harness, uid: &str, conversation_timeout: u32) -> ListenClient {
    let mut client = ListenClient::connect(h.addr(), &query(uid, conversation_timeout), &[])
        .await
        .expect("upgrade accepted");
    assert!(
        client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await,
        "client never saw ready: {:?}",
        client.received
    );
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_flows_to_client_and_pusher_and_the_conversation_is_created_via_pusher() {
    let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
    let mut client = ready_client(&h, "alice", 2).await;
    assert_eq!(
        client.statuses(),
        vec![ServiceStatus::Initiating, ServiceStatus::SttInitiating, ServiceStatus::Ready]
    );

    let spoken = words(&[3, 7, 7, 12, 30, 1, 0, 19], &[0, 0, 1, 1]);
    let mut pcm = synth(&spoken, 16_000);
    pcm.extend(silence(1.0, 16_000));
    let expected: Vec<String> = words_for(&pcm, 16_000).into_iter().map(|(w, _)| w).collect();
    assert_eq!(expected.len(), spoken.len(), "the fake transcribes what was synthesized");
    client.send_audio(&pcm, FRAME_16K).await.unwrap();

    // The client gets exactly the words the fake derived from the audio, in order.
    // The conversation ends `conversation_timeout` after its last transcript; the
    // 201 from pusher turns into `conversation_created`.
    assert!(
        client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await,
        "no conversation_created: {:?}",
        client.received
    );
    assert_eq!(client.words(), expected, "transcript words");
    let created = client.created();
    assert_eq!(created.len(), 1, "one conversation created: {:?}", client.received);
    let (conversation, via) = created[0].clone();
    assert_eq!(via, Via::Pusher);

    // Segment times are relative to the conversation start and ordered.
    let segments = client.segments();
    assert!(segments.windows(2).all(|w| w[0].start <= w[1].start));
    assert_eq!(segments[0].start, 0.0);
    assert!(segments.iter().all(|s| s.speaker == format!("SPEAKER_{}", s.speaker_id)));

    // Pusher saw 103 first, 101 audio adding up to what was sent with correct start
    // times, 102 frames carrying every segment, and 104 at the end.
    let frames = h.pusher().frames();
    assert_eq!(frames.first().map(|f| f.code), Some(codes::CONVERSATION));
    assert_eq!(frames[0].conversation.as_deref(), Some(conversation.as_str()));
    let audio: Vec<_> = frames.iter().filter(|f| f.code == codes::AUDIO).collect();
    assert_eq!(audio.iter().map(|f| f.audio_bytes).sum::<usize>(), pcm.len());
    // 101 carries the Unix time of its first sample (omi's pusher uses it as the
    // chunk timestamp): stamped when hark received it, less its duration. Frames
    // carry about 100 ms; the tail of a burst waits for the 1 s batch tick.
    for frame in &audio {
        let start = frame.audio_start.expect("101 has a start");
        let lag = frame.received_unix - start;
        let duration = frame.audio_bytes as f64 / 32_000.0;
        assert!(
            (0.0..1.0 + duration + 0.1).contains(&lag),
            "101 start {start} is {lag} s before it reached pusher"
        );
    }
    let pushed: Vec<String> = frames
        .iter()
        .filter(|f| f.code == codes::SEGMENTS)
        .inspect(|f| assert_eq!(f.memory_id.as_deref(), Some(conversation.as_str())))
        .flat_map(|f| f.segments.iter().map(|s| s.id.clone()))
        .collect();
    let shown: Vec<String> = segments.iter().map(|s| s.id.clone()).collect();
    assert_eq!(pushed, shown, "102 frames carry every segment the client saw");
    let process: Vec<_> = frames.iter().filter(|f| f.code == codes::PROCESS).collect();
    assert_eq!(process.len(), 1);
    assert_eq!(process[0].conversation.as_deref(), Some(conversation.as_str()));
    let last_segments = frames.iter().rposition(|f| f.code == codes::SEGMENTS).unwrap();
    let process_at = frames.iter().position(|f| f.code == codes::PROCESS).unwrap();
    assert!(process_at > last_segments, "104 comes after the conversation's segments");
    assert_eq!(h.pusher().stats().duplicates, 0);

    // The STT provider was addressed per design §5.
    let stt = h.stt.stats();
    let q = stt.last_query.unwrap_or_default();
    for param in
        ["encoding=linear16", "sample_rate=16000", "diarize=true", "model=nova-3", "channels=1"]
    {
        assert!(q.contains(param), "STT query {q:?} lacks {param}");
    }
    assert_eq!(stt.last_authorization.as_deref(), Some("Token test-key"));
    client.close().await.expect("the closing handshake completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_timeout_splits_into_two_conversations_each_with_103_and_104() {
    let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
    let mut client = ready_client(&h, "bob", 1).await;

    client.send_audio(&synth(&words(&[1, 2, 3], &[0]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await);
    // Keep-alive frames (≤ 2 bytes) keep the session alive and are not audio.
    client.send_frame(bytes::Bytes::from_static(&[0, 0])).await.unwrap();
    client.send_audio(&synth(&words(&[4, 5], &[1]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await);

    let created = client.created();
    assert_eq!(created.len(), 2);
    assert_ne!(created[0].0, created[1].0, "two distinct conversation ids");
    let frames = h.pusher().frames();
    for (id, _) in &created {
        let opened = frames
            .iter()
            .position(|f| f.code == codes::CONVERSATION && f.conversation.as_ref() == Some(id));
        let processed = frames
            .iter()
            .position(|f| f.code == codes::PROCESS && f.conversation.as_ref() == Some(id));
        assert!(opened.is_some() && processed.is_some(), "{id}: 103 and 104 expected");
        assert!(opened < processed, "{id}: 103 before 104");
    }
    // The second conversation's segments start near zero (times are per conversation).
    let second = client
        .segments()
        .into_iter()
        .find(|s| s.text.to_lowercase().starts_with(VOCAB[4]))
        .unwrap();
    assert!(second.start < 2.0, "segment time {} is relative to its conversation", second.start);
    client.close().await.expect("the closing handshake completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_with_400_and_a_reason() {
    let h = Harness::start(None, |_| {}).await;
    for (q, needle) in [
        ("uid=u&codec=mp3", "pcm16, pcm8, mulaw, opus"),
        ("uid=u&sample_rate=abc", "sample_rate"),
        ("sample_rate=16000", "uid"),
        ("uid=u&channels=2", "channels"),
    ] {
        match ListenClient::connect(h.addr(), q, &[]).await {
            Err(ConnectError::Refused { status, body, .. }) => {
                assert_eq!(status, 400, "{q}");
                assert!(body.contains(needle), "{q}: reason {body:?} should mention {needle}");
                assert_eq!(body.lines().count(), 1, "one-line reason");
            }
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_json_does_not_end_the_session() {
    let h = Harness::start(None, |_| {}).await;
    let mut client = ready_client(&h, "carol", 30).await;
    client.send_text("this is not json").await.unwrap();
    client.send_text(r#"{"type":"something_new"}"#).await.unwrap();
    client.send_audio(&synth(&words(&[9, 10], &[0]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await);
    assert_eq!(client.words(), vec![VOCAB[9], VOCAB[10]]);
}

/// The valid outbox records in `dir` right now, read synchronously.
fn records_on_disk(dir: &Path) -> Vec<ConversationRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|data| outbox::format::decode(&data).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pusher_a_conversation_is_announced_only_once_its_record_is_on_disk() {
    let h = Harness::start(None, |_| {}).await;
    let mut client = ready_client(&h, "dave", 1).await;
    client.send_audio(&synth(&words(&[5, 6], &[0]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    // The outbox is read the moment the announcement arrives, before anything else
    // is read: what is on disk then was written before hark told the client.
    let mut on_disk_when_told = None;
    let announced = client
        .wait_for(WAIT, |r| match r {
            Received::Created { conversation_id, via: Via::Fallback } => {
                let records = records_on_disk(h.outbox.path());
                on_disk_when_told =
                    Some(records.into_iter().find(|r| r.conversation_id == *conversation_id));
                true
            }
            _ => false,
        })
        .await;
    assert!(announced, "{:?}", client.received);
    let record = on_disk_when_told.flatten().expect("a valid record of the announced conversation");
    let spoken: Vec<String> = record.segments.iter().map(|s| s.text.clone()).collect();
    assert_eq!(spoken.join(" ").to_lowercase(), format!("{} {}", VOCAB[5], VOCAB[6]));

    // The converse: a record that cannot be written is never announced. The outbox
    // directory becomes a plain file, so every write under it fails (even as root).
    let before = h.scrape().await;
    let dir = h.outbox.path();
    std::fs::rename(dir, dir.with_extension("moved")).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
    client.send_audio(&synth(&words(&[7], &[0]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    let failed = async {
        while h.scrape().await.increase(&before, "hark_outbox_write_errors_total", &[]) < 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, failed).await.expect("the outbox write fails and is counted");
    // Whatever hark sent about that conversation has arrived by now: it would have
    // been sent before the write failed, or right after.
    let told =
        client.wait_for(Duration::from_secs(1), |r| matches!(r, Received::Created { .. })).await;
    assert!(!told, "a conversation with no record on disk was announced: {:?}", client.received);
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(dir.with_extension("moved"), dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stt_blip_is_reported_and_survived() {
    use hark_fakes::fake_stt::SttFault;
    let h = Harness::start(None, |_| {}).await;
    let mut client = ready_client(&h, "olga", 60).await;
    // The provider drops every stream with 1011 (Deepgram's NET-0001), then recovers.
    h.stt.set_fault(SttFault::Close1011);
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::SttInitiating)).await);
    h.stt.set_fault(SttFault::None);
    assert!(
        client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await,
        "{:?}",
        client.received
    );
    client.send_audio(&synth(&words(&[14, 15], &[0]), 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await);
    assert_eq!(client.words(), vec![VOCAB[14], VOCAB[15]]);
    assert!(!client.received.iter().any(|r| matches!(r, Received::Closed(..))));
}
