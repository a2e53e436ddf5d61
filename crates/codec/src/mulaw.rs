//! G.711 µ-law (ITU-T G.711, the North American / Japanese companding law): one
//! byte per sample, 14-bit dynamic range, usually at 8 kHz (telephony).
//!
//! Decoding follows the standard's expansion: the byte is complemented, its sign
//! bit, 3-bit segment (exponent) and 4-bit step (mantissa) give
//! `((mantissa << 3) + 0x84) << exponent − 0x84`, which lands on ±0..=±32124 in
//! 16-bit PCM. Encoding is the inverse with the usual bias of 0x84 and clipping at
//! 32635.

use bytes::Bytes;
use hark_proto::Codec;

use crate::{Decoder, Output, Undecodable};

/// Bias added before encoding (and removed after decoding): 33 in 14-bit units.
const BIAS: i32 = 0x84;
/// Largest magnitude the encoder represents; louder samples are clipped to it.
const CLIP: i32 = 32_635;

/// The 16-bit sample every µ-law byte stands for.
pub const MULAW_TO_PCM16: [i16; 256] = expansion_table();

const fn expansion_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let u = !(i as u8);
        let exponent = ((u >> 4) & 0x07) as i32;
        let mantissa = (u & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        table[i] = if u & 0x80 != 0 { -magnitude as i16 } else { magnitude as i16 };
        i += 1;
    }
    table
}

/// One µ-law byte as 16-bit PCM.
pub fn mulaw_to_pcm16(byte: u8) -> i16 {
    MULAW_TO_PCM16[usize::from(byte)]
}

/// One 16-bit sample as µ-law.
pub fn pcm16_to_mulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let sign: u8 = if sample < 0 { 0x80 } else { 0 };
    let magnitude = sample.abs().min(CLIP) + BIAS;
    // The segment is the position of the highest set bit above bit 7.
    let exponent = (31 - magnitude.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | ((exponent as u8) << 4) | mantissa as u8)
}

/// `mulaw`: every byte is a sample, so any non-empty frame decodes.
#[derive(Debug, Default)]
pub struct MulawDecoder {
    out: Output,
}

impl MulawDecoder {
    /// A decoder with an empty output buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for MulawDecoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        if frame.is_empty() {
            return Err(Undecodable::Empty);
        }
        self.out.reserve(frame.len() * 2);
        self.out.push_samples(frame.iter().map(|&b| mulaw_to_pcm16(b)));
        Ok(self.out.take())
    }

    fn codec(&self) -> Codec {
        Codec::Mulaw
    }
}
