//! Real speech through the whole relay on the embedded engine: a WebSocket client
//! streams recordings from Debian's `pocketsphinx-testdata` into `hark --stt local`
//! in 100 ms frames and reads the live transcript.
//!
//! Needs `--features local-stt` and the packages of `scripts/setup.sh`.
#![cfg(feature = "local-stt")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Hark;
use hark_fakes::client::{ListenClient, Received};
use hark_proto::ServiceStatus;
use hark_stt_local::wer;

const DATA: &str = "/usr/share/pocketsphinx/test/data";
const FRAME: usize = 3_200; // 100 ms of 16 kHz PCM16

async fn start() -> (Hark, tempfile::TempDir) {
    start_with(2).await
}

async fn start_with(decoders: usize) -> (Hark, tempfile::TempDir) {
    let outbox = tempfile::tempdir().unwrap();
    let decoders = decoders.to_string();
    let args: Vec<String> = [
        "--stt",
        "local",
        "--stt-decoders",
        &decoders,
        "--outbox-dir",
        outbox.path().to_str().unwrap(),
        // Encoded device frames are 10–64 ms each and this test sends them as fast
        // as the engine takes them.
        "--max-frames-per-second",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (common::start(&args).await, outbox)
}

/// Streams 16 kHz PCM16 through one session and returns its segments' text and
/// times once the transcript has been quiet for a while after the audio.
async fn transcribe(hark: &Hark, pcm: &[u8]) -> Vec<hark_proto::Segment> {
    let frames: Vec<bytes::Bytes> = pcm.chunks(FRAME).map(bytes::Bytes::copy_from_slice).collect();
    transcribe_frames(hark, "codec=pcm16&sample_rate=16000", &frames, pcm.len() as f64 / 32_000.0)
        .await
}

/// Streams device `frames` (of the codec in `query`) through one session; returns
/// its segments once the transcript reached `duration` and went quiet.
async fn transcribe_frames(
    hark: &Hark,
    query: &str,
    frames: &[bytes::Bytes],
    duration: f64,
) -> Vec<hark_proto::Segment> {
    let mut client = ListenClient::connect(hark.client, &format!("uid=speaker&{query}"), &[])
        .await
        .expect("upgrade");
    assert!(
        client
            .wait_for(Duration::from_secs(20), |r| *r == Received::Status(ServiceStatus::Ready))
            .await
    );
    for frame in frames {
        client.send_frame(frame.clone()).await.unwrap();
    }
    // Trailing silence lets the decoder's voice detection end the last utterance
    // (sent as PCM-sized keep-alive-free frames of the session's own codec).
    for frame in silence_frames(query) {
        client.send_frame(frame).await.unwrap();
    }
    // Collect until the transcript reaches the end of the audio and then stays
    // quiet, or 60 s pass (decoding is about real time, slower on a loaded machine).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = client.next(Duration::from_secs(3)).await.is_none();
        let reached_end = client.segments().iter().any(|s| s.end >= duration - 2.0);
        if (quiet && reached_end) || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    client.segments()
}

/// The PCM of a 16 kHz recording from the test data.
fn wav_pcm(path: &Path) -> Vec<u8> {
    let wav = hark_fakes::wav::read_pcm16(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((wav.sample_rate, wav.channels), (16_000, 1), "{path:?}");
    wav.pcm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_forward_ten_meters_through_the_relay() {
    let (hark, _outbox) = start().await;
    let pcm = std::fs::read(Path::new(DATA).join("goforward.raw"))
        .expect("pocketsphinx-testdata installed");
    let duration = pcm.len() as f64 / 32_000.0;
    let segments = transcribe(&hark, &pcm).await;
    let text = segments.iter().map(|s| s.text.to_lowercase()).collect::<Vec<_>>().join(" ");
    let heard = ["go", "forward", "ten", "meters"]
        .iter()
        .filter(|w| text.split_whitespace().any(|t| t == **w))
        .count();
    eprintln!("goforward.raw → {text:?} ({heard}/4 words)");
    assert!(heard >= 3, "transcript {text:?} has only {heard} of the 4 words");
    for s in &segments {
        assert!(s.start >= 0.0 && s.start < s.end, "segment times {s:?}");
        assert!(s.end <= duration + 1.0, "segment ends after the audio: {s:?}");
        assert_eq!(s.speaker, "SPEAKER_0");
    }
}

fn continuous(path: &Path) -> String {
    let out = std::process::Command::new("pocketsphinx_continuous")
        .args(["-infile", path.to_str().unwrap(), "-logfn", "/dev/null"])
        .output()
        .expect("pocketsphinx_continuous runs");
    String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librivox_word_error_rate_through_hark_matches_pocketsphinx_continuous() {
    let (hark, _outbox) = start().await;
    let dir = PathBuf::from(DATA).join("librivox");
    let references = std::fs::read_to_string(dir.join("transcription")).unwrap();
    let (mut words, mut ours_edits, mut theirs_edits) = (0usize, 0usize, 0usize);
    eprintln!("{:<48} {:>5} {:>8} {:>8}", "file", "words", "hark", "ps_cont");
    for line in references.lines() {
        let (text, id) = line.rsplit_once(" (").unwrap();
        let id = id.trim_end_matches(')');
        let reference = text.replace("<s>", "").replace("</s>", "");
        let path = dir.join(format!("{id}.wav"));
        let segments = transcribe(&hark, &wav_pcm(&path)).await;
        let ours = segments.iter().map(|s| s.text.clone()).collect::<Vec<_>>().join(" ");
        let theirs = continuous(&path);
        let reference_words = wer::words(&reference);
        let edits = |hyp: &str| wer::edit_distance(&reference_words, &wer::words(hyp));
        let (o, t) = (edits(&ours), edits(&theirs));
        eprintln!(
            "{id:<48} {:>5} {:>7.1}% {:>7.1}%",
            reference_words.len(),
            100.0 * o as f64 / reference_words.len() as f64,
            100.0 * t as f64 / reference_words.len() as f64
        );
        words += reference_words.len();
        ours_edits += o;
        theirs_edits += t;
    }
    let (ours, theirs) = (ours_edits as f64 / words as f64, theirs_edits as f64 / words as f64);
    eprintln!("{:<48} {words:>5} {:>7.1}% {:>7.1}%", "total", 100.0 * ours, 100.0 * theirs);
    assert!(
        ours <= theirs + 0.02,
        "WER through hark {ours:.3} vs pocketsphinx_continuous {theirs:.3}"
    );
}

/// 1.5 s of silence in the codec named by `query`.
fn silence_frames(query: &str) -> Vec<bytes::Bytes> {
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap().to_owned()
    };
    let codec = hark_proto::Codec::from_query(&param("codec")).unwrap();
    let rate: u32 = param("sample_rate").parse().unwrap();
    device_frames(codec, rate, &vec![0i16; rate as usize * 3 / 2])
}

/// The frames a device sends: 20 ms PCM frames, or the codec's own packets.
fn device_frames(codec: hark_proto::Codec, rate: u32, samples: &[i16]) -> Vec<bytes::Bytes> {
    hark_codec::device_frames(codec, rate, samples).expect("encode")
}

fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// 16 kHz to 8 kHz for telephony µ-law: average each pair (a plain low-pass
/// before dropping every other sample, enough for speech).
fn to_8k(samples: &[i16]) -> Vec<i16> {
    samples
        .chunks(2)
        .map(|p| ((p[0] as i32 + *p.get(1).unwrap_or(&p[0]) as i32) / 2) as i16)
        .collect()
}

/// Real speech through every device codec, encoded with each codec's reference
/// encoder into device-sized frames: `goforward.raw` must come back with at least
/// 3 of its 4 words, and each codec's LibriVox WER must stay within 10 points of
/// PCM16's in the same run (20 for 8-bit PCM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_codec_transcribes_real_speech() {
    use hark_proto::Codec;
    let (hark, _outbox) = start_with(4).await;
    let goforward = samples(&std::fs::read(Path::new(DATA).join("goforward.raw")).unwrap());
    let dir = PathBuf::from(DATA).join("librivox");
    let references = std::fs::read_to_string(dir.join("transcription")).unwrap();
    let clips: Vec<(Vec<String>, Vec<i16>)> = references
        .lines()
        .map(|line| {
            let (text, id) = line.rsplit_once(" (").unwrap();
            let id = id.trim_end_matches(')');
            let reference = text.replace("<s>", "").replace("</s>", "");
            (wer::words(&reference), samples(&wav_pcm(&dir.join(format!("{id}.wav")))))
        })
        .collect();
    let codecs = [
        Codec::Pcm16,
        Codec::Opus,
        Codec::OpusFs320,
        Codec::Lc3Fs1030,
        Codec::Aac,
        Codec::Mulaw,
        Codec::Pcm8,
    ];
    // Two codecs at a time: the engine has 4 decoders on 2 cores.
    let runs = codecs.map(|codec| {
        let (hark, goforward, clips) = (&hark, &goforward, &clips);
        async move {
            let rate = if codec == Codec::Mulaw { 8_000 } else { 16_000 };
            let resample = |s: &[i16]| if rate == 8_000 { to_8k(s) } else { s.to_vec() };
            let query = format!("codec={}&sample_rate={rate}", codec.as_str());
            let go = resample(goforward);
            let frames = device_frames(codec, rate, &go);
            let duration = go.len() as f64 / f64::from(rate);
            let segments = transcribe_frames(hark, &query, &frames, duration).await;
            let text = segments.iter().map(|s| s.text.to_lowercase()).collect::<Vec<_>>().join(" ");
            let heard = ["go", "forward", "ten", "meters"]
                .iter()
                .filter(|w| text.split_whitespace().any(|t| t == **w))
                .count();
            let (mut words, mut edits) = (0, 0);
            for (reference, clip) in clips {
                let clip = resample(clip);
                let frames = device_frames(codec, rate, &clip);
                let duration = clip.len() as f64 / f64::from(rate);
                let segments = transcribe_frames(hark, &query, &frames, duration).await;
                let ours = segments.iter().map(|s| s.text.clone()).collect::<Vec<_>>().join(" ");
                words += reference.len();
                edits += wer::edit_distance(reference, &wer::words(&ours));
            }
            (codec, frames.len(), heard, text, edits as f64 / words as f64)
        }
    });
    let mut results = Vec::new();
    let mut runs = runs.into_iter();
    while let Some(first) = runs.next() {
        match runs.next() {
            Some(second) => {
                let (a, b) = tokio::join!(first, second);
                results.extend([a, b]);
            }
            None => results.push(first.await),
        }
    }
    let baseline = results[0].4;
    eprintln!("| codec | frames (goforward) | goforward | LibriVox WER | vs pcm16 |");
    eprintln!("|---|---|---|---|---|");
    for (codec, frames, heard, text, rate) in &results {
        eprintln!(
            "| {} | {frames} | {heard}/4 \"{text}\" | {:.1}% | {:+.1} |",
            codec.as_str(),
            100.0 * rate,
            100.0 * (rate - baseline)
        );
    }
    for (codec, _, heard, text, rate) in &results {
        assert!(*heard >= 3, "{codec:?}: goforward.raw came back as {text:?}");
        let allowed = if *codec == Codec::Pcm8 { 0.20 } else { 0.10 };
        assert!(rate - baseline <= allowed, "{codec:?}: WER {rate:.3} vs pcm16 {baseline:.3}");
    }
}
