//! Decode cost per 20 ms of 16 kHz speech for every codec, through the
//! `Decoder` trait as the session calls it, and libopus's own decode speed on the
//! same packets in a tight loop (no `Bytes`, no output buffer), so the wrapper's
//! share is visible.
//!
//! ```sh
//! cargo bench -p hark-codec --bench decode
//! ```
//!
//! Every codec is fed consecutive frames of real speech (goforward.raw, cycled),
//! so stateful decoders see a real stream. What one iteration decodes:
//! `pcm16`/`pcm8`/`mulaw`: one 20 ms frame; `opus`: two 10 ms packets;
//! `opus_fs320`: one 20 ms packet; `lc3_fs1030`: one message of two 30-byte
//! frames; `aac`: one ADTS frame, which is 64 ms (the report scales it).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hark_codec::{decoder, encode_clip};
use hark_proto::Codec;

const RATE: u32 = 16_000;

fn speech() -> Vec<i16> {
    let bytes = std::fs::read("/usr/share/pocketsphinx/test/data/goforward.raw")
        .expect("goforward.raw (pocketsphinx-testdata; scripts/setup.sh)");
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The messages a device sends for `pcm`, grouped into 20 ms units (one iteration each).
fn units(codec: Codec, pcm: &[i16]) -> Vec<Vec<Bytes>> {
    match codec {
        Codec::Pcm16 | Codec::Pcm8 | Codec::Mulaw => pcm
            .chunks_exact(320)
            .map(|chunk| encode_clip(codec, RATE, chunk).expect("encode"))
            .collect(),
        Codec::Opus => {
            let packets = encode_clip(codec, RATE, pcm).expect("encode");
            packets.chunks_exact(2).map(<[Bytes]>::to_vec).collect()
        }
        Codec::Lc3Fs1030 => {
            let frames = encode_clip(codec, RATE, pcm).expect("encode");
            frames.chunks_exact(2).map(|pair| vec![Bytes::from(pair.concat())]).collect()
        }
        Codec::OpusFs320 | Codec::Aac => {
            encode_clip(codec, RATE, pcm).expect("encode").into_iter().map(|f| vec![f]).collect()
        }
    }
}

fn decode(c: &mut Criterion) {
    let pcm = speech();
    let mut group = c.benchmark_group("decode_20ms");
    group.measurement_time(Duration::from_secs(5));
    for codec in Codec::ALL {
        let units = units(codec, &pcm);
        let mut decoder = decoder(codec, RATE).expect("decoder");
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(codec.as_str(), |b| {
            b.iter(|| {
                for frame in &units[i % units.len()] {
                    black_box(decoder.decode(frame.clone()).expect("decodes"));
                }
                i += 1;
            })
        });
    }
    group.finish();

    // libopus alone: the same 20 ms packets, decoded into a reused slice.
    let mut group = c.benchmark_group("libopus_20ms");
    group.measurement_time(Duration::from_secs(5));
    for codec in [Codec::Opus, Codec::OpusFs320] {
        let units = units(codec, &pcm);
        let mut raw =
            opusic_c::Decoder::new(opusic_c::Channels::Mono, opusic_c::SampleRate::Hz16000)
                .expect("libopus");
        let mut out = vec![0u16; 1_920];
        let mut i = 0;
        group.bench_function(codec.as_str(), |b| {
            b.iter(|| {
                for packet in &units[i % units.len()] {
                    black_box(raw.decode_to_slice(packet, &mut out, false).expect("decodes"));
                }
                i += 1;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
