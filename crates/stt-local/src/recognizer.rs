//! What a session needs from a speech decoder, and how its word segments
//! become an [`Utterance`].
//!
//! The trait is the seam between the session logic (resampling, cutting,
//! timing) and PocketSphinx, so that logic is tested with a fake decoder and
//! without the C library.

use crate::{Utterance, Word};

/// Frames per second of the decoder's frame counts (PocketSphinx's `-frate`,
/// 100 with the packaged model).
pub(crate) const FRAMES_PER_SECOND: f64 = 100.0;

/// One word segment as the decoder reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSeg {
    /// The dictionary entry, perhaps a filler (`<sil>`) or an alternate (`read(2)`).
    pub word: String,
    /// First frame, counted from the start of the stream.
    pub start_frame: i32,
    /// Last frame (inclusive), counted from the start of the stream.
    pub end_frame: i32,
}

/// A streaming decoder with voice-activity detection, fed 16 kHz PCM.
///
/// Calls come in this order: `begin_stream`, then any number of `process`
/// interleaved with `end_utt` + `start_utt` pairs, then a final `end_utt`.
/// `begin_stream` must also recover a decoder left anywhere in that sequence
/// by an abandoned stream.
pub(crate) trait Recognizer: Send {
    /// Resets the frame clock to zero and starts the first utterance.
    fn begin_stream(&mut self) -> Result<(), String>;
    /// Decodes 16 kHz samples; returns whether the voice-activity detector is
    /// in speech after them.
    fn process(&mut self, samples: &[i16]) -> Result<bool, String>;
    /// Ends the current utterance and returns its best word segmentation.
    fn end_utt(&mut self) -> Result<Vec<RawSeg>, String>;
    /// Starts the next utterance.
    fn start_utt(&mut self) -> Result<(), String>;
}

/// The word a segment stands for, or `None` for fillers and silence
/// (`<s>`, `</s>`, `<sil>`, `[NOISE]`, `++GARBAGE++`). Alternate-pronunciation
/// suffixes (`read(2)`) are stripped.
pub(crate) fn clean_word(word: &str) -> Option<&str> {
    let word = word.trim();
    if word.is_empty() || word.starts_with('<') || word.starts_with('[') || word.starts_with("++") {
        return None;
    }
    let base = match word.strip_suffix(')').and_then(|w| w.rsplit_once('(')) {
        Some((base, n)) if !base.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => word,
    };
    Some(base)
}

/// Builds the utterance for one decoder result, or `None` when it holds no
/// word. Times are clamped to `[0, stream_secs]`, the audio fed so far.
pub(crate) fn utterance(segs: &[RawSeg], stream_secs: f64) -> Option<Utterance> {
    let clamp = |frame: i32| (f64::from(frame) / FRAMES_PER_SECOND).clamp(0.0, stream_secs);
    let words: Vec<Word> = segs
        .iter()
        .filter_map(|seg| {
            let word = clean_word(&seg.word)?;
            Some(Word {
                word: word.to_owned(),
                start: clamp(seg.start_frame),
                // The end frame is inclusive: the word lasts until the next frame starts.
                end: clamp(seg.end_frame.saturating_add(1)),
            })
        })
        .collect();
    let start = words.first()?.start;
    let end = words.last()?.end.max(start);
    let text = words.iter().map(|w| w.word.as_str()).collect::<Vec<_>>().join(" ");
    Some(Utterance { text, words, start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(word: &str, start_frame: i32, end_frame: i32) -> RawSeg {
        RawSeg { word: word.into(), start_frame, end_frame }
    }

    #[test]
    fn fillers_are_dropped_and_alternates_stripped() {
        assert_eq!(clean_word("<s>"), None);
        assert_eq!(clean_word("</s>"), None);
        assert_eq!(clean_word("<sil>"), None);
        assert_eq!(clean_word("[NOISE]"), None);
        assert_eq!(clean_word("++BREATH++"), None);
        assert_eq!(clean_word(""), None);
        assert_eq!(clean_word("read(2)"), Some("read"));
        assert_eq!(clean_word("forward(12)"), Some("forward"));
        assert_eq!(clean_word("go"), Some("go"));
        // Not a numeric suffix: kept as is.
        assert_eq!(clean_word("a(b)"), Some("a(b)"));
        assert_eq!(clean_word("(2)"), Some("(2)"));
    }

    #[test]
    fn utterance_spans_its_words() {
        let segs = [
            seg("<s>", 0, 24),
            seg("<sil>", 25, 45),
            seg("go", 46, 63),
            seg("forward(2)", 64, 116),
            seg("[NOISE]", 117, 120),
            seg("ten", 121, 152),
            seg("</s>", 153, 200),
        ];
        let utt = utterance(&segs, 2.5).unwrap();
        assert_eq!(utt.text, "go forward ten");
        assert_eq!(utt.words.len(), 3);
        assert_eq!(utt.words[1].word, "forward");
        assert!((utt.start - 0.46).abs() < 1e-9);
        assert!((utt.end - 1.53).abs() < 1e-9);
        assert!((utt.words[1].start - 0.64).abs() < 1e-9);
        assert!((utt.words[1].end - 1.17).abs() < 1e-9);
    }

    #[test]
    fn only_fillers_is_no_utterance() {
        assert_eq!(utterance(&[seg("<s>", 0, 3), seg("</s>", 4, 9)], 1.0), None);
        assert_eq!(utterance(&[], 1.0), None);
    }

    #[test]
    fn times_are_clamped_to_the_audio_fed() {
        let utt = utterance(&[seg("hi", -5, 400)], 2.0).unwrap();
        assert_eq!((utt.start, utt.end), (0.0, 2.0));
    }
}
