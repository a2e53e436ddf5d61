//! One stream on one decoder thread: PCM in, utterances out, cut where the
//! decoder's voice-activity detector says speech ended.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pcm::{PcmDecoder, Resampler, MODEL_RATE};
use crate::recognizer::{self, Recognizer};
use crate::Utterance;

/// Longest stretch of continuous speech decoded as one utterance; a speaker
/// who never pauses gets an utterance at least this often, which bounds both
/// the decoder's memory and the transcript's delay.
pub const MAX_UTTERANCE_SECS: f64 = 30.0;

/// Samples (16 kHz) fed to the decoder between two looks at its VAD state:
/// 100 ms, so a cut lands within 0.1 s of the decoder's decision however large
/// the client's messages are.
const FEED_SAMPLES: usize = (MODEL_RATE / 10) as usize;

const MAX_UTTERANCE_SAMPLES: u64 = MAX_UTTERANCE_SECS as u64 * MODEL_RATE as u64;

/// How a stream ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The audio sender was dropped and the last utterance was delivered.
    Finished,
    /// The utterance receiver was dropped: nobody is listening, so decoding stopped.
    ConsumerGone,
}

/// The decoder's voice-activity state as last seen.
enum Vad {
    Silence,
    /// In speech since this many samples into the stream.
    Speech {
        since: u64,
    },
}

/// Where one stream stands: the decoder, the utterance sink, the audio fed.
struct Stream<'a> {
    recognizer: &'a mut dyn Recognizer,
    out: &'a mpsc::Sender<Utterance>,
    /// 16 kHz samples fed to the decoder so far.
    fed: u64,
    vad: Vad,
}

impl Stream<'_> {
    /// Feeds one piece and cuts the utterance if it ended. `Ok(false)` when
    /// the consumer is gone.
    fn feed(&mut self, piece: &[i16]) -> Result<bool, String> {
        let in_speech = self.recognizer.process(piece)?;
        self.fed += piece.len() as u64;
        match (&self.vad, in_speech) {
            // silence → speech: remember where, for the length cap.
            (Vad::Silence, true) => self.vad = Vad::Speech { since: self.fed },
            // speech → silence: the VAD ended the utterance.
            (Vad::Speech { .. }, false) => return self.cut(),
            // still speaking for too long: cut anyway.
            (Vad::Speech { since }, true) if self.fed - since >= MAX_UTTERANCE_SAMPLES => {
                return self.cut()
            }
            _ => {}
        }
        Ok(true)
    }

    /// Ends the utterance, delivers it, starts the next one.
    fn cut(&mut self) -> Result<bool, String> {
        self.vad = Vad::Silence;
        if !self.deliver()? {
            return Ok(false);
        }
        self.recognizer.start_utt()?;
        Ok(true)
    }

    /// Ends the utterance and sends it if it has words. `Ok(false)` when the
    /// consumer is gone.
    fn deliver(&mut self) -> Result<bool, String> {
        let segs = self.recognizer.end_utt()?;
        let stream_secs = self.fed as f64 / f64::from(MODEL_RATE);
        match recognizer::utterance(&segs, stream_secs) {
            Some(utterance) => Ok(self.out.blocking_send(utterance).is_ok()),
            None => Ok(true),
        }
    }
}

