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
    let outbox = tempfile::tempdir().unwrap();
    let args: Vec<String> =
        ["--stt", "local", "--stt-decoders", "2", "--outbox-dir", outbox.path().to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    (common::start(&args).await, outbox)
}

/// Streams 16 kHz PCM16 through one session and returns its segments' text and
/// times once the transcript has been quiet for a while after the audio.
async fn transcribe(hark: &Hark, pcm: &[u8]) -> Vec<hark_proto::Segment> {
    let mut client =
        ListenClient::connect(hark.client, "uid=speaker&sample_rate=16000&codec=pcm16", &[])
            .await
            .expect("upgrade");
    assert!(
        client
            .wait_for(Duration::from_secs(20), |r| *r == Received::Status(ServiceStatus::Ready))
            .await
    );
    for frame in pcm.chunks(FRAME) {
        client.send_frame(bytes::Bytes::copy_from_slice(frame)).await.unwrap();
    }
    // Trailing silence lets the decoder's voice detection end the last utterance.
    for _ in 0..15 {
        client.send_frame(bytes::Bytes::from(vec![0u8; FRAME])).await.unwrap();
    }
    // Collect until the transcript reaches the end of the audio and then stays
    // quiet, or 60 s pass (decoding is about real time, slower on a loaded machine).
    let duration = pcm.len() as f64 / 32_000.0;
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
