//! What omi's apps send that a plain relay would refuse: `conversation_timeout=-1`
//! ("never split") and 8 KiB `image_chunk` text messages, over real sockets.

mod common;

use std::time::Duration;

use common::independent::observe;
use common::{Harness, FRAME_16K};
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, VOCAB};
use hark_proto::{pusher as codes, ServiceStatus};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

async fn ready(h: &Harness, query: &str) -> ListenClient {
    let mut client = ListenClient::connect(h.addr(), query, &[]).await.expect("upgrade accepted");
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_split_keeps_one_conversation_across_ten_seconds_of_silence() {
    let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
    let query = "uid=never&sample_rate=16000&codec=pcm16&conversation_timeout=-1";
    let mut client = ready(&h, query).await;

    client.send_audio(&synth(&[(VOCAB[1], 0), (VOCAB[2], 0)], 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await);
    // Ten seconds of wall-clock silence, kept alive as a device would (1 s of
    // silent audio a second). With the default 120 s nothing would split either, so
    // a second session with a 1 s timeout shows the split the first one avoids.
    let mut control =
        ready(&h, "uid=split&sample_rate=16000&codec=pcm16&conversation_timeout=1").await;
    control.send_audio(&synth(&[(VOCAB[3], 0)], 16_000), FRAME_16K).await.unwrap();
    control.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.send_audio(&silence(1.0, 16_000), FRAME_16K).await.unwrap();
        control.send_audio(&silence(1.0, 16_000), FRAME_16K).await.unwrap();
    }
    assert!(
        control.created().len() == 1
            || control.wait_for(WAIT, |r| matches!(r, Received::Created { .. })).await,
        "a 1 s timeout splits after the silence: {:?}",
        control.received
    );
    client.send_audio(&synth(&[(VOCAB[4], 0)], 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(client.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await);
    assert!(client.created().is_empty(), "no split during the silence: {:?}", client.created());
    client.close().await.expect("the closing handshake completes");

    // One conversation holding all three words: every 102 of the session names
    // the same id. It is not processed yet: its user may come back within its
    // (4 h) timeout, so it is parked, not finished. The client has its segment
    // before pusher has the 102 carrying it (102s are batched): wait for it.
    let expected = format!("{} {} {}", VOCAB[1], VOCAB[2], VOCAB[4]);
    let words = |frames: &[hark_fakes::fake_pusher::RecordedFrame]| -> String {
        let words: Vec<String> = frames
            .iter()
            .filter(|f| f.code == codes::SEGMENTS && f.uid == "never")
            .flat_map(|f| f.segments.iter().map(|s| s.text.to_lowercase()))
            .collect();
        words.join(" ")
    };
    h.pusher().wait_frames(WAIT, |frames| words(frames) == expected).await;
    let frames = h.pusher().frames();
    assert_eq!(words(&frames), expected);
    let ids: std::collections::BTreeSet<String> = frames
        .iter()
        .filter(|f| f.code == codes::SEGMENTS && f.uid == "never")
        .filter_map(|f| f.memory_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(!frames.iter().any(|f| f.code == codes::PROCESS && f.uid == "never"));
    control.close().await.expect("the closing handshake completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_kib_image_chunk_and_omis_other_messages_leave_the_session_streaming() {
    let h = Harness::start(None, |_| {}).await;
    let before = h.scrape().await;
    let mut client = ready(&h, "uid=camera&sample_rate=16000&codec=pcm16").await;
    let image = format!(
        r#"{{"type":"image_chunk","id":"p1","index":0,"total":3,"data":"{}"}}"#,
        "Q".repeat(8 * 1024)
    );
    client.send_text(&image).await.unwrap();
    for message in [
        r#"{"type":"speaker_assigned","speaker_id":1,"person_id":"p","person_name":"Ann","segment_ids":["s"]}"#,
        r#"{"type":"suggested_transcript","text":"hello"}"#,
        r#"{"type":"skip_question"}"#,
        r#"{"type":"something_new"}"#,
        "not json",
    ] {
        client.send_text(message).await.unwrap();
    }
    client.send_audio(&synth(&[(VOCAB[9], 0)], 16_000), FRAME_16K).await.unwrap();
    client.send_audio(&silence(0.5, 16_000), FRAME_16K).await.unwrap();
    assert!(
        client.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await,
        "{:?}",
        client.received
    );
    assert_eq!(client.words(), vec![VOCAB[9]]);
    let after = h.scrape().await;
    for kind in [
        "image_chunk",
        "speaker_assigned",
        "suggested_transcript",
        "skip_question",
        "other",
        "invalid",
    ] {
        let counted = after.increase(&before, "hark_client_messages_total", &[("type", kind)]);
        assert!(counted >= 1.0, "hark_client_messages_total{{type={kind:?}}} grew by {counted}");
    }
    client.close().await.expect("the closing handshake completes");
}

/// omi's backend sends the text `"ping"`, and omi apps answer each with a 2-byte
/// binary keep-alive: a muted app stays connected past the inactivity timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_app_answering_text_pings_is_never_closed_for_inactivity() {
    let h =
        Harness::start(None, |c| c.limits.inactivity_timeout = Duration::from_millis(1500)).await;
    let url = format!("ws://{}/v4/listen?uid=muted&sample_rate=16000&codec=pcm16", h.addr());
    let observed = observe(h.addr(), url, None, |ws| {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let mut pings = 0;
        while std::time::Instant::now() < until {
            match ws.read().expect("the session stays open") {
                Message::Text(t) if t.as_str() == "ping" => {
                    pings += 1;
                    // What omi's app sends back (pure_socket.dart): two bytes.
                    ws.send(Message::binary(vec![0x8A, 0x00])).unwrap();
                }
                Message::Close(frame) => panic!("closed while answering pings: {frame:?}"),
                _ => {}
            }
        }
        assert!(pings >= 6, "a ping every third of the inactivity timeout; got {pings}");
        ws.close(None).unwrap();
    })
    .await;
    observed.assert_closed(1005, "");
}
