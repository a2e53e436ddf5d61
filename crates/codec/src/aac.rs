//! `aac`: AAC-LC in ADTS framing, decoded by symphonia's pure-Rust AAC decoder.
//!
//! omi's AAC device (Bee) reassembles BLE packets into whole ADTS frames and sends
//! one per binary message; omi's backend hands each message to FFmpeg as one
//! packet. Here a binary frame is one or more *whole* ADTS frames (each 1024
//! samples once decoded); a frame cut across two messages, trailing bytes, or a
//! frame with several raw data blocks is [`Undecodable::Adts`].
//!
//! **Sample rate**: the ADTS header carries its own rate. Hark does not resample:
//! a frame whose header names a rate other than the session's `sample_rate` is
//! [`Undecodable::AacSampleRate`], so a client that declared the wrong rate gets
//! its session closed (1003, after `--max-decode-failures` frames in a row) with a
//! reason that says so, instead of a transcript of audio played at the wrong speed.
//! (omi resamples to the declared rate instead; `proto/README.md` lists this among
//! the differences.)
//!
//! **Channels**: mono, and stereo downmixed to mono (the mean of the two), as omi
//! does. Other channel configurations are refused.
//!
//! The ADTS CRC, when present, is skipped, not checked (FFmpeg does not check it
//! either). symphonia rejects payloads that do not parse as AAC-LC
//! ([`Undecodable::Aac`]); a payload that parses is audio as far as anyone can tell.

use bytes::Bytes;
use hark_proto::Codec;
use symphonia_core::audio::{Audio, GenericAudioBufferRef};
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::errors::Error as SymphoniaError;
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

use crate::adts::{self, Header};
use crate::{Decoder, Output, Undecodable};

/// Samples per channel in one AAC-LC frame.
pub const FRAME_SAMPLES: usize = 1024;
/// MPEG-4 audio object type of AAC-LC.
const OBJECT_TYPE_LC: u8 = 2;

/// One session's AAC decoder.
pub struct AacDecoder {
    sample_rate: u32,
    /// symphonia's decoder and the (rate index, channel config) it was made for;
    /// made on the first frame, and again only if a frame's configuration changes.
    inner: Option<(symphonia_codec_aac::AacDecoder, (u8, u8))>,
    out: Output,
}

impl std::fmt::Debug for AacDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacDecoder").field("sample_rate", &self.sample_rate).finish_non_exhaustive()
    }
}

impl AacDecoder {
    /// A decoder for a session at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        Self { sample_rate, inner: None, out: Output::default() }
    }

    fn decode_one(&mut self, header: &Header, frame: &[u8]) -> Result<(), Undecodable> {
        if header.object_type != OBJECT_TYPE_LC {
            return Err(Undecodable::Adts("not AAC-LC"));
        }
        if header.sample_rate != self.sample_rate {
            return Err(Undecodable::AacSampleRate {
                frame: header.sample_rate,
                session: self.sample_rate,
            });
        }
        if !(1..=2).contains(&header.channel_config) {
            return Err(Undecodable::Adts("not mono or stereo"));
        }
        if header.raw_data_blocks != 1 {
            return Err(Undecodable::Adts("several raw data blocks in one frame"));
        }
        let payload = frame.get(header.header_len..).ok_or(Undecodable::Adts("no payload"))?;
        let packet =
            PacketRef::new(0, Timestamp::new(0), Duration::new(FRAME_SAMPLES as u64), payload);
        let decoder = inner_for(&mut self.inner, header)?;
        let decoded = decoder.decode_ref(&packet).map_err(aac_error)?;
        let GenericAudioBufferRef::F32(buf) = decoded else {
            return Err(Undecodable::Aac("unexpected sample format"));
        };
        let frames = buf.frames();
        let left =
            buf.plane(0).and_then(|p| p.get(..frames)).ok_or(Undecodable::Aac("no audio"))?;
        let right = match header.channel_config {
            2 => Some(
                buf.plane(1).and_then(|p| p.get(..frames)).ok_or(Undecodable::Aac("no audio"))?,
            ),
            _ => None,
        };
        self.out.reserve(frames * 2);
        match right {
            None => self.out.push_samples(left.iter().map(|&s| to_i16(s))),
            Some(right) => {
                self.out.push_samples(left.iter().zip(right).map(|(&l, &r)| to_i16((l + r) * 0.5)))
            }
        }
        Ok(())
    }
}

/// symphonia's decoder for this header's configuration, made when there is none
/// yet or the configuration changed.
fn inner_for<'a>(
    inner: &'a mut Option<(symphonia_codec_aac::AacDecoder, (u8, u8))>,
    header: &Header,
) -> Result<&'a mut symphonia_codec_aac::AacDecoder, Undecodable> {
    let key = (header.sample_rate_index, header.channel_config);
    if inner.as_ref().is_none_or(|(_, made_for)| *made_for != key) {
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC).with_sample_rate(header.sample_rate);
        params.extra_data = Some(Box::new(header.audio_specific_config()));
        let decoder =
            symphonia_codec_aac::AacDecoder::try_new(&params, &AudioDecoderOptions::default())
                .map_err(aac_error)?;
        *inner = Some((decoder, key));
    }
    match inner {
        Some((decoder, _)) => Ok(decoder),
        None => Err(Undecodable::Aac("no decoder")),
    }
}

/// A float sample in −1..1 as 16-bit PCM, clipped.
fn to_i16(sample: f32) -> i16 {
    // `as` saturates (and maps NaN to 0).
    (sample * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

fn aac_error(error: SymphoniaError) -> Undecodable {
    Undecodable::Aac(match error {
        SymphoniaError::DecodeError(what) => what,
        SymphoniaError::Unsupported(what) => what,
        SymphoniaError::LimitError(what) => what,
        SymphoniaError::IoError(_) => "payload ends early",
        _ => "decoder error",
    })
}

impl Decoder for AacDecoder {
    fn decode(&mut self, frame: Bytes) -> Result<Bytes, Undecodable> {
        if frame.is_empty() {
            return Err(Undecodable::Empty);
        }
        for next in adts::frames(&frame) {
            let result = next.and_then(|(header, bytes)| self.decode_one(&header, bytes));
            if let Err(error) = result {
                self.out.discard();
                return Err(error);
            }
        }
        Ok(self.out.take())
    }

    fn codec(&self) -> Codec {
        Codec::Aac
    }
}
