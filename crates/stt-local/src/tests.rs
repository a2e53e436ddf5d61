//! The pool and the public API over a fake decoder: these run without the C library.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::recognizer::{RawSeg, Recognizer};
use crate::{pool, LocalEngine, LocalEngineConfig, LocalStream, LocalSttError};

/// Says one word, "loud", per utterance that had a non-zero sample.
#[derive(Default)]
struct Echo {
    samples: usize,
    loud_at: Option<usize>,
}

impl Recognizer for Echo {
    fn begin_stream(&mut self) -> Result<(), String> {
        *self = Self::default();
        Ok(())
    }
    fn process(&mut self, samples: &[i16]) -> Result<bool, String> {
        let loud = samples.iter().any(|&s| s != 0);
        if loud && self.loud_at.is_none() {
            self.loud_at = Some(self.samples);
        }
        self.samples += samples.len();
        Ok(loud)
    }
    fn end_utt(&mut self) -> Result<Vec<RawSeg>, String> {
        Ok(self
            .loud_at
            .take()
            .map(|at| RawSeg {
                word: "loud".into(),
                start_frame: (at / 160) as i32,
                end_frame: (self.samples / 160) as i32 - 1,
            })
            .into_iter()
            .collect())
    }
    fn start_utt(&mut self) -> Result<(), String> {
        Ok(())
    }
}

fn engine(decoders: usize) -> LocalEngine {
    let config = LocalEngineConfig {
        decoders: NonZeroUsize::new(decoders).unwrap(),
        queue_frames: 4,
        ..LocalEngineConfig::default()
    };
    let factory: pool::Factory = Arc::new(|| Ok(Box::new(Echo::default()) as Box<dyn Recognizer>));
    LocalEngine::with_factory(&config, factory).unwrap()
}

fn pcm(value: i16, samples: usize) -> Bytes {
    std::iter::repeat_n(value.to_le_bytes(), samples).flatten().collect()
}

#[cfg(not(feature = "pocketsphinx"))]
#[test]
fn without_the_feature_new_says_not_built() {
    let error = LocalEngine::new(LocalEngineConfig::default()).unwrap_err();
    assert!(matches!(error, LocalSttError::NotBuilt), "{error}");
    assert!(error.to_string().contains("pocketsphinx"));
}

#[tokio::test]
async fn streams_utterances_and_closes_after_the_last() {
    let engine = engine(1);
    let mut stream = engine.open(16_000).unwrap();
    stream.audio.send(pcm(0, 16_000)).await.unwrap();
    stream.audio.send(pcm(300, 8_000)).await.unwrap();
    stream.audio.send(pcm(0, 8_000)).await.unwrap();
    stream.audio.send(pcm(300, 1_600)).await.unwrap();
    drop(stream.audio);
    let first = stream.utterances.recv().await.unwrap();
    assert_eq!(first.text, "loud");
    assert!((first.start - 1.0).abs() < 1e-9, "{first:?}");
    let last = stream.utterances.recv().await.unwrap();
    assert!((last.start - 2.0).abs() < 1e-9, "{last:?}");
    assert_eq!(stream.utterances.recv().await, None);
}

#[tokio::test]
async fn busy_at_once_when_all_decoders_are_taken_and_free_again_after() {
    let engine = engine(2);
    assert_eq!((engine.capacity(), engine.busy()), (2, 0));
    let first = engine.open(16_000).unwrap();
    let second = engine.open(8_000).unwrap();
    assert_eq!(engine.busy(), 2);
    let error = engine.open(16_000).unwrap_err();
    assert!(matches!(error, LocalSttError::Busy(2)), "{error}");
    assert_eq!(error.to_string(), "all 2 local decoders are busy");
    assert!(error.is_retryable());

    // Ending a stream returns its decoder by the time `utterances` closes.
    let LocalStream { audio, mut utterances } = first;
    drop(audio);
    assert_eq!(utterances.recv().await, None);
    assert_eq!(engine.busy(), 1);
    let third = engine.open(16_000).unwrap();
    assert_eq!(engine.busy(), 2);
    drop((second, third));
}

#[tokio::test]
async fn a_reader_that_leaves_frees_the_decoder() {
    let engine = engine(1);
    let stream = engine.open(16_000).unwrap();
    let audio = stream.audio.clone();
    drop(stream);
    // The decoder notices on the next message and hangs up.
    let _ = audio.send(pcm(1, 160)).await;
    audio.closed().await;
    // It is released just before `audio` closes; wait for the count.
    while engine.busy() != 0 {
        tokio::task::yield_now().await;
    }
    engine.open(16_000).unwrap();
}

#[test]
fn bad_sample_rate_is_refused_without_taking_a_decoder() {
    let engine = engine(1);
    let error = engine.open(1_000).unwrap_err();
    assert!(matches!(error, LocalSttError::Decoder(_)), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(engine.busy(), 0);
    engine.open(8_000).unwrap();
}

#[test]
fn a_failing_load_fails_new_with_the_reason() {
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let factory: pool::Factory = Arc::new(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 1 {
            Err("no model here".to_owned())
        } else {
            Ok(Box::new(Echo::default()) as Box<dyn Recognizer>)
        }
    });
    let config = LocalEngineConfig {
        decoders: NonZeroUsize::new(3).unwrap(),
        ..LocalEngineConfig::default()
    };
    let error = LocalEngine::with_factory(&config, factory).unwrap_err();
    assert!(matches!(&error, LocalSttError::Model(m) if m == "no model here"), "{error}");
    assert_eq!(loads.load(Ordering::SeqCst), 3);
}
