//! Known values for the hand-written codecs, the zero-copy `pcm16` path, and the
//! combinations `decoder()` refuses.

use bytes::Bytes;
use hark_codec::mulaw::{mulaw_to_pcm16, pcm16_to_mulaw, MULAW_TO_PCM16};
use hark_codec::pcm::{pcm16_to_pcm8, pcm8_to_pcm16};
use hark_codec::{decoder, CodecError, Undecodable};
use hark_proto::Codec;

fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

#[test]
fn pcm16_passes_the_frame_through_without_a_copy() {
    let mut pcm16 = decoder(Codec::Pcm16, 16_000).unwrap();
    let frame = Bytes::from(vec![1u8, 0, 0xFF, 0x7F, 0x00, 0x80]);
    let out = pcm16.decode(frame.clone()).unwrap();
    assert_eq!(out.as_ptr(), frame.as_ptr(), "the same buffer, not a copy");
    assert_eq!(samples(&out), [1, i16::MAX, i16::MIN]);
    // Odd lengths pass too: a byte stream, as omi treats it.
    assert_eq!(
        pcm16.decode(Bytes::from_static(&[1, 2, 3])).unwrap(),
        Bytes::from_static(&[1, 2, 3])
    );
}

#[test]
fn pcm8_is_unsigned_8_bit_widened() {
    assert_eq!(pcm8_to_pcm16(0x80), 0);
    assert_eq!(pcm8_to_pcm16(0x00), -32_768);
    assert_eq!(pcm8_to_pcm16(0xFF), 32_512);
    assert_eq!(pcm8_to_pcm16(0x81), 256);
    assert_eq!(pcm8_to_pcm16(0x7F), -256);
    let mut pcm8 = decoder(Codec::Pcm8, 8_000).unwrap();
    let out = pcm8.decode(Bytes::from_static(&[0x80, 0x00, 0xFF, 0x81, 0x7F])).unwrap();
    assert_eq!(samples(&out), [0, -32_768, 32_512, 256, -256]);
    // Encoding rounds to the nearest step and inverts decoding exactly.
    for byte in 0..=255u8 {
        assert_eq!(pcm16_to_pcm8(pcm8_to_pcm16(byte)), byte);
    }
    assert_eq!(pcm16_to_pcm8(127), 0x80);
    assert_eq!(pcm16_to_pcm8(128), 0x81);
    assert_eq!(pcm16_to_pcm8(i16::MAX), 0xFF);
    assert_eq!(pcm16_to_pcm8(i16::MIN), 0x00);
}

/// Values from the G.711 µ-law expansion (ITU-T G.711 table 2a, in 16-bit PCM
/// as the classic `ulaw2linear` gives them).
#[test]
fn mulaw_known_values() {
    for (byte, pcm) in [
        (0xFF, 0),
        (0x7F, 0),
        (0x80, 32_124),
        (0x00, -32_124),
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),
        (0xDF, 396),
        (0xCF, 924),
        (0xBF, 1_980),
        (0xAF, 4_092),
        (0x9F, 8_316),
        (0x8F, 16_764),
        (0x0F, -16_764),
    ] {
        assert_eq!(mulaw_to_pcm16(byte), pcm, "µ-law {byte:#04x}");
    }
    // The table is odd-symmetric: byte b and b ^ 0x80 are ± the same magnitude.
    for b in 0..128usize {
        assert_eq!(MULAW_TO_PCM16[b], -MULAW_TO_PCM16[b | 0x80]);
    }
    // Encoding a decoded value gives the byte back (except negative zero, 0x7F,
    // which encodes as positive zero, 0xFF).
    for byte in 0..=255u8 {
        let expected = if byte == 0x7F { 0xFF } else { byte };
        assert_eq!(pcm16_to_mulaw(mulaw_to_pcm16(byte)), expected, "{byte:#04x}");
    }
    assert_eq!(pcm16_to_mulaw(0), 0xFF);
    assert_eq!(pcm16_to_mulaw(i16::MAX), 0x80);
    assert_eq!(pcm16_to_mulaw(i16::MIN), 0x00);
    assert_eq!(pcm16_to_mulaw(-1), 0x7F);
    let mut mulaw = decoder(Codec::Mulaw, 8_000).unwrap();
    let out = mulaw.decode(Bytes::from_static(&[0xFF, 0x80, 0x00, 0xF0])).unwrap();
    assert_eq!(samples(&out), [0, 32_124, -32_124, 120]);
}

#[test]
fn decoder_refuses_impossible_combinations() {
    for (codec, rate) in [
        (Codec::Opus, 44_100),
        (Codec::OpusFs320, 22_050),
        (Codec::Opus, 32_000),
        (Codec::Lc3Fs1030, 8_000),
        (Codec::Lc3Fs1030, 48_000),
        (Codec::Aac, 10_000),
        (Codec::Pcm16, 7_999),
        (Codec::Pcm8, 96_000),
    ] {
        assert_eq!(
            decoder(codec, rate).err(),
            Some(CodecError::SampleRate { codec, sample_rate: rate }),
            "{codec} at {rate}"
        );
    }
    for codec in Codec::ALL {
        let rate = codec.sample_rates().map_or(16_000, |rates| rates[0]);
        assert_eq!(decoder(codec, rate).expect("valid").codec(), codec);
    }
}

#[test]
fn undecodable_reasons_are_one_line() {
    for reason in [
        Undecodable::Empty,
        Undecodable::Length { len: 31, frame_bytes: 30 },
        Undecodable::Opus("corrupted stream"),
        Undecodable::Lc3,
        Undecodable::Adts("no sync word"),
        Undecodable::AacSampleRate { frame: 44_100, session: 16_000 },
        Undecodable::Aac("invalid data"),
    ] {
        let text = reason.to_string();
        assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
    }
}
