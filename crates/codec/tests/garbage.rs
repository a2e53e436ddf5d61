//! Bytes that are not audio: random, truncated and malformed frames go to every
//! decoder. None may panic; what a decoder refuses is `Err`; what it accepts has
//! the length its format promises. The share of random frames each library takes
//! for audio is measured and printed (`--nocapture`): codecs without checksums
//! cannot refuse them all.

mod common;

use bytes::Bytes;
use hark_codec::{decoder, encode_clip, Decoder, Undecodable};
use hark_proto::Codec;
use proptest::prelude::*;

/// Every codec at a rate it takes.
fn decoders() -> Vec<Box<dyn Decoder>> {
    [
        (Codec::Pcm16, 16_000),
        (Codec::Pcm8, 8_000),
        (Codec::Mulaw, 8_000),
        (Codec::Opus, 16_000),
        (Codec::OpusFs320, 48_000),
        (Codec::Lc3Fs1030, 16_000),
        (Codec::Aac, 16_000),
    ]
    .into_iter()
    .map(|(codec, rate)| decoder(codec, rate).expect("a valid combination"))
    .collect()
}

/// What an accepted frame of `len` bytes may decode to, in bytes.
fn plausible(codec: Codec, input: usize, output: usize) -> bool {
    match codec {
        Codec::Pcm16 => output == input,
        Codec::Pcm8 | Codec::Mulaw => output == input * 2,
        // At most 120 ms at 48 kHz.
        Codec::Opus | Codec::OpusFs320 => output % 2 == 0 && output <= 5_760 * 2,
        Codec::Lc3Fs1030 => input % 30 == 0 && output == input / 30 * 320,
        Codec::Aac => output > 0 && output % 2_048 == 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Random frames, one after another into the same decoders (state carries).
    #[test]
    fn random_frames_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..8)) {
        let mut decoders = decoders();
        for frame in &frames {
            for decoder in &mut decoders {
                if let Ok(pcm) = decoder.decode(Bytes::copy_from_slice(frame)) {
                    prop_assert!(plausible(decoder.codec(), frame.len(), pcm.len()),
                        "{}: {} bytes in, {} out", decoder.codec(), frame.len(), pcm.len());
                }
            }
        }
    }

    /// Random payloads behind a valid ADTS header get past the framing to the AAC
    /// decoder itself.
    #[test]
    fn random_aac_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 1..1_500), channels in 1u8..=2) {
        let mut decoder = decoder(Codec::Aac, 16_000).unwrap();
        let mut frame = hark_codec::adts::Header::lc(8, channels, payload.len()).to_vec();
        frame.extend_from_slice(&payload);
        if let Ok(pcm) = decoder.decode(Bytes::from(frame)) {
            prop_assert_eq!(pcm.len(), 2_048);
        }
    }

    /// Random 30-byte LC3 frames, several per message.
    #[test]
    fn random_lc3_frames_never_panic(frames in 1usize..4, bytes in proptest::collection::vec(any::<u8>(), 120)) {
        let mut decoder = decoder(Codec::Lc3Fs1030, 16_000).unwrap();
        if let Ok(pcm) = decoder.decode(Bytes::copy_from_slice(&bytes[..frames * 30])) {
            prop_assert_eq!(pcm.len(), frames * 320);
        }
    }
}

#[test]
fn empty_frames_are_refused() {
    for mut decoder in decoders() {
        let result = decoder.decode(Bytes::new());
        match decoder.codec() {
            // A byte stream: nothing in, nothing out.
            Codec::Pcm16 => assert_eq!(result, Ok(Bytes::new())),
            codec => assert_eq!(result, Err(Undecodable::Empty), "{codec}"),
        }
    }
}

/// A tiny deterministic generator, so the measured shares are the same each run.
fn random_bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

/// The share of random frames each library accepts as audio. Printed for the
/// docs; asserted only where the format makes refusal certain (no ADTS sync word)
/// or where the library demonstrably refuses some (liblc3's and libopus's checks
/// are live, not dead code).
#[test]
fn share_of_random_frames_taken_for_audio() {
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let trials = 5_000;
    let mut accepted =
        |codec: Codec, len: &dyn Fn(&mut u64) -> usize, prefix: &dyn Fn(usize) -> Vec<u8>| {
            let mut decoder = decoder(codec, 16_000).unwrap();
            let mut ok = 0;
            for _ in 0..trials {
                let n = len(&mut seed);
                let mut frame = prefix(n);
                frame.extend(random_bytes(&mut seed, n));
                if decoder.decode(Bytes::from(frame)).is_ok() {
                    ok += 1;
                }
            }
            f64::from(ok) / f64::from(trials)
        };
    let opus =
        accepted(Codec::Opus, &|s| 3 + random_bytes(s, 1)[0] as usize % 200, &|_| Vec::new());
    let lc3 = accepted(Codec::Lc3Fs1030, &|_| 30, &|_| Vec::new());
    let aac_raw =
        accepted(Codec::Aac, &|s| 8 + random_bytes(s, 1)[0] as usize * 2, &|_| Vec::new());
    let aac_payload = accepted(Codec::Aac, &|s| 8 + random_bytes(s, 1)[0] as usize * 2, &|n| {
        hark_codec::adts::Header::lc(8, 1, n).to_vec()
    });
    eprintln!("random frames taken for audio: opus {:.1} %, lc3_fs1030 {:.1} %, aac {:.1} % (random payload behind a valid ADTS header: {:.1} %)",
        opus * 100.0, lc3 * 100.0, aac_raw * 100.0, aac_payload * 100.0);
    assert_eq!(
        aac_raw, 0.0,
        "random bytes never start with an ADTS sync word and a valid header often enough to matter"
    );
    assert!(opus < 1.0, "libopus refused none of {trials} random packets");
    assert!(lc3 < 1.0, "liblc3 refused none of {trials} random frames");
    assert!(aac_payload < 1.0, "symphonia refused none of {trials} random payloads");
}

