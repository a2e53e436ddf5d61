//! What a swarm client sends: a generated script of words, short gaps and long
//! pauses, or a WAV file on a loop, cut into frames at real-time pace.
//!
//! The generated script speaks fake-stt's vocabulary ([`synth`]): utterances of a
//! few words (one half-second chunk each) separated by 0.5–1 s of silence, so
//! fake-stt cuts a result on every gap; after about `talk` seconds of that, a pause
//! of `pause` seconds during which only keep-alive frames are sent, so hark's
//! conversation timeout ends the conversation while the session stays open. All
//! audio comes in whole chunks and a pause starts only once the buffer is empty,
//! so fake-stt's chunk grid stays aligned with the script for the whole session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use hark_fakes::fake_stt::transcribe::{chunk_samples, CHUNK_SECONDS};
use hark_fakes::fake_stt::{silence, synth, VOCAB};

/// Shape of the generated script.
#[derive(Clone, Debug)]
pub struct Script {
    /// Words per utterance.
    pub words_per_utterance: usize,
    /// Mean talking time between pauses (each stretch is drawn from 0.5–1.5×).
    pub talk: Duration,
    /// Pause between stretches of talk (keep-alives only); make it longer than the
    /// `conversation_timeout` so conversations end.
    pub pause: Duration,
}

/// Where the audio comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The generated script.
    Generated(Script),
    /// PCM16 mono from a WAV file, looped.
    Wav {
        /// The samples, little-endian.
        pcm: Arc<Vec<u8>>,
    },
}

impl Source {
    /// Reads a WAV file: 16-bit integer PCM; the first channel is used. Returns the
    /// source and the file's sample rate.
    pub fn wav(path: &Path) -> anyhow::Result<(Source, u32)> {
        let wav = hark_fakes::wav::read_pcm16(path)?;
        Ok((Source::Wav { pcm: Arc::new(wav.pcm) }, wav.sample_rate))
    }
}

/// What to send at one frame tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Audio.
    Audio(Bytes),
    /// A keep-alive (`[0, 0]`): the script is pausing.
    KeepAlive,
    /// Nothing this tick (pausing, keep-alive already sent this second).
    Idle,
}

/// One client's audio stream: yields a frame per tick.
#[derive(Debug)]
pub struct AudioStream {
    source: Source,
    /// Bytes per full frame (even).
    frame_bytes: usize,
    /// Ticks per second (for keep-alive spacing).
    ticks_per_second: u32,
    sample_rate: u32,
    /// Audio queued to send.
    buffer: Vec<u8>,
    /// Read position in `buffer`.
    cursor: usize,
    /// Generated: talking time left in this stretch.
    talk_left: f64,
    /// Generated: pause ticks left.
    pause_ticks: u32,
    /// Ticks since the last keep-alive.
    since_keepalive: u32,
    /// Generated: next word number (sets the vocabulary cycle).
    word: usize,
    /// Generated: utterance number (sets the speaker).
    utterance: usize,
    /// Stretches of talk begun so far (the client's idea of a conversation).
    block: u64,
    /// WAV: read position.
    wav_pos: usize,
    rng: SmallRng,
}

impl AudioStream {
    /// A stream of `frame` frames at `sample_rate`; `seed` varies the script per
    /// client (stretch lengths, gaps, first word).
    pub fn new(source: Source, sample_rate: u32, frame: Duration, seed: u64) -> Self {
        let samples = (f64::from(sample_rate) * frame.as_secs_f64()).round().max(1.0) as usize;
        let mut rng = SmallRng::seed_from_u64(seed);
        let ticks = (1.0 / frame.as_secs_f64()).round().max(1.0) as u32;
        let talk_left = match &source {
            Source::Generated(script) => script.talk.as_secs_f64() * rng.random_range(0.5..1.5),
            Source::Wav { .. } => 0.0,
        };
        let word = rng.random_range(0..VOCAB.len());
        Self {
            source,
            frame_bytes: samples * 2,
            ticks_per_second: ticks,
            sample_rate,
            buffer: Vec::new(),
            cursor: 0,
            talk_left,
            pause_ticks: 0,
            since_keepalive: 0,
            word,
            utterance: 0,
            block: 0,
            wav_pos: 0,
            rng,
        }
    }

    /// Drops audio queued but not sent, so a new connection (a new STT stream with
    /// its own chunk grid) starts on a chunk boundary.
    pub fn restart(&mut self) {
        self.buffer.clear();
        self.cursor = 0;
    }

