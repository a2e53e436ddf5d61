//! The fake's "speech recognition": a pure function from PCM to words.
//!
//! The stream is cut into chunks of exactly half a second (`sample_rate / 2`
//! samples). A chunk whose mean absolute sample is below [`SILENCE_THRESHOLD`] is
//! silence; any other chunk is one word: `VOCAB[round((mean_abs - 1000) / 100)]`
//! (clamped), spoken by speaker 1 when the chunk's first sample is negative, else 0.
//! [`synth`] is the inverse, so a test can write the transcript it expects first.
//! A trailing partial chunk is never transcribed.

/// The 32 words the fake can recognise; a word's index sets its amplitude.
pub const VOCAB: [&str; 32] = [
    "apple", "bridge", "candle", "desert", "eagle", "forest", "garden", "harbor", "island",
    "jacket", "kettle", "lemon", "marble", "needle", "ocean", "pencil", "quartz", "rabbit",
    "saddle", "tunnel", "umbrella", "velvet", "wagon", "yellow", "zebra", "anchor", "basket",
    "copper", "dolphin", "engine", "feather", "guitar",
];

/// Mean absolute sample value below which a chunk is silence.
pub const SILENCE_THRESHOLD: f64 = 300.0;
/// Seconds of audio per chunk (and so per word).
pub const CHUNK_SECONDS: f64 = 0.5;
/// Length the fake reports for every word, in seconds.
pub const WORD_SECONDS: f64 = 0.45;
/// Samples per half period of [`synth`]'s square wave.
const HALF_PERIOD: usize = 20;

/// Samples in one chunk at `sample_rate` (at least one).
pub fn chunk_samples(sample_rate: u32) -> usize {
    (sample_rate / 2).max(1) as usize
}

/// One classified chunk of audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Mean absolute value below the threshold.
    Silence,
    /// A recognised word.
    Word {
        /// Position of the chunk in the stream (0-based).
        index: u64,
        /// Index into [`VOCAB`].
        vocab: usize,
        /// 1 when the chunk's first sample is negative, else 0.
        speaker: u32,
    },
}

/// Cuts a byte stream into chunks, carrying partial samples and chunks across calls.
/// The fake's recogniser; `swarm` runs one over the audio it sends to predict which
/// chunk becomes which word.
#[derive(Debug)]
pub struct Chunker {
    /// Samples per chunk.
    chunk: usize,
    /// The first byte of a sample split across two calls.
    odd: Option<u8>,
    /// Sum of absolute values in the current chunk.
    sum: u64,
    /// Samples in the current chunk.
    n: usize,
    /// Whether the current chunk's first sample is negative.
    first_negative: bool,
    /// Index of the current chunk.
    index: u64,
    /// Whole samples seen.
    samples: u64,
}

impl Chunker {
    /// A chunker for audio at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            chunk: chunk_samples(sample_rate),
            odd: None,
            sum: 0,
            n: 0,
            first_negative: false,
            index: 0,
            samples: 0,
        }
    }

    /// Whole samples seen so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Feeds bytes, calling `on_chunk` for every chunk they complete.
    pub fn push(&mut self, mut bytes: &[u8], mut on_chunk: impl FnMut(Chunk)) {
        if let Some(lo) = self.odd.take() {
            match bytes.split_first() {
                Some((&hi, rest)) => {
                    self.sample(i16::from_le_bytes([lo, hi]), &mut on_chunk);
                    bytes = rest;
                }
                None => {
                    self.odd = Some(lo);
                    return;
                }
            }
        }
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            self.sample(i16::from_le_bytes([pair[0], pair[1]]), &mut on_chunk);
        }
        self.odd = pairs.remainder().first().copied();
    }

    fn sample(&mut self, s: i16, on_chunk: &mut impl FnMut(Chunk)) {
        if self.n == 0 {
            self.first_negative = s < 0;
        }
        self.sum += u64::from(s.unsigned_abs());
        self.n += 1;
        self.samples += 1;
        if self.n == self.chunk {
            on_chunk(self.classify());
            self.sum = 0;
            self.n = 0;
            self.index += 1;
        }
    }

    fn classify(&self) -> Chunk {
        let mean = self.sum as f64 / self.n as f64;
        if mean < SILENCE_THRESHOLD {
            return Chunk::Silence;
        }
        let vocab = ((mean - 1000.0) / 100.0).round().clamp(0.0, (VOCAB.len() - 1) as f64);
        Chunk::Word {
            index: self.index,
            vocab: vocab as usize,
            speaker: u32::from(self.first_negative),
        }
    }
}