#[test]
fn malformed_opus_packets_are_refused() {
    let mut opus = decoder(Codec::Opus, 16_000).unwrap();
    for (what, packet) in [
        // Code 3 (arbitrary frame count) without its count byte.
        ("code 3, no count", vec![0x03]),
        // Code 3, zero frames.
        ("code 3, zero frames", vec![0x03, 0x00]),
        // Code 3, 49 frames of 10 ms: 490 ms is over 120 ms.
        ("code 3, too long", vec![0x03 | (16 << 3), 49, 0, 0, 0]),
        // Code 1 (two equal frames) needs an even payload.
        ("code 1, odd payload", vec![0x01, 1, 2, 3]),
        // Code 2: the first frame's length overruns the packet.
        ("code 2, overrun", vec![0x02, 200, 1, 2]),
    ] {
        let result = opus.decode(Bytes::from(packet));
        assert!(matches!(result, Err(Undecodable::Opus(_))), "{what}: {result:?}");
    }
    // The decoder goes on decoding after garbage.
    let frames = encode_clip(Codec::Opus, 16_000, &common::goforward()).unwrap();
    for frame in frames.iter().take(50) {
        assert_eq!(opus.decode(frame.clone()).map(|pcm| pcm.len()), Ok(320));
    }
}

#[test]
fn truncated_and_padded_lc3_messages_are_refused() {
    let frames = encode_clip(Codec::Lc3Fs1030, 16_000, &common::goforward()).unwrap();
    let mut lc3 = decoder(Codec::Lc3Fs1030, 16_000).unwrap();
    let frame = frames[10].clone();
    for len in [1, 3, 20, 29, 31, 59, 61] {
        let mut bytes = frame.to_vec();
        bytes.resize(len, 0);
        assert_eq!(
            lc3.decode(Bytes::from(bytes)),
            Err(Undecodable::Length { len, frame_bytes: 30 }),
            "{len} bytes"
        );
    }
    // Whole frames still decode afterwards.
    for frame in &frames[11..40] {
        assert_eq!(lc3.decode(frame.clone()).map(|pcm| pcm.len()), Ok(320));
    }
}

/// A message in which one of three LC3 frames is corrupt yields nothing (not the
/// two good frames and concealment noise).
#[test]
fn lc3_message_with_a_corrupt_frame_yields_nothing() {
    let frames = encode_clip(Codec::Lc3Fs1030, 16_000, &common::goforward()).unwrap();
    let mut seed = 7;
    let mut lc3 = decoder(Codec::Lc3Fs1030, 16_000).unwrap();
    let mut refused = 0;
    for i in 0..200 {
        let corrupt = random_bytes(&mut seed, 30);
        let message: Vec<u8> = [&frames[i][..], &corrupt, &frames[i + 1][..]].concat();
        match lc3.decode(Bytes::from(message)) {
            Ok(pcm) => assert_eq!(pcm.len(), 960),
            Err(e) => {
                assert_eq!(e, Undecodable::Lc3);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no random frame was found corrupt");
}

#[test]
fn truncated_and_malformed_adts_frames_are_refused() {
    let frames = encode_clip(Codec::Aac, 16_000, &common::goforward()).unwrap();
    let mut aac = decoder(Codec::Aac, 16_000).unwrap();
    let frame = frames[5].to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header only", frame[..7].to_vec()),
        ("shorter than a header", frame[..5].to_vec()),
        ("cut short", frame[..frame.len() - 1].to_vec()),
        ("trailing bytes", [&frame[..], &[0xFF, 0xF1, 0x50]].concat()),
        ("no sync word", [&[0u8][..], &frame[1..]].concat()),
        ("second frame cut short", [&frame[..], &frame[..frame.len() / 2]].concat()),
    ];
    for (what, bytes) in cases {
        assert!(matches!(aac.decode(Bytes::from(bytes)), Err(Undecodable::Adts(_))), "{what}");
    }
    // Header fields Hark refuses.
    let mut main_profile = frame.clone();
    main_profile[2] &= 0x3F; // profile 0: AAC Main
    assert_eq!(aac.decode(Bytes::from(main_profile)), Err(Undecodable::Adts("not AAC-LC")));
    let mut reserved_rate = frame.clone();
    reserved_rate[2] |= 0x0F << 2; // index 15
    assert!(matches!(aac.decode(Bytes::from(reserved_rate)), Err(Undecodable::Adts(_))));
    let mut six_channels = frame.clone();
    six_channels[2] |= 0x01; // channel configuration 4..=7
    assert_eq!(aac.decode(Bytes::from(six_channels)), Err(Undecodable::Adts("not mono or stereo")));
    let mut two_blocks = frame.clone();
    two_blocks[6] |= 0x01;
    assert!(matches!(aac.decode(Bytes::from(two_blocks)), Err(Undecodable::Adts(_))));
    // Whole frames still decode afterwards.
    for frame in &frames[6..20] {
        assert_eq!(aac.decode(frame.clone()).map(|pcm| pcm.len()), Ok(2_048));
    }
}
