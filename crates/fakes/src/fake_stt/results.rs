//! Turns one stream's recognised chunks into `Results` messages and schedules them
//! `latency` after the audio that completed them arrived.

use std::collections::VecDeque;
use std::time::Duration;

use hark_proto::deepgram::{Alternative, Channel, Results, Word};
use tokio::time::Instant;

use super::transcribe::{Chunk, Chunker, CHUNK_SECONDS, VOCAB, WORD_SECONDS};

/// Confidence reported for every word and alternative.
const CONFIDENCE: f64 = 0.99;

/// The transcription state of one stream.
#[derive(Debug)]
pub(crate) struct Transcript {
    /// Cuts the audio into half-second chunks.
    chunker: Chunker,
    /// Sample rate of the stream, for the audio duration.
    sample_rate: u32,
    /// Words recognised but not yet sent, with the arrival time of their chunk.
    words: Vec<(Word, Instant)>,
    /// A result is cut when this many words are buffered.
    words_per_result: usize,
    /// Delay between a result's last audio and its sending.
    latency: Duration,
    /// Results waiting for their time, in deadline order: the latency is constant
    /// and arrivals are monotonic, so a FIFO is a delay queue here. Its length is
    /// bounded by the words recognised within one `latency`.
    due: VecDeque<(Instant, Results)>,
}

impl Transcript {
    /// A stream at `sample_rate` cutting results every `words_per_result` words.
    pub(crate) fn new(sample_rate: u32, words_per_result: usize, latency: Duration) -> Self {
        Self {
            chunker: Chunker::new(sample_rate),
            sample_rate,
            words: Vec::new(),
            words_per_result: words_per_result.max(1),
            latency,
            due: VecDeque::new(),
        }
    }

    /// Feeds audio that arrived at `now`.
    pub(crate) fn push_audio(&mut self, pcm: &[u8], now: Instant) {
        let mut chunks = Vec::new();
        self.chunker.push(pcm, |chunk| chunks.push(chunk));
        for chunk in chunks {
            match chunk {
                Chunk::Silence => {
                    if !self.words.is_empty() {
                        self.flush(true);
                    }
                }
                Chunk::Word { index, vocab, speaker } => {
                    let start = index as f64 * CHUNK_SECONDS;
                    let word = Word {
                        word: VOCAB[vocab].to_owned(),
                        start,
                        end: start + WORD_SECONDS,
                        confidence: CONFIDENCE,
                        speaker: Some(speaker),
                        punctuated_word: None,
                    };
                    self.words.push((word, now));
                    if self.words.len() >= self.words_per_result {
                        self.flush(false);
                    }
                }
            }
        }
    }

    /// Cuts a result from the buffered words, if any (`Finalize`, `CloseStream`).
    pub(crate) fn finalize(&mut self) {
        if !self.words.is_empty() {
            self.flush(false);
        }
    }

    /// When the next result is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// Takes the next result if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Results> {
        match self.due.front() {
            Some((at, _)) if *at <= now => self.due.pop_front().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Whether results are still waiting to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.due.is_empty()
    }

    /// Seconds of audio received.
    pub(crate) fn audio_seconds(&self) -> f64 {
        self.chunker.samples() as f64 / f64::from(self.sample_rate.max(1))
    }

    fn flush(&mut self, speech_final: bool) {
        let arrived = self.words.last().map(|(_, at)| *at).unwrap_or_else(Instant::now);
        let mut words: Vec<Word> = self.words.drain(..).map(|(w, _)| w).collect();
        // Only the first word carries a punctuated form, so consumers exercise both
        // `punctuated_word` and the plain `word` fallback.
        if let Some(first) = words.first_mut() {
            first.punctuated_word = Some(capitalise(&first.word));
        }
        let start = words.first().map_or(0.0, |w| w.start);
        let end = words.last().map_or(start, |w| w.end);
        let transcript = words.iter().map(|w| w.word.as_str()).collect::<Vec<_>>().join(" ");
        let results = Results {
            start,
            duration: end - start,
            is_final: true,
            speech_final,
            channel: Channel {
                alternatives: vec![Alternative { transcript, confidence: CONFIDENCE, words }],
            },
        };
        self.due.push_back((arrived + self.latency, results));
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::transcribe::{silence, synth};
    use super::*;

    fn texts(r: &Results) -> Vec<(&str, Option<&str>)> {
        let words = &r.channel.alternatives[0].words;
        words.iter().map(|w| (w.word.as_str(), w.punctuated_word.as_deref())).collect()
    }

    #[test]
    fn cuts_on_silence_count_and_finalize() {
        let now = Instant::now();
        let mut t = Transcript::new(16000, 2, Duration::from_millis(300));
        let mut pcm = synth(&[("apple", 0), ("bridge", 1), ("candle", 0)], 16000);
        pcm.extend(silence(0.5, 16000));
        pcm.extend(synth(&[("desert", 1)], 16000));
        t.push_audio(&pcm, now);
        t.finalize();
        assert_eq!(t.next_due(), Some(now + Duration::from_millis(300)));
        assert!(t.pop_due(now).is_none());
        let later = now + Duration::from_secs(1);
        let first = t.pop_due(later).unwrap();
        assert_eq!(texts(&first), [("apple", Some("Apple")), ("bridge", None)]);
        assert!(!first.speech_final);
        assert_eq!(first.channel.alternatives[0].transcript, "apple bridge");
        let second = t.pop_due(later).unwrap();
        assert_eq!(texts(&second), [("candle", Some("Candle"))]);
        assert!(second.speech_final);
        assert_eq!(second.start, 1.0);
        assert!((second.duration - WORD_SECONDS).abs() < 1e-9);
        let third = t.pop_due(later).unwrap();
        assert_eq!(third.channel.alternatives[0].words[0].start, 2.0);
        assert_eq!(third.channel.alternatives[0].words[0].speaker, Some(1));
        assert!(!t.has_pending());
        assert_eq!(t.audio_seconds(), 2.5);
    }
}
