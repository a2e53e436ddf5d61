//! Real speech through each codec's encoder and Hark's decoder: every frame
//! decodes to exactly the samples it should, and the decoded signal is close to
//! the original (bounds per codec, set a margin below what was measured; the
//! figures are printed with `--nocapture`).

mod common;

use bytes::Bytes;
use hark_codec::{decoder, encode_clip, encoder};
use hark_proto::Codec;

use common::{halve_rate, similarity, speech, tones, Similarity};

/// Encodes `pcm`, decodes every frame, checks each frame's decoded length with
/// `expected_samples(frame index, frame)`, and returns the decoded signal.
fn round_trip(
    codec: Codec,
    rate: u32,
    pcm: &[i16],
    expected_samples: impl Fn(usize, &Bytes) -> usize,
) -> Vec<i16> {
    let frames = encode_clip(codec, rate, pcm).unwrap_or_else(|e| panic!("{codec}: {e}"));
    assert!(!frames.is_empty());
    let mut decoder = decoder(codec, rate).unwrap_or_else(|e| panic!("{codec} at {rate}: {e}"));
    assert_eq!(decoder.codec(), codec);
    let mut decoded = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let pcm = decoder
            .decode(frame.clone())
            .unwrap_or_else(|e| panic!("{codec} frame {i} ({} bytes): {e}", frame.len()));
        assert_eq!(pcm.len(), expected_samples(i, frame) * 2, "{codec} frame {i}");
        decoded.extend(common::samples(&pcm));
    }
    decoded
}

/// Runs every clip through `codec` at 16 kHz; asserts the bounds; prints figures.
fn speech_through(
    codec: Codec,
    expected_samples: impl Fn(usize, &Bytes) -> usize + Copy,
    max_delay: usize,
    min_correlation: f64,
    min_snr_db: f64,
) {
    let mut worst = (f64::MAX, f64::MAX);
    for (name, pcm) in speech() {
        let decoded = round_trip(codec, 16_000, &pcm, expected_samples);
        assert!(decoded.len() >= pcm.len(), "{codec} {name}: {} < {}", decoded.len(), pcm.len());
        let Similarity { delay, correlation, snr_db } = similarity(&pcm, &decoded, max_delay);
        eprintln!("{codec:>10} {name:<48} delay {delay:>4}  correlation {correlation:.4}  SNR {snr_db:>5.1} dB");
        assert!(correlation >= min_correlation, "{codec} {name}: correlation {correlation:.4}");
        assert!(snr_db >= min_snr_db, "{codec} {name}: SNR {snr_db:.1} dB");
        worst = (worst.0.min(correlation), worst.1.min(snr_db));
    }
    eprintln!("{codec:>10} worst: correlation {:.4}, SNR {:.1} dB", worst.0, worst.1);
}

#[test]
fn pcm16_is_exact() {
    speech_through(Codec::Pcm16, |_, f| f.len() / 2, 1, 1.0, 90.0);
}

#[test]
fn pcm8_speech() {
    speech_through(Codec::Pcm8, |_, f| f.len(), 1, 0.995, 20.0);
}

#[test]
fn mulaw_speech() {
    speech_through(Codec::Mulaw, |_, f| f.len(), 1, 0.999, 34.0);
}

#[test]
fn mulaw_at_8khz() {
    for (name, pcm) in speech() {
        let pcm = halve_rate(&pcm);
        let decoded = round_trip(Codec::Mulaw, 8_000, &pcm, |_, f| f.len());
        let s = similarity(&pcm, &decoded, 1);
        assert!(s.snr_db >= 34.0, "{name}: {s:?}");
    }
}

#[test]
fn opus_speech_160_sample_frames() {
    speech_through(Codec::Opus, |_, _| 160, 400, 0.97, 9.0);
}

#[test]
fn opus_fs320_speech_320_sample_frames() {
    speech_through(Codec::OpusFs320, |_, _| 320, 400, 0.97, 9.0);
}

