//! Fuzzes `Lc3Decoder` (`lc3_fs1030`; liblc3 underneath). The frames go to one
//! decoder in order; the configuration byte, when odd, turns each frame into a
//! whole number of 30-byte LC3 frames (cut or padded) so that most inputs reach
//! liblc3 rather than the length check. Checks: no panic; a message that decodes
//! is 160 samples per 30 bytes; every other length is refused as such.

#![no_main]

#[path = "codec_frames.rs"]
mod codec_frames;

use bytes::Bytes;
use hark_codec::{decoder, Undecodable};
use hark_proto::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, frames) = codec_frames::split(data);
    let mut lc3 = decoder(Codec::Lc3Fs1030, 16_000).expect("lc3_fs1030");
    for frame in frames {
        let mut frame = frame.to_vec();
        if config & 1 == 1 {
            let whole = frame.len().div_ceil(30).max(1) * 30;
            frame.resize(whole, 0);
        }
        let len = frame.len();
        match lc3.decode(Bytes::from(frame)) {
            Ok(pcm) => {
                assert_eq!(len % 30, 0);
                assert_eq!(pcm.len(), len / 30 * 320);
            }
            Err(Undecodable::Empty) => assert_eq!(len, 0),
            Err(Undecodable::Length { len: got, frame_bytes: 30 }) => {
                assert_eq!(got, len);
                assert_ne!(len % 30, 0);
            }
            Err(Undecodable::Lc3) => assert_eq!(len % 30, 0),
            Err(other) => panic!("unexpected error from LC3: {other:?}"),
        }
    }
});