    /// The talk stretch the audio last returned belongs to.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The frame for this tick.
    pub fn next_frame(&mut self) -> Frame {
        if self.pause_ticks > 0 {
            self.pause_ticks -= 1;
            if self.pause_ticks == 0 {
                self.block += 1;
            }
            return self.keepalive_tick();
        }
        if self.cursor >= self.buffer.len() {
            self.buffer.clear();
            self.cursor = 0;
            if !self.refill() {
                // A pause just began.
                return self.keepalive_tick();
            }
        }
        let end = (self.cursor + self.frame_bytes).min(self.buffer.len());
        let frame = Bytes::copy_from_slice(&self.buffer[self.cursor..end]);
        self.cursor = end;
        self.since_keepalive = 0;
        Frame::Audio(frame)
    }

    /// A keep-alive once a second while there is no audio.
    fn keepalive_tick(&mut self) -> Frame {
        self.since_keepalive += 1;
        if self.since_keepalive >= self.ticks_per_second {
            self.since_keepalive = 0;
            Frame::KeepAlive
        } else {
            Frame::Idle
        }
    }

    /// Queues the next piece of audio; `false` when a pause begins instead.
    fn refill(&mut self) -> bool {
        match &self.source {
            Source::Wav { pcm } => {
                let take = (self.frame_bytes * 10).min(pcm.len() - self.wav_pos);
                self.buffer.extend_from_slice(&pcm[self.wav_pos..self.wav_pos + take]);
                self.wav_pos = (self.wav_pos + take) % pcm.len();
                true
            }
            Source::Generated(script) => {
                if self.talk_left <= 0.0 {
                    let frame_seconds = self.frame_bytes as f64 / 2.0 / f64::from(self.sample_rate);
                    self.pause_ticks =
                        (script.pause.as_secs_f64() / frame_seconds).ceil().max(1.0) as u32;
                    self.talk_left = script.talk.as_secs_f64() * self.rng.random_range(0.5..1.5);
                    return false;
                }
                let speaker = (self.utterance % 2) as u32;
                self.utterance += 1;
                let words: Vec<(&str, u32)> = (0..script.words_per_utterance.max(1))
                    .map(|i| (VOCAB[(self.word + i) % VOCAB.len()], speaker))
                    .collect();
                self.word += words.len();
                let gap_chunks = self.rng.random_range(1..=2);
                self.buffer.extend_from_slice(&synth(&words, self.sample_rate));
                let gap = CHUNK_SECONDS * f64::from(gap_chunks);
                let mut gap_audio = silence(gap, self.sample_rate);
                // Whole chunks only, whatever the rounding did.
                gap_audio.resize(chunk_samples(self.sample_rate) * 2 * gap_chunks as usize, 0);
                self.buffer.extend_from_slice(&gap_audio);
                self.talk_left -= CHUNK_SECONDS * (words.len() as f64 + f64::from(gap_chunks));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_fakes::fake_stt::transcribe::{Chunk, Chunker};

    fn script() -> Source {
        Source::Generated(Script {
            words_per_utterance: 3,
            talk: Duration::from_secs(4),
            pause: Duration::from_secs(2),
        })
    }

    #[test]
    fn generated_audio_stays_on_the_chunk_grid_across_pauses() {
        // 300 ms frames do not divide a 500 ms chunk: the grid must still hold.
        let mut stream = AudioStream::new(script(), 8000, Duration::from_millis(300), 7);
        let mut chunker = Chunker::new(8000);
        let mut words = Vec::new();
        let (mut keepalives, mut blocks) = (0, Vec::new());
        for _ in 0..400 {
            match stream.next_frame() {
                Frame::Audio(pcm) => {
                    assert!(pcm.len() <= 4800 && pcm.len() % 2 == 0);
                    chunker.push(&pcm, |c| {
                        if let Chunk::Word { vocab, .. } = c {
                            words.push(vocab)
                        }
                    });
                }
                Frame::KeepAlive => keepalives += 1,
                Frame::Idle => {}
            }
            blocks.push(stream.block());
        }
        // Every word is recognised as the next one in the vocabulary cycle.
        assert!(words.len() > 30, "{}", words.len());
        for pair in words.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % VOCAB.len());
        }
        assert!(keepalives > 2);
        assert!(*blocks.last().unwrap() >= 3);
    }

    #[test]
    fn wav_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..1000i16 {
            w.write_sample(i).unwrap();
            w.write_sample(-1i16).unwrap();
        }
        w.finalize().unwrap();
        let (source, rate) = Source::wav(&path).unwrap();
        assert_eq!(rate, 16000);
        let mut stream = AudioStream::new(source, rate, Duration::from_millis(20), 1);
        let Frame::Audio(first) = stream.next_frame() else { panic!("audio expected") };
        assert_eq!(first.len(), 640);
        assert_eq!(&first[..4], &[0, 0, 1, 0]);
    }
}
