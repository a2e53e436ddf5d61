//! Writes the seed inputs of the `decode_*` fuzz targets (`fuzz/corpus/`) from
//! real speech (`pocketsphinx-testdata`): a few frames of each codec, in the
//! targets' input format (a configuration byte, then `u16` length-prefixed
//! frames; see `fuzz/fuzz_targets/codec_frames.rs`).
//!
//! ```sh
//! cargo run -p hark-codec --features encoders --example fuzz_seeds -- fuzz/corpus
//! ```

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hark_codec::encode_clip;
use hark_proto::Codec;

fn join(config: u8, frames: &[Bytes]) -> Vec<u8> {
    let mut out = vec![config];
    for frame in frames {
        out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        out.extend_from_slice(frame);
    }
    out
}

fn speech() -> Vec<i16> {
    let bytes = std::fs::read("/usr/share/pocketsphinx/test/data/goforward.raw")
        .expect("goforward.raw (pocketsphinx-testdata)");
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let corpus = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let pcm = speech();
    // Half a second into the clip: speech, not the leading silence.
    let speech_at = |codec: Codec, rate: u32, skip: usize, take: usize| {
        let frames = encode_clip(codec, rate, &pcm).expect("encode");
        frames[skip..(skip + take).min(frames.len())].to_vec()
    };

    let raw: Vec<Bytes> = pcm[8_000..8_640]
        .chunks(160)
        .map(|c| c.iter().flat_map(|s| s.to_le_bytes()).collect())
        .collect();
    write(&corpus, "decode_pcm", "speech_pcm16", &join(0, &raw));
    let mulaw = speech_at(Codec::Mulaw, 16_000, 0, 1);
    write(&corpus, "decode_pcm", "speech_mulaw", &join(0, &[mulaw[0].slice(8_000..8_320)]));

    // Opus: config bit 7 = opus_fs320, low bits = rate index (16 kHz is 2, 48 kHz 4).
    write(
        &corpus,
        "decode_opus",
        "speech_opus_16k",
        &join(2, &speech_at(Codec::Opus, 16_000, 50, 8)),
    );
    write(
        &corpus,
        "decode_opus",
        "speech_opus_fs320_16k",
        &join(0x82, &speech_at(Codec::OpusFs320, 16_000, 25, 6)),
    );
    let tone: Vec<i16> = (0..48_000).map(|i| ((i as f64 * 0.05).sin() * 9_000.0) as i16).collect();
    let at48 = encode_clip(Codec::Opus, 48_000, &tone).expect("encode");
    write(&corpus, "decode_opus", "tone_opus_48k", &join(4, &at48[10..16]));

    // LC3: config bit 0 = pad frames to whole 30-byte frames.
    let lc3 = speech_at(Codec::Lc3Fs1030, 16_000, 50, 9);
    write(&corpus, "decode_lc3", "speech_one_per_message", &join(0, &lc3[..6]));
    let joined: Vec<Bytes> = lc3.chunks(3).map(|c| c.concat().into()).collect();
    write(&corpus, "decode_lc3", "speech_three_per_message", &join(0, &joined));

    // AAC: config bit 0 = wrap each frame in an ADTS header (so these seeds, whole
    // ADTS frames, use 0; the wrapped seed carries the payloads alone).
    let aac = speech_at(Codec::Aac, 16_000, 8, 5);
    write(&corpus, "decode_aac", "speech_adts", &join(0, &aac));
    write(
        &corpus,
        "decode_aac",
        "speech_adts_two_per_message",
        &join(0, &[aac[..2].concat().into(), aac[2..4].concat().into()]),
    );
    let payloads: Vec<Bytes> = aac.iter().map(|f| f.slice(7..)).collect();
    write(&corpus, "decode_aac", "speech_payloads_wrapped", &join(1, &payloads));
    println!("seeds written under {}", corpus.display());
}