#[test]
fn lc3_fs1030_speech() {
    speech_through(Codec::Lc3Fs1030, |_, f| f.len() / 30 * 160, 400, 0.95, 10.0);
}

#[test]
fn aac_speech() {
    speech_through(Codec::Aac, |_, _| 1024, 4096, 0.97, 12.0);
}

/// Every Opus rate, both frame sizes: 10 and 20 ms packets at the session rate.
#[test]
fn opus_at_every_rate() {
    for rate in [8_000, 12_000, 16_000, 24_000, 48_000] {
        for (codec, per_second) in [(Codec::Opus, 100), (Codec::OpusFs320, 50)] {
            let pcm = tones(rate, 2.0);
            let frame = (rate / per_second) as usize;
            assert_eq!(encoder(codec, rate).unwrap().frame_samples(), Some(frame));
            let decoded = round_trip(codec, rate, &pcm, |_, _| frame);
            let s = similarity(&pcm, &decoded, rate as usize / 20);
            eprintln!("{codec:>10} tones at {rate:>5} Hz: {s:?}");
            assert!(s.correlation > 0.97, "{codec} at {rate}: {s:?}");
        }
    }
}

/// One binary message may carry several LC3 frames (omi's app can join a 90-byte
/// BLE packet's three); they decode in order, as if sent one by one.
#[test]
fn lc3_several_frames_in_one_message() {
    let pcm = common::goforward();
    let frames = encode_clip(Codec::Lc3Fs1030, 16_000, &pcm).unwrap();
    let mut one_by_one = decoder(Codec::Lc3Fs1030, 16_000).unwrap();
    let mut joined = decoder(Codec::Lc3Fs1030, 16_000).unwrap();
    for triple in frames.chunks(3) {
        let mut expected = Vec::new();
        for frame in triple {
            assert_eq!(frame.len(), 30);
            expected.extend_from_slice(&one_by_one.decode(frame.clone()).unwrap());
        }
        let message: Vec<u8> = triple.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(joined.decode(Bytes::from(message)).unwrap(), expected);
    }
}

/// Several whole ADTS frames in one message decode like the same frames sent
/// one by one.
#[test]
fn aac_several_frames_in_one_message() {
    let pcm = common::goforward();
    let frames = encode_clip(Codec::Aac, 16_000, &pcm).unwrap();
    let mut one_by_one = decoder(Codec::Aac, 16_000).unwrap();
    let mut joined = decoder(Codec::Aac, 16_000).unwrap();
    for pair in frames.chunks(2) {
        let mut expected = Vec::new();
        for frame in pair {
            expected.extend_from_slice(&one_by_one.decode(frame.clone()).unwrap());
        }
        let message: Vec<u8> = pair.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(joined.decode(Bytes::from(message)).unwrap(), expected);
    }
}

/// AAC encoded at another rate than the session's is refused frame by frame,
/// naming both rates: Hark does not resample.
#[test]
fn aac_at_another_rate_is_refused() {
    let pcm = tones(24_000, 1.0);
    let frames = encode_clip(Codec::Aac, 24_000, &pcm).unwrap();
    let mut decoder = decoder(Codec::Aac, 16_000).unwrap();
    for frame in frames {
        let err = decoder.decode(frame).expect_err("24 kHz frames in a 16 kHz session");
        assert_eq!(err, hark_codec::Undecodable::AacSampleRate { frame: 24_000, session: 16_000 });
        assert_eq!(err.to_string(), "aac frame at 24000 Hz in a 16000 Hz session");
    }
}

/// AAC at every session rate an ADTS header can name.
#[test]
fn aac_at_every_rate() {
    for rate in hark_proto::client::AAC_SAMPLE_RATES {
        let pcm = tones(*rate, 1.0);
        let decoded = round_trip(Codec::Aac, *rate, &pcm, |_, _| 1024);
        let s = similarity(&pcm, &decoded, 4096);
        eprintln!("       aac tones at {rate:>5} Hz: {s:?}");
        assert!(s.correlation > 0.9, "aac at {rate}: {s:?}");
    }
}
