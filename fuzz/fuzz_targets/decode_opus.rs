//! Fuzzes `OpusDecoder` (`opus` and `opus_fs320`; libopus underneath). The
//! configuration byte picks the codec and one of the five Opus rates; the frames
//! go to one decoder in order. Checks: no panic, hang or unbounded allocation; a
//! packet that decodes yields whole samples, at most 120 ms at the session rate;
//! an empty packet is refused (libopus would conceal it).

#![no_main]

#[path = "codec_frames.rs"]
mod codec_frames;

use bytes::Bytes;
use hark_codec::{decoder, Undecodable};
use hark_proto::Codec;
use libfuzzer_sys::fuzz_target;

const RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

fuzz_target!(|data: &[u8]| {
    let (config, frames) = codec_frames::split(data);
    let codec = if config & 0x80 == 0 { Codec::Opus } else { Codec::OpusFs320 };
    let rate = RATES[usize::from(config & 0x7F) % RATES.len()];
    let mut opus = decoder(codec, rate).expect("every Opus rate");
    for frame in frames {
        match opus.decode(Bytes::copy_from_slice(frame)) {
            Ok(pcm) => {
                assert_eq!(pcm.len() % 2, 0);
                assert!(pcm.len() / 2 <= rate as usize / 1000 * 120, "{} samples", pcm.len() / 2);
            }
            Err(Undecodable::Empty) => assert!(frame.is_empty()),
            Err(Undecodable::Opus(_)) => {}
            Err(other) => panic!("unexpected error from Opus: {other:?}"),
        }
    }
});
