//! ADTS (Audio Data Transport Stream, ISO/IEC 13818-7 and 14496-3) frame headers:
//! the 7- or 9-byte header in front of each AAC frame that says how long the frame
//! is and how to decode it.

use crate::Undecodable;

/// The sampling frequencies an ADTS header can name, by index (13..=15 reserved).
pub const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Length of a header without CRC.
pub const HEADER_BYTES: usize = 7;
/// Length of the CRC that follows the header when `protection_absent` is 0.
pub const CRC_BYTES: usize = 2;

/// One parsed ADTS header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// MPEG-4 audio object type (`profile + 1`): 2 is AAC-LC.
    pub object_type: u8,
    /// Index into [`SAMPLE_RATES`].
    pub sample_rate_index: u8,
    /// The sampling frequency in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 mono, 2 stereo, 0 "in a program config element").
    pub channel_config: u8,
    /// Bytes before the raw AAC payload (7, or 9 with a CRC).
    pub header_len: usize,
    /// Bytes of the whole frame, header included.
    pub frame_len: usize,
    /// Raw data blocks in the frame (the field + 1).
    pub raw_data_blocks: u8,
}

impl Header {
    /// Parses the header at the start of `bytes` (which may hold more frames after
    /// this one). Checks the framing only; whether the frame can be decoded is the
    /// decoder's business.
    pub fn parse(bytes: &[u8]) -> Result<Header, Undecodable> {
        let Some(b) = bytes.first_chunk::<HEADER_BYTES>() else {
            return Err(Undecodable::Adts("shorter than a header"));
        };
        if b[0] != 0xFF || b[1] & 0xF0 != 0xF0 {
            return Err(Undecodable::Adts("no sync word"));
        }
        if b[1] & 0x06 != 0 {
            return Err(Undecodable::Adts("layer is not 0"));
        }
        let protection_absent = b[1] & 0x01 == 1;
        let object_type = (b[2] >> 6) + 1;
        let sample_rate_index = (b[2] >> 2) & 0x0F;
        let sample_rate = *SAMPLE_RATES
            .get(usize::from(sample_rate_index))
            .ok_or(Undecodable::Adts("reserved sampling frequency index"))?;
        let channel_config = ((b[2] & 0x01) << 2) | (b[3] >> 6);
        let frame_len =
            (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
        let raw_data_blocks = (b[6] & 0x03) + 1;
        let header_len = if protection_absent { HEADER_BYTES } else { HEADER_BYTES + CRC_BYTES };
        if frame_len <= header_len {
            return Err(Undecodable::Adts("frame length shorter than its header"));
        }
        Ok(Header {
            object_type,
            sample_rate_index,
            sample_rate,
            channel_config,
            header_len,
            frame_len,
            raw_data_blocks,
        })
    }

    /// The two-byte MPEG-4 AudioSpecificConfig this header implies.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        [
            (self.object_type << 3) | (self.sample_rate_index >> 1),
            ((self.sample_rate_index & 1) << 7) | (self.channel_config << 3),
        ]
    }

    /// A header for an AAC-LC frame of `payload_len` bytes, without CRC (what an
    /// encoder writes in front of each raw frame).
    pub fn lc(sample_rate_index: u8, channel_config: u8, payload_len: usize) -> [u8; HEADER_BYTES] {
        let len = payload_len + HEADER_BYTES;
        let fullness = 0x7FFu16; // "variable bit rate"
        [
            0xFF,
            0xF1, // MPEG-4, layer 0, no CRC
            (1 << 6) | ((sample_rate_index & 0x0F) << 2) | ((channel_config >> 2) & 1),
            ((channel_config & 3) << 6) | ((len >> 11) & 0x03) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 0x07) as u8) << 5) | ((fullness >> 6) as u8 & 0x1F),
            (((fullness & 0x3F) as u8) << 2), // one raw data block
        ]
    }
}

/// Splits `bytes` into whole ADTS frames: each `(header, frame bytes)`, the last
/// ending exactly at the end. A frame cut short or trailing bytes are an error.
pub fn frames(bytes: &[u8]) -> impl Iterator<Item = Result<(Header, &[u8]), Undecodable>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let result = Header::parse(rest).and_then(|header| {
            let frame = rest.get(..header.frame_len).ok_or(Undecodable::Adts("frame cut short"))?;
            Ok((header, frame))
        });
        match &result {
            Ok((_, frame)) => rest = &rest[frame.len()..],
            Err(_) => rest = &[],
        }
        Some(result)
    })
}
