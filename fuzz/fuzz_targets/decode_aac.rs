//! Fuzzes `AacDecoder` (`aac`: the ADTS parser, then symphonia's AAC-LC decoder).
//! The frames go to one 16 kHz decoder in order. The configuration byte's low bit
//! puts each frame behind a valid ADTS header (AAC-LC, 16 kHz, mono or stereo by
//! the next bit) so that mutations reach the AAC payload decoder; otherwise the
//! frames are given as they are and exercise the ADTS parser. Checks: no panic,
//! hang or unbounded allocation; a message that decodes is 1024 samples per ADTS
//! frame it holds.

#![no_main]

#[path = "codec_frames.rs"]
mod codec_frames;

use bytes::Bytes;
use hark_codec::adts::{self, Header};
use hark_codec::decoder;
use hark_proto::Codec;
use libfuzzer_sys::fuzz_target;

/// Index of 16 kHz in the ADTS sampling-frequency table.
const RATE_16K: u8 = 8;

fuzz_target!(|data: &[u8]| {
    let (config, frames) = codec_frames::split(data);
    let wrap = config & 1 == 1;
    let channels = if config & 2 == 0 { 1 } else { 2 };
    let mut aac = decoder(Codec::Aac, 16_000).expect("aac at 16 kHz");
    for frame in frames {
        let message = if wrap && frame.len() + adts::HEADER_BYTES < 1 << 13 {
            let mut wrapped = Header::lc(RATE_16K, channels, frame.len()).to_vec();
            wrapped.extend_from_slice(frame);
            wrapped
        } else {
            frame.to_vec()
        };
        let frames_in_message = adts::frames(&message).take_while(Result::is_ok).count();
        if let Ok(pcm) = aac.decode(Bytes::from(message)) {
            assert!(frames_in_message > 0);
            assert_eq!(pcm.len(), frames_in_message * 1024 * 2);
        }
    }
});