/// The words (and speakers) the fake transcribes from the whole stream `pcm`
/// (PCM16 LE mono at `sample_rate`), in order. Never panics.
pub fn words_for(pcm: &[u8], sample_rate: u32) -> Vec<(String, u32)> {
    let mut words = Vec::new();
    Chunker::new(sample_rate).push(pcm, |chunk| {
        if let Chunk::Word { vocab, speaker, .. } = chunk {
            words.push((VOCAB[vocab].to_owned(), speaker));
        }
    });
    words
}

/// PCM16 LE audio the fake transcribes as exactly `words`: one half-second chunk per
/// word, a square wave of amplitude `1000 + 100 * index` that starts negative for
/// speaker 1.
///
/// # Panics
/// If a word is not in [`VOCAB`] or a speaker is not 0 or 1 (the fake tells only
/// two speakers apart).
pub fn synth(words: &[(&str, u32)], sample_rate: u32) -> Vec<u8> {
    let chunk = chunk_samples(sample_rate);
    let mut pcm = Vec::with_capacity(words.len() * chunk * 2);
    for &(word, speaker) in words {
        let vocab = VOCAB
            .iter()
            .position(|v| *v == word)
            .unwrap_or_else(|| panic!("{word:?} is not in fake_stt::VOCAB"));
        assert!(speaker <= 1, "the fake STT knows speakers 0 and 1, not {speaker}");
        let amplitude = 1000 + 100 * vocab as i16;
        let first = if speaker == 1 { -amplitude } else { amplitude };
        for i in 0..chunk {
            let s = if (i / HALF_PERIOD) % 2 == 0 { first } else { -first };
            pcm.extend_from_slice(&s.to_le_bytes());
        }
    }
    pcm
}

/// `seconds` of digital silence at `sample_rate` (rounded to whole samples; negative
/// or non-finite gives none). Use multiples of [`CHUNK_SECONDS`] to keep the words
/// that follow aligned to chunks.
pub fn silence(seconds: f64, sample_rate: u32) -> Vec<u8> {
    let samples = (seconds * f64::from(sample_rate)).round();
    let samples = if samples.is_finite() && samples > 0.0 { samples as usize } else { 0 };
    vec![0; samples * 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_distinct_lowercase() {
        let mut sorted = VOCAB.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), VOCAB.len());
        assert!(VOCAB.iter().all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn split_samples_and_chunks_carry_over() {
        let pcm = synth(&[("ocean", 1), ("apple", 0)], 8000);
        let mut whole = Vec::new();
        Chunker::new(8000).push(&pcm, |c| whole.push(c));
        let mut pieces = Vec::new();
        let mut chunker = Chunker::new(8000);
        for piece in pcm.chunks(333) {
            chunker.push(piece, |c| pieces.push(c));
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole[0], Chunk::Word { index: 0, vocab: 14, speaker: 1 });
    }

    #[test]
    fn silence_and_partial_chunks_give_no_words() {
        let mut pcm = silence(1.0, 16000);
        pcm.extend(&synth(&[("zebra", 0)], 16000)[..1000]);
        assert!(words_for(&pcm, 16000).is_empty());
        assert_eq!(silence(-1.0, 16000).len(), 0);
        assert_eq!(silence(f64::NAN, 16000).len(), 0);
    }
}
