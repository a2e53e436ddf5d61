//! Properties of the fake STT's transcription: `synth` and `words_for` are inverses,
//! and no input makes `words_for` panic.

use hark_fakes::fake_stt::transcribe::{chunk_samples, silence, synth, words_for, VOCAB};
use proptest::prelude::*;

fn words() -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop::collection::vec((0..VOCAB.len(), 0..=1u32), 0..12)
}

fn rate() -> impl Strategy<Value = u32> {
    prop_oneof![Just(8000u32), Just(16000), Just(44100), Just(48000), 2..4000u32]
}

proptest! {
    // Each case synthesises seconds of audio; 64 cases keep debug runs quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn synth_is_transcribed_back(words in words(), rate in rate()) {
        let input: Vec<(&str, u32)> = words.iter().map(|&(i, s)| (VOCAB[i], s)).collect();
        let expected: Vec<(String, u32)> =
            input.iter().map(|&(w, s)| (w.to_owned(), s)).collect();
        prop_assert_eq!(words_for(&synth(&input, rate), rate), expected);
    }

    #[test]
    fn silence_between_words_is_not_a_word(words in words(), gaps in 0..3usize) {
        let mut pcm = Vec::new();
        let mut expected = Vec::new();
        for &(i, s) in &words {
            pcm.extend(synth(&[(VOCAB[i], s)], 16000));
            pcm.extend(silence(0.5 * gaps as f64, 16000));
            expected.push((VOCAB[i].to_owned(), s));
        }
        prop_assert_eq!(words_for(&pcm, 16000), expected);
    }

    #[test]
    fn arbitrary_pcm_never_panics(pcm in prop::collection::vec(any::<u8>(), 0..20_000),
                                  rate in any::<u32>()) {
        let words = words_for(&pcm, rate);
        prop_assert!(words.len() <= pcm.len() / 2 / chunk_samples(rate) + 1);
        prop_assert!(words.iter().all(|(w, s)| VOCAB.contains(&w.as_str()) && *s <= 1));
    }
}
