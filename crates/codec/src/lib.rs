//! Hark's device audio codecs: every binary audio frame a client sends is decoded
//! here into little-endian signed 16-bit mono PCM at the session's sample rate
//! (design §3, "Codecs"); nothing downstream sees anything else.
//!
//! One trait, [`Decoder`], and one type per codec, chosen once per session by
//! [`decoder`] — the way symphonia keeps its `Decoder` trait apart from its codec
//! registry. The session holds a `Box<dyn Decoder>` and never matches on codec
//! names.
//!
//! | codec | one binary frame | type |
//! |---|---|---|
//! | `pcm16` | s16le mono PCM, passed through without a copy | [`pcm::Pcm16Decoder`] |
//! | `pcm8` | unsigned 8-bit PCM | [`pcm::Pcm8Decoder`] |
//! | `mulaw` | G.711 µ-law | [`mulaw::MulawDecoder`] |
//! | `opus`, `opus_fs320` | one Opus packet | [`opus::OpusDecoder`] (libopus) |
//! | `lc3_fs1030` | one or more 30-byte LC3 frames (10 ms, 16 kHz) | [`lc3::Lc3Decoder`] (liblc3) |
//! | `aac` | one or more whole ADTS frames (AAC-LC) | [`aac::AacDecoder`] (symphonia) |
//!
//! With the `encoders` feature, [`Encoder`] turns PCM16 into the frames a device
//! sends, for tests and load tests.

use bytes::{Bytes, BytesMut};
use hark_proto::Codec;

pub mod aac;
pub mod adts;
pub mod lc3;
pub mod mulaw;
pub mod opus;
pub mod pcm;

#[cfg(feature = "encoders")]
mod encode;
#[cfg(feature = "encoders")]
pub use encode::{device_frames, encode_clip, encoder, EncodeError, Encoder};

/// Decodes one codec's client frames into PCM16.
///
/// A decoder belongs to one session: it keeps the codec's state between frames
/// (Opus, LC3 and AAC predict from earlier frames), so frames must be given in the
/// order the client sent them. It is `Send` so the session can own it on any task;
/// decoding never blocks, locks or touches anything shared.
///
/// Keep-alive frames (at most [`hark_proto::client::KEEPALIVE_MAX_BYTES`] bytes)
/// are not audio: the session filters them out and never hands them to a decoder.
/// A decoder given one anyway treats it as a (usually undecodable) frame.
pub trait Decoder: Send + 'static {
    /// Decodes one client binary frame into little-endian signed 16-bit mono PCM at
    /// the session's sample rate.
    ///
    /// `Err` means the frame carried no audio this decoder could vouch for; the
    /// session skips and counts it. A decoder never panics on its input and never
    /// turns a frame its library reports as corrupt into audio (see each type for
    /// what its library can and cannot detect).
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable>;

    /// The codec this decoder decodes (the `codec` metric label is its `as_str`).
    fn codec(&self) -> Codec;
}

/// The decoder for a session's codec and sample rate, chosen once at the upgrade.
///
/// Fails only for combinations `ListenParams::parse` already refuses (a sample
/// rate the codec cannot run at) or when a codec library cannot set up.
pub fn decoder(codec: Codec, sample_rate: u32) -> Result<Box<dyn Decoder>, CodecError> {
    if !hark_proto::client::SAMPLE_RATES.contains(&sample_rate)
        || !codec.allows_sample_rate(sample_rate)
    {
        return Err(CodecError::SampleRate { codec, sample_rate });
    }
    Ok(match codec {
        Codec::Pcm16 => Box::new(pcm::Pcm16Decoder),
        Codec::Pcm8 => Box::new(pcm::Pcm8Decoder::new()),
        Codec::Mulaw => Box::new(mulaw::MulawDecoder::new()),
        Codec::Opus | Codec::OpusFs320 => Box::new(opus::OpusDecoder::new(codec, sample_rate)?),
        Codec::Lc3Fs1030 => Box::new(lc3::Lc3Decoder::new()?),
        Codec::Aac => Box::new(aac::AacDecoder::new(sample_rate)),
    })
}

/// Why a decoder could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The codec cannot run at this sample rate (`ListenParams::parse` refuses it).
    #[error("codec {codec} cannot be decoded at {sample_rate} Hz")]
    SampleRate {
        /// The codec.
        codec: Codec,
        /// The rate asked for.
        sample_rate: u32,
    },
    /// libopus refused to create a decoder.
    #[error("libopus: {0}")]
    Opus(&'static str),
    /// liblc3 refused its parameters.
    #[error("liblc3 refused its setup (10 ms at 16000 Hz)")]
    Lc3Setup,
}

/// Why one frame did not decode. Cheap to make (no allocation): a hostile client
/// can send many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// The frame's length is not a whole number of codec frames.
    #[error("{len} bytes is not a whole number of {frame_bytes}-byte frames")]
    Length {
        /// The frame's length.
        len: usize,
        /// The codec's frame size.
        frame_bytes: usize,
    },
    /// libopus rejected the packet.
    #[error("opus: {0}")]
    Opus(&'static str),
    /// liblc3 found the bitstream corrupt (it would have concealed the frame).
    #[error("lc3: corrupt frame")]
    Lc3,
    /// The ADTS framing is wrong or unsupported.
    #[error("adts: {0}")]
    Adts(&'static str),
    /// The ADTS header names a sample rate other than the session's.
    #[error("aac frame at {frame} Hz in a {session} Hz session")]
    AacSampleRate {
        /// The rate in the ADTS header.
        frame: u32,
        /// The session's `sample_rate`.
        session: u32,
    },
    /// The AAC decoder rejected the frame's payload.
    #[error("aac: {0}")]
    Aac(&'static str),
}

/// Bytes a decoder reserves at a time for its output: decoded frames are carved
/// out of one allocation (`split().freeze()`), so a 640-byte frame costs an
/// allocation about once per second of audio, not per frame.
const OUTPUT_CHUNK: usize = 32 * 1024;

/// A decoder's output buffer: reusable, handing out each frame's PCM as `Bytes`.
#[derive(Debug, Default)]
struct Output {
    buf: BytesMut,
}

impl Output {
    /// Room for `bytes` more bytes, allocating a new chunk only when the current
    /// one is used up.
    fn reserve(&mut self, bytes: usize) {
        if self.buf.capacity() - self.buf.len() < bytes {
            self.buf.reserve(bytes.max(OUTPUT_CHUNK));
        }
    }

    /// Appends samples as little-endian bytes.
    fn push_samples(&mut self, samples: impl ExactSizeIterator<Item = i16>) {
        let start = self.buf.len();
        // One length change, then plain stores (no capacity check per sample).
        self.buf.resize(start + samples.len() * 2, 0);
        for (bytes, sample) in self.buf[start..].chunks_exact_mut(2).zip(samples) {
            bytes.copy_from_slice(&sample.to_le_bytes());
        }
    }

    /// The PCM written since the last `take`.
    fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Drops what was written since the last `take` (a frame that failed halfway).
    fn discard(&mut self) {
        self.buf.clear();
    }
}
