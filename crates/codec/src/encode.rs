//! Encoders: PCM16 mono in, the binary frames a device sends out. For tests,
//! benches and `hark-loadtest` (feature `encoders`); the gateway never encodes.
//!
//! | codec | one frame | how |
//! |---|---|---|
//! | `pcm16`, `pcm8`, `mulaw` | all the samples of one `encode` call | by hand |
//! | `opus` | 10 ms (160 samples at 16 kHz) | libopus, as omi's firmware sets it up |
//! | `opus_fs320` | 20 ms (320 samples at 16 kHz) | libopus, likewise |
//! | `lc3_fs1030` | 10 ms, 30 bytes | liblc3 |
//! | `aac` | one ADTS frame (1024 samples), whole clips only | FFmpeg's native `aac` encoder, run as `ffmpeg` |
//!
//! omi's firmware encodes Opus with `OPUS_APPLICATION_RESTRICTED_LOWDELAY` (CELT
//! only), 32 kb/s, unconstrained VBR, complexity 3; so do these encoders.
//!
//! Opus frames are time-based so every Opus rate works (160 samples is 10 ms only
//! at 16 kHz; 3.3 ms at 48 kHz is not an Opus frame size).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use hark_proto::Codec;
use opusic_c::{Application, Bitrate, Channels};

use crate::lc3::ffi::RawEncoder;
use crate::{adts, lc3, mulaw, pcm};

/// Opus bit rate of the encoders, b/s.
pub const OPUS_BITRATE: u32 = 32_000;
/// Opus encoder complexity (0..=10).
pub const OPUS_COMPLEXITY: u8 = 3;
/// AAC bit rate of the clip encoder, b/s.
pub const AAC_BITRATE: u32 = 32_000;

/// Turns PCM16 mono at the session's rate into device frames.
pub trait Encoder: Send {
    /// Encodes `pcm`, appending every frame it completes to `out`. Samples short
    /// of a whole codec frame wait for the next call (PCM codecs: each call is one
    /// frame).
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError>;

    /// Pads the waiting samples with silence to a whole frame and encodes it.
    fn flush(&mut self, out: &mut Vec<Bytes>) -> Result<(), EncodeError>;

    /// The codec.
    fn codec(&self) -> Codec;

    /// Samples per frame (`None` for PCM codecs: a frame is whatever one call gave).
    fn frame_samples(&self) -> Option<usize>;
}

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The codec cannot run at this rate.
    #[error("codec {codec} cannot be encoded at {sample_rate} Hz")]
    SampleRate {
        /// The codec.
        codec: Codec,
        /// The rate asked for.
        sample_rate: u32,
    },
    /// AAC is encoded a whole clip at a time ([`encode_clip`]), not frame by frame.
    #[error("codec {0} has no streaming encoder; use encode_clip")]
    NotStreaming(Codec),
    /// libopus failed.
    #[error("libopus: {0}")]
    Opus(&'static str),
    /// liblc3 refused its setup or a frame.
    #[error("liblc3 failed")]
    Lc3,
    /// Running `ffmpeg` failed.
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    /// `ffmpeg`'s output did not split into ADTS frames.
    #[error("ffmpeg wrote something other than ADTS frames: {0}")]
    Adts(crate::Undecodable),
}

/// A streaming encoder for `codec` at `sample_rate` (every codec but `aac`).
pub fn encoder(codec: Codec, sample_rate: u32) -> Result<Box<dyn Encoder>, EncodeError> {
    if !hark_proto::client::SAMPLE_RATES.contains(&sample_rate)
        || !codec.allows_sample_rate(sample_rate)
    {
        return Err(EncodeError::SampleRate { codec, sample_rate });
    }
    Ok(match codec {
        Codec::Pcm16 | Codec::Pcm8 | Codec::Mulaw => Box::new(PcmEncoder { codec }),
        Codec::Opus | Codec::OpusFs320 => Box::new(OpusEncoder::new(codec, sample_rate)?),
        Codec::Lc3Fs1030 => Box::new(Lc3Encoder::new()?),
        Codec::Aac => return Err(EncodeError::NotStreaming(codec)),
    })
}

