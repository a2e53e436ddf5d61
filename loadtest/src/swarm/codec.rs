//! What a swarm client streams in: the codec mix (`--codec opus=60,pcm16=40`),
//! and per connection a [`Link`] that turns each tick's PCM into device frames
//! and tells the matcher what hark will decode from them.
//!
//! Latency matching runs fake-stt's recogniser over the audio a client sends. With
//! a lossy codec fake-stt hears hark's *decoded* audio, not the original, so the
//! link decodes its own frames with the same `hark-codec` decoder hark uses, in
//! the same order from a fresh decoder per connection (hark makes one per
//! session): the matcher then sees, sample for sample, what fake-stt will hear.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use bytes::Bytes;
use hark_codec::{Decoder, Encoder};
use hark_proto::Codec;

/// Codecs and their shares of the clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecMix {
    /// `(codec, weight)`, weights positive.
    shares: Vec<(Codec, u32)>,
}

impl Default for CodecMix {
    fn default() -> Self {
        Self { shares: vec![(Codec::Pcm16, 1)] }
    }
}

impl CodecMix {
    /// Every client in one codec.
    pub fn single(codec: Codec) -> Self {
        Self { shares: vec![(codec, 1)] }
    }

    /// The codec of client `index` of `clients`: clients are dealt out in
    /// proportion to the weights, in the order given (`opus=60,pcm16=40` with 10
    /// clients: 0..6 opus, 6..10 pcm16).
    pub fn for_client(&self, index: usize, clients: usize) -> Codec {
        let total: u64 = self.shares.iter().map(|&(_, w)| u64::from(w)).sum();
        // The client's position in [0, total), at the middle of its slot.
        let at = (2 * index as u64 + 1) * total / (2 * clients.max(1) as u64);
        let mut bound = 0;
        for &(codec, weight) in &self.shares {
            bound += u64::from(weight);
            if at < bound {
                return codec;
            }
        }
        self.shares.last().map_or(Codec::Pcm16, |&(codec, _)| codec)
    }

    /// Checks every codec can be streamed at `sample_rate`.
    pub fn check(&self, sample_rate: u32) -> anyhow::Result<()> {
        for &(codec, _) in &self.shares {
            if codec == Codec::Aac {
                anyhow::bail!(
                    "swarm cannot stream aac: its encoder (ffmpeg) works on whole clips, not in \
                     real time per client"
                );
            }
            if !codec.allows_sample_rate(sample_rate) {
                anyhow::bail!(
                    "codec {codec} cannot be sent at {sample_rate} Hz (it takes {:?} Hz); \
                     set --sample-rate",
                    codec.sample_rates().unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    /// The codecs in the mix.
    pub fn codecs(&self) -> impl Iterator<Item = Codec> + '_ {
        self.shares.iter().map(|&(codec, _)| codec)
    }
}

impl FromStr for CodecMix {
    type Err = String;

    /// `opus`, or `opus=60,lc3_fs1030=30,pcm16=10`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut shares = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((name, weight)) => {
                    let weight: u32 = weight
                        .trim()
                        .parse()
                        .map_err(|_| format!("{part:?}: the share must be a whole number"))?;
                    (name.trim(), weight)
                }
                None => (part, 1),
            };
            let codec = Codec::from_query(name).ok_or_else(|| {
                let names: Vec<&str> = Codec::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown codec {name:?} (codecs: {})", names.join(", "))
            })?;
            if weight == 0 {
                return Err(format!("{part:?}: a share must be positive"));
            }
            if shares.iter().any(|&(c, _)| c == codec) {
                return Err(format!("{name} is listed twice"));
            }
            shares.push((codec, weight));
        }
        if shares.is_empty() {
            return Err("no codec given".into());
        }
        Ok(Self { shares })
    }
}

impl fmt::Display for CodecMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.shares.iter().map(|(c, w)| format!("{c}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// One connection's encoder and its twin of hark's decoder.
pub struct Link {
    codec: Codec,
    /// `None` for `pcm16`: the PCM is the frame.
    coder: Option<(Box<dyn Encoder>, Box<dyn Decoder>)>,
    samples: Vec<i16>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("codec", &self.codec).finish_non_exhaustive()
    }
}

/// One tick's worth of what to send and what hark will make of it.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The binary frames to send, in order (none when the codec is still filling
    /// a frame).
    pub frames: Vec<Bytes>,
    /// The PCM16 hark decodes from `frames` (what fake-stt hears).
    pub decoded: Vec<u8>,
}

