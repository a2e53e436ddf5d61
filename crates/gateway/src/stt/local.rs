//! The embedded engine as an STT link: audio goes to a PocketSphinx decoder thread
//! from the process's bounded pool, utterances come back as single-speaker runs.
//! The rest of Hark cannot tell which engine produced a segment.

use std::sync::Arc;

use bytes::Bytes;
use hark_proto::deepgram::SpeakerRun;
use hark_stt_local::LocalStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SttEvent;
use crate::metrics::STT_DROPPED_BYTES;

/// Forwards audio to the decoder and utterances to the session until the session
/// closes its audio channel; then lets the decoder flush and reports `Finished`.
pub async fn run(
    stream: LocalStream,
    mut audio: super::queue::AudioRx,
    events: mpsc::Sender<SttEvent>,
    session_id: Arc<str>,
) {
    let LocalStream { audio: decoder, mut utterances } = stream;
    let _ = events.send(SttEvent::Connected { reconnect: false }).await;
    let mut decoder = Some(decoder);
    // One frame waiting for room in the decoder's queue: while it waits, audio
    // backs up in this link's own bounded queue (where the session drops and counts
    // what does not fit), and utterances keep flowing.
    let mut waiting: Option<Bytes> = None;
    loop {
        let tx = if waiting.is_some() { decoder.clone() } else { None };
        let room = async move {
            match tx {
                Some(tx) => tx.reserve_owned().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            permit = room => match permit {
                Some(permit) => {
                    permit.send(waiting.take().expect("a frame is waiting"));
                }
                None => {
                    metrics::counter!(STT_DROPPED_BYTES).increment(waiting.take().map_or(0, |b| b.len() as u64));
                }
            },
            pcm = audio.recv(), if decoder.is_some() && waiting.is_none() => match pcm {
                Some(pcm) => waiting = Some(pcm),
                // Session ended: closing the decoder's input flushes the last utterance.
                None => decoder = None,
            },
            utterance = utterances.recv() => match utterance {
                Some(u) if !u.text.trim().is_empty() => {
                    let run = SpeakerRun { speaker: 0, text: u.text, start: u.start, end: u.end };
                    let _ = events.send(SttEvent::Runs { runs: vec![run], received: Instant::now() }).await;
                }
                Some(_) => {}
                None => {
                    if decoder.is_some() {
                        tracing::warn!(session = %session_id, "local decoder ended unexpectedly");
                        let _ = events.send(SttEvent::Failed("local decoder stopped".into())).await;
                    } else {
                        let _ = events.send(SttEvent::Finished).await;
                    }
                    return;
                }
            },
        }
    }
}