/// Encodes a whole clip into device frames (the last padded with silence); the
/// one way to encode `aac`, which runs `ffmpeg` (Debian's `ffmpeg` package).
pub fn encode_clip(codec: Codec, sample_rate: u32, pcm: &[i16]) -> Result<Vec<Bytes>, EncodeError> {
    if codec == Codec::Aac {
        if !codec.allows_sample_rate(sample_rate) {
            return Err(EncodeError::SampleRate { codec, sample_rate });
        }
        return aac_clip(sample_rate, pcm);
    }
    let mut encoder = encoder(codec, sample_rate)?;
    let mut frames = Vec::new();
    encoder.encode(pcm, &mut frames)?;
    encoder.flush(&mut frames)?;
    Ok(frames)
}

/// The frames a device streams for a clip: PCM (`pcm16`, `pcm8`, `mulaw`) in 20 ms
/// frames, every other codec in its own packets ([`encode_clip`]).
pub fn device_frames(
    codec: Codec,
    sample_rate: u32,
    pcm: &[i16],
) -> Result<Vec<Bytes>, EncodeError> {
    match codec {
        Codec::Pcm16 | Codec::Pcm8 | Codec::Mulaw => {
            let mut encoder = encoder(codec, sample_rate)?;
            let mut frames = Vec::new();
            for chunk in pcm.chunks((sample_rate as usize / 50).max(1)) {
                encoder.encode(chunk, &mut frames)?;
            }
            Ok(frames)
        }
        _ => encode_clip(codec, sample_rate, pcm),
    }
}

/// `pcm16`, `pcm8`, `mulaw`: one frame per call.
struct PcmEncoder {
    codec: Codec,
}

impl Encoder for PcmEncoder {
    fn encode(&mut self, samples: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        if samples.is_empty() {
            return Ok(());
        }
        let frame: Vec<u8> = match self.codec {
            Codec::Pcm8 => samples.iter().map(|&s| pcm::pcm16_to_pcm8(s)).collect(),
            Codec::Mulaw => samples.iter().map(|&s| mulaw::pcm16_to_mulaw(s)).collect(),
            _ => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        };
        out.push(Bytes::from(frame));
        Ok(())
    }

    fn flush(&mut self, _out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        Ok(())
    }

    fn codec(&self) -> Codec {
        self.codec
    }

    fn frame_samples(&self) -> Option<usize> {
        None
    }
}

/// Collects samples into whole frames.
struct Framer {
    frame: usize,
    pending: Vec<i16>,
}

impl Framer {
    fn new(frame: usize) -> Self {
        Self { frame, pending: Vec::with_capacity(frame) }
    }

    /// Calls `each` with every whole frame `pcm` completes.
    fn push(
        &mut self,
        mut pcm: &[i16],
        mut each: impl FnMut(&[i16]) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        if !self.pending.is_empty() {
            let need = (self.frame - self.pending.len()).min(pcm.len());
            self.pending.extend_from_slice(&pcm[..need]);
            pcm = &pcm[need..];
            if self.pending.len() < self.frame {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.pending);
            each(&frame)?;
            self.pending = frame;
            self.pending.clear();
        }
        let mut chunks = pcm.chunks_exact(self.frame);
        for chunk in &mut chunks {
            each(chunk)?;
        }
        self.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    /// Calls `each` with the waiting samples padded to a frame, if any wait.
    fn flush(
        &mut self,
        mut each: impl FnMut(&[i16]) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.resize(self.frame, 0);
        let frame = std::mem::take(&mut self.pending);
        each(&frame)
    }
}

/// libopus, mono, set up as omi's firmware: CELT only (restricted low delay),
/// 32 kb/s, unconstrained VBR, complexity 3.
struct OpusEncoder {
    codec: Codec,
    inner: opusic_c::Encoder,
    framer: Framer,
    packet: Box<[u8]>,
    samples: Vec<u16>,
}

impl OpusEncoder {
    fn new(codec: Codec, sample_rate: u32) -> Result<Self, EncodeError> {
        let rate = crate::opus::opus_rate(codec, sample_rate)
            .map_err(|_| EncodeError::SampleRate { codec, sample_rate })?;
        let opus = |e: opusic_c::ErrorCode| EncodeError::Opus(e.message());
        let mut inner =
            opusic_c::Encoder::new(Channels::Mono, rate, Application::LowDelay).map_err(opus)?;
        inner.set_bitrate(Bitrate::Value(OPUS_BITRATE)).map_err(opus)?;
        inner.set_vbr(true).map_err(opus)?;
        inner.set_vbr_constraint(false).map_err(opus)?;
        inner.set_complexity(OPUS_COMPLEXITY).map_err(opus)?;
        // 10 ms for `opus` (160 samples at 16 kHz), 20 ms for `opus_fs320`.
        let per_second = if codec == Codec::OpusFs320 { 50 } else { 100 };
        let frame = sample_rate as usize / per_second;
        Ok(Self {
            codec,
            inner,
            framer: Framer::new(frame),
            packet: vec![0; 1500].into_boxed_slice(),
            samples: Vec::with_capacity(frame),
        })
    }
}

impl Encoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        let Self { inner, framer, packet, samples, .. } = self;
        framer.push(pcm, |frame| opus_packet(inner, samples, packet, frame, out))
    }

    fn flush(&mut self, out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        let Self { inner, framer, packet, samples, .. } = self;
        framer.flush(|frame| opus_packet(inner, samples, packet, frame, out))
    }

    fn codec(&self) -> Codec {
        self.codec
    }

    fn frame_samples(&self) -> Option<usize> {
        Some(self.framer.frame)
    }
}

