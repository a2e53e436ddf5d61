//! Every way a session ends, seen by an independent client (tungstenite's blocking
//! client on a thread of its own; see `common/independent.rs`): the exact close code
//! and reason, a completed closing handshake, then TCP EOF — never the abnormal
//! 1006 an app would treat as "connection lost" and reconnect on.
//!
//! Why Hark's own tests missed the 1006 on client closes: `ListenClient::close`
//! stopped at the first error or end of stream and reported nothing, so a server
//! that dropped the socket without answering looked the same as one that answered.
//! It now returns `Err` unless the server's Close arrived before the stream ended,
//! and every test that closes a client checks it.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::independent::{observe, Observed, Ws};
use common::{query, Harness, FRAME_16K};
use hark_fakes::fake_stt::{silence, synth, FakeSttConfig, VOCAB};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// The two tests that end in 1008 run one at a time: the slow-consumer test waits
/// for `hark_client_closes_total{code="1008"}` to move, and metrics are per process.
static CODE_1008: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn url(h: &Harness, uid: &str) -> String {
    format!("ws://{}/v4/listen?{}", h.addr(), query(uid, 600))
}

/// Reads until `ready` (the session is streaming) so a close lands on a live session.
fn wait_ready(ws: &mut Ws) {
    loop {
        match ws.read().expect("session starts") {
            Message::Text(t) if t.contains(r#""status":"ready""#) => return,
            _ => {}
        }
    }
}

fn speech(words: usize) -> Vec<u8> {
    let list: Vec<(&str, u32)> = (0..words).map(|i| (VOCAB[i % VOCAB.len()], 0)).collect();
    let mut pcm = synth(&list, 16_000);
    pcm.extend(silence(0.5, 16_000));
    pcm
}

fn send_audio(ws: &mut Ws, pcm: &[u8], frame: usize) {
    for chunk in pcm.chunks(frame) {
        ws.write(Message::binary(chunk.to_vec())).unwrap();
    }
    ws.flush().unwrap();
}

/// Waits (up to 5 s: a session is counted once its close has completed) for
/// `hark_sessions_total{outcome}` to pass `before`. Metrics are per process and the
/// tests here run in parallel, so each reads its own delta.
async fn counted(h: &Harness, outcome: &str, before: f64) {
    for _ in 0..250 {
        if self::outcome(h, outcome).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("hark_sessions_total{{outcome={outcome:?}}} stayed at {before}");
}

async fn outcome(h: &Harness, outcome: &str) -> f64 {
    h.metric("hark_sessions_total", &[("outcome", outcome)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_its_code_at_once() {
    let h = Harness::start(None, |_| {}).await;
    let before = outcome(&h, "client_closed").await;
    let observed: Observed = observe(h.addr(), url(&h, "closer"), None, |ws| {
        wait_ready(ws);
        send_audio(ws, &speech(2), FRAME_16K);
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    })
    .await;
    // The reply echoes the client's Close, as RFC 6455 §5.5.1 and tungstenite do.
    observed.assert_closed(1000, "bye");
    counted(&h, "client_closed", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_without_a_code_gets_one_back_without_a_code() {
    let h = Harness::start(None, |_| {}).await;
    let observed = observe(h.addr(), url(&h, "closer"), None, |ws| {
        wait_ready(ws);
        ws.close(None).unwrap();
    })
    .await;
    observed.assert_closed(1005, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactivity_closes_1001() {
    let h = Harness::start(None, |c| c.limits.inactivity_timeout = Duration::from_secs(1)).await;
    let before = outcome(&h, "inactivity").await;
    let observed = observe(h.addr(), url(&h, "idle"), None, wait_ready).await;
    observed.assert_closed(1001, "inactivity timeout");
    counted(&h, "inactivity", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_too_big_closes_1009() {
    let h = Harness::start(None, |_| {}).await;
    let before = outcome(&h, "frame_too_big").await;
    let observed = observe(h.addr(), url(&h, "big"), None, |ws| {
        wait_ready(ws);
        ws.send(Message::binary(vec![0u8; 100_000])).unwrap();
    })
    .await;
    observed.assert_closed(1009, "frame too big");
    counted(&h, "frame_too_big", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_too_big_closes_1009() {
    let h = Harness::start(None, |c| {
        c.limits.max_text_bytes = std::num::NonZeroUsize::new(16 * 1024).unwrap()
    })
    .await;
    let before = outcome(&h, "text_too_big").await;
    let observed = observe(h.addr(), url(&h, "chatty"), None, |ws| {
        wait_ready(ws);
        let text = format!(r#"{{"type":"image_chunk","data":"{}"}}"#, "A".repeat(20 * 1024));
        ws.send(Message::text(text)).unwrap();
    })
    .await;
    observed.assert_closed(1009, "text frame too big");
    counted(&h, "text_too_big", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_frames_closes_1008() {
    let _one_at_a_time = CODE_1008.lock().await;
    let h = Harness::start(None, |c| {
        c.limits.max_frames_per_second = std::num::NonZeroU32::new(10).unwrap()
    })
    .await;
    let before = outcome(&h, "flood").await;
    let observed = observe(h.addr(), url(&h, "flood"), None, |ws| {
        wait_ready(ws);
        // Keep-alives count against the frame budget like audio (burst: 2 × rate).
        for _ in 0..100 {
            if ws.write(Message::binary(vec![0u8; 2])).is_err() {
                break;
            }
        }
        let _ = ws.flush();
    })
    .await;
    observed.assert_closed(1008, "too many frames per second");
    counted(&h, "flood", before).await;
}

/// A client that stops reading fills its queue and is closed 1008. The Close waits
/// behind everything already written; a client that reads again within the close
/// bound gets all of it, then the Close, then a clean end.
///
/// The client writes with a short write timeout and stops writing when told, so it
/// is never stuck in a blocking write when it should read: on a loaded CI machine
/// Hark used to give up on it while it was still pushing audio, and the test saw a
/// reset instead of the Close one run in a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_1008_and_sees_why_when_it_reads() {
    let _one_at_a_time = CODE_1008.lock().await;
    let stt = FakeSttConfig { words_per_result: 1, ..FakeSttConfig::default() };
    let h = Harness::start_with_stt(stt, None, |c| {
        c.limits.client_queue = std::num::NonZeroUsize::new(8).unwrap();
        c.limits.max_frames_per_second = std::num::NonZeroU32::new(10_000).unwrap();
    })
    .await;
    let before = outcome(&h, "slow_consumer").await;
    // No other session of this process closes 1008 meanwhile (`CODE_1008`).
    let closes_1008 = || h.metric("hark_client_closes_total", &[("code", "1008")]);
    let closes_before = closes_1008().await;
    let (go, read_again) = mpsc::channel::<()>();
    let url = url(&h, "slow");
    let client = tokio::spawn(observe(h.addr(), url, Some(4096), move |ws| {
        wait_ready(ws);
        ws.get_mut().set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        // One transcript message per word; the client reads none of them. It
        // writes until told to read again (a write that would block is retried).
        let pcm = speech(4_000);
        let mut chunks = pcm.chunks(32_000);
        let mut pending = false;
        let told = loop {
            match read_again.try_recv() {
                Ok(()) => break true,
                Err(mpsc::TryRecvError::Disconnected) => break false,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let wrote = if pending {
                ws.flush()
            } else {
                match chunks.next() {
                    Some(chunk) => ws.write(Message::binary(chunk.to_vec())),
                    None => ws.flush(),
                }
            };
            pending = match wrote {
                Ok(()) => false,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    true
                }
                Err(e) => panic!("write failed before the close: {e}"),
            };
            if !pending && chunks.len() == 0 {
                break read_again.recv_timeout(Duration::from_secs(60)).is_ok();
            }
        };
        assert!(told, "the test says when");
    }));
    let closed = async {
        while closes_1008().await <= closes_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), closed)
        .await
        .expect("hark closes the client that does not read");
    go.send(()).unwrap();
    let observed = client.await.unwrap();
    assert!(observed.texts().len() > 8, "{} messages were waiting", observed.texts().len());
    observed.assert_closed(1008, "client is not reading; reconnect");
    counted(&h, "slow_consumer", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_1012_after_the_hand_off() {
    let h = Harness::start(None, |c| c.drain_timeout = Duration::from_secs(1)).await;
    let before = outcome(&h, "drained").await;
    let gateway = &h.gateway;
    let url = url(&h, "drained");
    let (talked, after_talk) = mpsc::channel::<()>();
    let client = tokio::spawn(observe(h.addr(), url, None, move |ws| {
        wait_ready(ws);
        send_audio(ws, &speech(2), FRAME_16K);
        talked.send(()).unwrap();
    }));
    tokio::task::spawn_blocking(move || after_talk.recv().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.drain();
    let observed = client.await.unwrap();
    observed.assert_closed(1012, "server restarting; reconnect with jittered backoff");
    // The conversation was handed off before the close.
    assert!(observed.texts().iter().any(|t| t.contains("conversation_created")), "{observed:?}");
    counted(&h, "drained", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stt_unavailable_closes_1013() {
    let h = Harness::start(None, |c| {
        if let hark_gateway::config::SttConfig::Deepgram { url, reconnect, .. } = &mut c.stt {
            // Nothing listens there: every connect is refused.
            *url = "ws://127.0.0.1:9/v1/listen".into();
            reconnect.max_attempts = 2;
            reconnect.base = Duration::from_millis(50);
            reconnect.max = Duration::from_millis(100);
        }
    })
    .await;
    let before = outcome(&h, "stt_unavailable").await;
    let observed = observe(h.addr(), url(&h, "no-stt"), None, |_| {}).await;
    observed.assert_closed(1013, "transcription unavailable; retry with jittered backoff");
    counted(&h, "stt_unavailable", before).await;
}
