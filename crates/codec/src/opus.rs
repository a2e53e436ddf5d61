//! `opus` and `opus_fs320`: one Opus packet per binary frame, decoded by libopus
//! (Debian's `libopus`, through `opusic-c`) at the session's rate, mono.
//!
//! The two names differ only in the frame size devices encode (160 or 320
//! samples; 10 or 20 ms at 16 kHz). The decoder does not insist on either: an
//! Opus packet says how long it is, and the decoder is given room for the longest
//! packet Opus allows (120 ms), as omi's is, so a client that switches frame size
//! keeps its audio.
//!
//! What libopus can and cannot catch: it rejects packets whose framing is
//! impossible (a bad frame-count code, lengths that overrun the packet, more than
//! 120 ms) with `OPUS_INVALID_PACKET`, and those are [`Undecodable`]. But the bits
//! of a well-framed packet carry no checksum, and Opus decodes any of them into
//! *some* audio: a random byte string whose table-of-contents byte and length
//! happen to be valid decodes into noise, and neither libopus nor Hark can tell.
//! (The fuzz target and `tests/garbage.rs` measure how often that happens.)

use bytes::Bytes;
use hark_proto::Codec;
use opusic_c::{Channels, SampleRate};

use crate::{CodecError, Decoder, Output, Undecodable};

/// The longest packet Opus allows, in milliseconds.
pub const MAX_PACKET_MS: usize = 120;

/// One session's libopus decoder.
pub struct OpusDecoder {
    codec: Codec,
    inner: opusic_c::Decoder,
    /// Room for the longest packet at the session's rate (libopus writes here).
    scratch: Box<[u16]>,
    out: Output,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").field("codec", &self.codec).finish_non_exhaustive()
    }
}

/// libopus's name for a sample rate it supports.
pub(crate) fn opus_rate(codec: Codec, sample_rate: u32) -> Result<SampleRate, CodecError> {
    Ok(match sample_rate {
        8_000 => SampleRate::Hz8000,
        12_000 => SampleRate::Hz12000,
        16_000 => SampleRate::Hz16000,
        24_000 => SampleRate::Hz24000,
        48_000 => SampleRate::Hz48000,
        _ => return Err(CodecError::SampleRate { codec, sample_rate }),
    })
}

impl OpusDecoder {
    /// A mono decoder at `sample_rate` (8, 12, 16, 24 or 48 kHz).
    pub fn new(codec: Codec, sample_rate: u32) -> Result<Self, CodecError> {
        let rate = opus_rate(codec, sample_rate)?;
        let inner = opusic_c::Decoder::new(Channels::Mono, rate)
            .map_err(|code| CodecError::Opus(code.message()))?;
        let capacity = sample_rate as usize / 1000 * MAX_PACKET_MS;
        Ok(Self {
            codec,
            inner,
            scratch: vec![0; capacity].into_boxed_slice(),
            out: Output::default(),
        })
    }
}

impl Decoder for OpusDecoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        // libopus reads an empty packet as "lost" and conceals it: that is not
        // audio the client sent.
        if frame.is_empty() {
            return Err(Undecodable::Empty);
        }
        let samples = self
            .inner
            .decode_to_slice(&frame, &mut self.scratch, false)
            .map_err(|code| Undecodable::Opus(code.message()))?;
        let decoded = self.scratch.get(..samples).ok_or(Undecodable::Opus("sample count"))?;
        self.out.reserve(samples * 2);
        // opusic-c spells libopus's `opus_int16` as u16: the bits are the sample's.
        self.out.push_samples(decoded.iter().map(|&s| s as i16));
        Ok(self.out.take())
    }

    fn codec(&self) -> Codec {
        self.codec
    }
}