fn opus_packet(
    inner: &mut opusic_c::Encoder,
    samples: &mut Vec<u16>,
    packet: &mut [u8],
    frame: &[i16],
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    samples.clear();
    // opusic-c spells `opus_int16` as u16: the same bits.
    samples.extend(frame.iter().map(|&s| s as u16));
    let len = inner.encode_to_slice(samples, packet).map_err(|e| EncodeError::Opus(e.message()))?;
    out.push(Bytes::copy_from_slice(&packet[..len]));
    Ok(())
}

/// liblc3, 10 ms frames of 30 bytes at 16 kHz.
struct Lc3Encoder {
    raw: RawEncoder,
    framer: Framer,
}

impl Lc3Encoder {
    fn new() -> Result<Self, EncodeError> {
        let raw = RawEncoder::new(lc3::FRAME_US, lc3::SAMPLE_RATE).ok_or(EncodeError::Lc3)?;
        let frame = raw.frame_samples();
        Ok(Self { raw, framer: Framer::new(frame) })
    }
}

fn lc3_frame(raw: &mut RawEncoder, frame: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
    let mut bytes = vec![0u8; lc3::FRAME_BYTES];
    raw.encode(frame, &mut bytes).ok_or(EncodeError::Lc3)?;
    out.push(Bytes::from(bytes));
    Ok(())
}

impl Encoder for Lc3Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        let Self { raw, framer } = self;
        framer.push(pcm, |frame| lc3_frame(raw, frame, out))
    }

    fn flush(&mut self, out: &mut Vec<Bytes>) -> Result<(), EncodeError> {
        let Self { raw, framer } = self;
        framer.flush(|frame| lc3_frame(raw, frame, out))
    }

    fn codec(&self) -> Codec {
        Codec::Lc3Fs1030
    }

    fn frame_samples(&self) -> Option<usize> {
        Some(self.framer.frame)
    }
}

/// Encodes a clip to AAC-LC in ADTS with `ffmpeg` (its native `aac` encoder) and
/// splits the stream into frames.
fn aac_clip(sample_rate: u32, pcm: &[i16]) -> Result<Vec<Bytes>, EncodeError> {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "s16le"])
        .args(["-ar", &sample_rate.to_string(), "-ac", "1", "-i", "pipe:0"])
        .args(["-c:a", "aac", "-b:a", &AAC_BITRATE.to_string(), "-f", "adts", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            EncodeError::Ffmpeg(format!("cannot run ffmpeg (scripts/setup.sh installs it): {e}"))
        })?;
    let input: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut stdin = child.stdin.take().ok_or_else(|| EncodeError::Ffmpeg("no stdin".into()))?;
    // Write on another thread so a full stdout pipe cannot deadlock the two.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut adts_stream = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut adts_stream).map_err(|e| EncodeError::Ffmpeg(e.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|e| EncodeError::Ffmpeg(e.to_string()))?;
    let written =
        writer.join().map_err(|_| EncodeError::Ffmpeg("writer thread panicked".into()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(EncodeError::Ffmpeg(format!("{}: {}", output.status, stderr.trim())));
    }
    written.map_err(|e| EncodeError::Ffmpeg(format!("writing PCM: {e}")))?;
    let stream = Bytes::from(adts_stream);
    let mut frames = Vec::new();
    let mut offset = 0;
    for frame in adts::frames(&stream) {
        let (_, bytes) = frame.map_err(EncodeError::Adts)?;
        frames.push(stream.slice(offset..offset + bytes.len()));
        offset += bytes.len();
    }
    Ok(frames)
}