impl Link {
    /// A fresh link (new encoder, new decoder), as for a new session.
    pub fn new(codec: Codec, sample_rate: u32) -> anyhow::Result<Self> {
        let coder = match codec {
            Codec::Pcm16 => None,
            _ => Some((
                hark_codec::encoder(codec, sample_rate)
                    .with_context(|| format!("{codec} encoder at {sample_rate} Hz"))?,
                hark_codec::decoder(codec, sample_rate)
                    .with_context(|| format!("{codec} decoder at {sample_rate} Hz"))?,
            )),
        };
        Ok(Self { codec, coder, samples: Vec::new() })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Encodes one tick of PCM16 (little-endian): the device frames it completes,
    /// and what hark's decoder makes of them.
    pub fn encode(&mut self, pcm: &Bytes) -> anyhow::Result<Encoded> {
        let Some((encoder, decoder)) = &mut self.coder else {
            return Ok(Encoded { frames: vec![pcm.clone()], decoded: pcm.to_vec() });
        };
        self.samples.clear();
        self.samples.extend(pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
        let mut out = Encoded::default();
        encoder.encode(&self.samples, &mut out.frames).context("encoding")?;
        for frame in &out.frames {
            let pcm = decoder.decode(frame.clone()).map_err(|e| {
                anyhow::anyhow!("{} frame the client made does not decode: {e}", self.codec)
            })?;
            out.decoded.extend_from_slice(&pcm);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::swarm::audio::{AudioStream, Frame, Script, Source};
    use crate::swarm::matcher::{Matched, Matcher};
    use hark_fakes::fake_stt::transcribe::{Chunk, Chunker};

    #[test]
    fn mixes_parse_and_deal_clients_in_proportion() {
        let mix: CodecMix = "opus=60,lc3_fs1030=30,pcm16=10".parse().unwrap();
        assert_eq!(mix.to_string(), "opus=60,lc3_fs1030=30,pcm16=10");
        let dealt: Vec<Codec> = (0..10).map(|i| mix.for_client(i, 10)).collect();
        let count = |c| dealt.iter().filter(|&&d| d == c).count();
        assert_eq!((count(Codec::Opus), count(Codec::Lc3Fs1030), count(Codec::Pcm16)), (6, 3, 1));
        let many: Vec<Codec> = (0..1000).map(|i| mix.for_client(i, 1000)).collect();
        assert_eq!(many.iter().filter(|&&c| c == Codec::Opus).count(), 600);
        // One client gets the first codec; a bare name is a mix of one.
        assert_eq!(mix.for_client(0, 1), Codec::Opus);
        assert_eq!("mulaw".parse::<CodecMix>().unwrap(), CodecMix::single(Codec::Mulaw));
        for bad in ["", "mp3", "opus=0", "opus=x", "opus,opus", "lc3"] {
            assert!(bad.parse::<CodecMix>().is_err(), "{bad:?}");
        }
        let err = "mp3".parse::<CodecMix>().unwrap_err();
        assert!(err.contains("opus_fs320") && err.contains("lc3_fs1030"), "{err}");
    }

    #[test]
    fn impossible_mixes_are_refused_before_the_run() {
        assert!(CodecMix::single(Codec::Lc3Fs1030).check(16_000).is_ok());
        assert!(CodecMix::single(Codec::Lc3Fs1030).check(8_000).is_err());
        assert!(CodecMix::single(Codec::Opus).check(44_100).is_err());
        assert!(CodecMix::single(Codec::Aac).check(16_000).is_err());
        assert!("pcm8,mulaw,pcm16".parse::<CodecMix>().unwrap().check(44_100).is_ok());
    }

    /// What makes latency matching work with lossy codecs: the words the client
    /// predicts from its link are exactly the words fake-stt hears in what hark
    /// decodes from the same frames. Hark is played by a separate decoder here.
    #[test]
    fn the_matcher_predicts_what_fake_stt_hears_for_every_codec() {
        let script = Source::Generated(Script {
            words_per_utterance: 3,
            talk: Duration::from_secs(6),
            pause: Duration::from_secs(1),
        });
        for (codec, rate) in [
            (Codec::Pcm16, 8_000),
            (Codec::Pcm8, 8_000),
            (Codec::Mulaw, 8_000),
            (Codec::Opus, 16_000),
            (Codec::OpusFs320, 48_000),
            (Codec::Lc3Fs1030, 16_000),
        ] {
            let mut stream = AudioStream::new(script.clone(), rate, Duration::from_millis(100), 5);
            let mut link = Link::new(codec, rate).unwrap();
            let mut hark = hark_codec::decoder(codec, rate).unwrap();
            let mut fake_stt = Chunker::new(rate);
            let mut matcher = Matcher::new(rate);
            let now = tokio::time::Instant::now();
            let (mut heard, mut matched, mut lossy) = (0, 0, false);
            for _ in 0..200 {
                let Frame::Audio(pcm) = stream.next_frame() else { continue };
                let encoded = link.encode(&pcm).unwrap();
                matcher.sent(&encoded.decoded, now, 0, stream.block());
                if codec != Codec::Pcm16 && !encoded.frames.is_empty() {
                    // Lossy: what hark hears is not what the script said.
                    lossy |= encoded.decoded[..] != pcm[..encoded.decoded.len().min(pcm.len())];
                }
                let mut hark_heard = Vec::new();
                for frame in encoded.frames {
                    let decoded = hark.decode(frame).unwrap();
                    hark_heard.extend_from_slice(&decoded);
                    let mut words = Vec::new();
                    fake_stt.push(&decoded, |chunk| {
                        if let Chunk::Word { vocab, .. } = chunk {
                            words.push(vocab);
                        }
                    });
                    for vocab in words {
                        heard += 1;
                        match matcher.received(hark_fakes::fake_stt::VOCAB[vocab], now) {
                            Matched::Word { skipped: 0, .. } => matched += 1,
                            other => panic!("{codec}: word {heard} did not match: {other:?}"),
                        }
                    }
                }
                assert_eq!(hark_heard, encoded.decoded, "{codec}: the twin decoded otherwise");
            }
            assert!(heard > 20, "{codec}: only {heard} words");
            assert_eq!(lossy, codec != Codec::Pcm16, "{codec}");
            assert_eq!(matched, heard, "{codec}");
        }
    }
}
