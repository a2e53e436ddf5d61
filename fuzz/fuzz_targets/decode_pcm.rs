//! Fuzzes the three PCM decoders (`pcm16`, `pcm8`, `mulaw`): they parse nothing,
//! so one target covers them. Checks: no panic; `pcm16` hands back the very bytes
//! it got; `pcm8` and `mulaw` turn every byte into one sample, the value of the
//! published formula (pcm8) or table (µ-law), and refuse only the empty frame.

#![no_main]

#[path = "codec_frames.rs"]
mod codec_frames;

use bytes::Bytes;
use hark_codec::mulaw::mulaw_to_pcm16;
use hark_codec::pcm::pcm8_to_pcm16;
use hark_codec::{decoder, Undecodable};
use hark_proto::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, frames) = codec_frames::split(data);
    let mut pcm16 = decoder(Codec::Pcm16, 16_000).expect("pcm16");
    let mut pcm8 = decoder(Codec::Pcm8, 8_000).expect("pcm8");
    let mut mulaw = decoder(Codec::Mulaw, 8_000).expect("mulaw");
    for frame in frames {
        let bytes = Bytes::copy_from_slice(frame);
        let out = pcm16.decode(bytes.clone()).expect("pcm16 never fails");
        assert_eq!(out.as_ptr(), bytes.as_ptr());
        assert_eq!(out, bytes);
        for (decoder, widen) in [(&mut pcm8, pcm8_to_pcm16 as fn(u8) -> i16), (&mut mulaw, mulaw_to_pcm16)] {
            match decoder.decode(bytes.clone()) {
                Ok(out) => {
                    assert_eq!(out.len(), frame.len() * 2);
                    for (pair, &byte) in out.chunks_exact(2).zip(frame) {
                        assert_eq!(i16::from_le_bytes([pair[0], pair[1]]), widen(byte));
                    }
                }
                Err(error) => {
                    assert_eq!(error, Undecodable::Empty);
                    assert!(frame.is_empty());
                }
            }
        }
    }
});
