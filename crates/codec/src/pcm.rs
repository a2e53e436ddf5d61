//! The PCM codecs: `pcm16` (passed through) and `pcm8` (8-bit unsigned, widened).

use bytes::Bytes;
use hark_proto::Codec;

use crate::{Decoder, Output, Undecodable};

/// `pcm16`: the frame already is s16le mono PCM and is handed on as it is, without
/// a copy. Like omi, Hark treats it as a byte stream: a frame of odd length is
/// passed on too (the next frame carries the other half of the sample), so
/// `decode` never fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pcm16Decoder;

impl Decoder for Pcm16Decoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        Ok(frame)
    }

    fn codec(&self) -> Codec {
        Codec::Pcm16
    }
}

/// `pcm8`: unsigned 8-bit mono PCM, as omi decodes it: `(byte − 128) << 8`, so
/// 0x80 is silence, 0x00 is −32768 and 0xFF is 32512. Every byte is a sample, so
/// any non-empty frame decodes.
#[derive(Debug, Default)]
pub struct Pcm8Decoder {
    out: Output,
}

impl Pcm8Decoder {
    /// A decoder with an empty output buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One unsigned 8-bit sample as 16-bit signed PCM.
pub fn pcm8_to_pcm16(byte: u8) -> i16 {
    (i16::from(byte) - 128) << 8
}

/// One 16-bit sample as unsigned 8-bit PCM: rounded to the nearest step of 256,
/// offset by 128.
pub fn pcm16_to_pcm8(sample: i16) -> u8 {
    // Rounded, in -128..=127 once clamped; +128 is in 0..=255.
    let step = ((i32::from(sample) + 128) >> 8).min(127);
    (step + 128) as u8
}

impl Decoder for Pcm8Decoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        if frame.is_empty() {
            return Err(Undecodable::Empty);
        }
        self.out.reserve(frame.len() * 2);
        self.out.push_samples(frame.iter().map(|&b| pcm8_to_pcm16(b)));
        Ok(self.out.take())
    }

    fn codec(&self) -> Codec {
        Codec::Pcm8
    }
}
