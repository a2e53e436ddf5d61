//! The engine over the real PocketSphinx and Debian's test audio
//! (`pocketsphinx-testdata`; `scripts/setup.sh` installs it).
#![cfg(feature = "pocketsphinx")]

use std::num::NonZeroUsize;
use std::path::PathBuf;

use bytes::Bytes;
use hark_stt_local::{LocalEngine, LocalEngineConfig, LocalSttError, Utterance};

/// 16 kHz 16-bit mono raw PCM of a man saying "go forward ten meters".
fn goforward() -> Vec<u8> {
    let path = PathBuf::from(env!("HARK_POCKETSPHINX_DATADIR")).join("test/data/goforward.raw");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (install pocketsphinx-testdata: scripts/setup.sh)", path.display())
    })
}

fn engine(decoders: usize) -> LocalEngine {
    LocalEngine::new(LocalEngineConfig {
        decoders: NonZeroUsize::new(decoders).unwrap(),
        ..LocalEngineConfig::default()
    })
    .expect("the packaged en-us model loads")
}

/// Streams `pcm` at `rate` in 100 ms messages, ends the stream, returns every utterance.
async fn transcribe(engine: &LocalEngine, rate: u32, pcm: &[u8]) -> Vec<Utterance> {
    let mut stream = engine.open(rate).unwrap();
    let chunk = rate as usize / 10 * 2;
    let sender = stream.audio.clone();
    let owned: Vec<Bytes> = pcm.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let feeder = tokio::spawn(async move {
        for message in owned {
            sender.send(message).await.unwrap();
        }
    });
    drop(stream.audio);
    let mut utterances = Vec::new();
    while let Some(u) = stream.utterances.recv().await {
        utterances.push(u);
    }
    feeder.await.unwrap();
    utterances
}

fn matched(text: &str) -> usize {
    let words: Vec<&str> = text.split_whitespace().collect();
    ["go", "forward", "ten", "meters"].iter().filter(|w| words.contains(w)).count()
}

fn check_times(utterances: &[Utterance], duration: f64) {
    for u in utterances {
        assert!(
            0.0 <= u.start && u.start < u.end && u.end <= duration,
            "{u:?} outside 0..{duration}"
        );
        for w in &u.words {
            assert!(u.start <= w.start && w.start < w.end && w.end <= u.end, "{w:?} in {u:?}");
        }
    }
}

#[tokio::test]
async fn goforward_at_16_khz() {
    let engine = engine(1);
    let pcm = goforward();
    let duration = pcm.len() as f64 / 32_000.0;
    let utterances = transcribe(&engine, 16_000, &pcm).await;
    let text = utterances.iter().map(|u| u.text.as_str()).collect::<Vec<_>>().join(" ");
    assert!(matched(&text) >= 3, "heard {text:?}");
    check_times(&utterances, duration);
    // The words start after the lead-in silence (about 0.46 s in this file).
    assert!(utterances[0].start > 0.2, "{utterances:?}");
}

#[tokio::test]
async fn goforward_at_8_khz() {
    let engine = engine(1);
    let pcm = goforward();
    let duration = pcm.len() as f64 / 32_000.0;
    // Keep every other sample (no filter: crude, and still recognisable).
    let half: Vec<u8> = pcm.chunks_exact(4).flat_map(|s| [s[0], s[1]]).collect();
    let utterances = transcribe(&engine, 8_000, &half).await;
    let text = utterances.iter().map(|u| u.text.as_str()).collect::<Vec<_>>().join(" ");
    assert!(matched(&text) >= 2, "heard {text:?}");
    check_times(&utterances, duration);
}

#[tokio::test]
async fn two_utterances_keep_stream_times() {
    let engine = engine(1);
    let pcm = goforward();
    let gap = 2.0;
    let mut twice = pcm.clone();
    twice.extend(std::iter::repeat_n(0u8, (gap * 32_000.0) as usize));
    twice.extend(&pcm);
    let once = pcm.len() as f64 / 32_000.0;
    let utterances = transcribe(&engine, 16_000, &twice).await;
    assert_eq!(utterances.len(), 2, "{utterances:?}");
    check_times(&utterances, 2.0 * once + gap);
    assert!(utterances[0].end < once + 0.1, "{utterances:?}");
    // Same words, shifted by the first copy and the gap.
    let shift = once + gap;
    let (a, b) = (&utterances[0], &utterances[1]);
    assert!(b.start > shift, "{utterances:?}");
    assert!(((b.start - a.start) - shift).abs() < 0.25, "{utterances:?}");
    assert!(matched(&b.text) >= 3, "{b:?}");
}

#[tokio::test]
async fn busy_when_capacity_is_exhausted_and_released_after_the_stream_ends() {
    let engine = engine(1);
    assert_eq!((engine.capacity(), engine.busy()), (1, 0));
    let mut stream = engine.open(16_000).unwrap();
    let error = engine.open(16_000).unwrap_err();
    assert!(matches!(error, LocalSttError::Busy(1)), "{error}");

    stream.audio.send(Bytes::from(goforward())).await.unwrap();
    drop(stream.audio);
    let mut heard = String::new();
    while let Some(u) = stream.utterances.recv().await {
        heard.push_str(&u.text);
    }
    assert!(matched(&heard) >= 3, "heard {heard:?}");
    assert_eq!(engine.busy(), 0);

    // The same decoder serves the next session, from a fresh stream clock.
    let utterances = transcribe(&engine, 16_000, &goforward()).await;
    assert!(matched(&utterances[0].text) >= 3, "{utterances:?}");
    assert!(utterances[0].start < 1.0, "{utterances:?}");
}

#[test]
fn a_missing_model_is_a_model_error() {
    let error = LocalEngine::new(LocalEngineConfig {
        model_dir: Some("/nonexistent/model".into()),
        ..LocalEngineConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&error, LocalSttError::Model(m) if m.contains("/nonexistent/model")),
        "{error}"
    );
}

#[test]
fn a_model_dir_without_a_language_model_is_refused() {
    let dir = std::env::temp_dir().join(format!("hark-stt-local-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("am")).unwrap();
    std::fs::write(dir.join("am/mdef"), b"").unwrap();
    let error = LocalEngine::new(LocalEngineConfig {
        model_dir: Some(dir.clone()),
        ..LocalEngineConfig::default()
    })
    .unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(&error, LocalSttError::Model(m) if m.contains("language model")), "{error}");
}

/// A LibriVox clip from the test data, as 16 kHz PCM16.
fn librivox(id: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("HARK_POCKETSPHINX_DATADIR"))
        .join(format!("test/data/librivox/sense_and_sensibility_01_austen_64kb-{id}.wav"));
    let mut wav =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((wav.spec().sample_rate, wav.spec().channels), (16_000, 1), "{}", path.display());
    wav.samples::<i16>().flat_map(|s| s.expect("a 16-bit sample").to_le_bytes()).collect()
}

#[tokio::test]
async fn a_stream_does_not_depend_on_the_one_before() {
    let engine = engine(1);
    let first = transcribe(&engine, 16_000, &goforward()).await;
    // A different speaker and room on the same decoder in between.
    transcribe(&engine, 16_000, &librivox("0870")).await;
    let again = transcribe(&engine, 16_000, &goforward()).await;
    assert_eq!(first, again);
}