/// Decodes one stream to its end. Runs on a decoder thread (it blocks).
pub(crate) fn run(
    recognizer: &mut dyn Recognizer,
    sample_rate: u32,
    mut audio: mpsc::Receiver<Bytes>,
    out: &mpsc::Sender<Utterance>,
) -> Result<Outcome, String> {
    let mut resampler = Resampler::new(sample_rate)?;
    let mut pcm = PcmDecoder::default();
    let (mut input, mut model) = (Vec::new(), Vec::new());
    recognizer.begin_stream()?;
    let mut stream = Stream { recognizer, out, fed: 0, vad: Vad::Silence };
    while let Some(bytes) = audio.blocking_recv() {
        if out.is_closed() {
            return Ok(Outcome::ConsumerGone);
        }
        input.clear();
        model.clear();
        pcm.decode(&bytes, &mut input);
        resampler.push(&input, &mut model);
        for piece in model.chunks(FEED_SAMPLES) {
            if !stream.feed(piece)? {
                return Ok(Outcome::ConsumerGone);
            }
        }
    }
    // The sender is gone: flush whatever the decoder still holds.
    Ok(if stream.deliver()? { Outcome::Finished } else { Outcome::ConsumerGone })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recognizer::RawSeg;

    /// A decoder whose "speech" is any non-zero sample and whose every 100 ms
    /// of speech is one word named after the utterance's number.
    #[derive(Default)]
    struct Loudness {
        samples: usize,
        utt: usize,
        /// First and last loud frame of the current utterance.
        loud: Option<(i32, i32)>,
        in_utt: bool,
        calls: Vec<&'static str>,
    }

    impl Recognizer for Loudness {
        fn begin_stream(&mut self) -> Result<(), String> {
            self.calls.push("begin");
            *self =
                Self { calls: std::mem::take(&mut self.calls), in_utt: true, ..Self::default() };
            Ok(())
        }
        fn process(&mut self, samples: &[i16]) -> Result<bool, String> {
            assert!(self.in_utt, "process outside an utterance");
            let mut any = false;
            for (i, _) in samples.iter().enumerate().filter(|(_, &s)| s != 0) {
                let frame = ((self.samples + i) / 160) as i32;
                let first = self.loud.map_or(frame, |(first, _)| first);
                self.loud = Some((first, frame));
                any = true;
            }
            self.samples += samples.len();
            Ok(any)
        }
        fn end_utt(&mut self) -> Result<Vec<RawSeg>, String> {
            self.calls.push("end");
            self.in_utt = false;
            self.utt += 1;
            let Some((first, last)) = self.loud.take() else {
                return Ok(vec![RawSeg {
                    word: "<sil>".into(),
                    start_frame: 0,
                    end_frame: (self.samples / 160) as i32,
                }]);
            };
            Ok((first..=last)
                .step_by(10)
                .map(|f| RawSeg {
                    word: format!("w{}", self.utt),
                    start_frame: f,
                    end_frame: (f + 9).min(last),
                })
                .collect())
        }
        fn start_utt(&mut self) -> Result<(), String> {
            self.calls.push("start");
            self.in_utt = true;
            Ok(())
        }
    }

    fn pcm(samples: &[i16]) -> Bytes {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Runs `run` on a thread with the given messages; returns the utterances.
    fn decode(
        recognizer: &mut Loudness,
        rate: u32,
        messages: Vec<Bytes>,
    ) -> (Result<Outcome, String>, Vec<Utterance>) {
        let (audio_tx, audio_rx) = mpsc::channel(messages.len().max(1));
        for m in messages {
            audio_tx.try_send(m).unwrap();
        }
        drop(audio_tx);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let outcome = run(recognizer, rate, audio_rx, &out_tx);
        drop(out_tx);
        let mut utterances = Vec::new();
        while let Ok(u) = out_rx.try_recv() {
            utterances.push(u);
        }
        (outcome, utterances)
    }

    #[test]
    fn cuts_at_speech_to_silence_and_flushes_at_the_end() {
        let loud = vec![1000i16; 16_000]; // 1 s
        let quiet = vec![0i16; 16_000];
        let messages = vec![pcm(&quiet), pcm(&loud), pcm(&quiet), pcm(&loud[..8_000])];
        let mut rec = Loudness::default();
        let (outcome, utts) = decode(&mut rec, 16_000, messages);
        assert_eq!(outcome, Ok(Outcome::Finished));
        assert_eq!(utts.len(), 2, "{utts:?}");
        assert_eq!(utts[0].words.len(), 10);
        assert!(utts[0].text.starts_with("w1 w1"));
        assert!((utts[0].start - 1.0).abs() < 1e-9 && (utts[0].end - 2.0).abs() < 1e-9);
        // The second utterance is still open at the end and comes from the flush.
        assert!((utts[1].start - 3.0).abs() < 1e-9 && (utts[1].end - 3.5).abs() < 1e-9);
        assert_eq!(rec.calls, ["begin", "end", "start", "end"]);
    }

    #[test]
    fn eight_khz_times_are_in_stream_seconds() {
        let messages = vec![pcm(&[0; 8_000]), pcm(&[500; 4_000]), pcm(&[0; 4_000])];
        let (_, utts) = decode(&mut Loudness::default(), 8_000, messages);
        assert_eq!(utts.len(), 1);
        // The interpolated edge sample lands one 16 kHz frame early.
        assert!((utts[0].start - 1.0).abs() <= 0.011, "{utts:?}");
        assert!((utts[0].end - 1.5).abs() <= 0.011, "{utts:?}");
    }

    #[test]
    fn one_large_message_is_still_cut_into_utterances() {
        let mut samples = vec![0i16; 16_000];
        for (i, s) in samples.iter_mut().enumerate() {
            if (1600..4800).contains(&i) || (9600..12800).contains(&i) {
                *s = 900;
            }
        }
        let (_, utts) = decode(&mut Loudness::default(), 16_000, vec![pcm(&samples)]);
        assert_eq!(utts.len(), 2, "{utts:?}");
    }

    #[test]
    fn endless_speech_is_cut_at_the_cap() {
        let loud = pcm(&[700; 16_000]);
        let seconds = MAX_UTTERANCE_SECS as usize + 5;
        let (_, utts) = decode(&mut Loudness::default(), 16_000, vec![loud; seconds]);
        assert_eq!(utts.len(), 2);
        assert!((utts[0].end - MAX_UTTERANCE_SECS).abs() < 0.2, "{utts:?}");
    }

    #[test]
    fn silence_only_gives_no_utterance() {
        let (outcome, utts) = decode(&mut Loudness::default(), 16_000, vec![pcm(&[0; 48_000])]);
        assert_eq!(outcome, Ok(Outcome::Finished));
        assert!(utts.is_empty());
    }

    #[test]
    fn a_dropped_consumer_stops_decoding() {
        let (audio_tx, audio_rx) = mpsc::channel(4);
        audio_tx.try_send(pcm(&[900; 3_200])).unwrap();
        let (out_tx, out_rx) = mpsc::channel(4);
        drop(out_rx);
        let mut rec = Loudness::default();
        // The sender is still alive: only the closed consumer can end this.
        let outcome = run(&mut rec, 16_000, audio_rx, &out_tx);
        assert_eq!(outcome, Ok(Outcome::ConsumerGone));
        assert!(audio_tx.is_closed());
    }

    #[test]
    fn unsupported_rate_is_refused() {
        let (_tx, rx) = mpsc::channel(1);
        let (out, _out_rx) = mpsc::channel(1);
        assert!(run(&mut Loudness::default(), 4_000, rx, &out).is_err());
    }
}
