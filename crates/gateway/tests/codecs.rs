//! Device codecs at the session's edge, over real sockets: every codec reaches STT
//! and pusher as PCM16 of exactly its decoded length; frames that do not decode
//! are skipped and counted, and a session of nothing else is closed 1003.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::independent::{observe, Ws};
use common::Harness;
use hark_fakes::client::{ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, words_for, VOCAB};
use hark_proto::{pusher as codes, Codec, ServiceStatus};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// PCM16 samples of `words` (the fake STT's vocabulary) then half a second of silence.
fn speech(words: &[usize], rate: u32) -> Vec<i16> {
    let spoken: Vec<(&str, u32)> = words.iter().map(|&i| (VOCAB[i], 0)).collect();
    let mut pcm = synth(&spoken, rate);
    pcm.extend(silence(0.5, rate));
    pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The frames a device sends: 20 ms PCM frames, or the codec's own packets.
fn device_frames(codec: Codec, rate: u32, samples: &[i16]) -> Vec<Bytes> {
    hark_codec::device_frames(codec, rate, samples).expect("encode")
}

/// Bytes of PCM16 the session's decoder makes of `frames` (a fresh decoder, as hark
/// builds one per session).
fn decoded_len(codec: Codec, rate: u32, frames: &[Bytes]) -> usize {
    let mut decoder = hark_codec::decoder(codec, rate).unwrap();
    frames.iter().map(|f| decoder.decode(f.clone()).map_or(0, |pcm| pcm.len())).sum()
}

fn query(uid: &str, codec: Codec, rate: u32) -> String {
    format!("uid={uid}&sample_rate={rate}&codec={}&conversation_timeout=600", codec.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_reaches_stt_and_pusher_as_pcm16_of_its_decoded_length() {
    for (codec, rate) in [
        (Codec::Pcm16, 16_000),
        (Codec::Pcm8, 16_000),
        (Codec::Mulaw, 8_000),
        (Codec::Opus, 16_000),
        (Codec::OpusFs320, 16_000),
        (Codec::Lc3Fs1030, 16_000),
        (Codec::Aac, 16_000),
    ] {
        // One harness per codec: the fake STT counts bytes per process.
        let h = Harness::start(Some(PusherMode::Up), |_| {}).await;
        let uid = format!("dev-{}", codec.as_str());
        let frames = device_frames(codec, rate, &speech(&[2, 5, 9], rate));
        let expected = decoded_len(codec, rate, &frames);
        assert!(expected > 0, "{codec:?}");
        let mut client =
            ListenClient::connect(h.addr(), &query(&uid, codec, rate), &[]).await.unwrap();
        assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
        // Pusher audio is best-effort (dropped, never queued, while the link is not
        // up or cannot keep up): send once the link is up, at a device's pace or
        // faster, so every frame can be counted.
        assert!(common::pusher_saw_uid(&h, &uid).await);
        for frame in &frames {
            client.send_frame(frame.clone()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let pushed = || -> usize {
            h.pusher()
                .frames()
                .iter()
                .filter(|f| f.code == codes::AUDIO && f.uid == uid)
                .map(|f| f.audio_bytes)
                .sum()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while (pushed() < expected || (h.stt.stats().audio_bytes as usize) < expected)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pushed(), expected, "{codec:?}: PCM16 bytes in pusher's 101s");
        assert_eq!(h.stt.stats().audio_bytes as usize, expected, "{codec:?}: PCM16 bytes at STT");
        client.close().await.expect("the closing handshake completes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_an_opus_session_is_skipped_and_counted_and_the_speech_after_it_is_heard() {
    let h = Harness::start(None, |_| {}).await;
    let before = h.metric("hark_audio_decode_failures_total", &[("codec", "opus")]).await;
    let mut client =
        ListenClient::connect(h.addr(), &query("noisy", Codec::Opus, 16_000), &[]).await.unwrap();
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    // Random bytes, each a "packet" (a fixed seed: the same garbage every run),
    // then real speech in Opus packets.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut frames: Vec<Bytes> = (0..40)
        .map(|_| {
            let len = 20 + (state % 100) as usize;
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            Bytes::from(frame)
        })
        .collect();
    let garbage = frames.len();
    frames.extend(device_frames(Codec::Opus, 16_000, &speech(&[11, 12, 13, 14], 16_000)));
    // What hark hears is exactly what one decoder makes of the same frames in the
    // same order: the frames libopus refuses are skipped; the ones it takes (random
    // bytes are often a valid packet) are noise, and they are audio to STT.
    let mut replica = hark_codec::decoder(Codec::Opus, 16_000).unwrap();
    let mut decoded = Vec::new();
    let mut refused = 0;
    for (i, frame) in frames.iter().enumerate() {
        match replica.decode(frame.clone()) {
            Ok(pcm) => decoded.extend_from_slice(&pcm),
            Err(_) if i < garbage => refused += 1,
            Err(error) => panic!("a real Opus packet did not decode: {error}"),
        }
    }
    let expected: Vec<String> = words_for(&decoded, 16_000).into_iter().map(|(w, _)| w).collect();
    let garbage_only = {
        let mut replica = hark_codec::decoder(Codec::Opus, 16_000).unwrap();
        let pcm: Vec<u8> = frames[..garbage]
            .iter()
            .filter_map(|f| replica.decode(f.clone()).ok())
            .flat_map(|pcm| pcm.to_vec())
            .collect();
        words_for(&pcm, 16_000).len()
    };
    assert!(expected.len() >= garbage_only + 3, "the speech after the garbage makes words");
    for frame in frames {
        client.send_frame(frame).await.unwrap();
    }
    let heard = async {
        while client.words().len() < expected.len() {
            client
                .wait_for(Duration::from_millis(200), |r| matches!(r, Received::Segments(..)))
                .await;
        }
    };
    tokio::time::timeout(WAIT, heard).await.expect("the speech after the garbage is transcribed");
    assert_eq!(client.words(), expected);
    let failures =
        h.metric("hark_audio_decode_failures_total", &[("codec", "opus")]).await - before;
    eprintln!(
        "opus: {refused} of {garbage} random frames did not decode; {} words",
        expected.len()
    );
    assert!(refused >= 5, "random frames are refused by libopus: {refused}");
    assert!(failures >= refused as f64, "each refused frame was counted: {failures} < {refused}");
    client.close().await.expect("the closing handshake completes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_nothing_but_garbage_is_closed_1003_naming_the_codec() {
    let h = Harness::start(None, |_| {}).await;
    let url = format!("ws://{}/v4/listen?{}", h.addr(), query("garbage", Codec::Aac, 16_000));
    let observed = observe(h.addr(), url, None, |ws: &mut Ws| {
        loop {
            match ws.read().expect("session starts") {
                Message::Text(t) if t.contains(r#""status":"ready""#) => break,
                _ => {}
            }
        }
        // No ADTS sync word anywhere: not one of these decodes.
        for i in 0..100u8 {
            if ws.write(Message::binary(vec![i & 0x0f; 200])).is_err() {
                break;
            }
        }
        let _ = ws.flush();
    })
    .await;
    observed.assert_closed(1003, "audio frames do not decode as aac");
    // The process is unaffected: another session works.
    let mut client =
        ListenClient::connect(h.addr(), &query("after", Codec::Pcm16, 16_000), &[]).await.unwrap();
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    client.close().await.expect("the closing handshake completes");
}
