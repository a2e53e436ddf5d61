//! The gateway's two hot functions, as the session runs them:
//!
//! - `frame_in_to_two_sends`: one client audio frame through the session's edge —
//!   decode (PCM16 passes through), the STT queue, the session's 101 encoder and the
//!   pusher link's queue (finished 101s only) — and the two links taking them. Per frame, in 20 ms
//!   (640 B) and 100 ms (3,200 B) frames of 16 kHz PCM16.
//! - `stt_result_to_segments_json`: one Deepgram `Results` message (a recorded
//!   multi-speaker fixture) parsed, grouped into speaker runs, made into segments of
//!   the conversation and rendered as the JSON array the client gets.
//!
//! ```sh
//! cargo bench -p hark-gateway --bench hot_path
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hark_gateway::pusher::link::LinkCommand;
use hark_gateway::session::Conversation;
use hark_gateway::stt::queue;
use hark_proto::client::segments_to_json;
use hark_proto::deepgram::SttMessage;
use hark_proto::Codec;

fn frame_in_to_two_sends(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_in_to_two_sends");
    for bytes in [640usize, 3_200] {
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("pcm16_{}ms", bytes / 32), |b| {
            let mut decoder = hark_codec::decoder(Codec::Pcm16, 16_000).unwrap();
            let (stt, mut stt_rx) = queue::channel(16_000);
            let (link, mut link_rx) = tokio::sync::mpsc::channel::<LinkCommand>(128);
            let frame = Bytes::from(vec![7u8; bytes]);
            let mut encoder = hark_gateway::pusher::audio::AudioEncoder::new(16_000);
            let mut ready = Vec::with_capacity(2);
            let mut start = 1.0e9;
            b.iter_batched(
                || frame.clone(),
                |frame| {
                    let pcm = decoder.decode(frame).unwrap();
                    // The session builds the 101 and hands only finished ones over.
                    encoder.push(start, &pcm, &mut ready);
                    assert!(stt.try_send(pcm));
                    for frame in ready.drain(..) {
                        let _ = link.try_send(LinkCommand::Audio(frame));
                    }
                    start += bytes as f64 / 32_000.0;
                    // The two link tasks' side.
                    black_box(stt_rx.try_recv());
                    if let Ok(LinkCommand::Audio(frame)) = link_rx.try_recv() {
                        black_box(frame);
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn stt_result_to_segments_json(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto/testdata/deepgram/results_multi_speaker.json"
    ))
    .unwrap();
    c.bench_function("stt_result_to_segments_json", |b| {
        b.iter_batched(
            || Conversation::new(0.0),
            |mut conversation| {
                let Ok(SttMessage::Results(results)) = SttMessage::parse(black_box(&text)) else {
                    panic!("a Results fixture")
                };
                let runs = results.speaker_runs();
                let segments = conversation.add_runs(&runs);
                black_box(segments_to_json(&segments))
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, frame_in_to_two_sends, stt_result_to_segments_json);
criterion_main!(benches);
