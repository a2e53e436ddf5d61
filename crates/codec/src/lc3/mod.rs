//! `lc3_fs1030`: LC3 (Bluetooth LE Audio's codec) in 10 ms frames of 30 bytes at
//! 16 kHz, as omi's LC3 devices (the Friend pendant) send it, decoded by liblc3
//! (Debian's `liblc3`, the library omi's backend uses through `lc3py`).
//!
//! omi's app sends one 30-byte frame per binary message, and may join the three
//! frames of one 90-byte BLE packet into one message. So a binary frame here is
//! one or more whole 30-byte frames, decoded in order (160 samples each); any
//! other length is [`Undecodable::Length`]. (omi's backend hands the whole message
//! to liblc3 as *one* frame of that many bytes, which for a 90-byte message yields
//! 10 ms of wrong audio instead of 30 ms of right audio.)
//!
//! What liblc3 can and cannot catch: when the bitstream is inconsistent
//! (bandwidth, global gain or spectral data out of range) it conceals the frame
//! and says so; Hark then discards the whole message as [`Undecodable::Lc3`]
//! rather than pass concealment noise on as the client's audio. Many random
//! 30-byte strings are consistent, though, and decode into noise that no one can
//! tell from audio (`tests/garbage.rs` measures the share).

pub mod ffi;

use bytes::Bytes;
use hark_proto::Codec;

use crate::{CodecError, Decoder, Output, Undecodable};
use ffi::{Decoded, RawDecoder};

/// Frame duration of `lc3_fs1030`, µs.
pub const FRAME_US: i32 = 10_000;
/// Sample rate of `lc3_fs1030`, Hz.
pub const SAMPLE_RATE: i32 = 16_000;
/// Bytes per `lc3_fs1030` frame.
pub const FRAME_BYTES: usize = 30;
/// Samples per decoded `lc3_fs1030` frame (10 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 160;

/// One session's liblc3 decoder.
pub struct Lc3Decoder {
    raw: RawDecoder,
    scratch: [i16; FRAME_SAMPLES],
    out: Output,
}

impl std::fmt::Debug for Lc3Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lc3Decoder").finish_non_exhaustive()
    }
}

impl Lc3Decoder {
    /// A decoder for 10 ms frames at 16 kHz.
    pub fn new() -> Result<Self, CodecError> {
        let raw = RawDecoder::new(FRAME_US, SAMPLE_RATE).ok_or(CodecError::Lc3Setup)?;
        if raw.frame_samples() != FRAME_SAMPLES {
            return Err(CodecError::Lc3Setup);
        }
        Ok(Self { raw, scratch: [0; FRAME_SAMPLES], out: Output::default() })
    }
}

impl Decoder for Lc3Decoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        if frame.is_empty() {
            return Err(Undecodable::Empty);
        }
        if frame.len() % FRAME_BYTES != 0 {
            return Err(Undecodable::Length { len: frame.len(), frame_bytes: FRAME_BYTES });
        }
        self.out.reserve(frame.len() / FRAME_BYTES * FRAME_SAMPLES * 2);
        for chunk in frame.chunks_exact(FRAME_BYTES) {
            match self.raw.decode(chunk, &mut self.scratch) {
                Some(Decoded::Frame) => self.out.push_samples(self.scratch.iter().copied()),
                Some(Decoded::Concealed) | None => {
                    self.out.discard();
                    return Err(Undecodable::Lc3);
                }
            }
        }
        Ok(self.out.take())
    }

    fn codec(&self) -> Codec {
        Codec::Lc3Fs1030
    }
}
