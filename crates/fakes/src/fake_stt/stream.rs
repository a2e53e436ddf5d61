//! One STT stream: reads audio and control messages, sends results when due, and
//! obeys the fault in force.

use std::sync::Arc;

use futures::StreamExt;
use hark_proto::deepgram::{Control, Metadata, SttMessage};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::results::Transcript;
use super::{Shared, SttFault, MAX_MESSAGE};
use crate::ws::{self, Ws};

/// Reason Deepgram gives when it drops a stream (and the fault sends with 1011).
pub(crate) const NET_0001: &str = "NET-0001";

/// Keeps `active_streams` right however the stream ends.
struct Active<'a>(&'a Shared);

impl<'a> Active<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.count(|s| s.active_streams += 1);
        Active(shared)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.count(|s| s.active_streams -= 1);
    }
}

/// What the stream does after handling an event.
enum Next {
    Continue,
    /// Close with 1011 "NET-0001".
    Fail,
    /// Discard raw bytes until the stall ends.
    Stall,
    /// The stream is over (already closed or dead).
    End,
}

/// Serves one accepted stream until it ends.
/// `fault` was subscribed before the handshake; a change since then is not marked
/// seen here, so the loop below acts on it at once.
pub(crate) async fn run(
    mut ws: Ws,
    shared: Arc<Shared>,
    mut fault: watch::Receiver<SttFault>,
    id: u64,
    sample_rate: u32,
) {
    let _active = Active::enter(&shared);
    let cfg = &shared.cfg;
    let mut transcript = Transcript::new(sample_rate, cfg.words_per_result, cfg.latency);
    let mut closing = false;
    let current = *fault.borrow();
    let mut next = match current {
        SttFault::Stall => Next::Stall,
        _ => Next::Continue,
    };
    tracing::debug!(id, sample_rate, "fake STT stream open");
    while let Next::Continue = next {
        let due = transcript.next_due();
        next = tokio::select! {
            biased;
            _ = shared.life.cancel.cancelled() => {
                ws::close(&mut ws, CloseCode::Away, "fake STT shutting down").await;
                Next::End
            }
            changed = fault.changed() => match changed.map(|()| *fault.borrow_and_update()) {
                Err(_) => Next::End,
                Ok(SttFault::Close1011) => Next::Fail,
                Ok(SttFault::Stall) => Next::Stall,
                Ok(_) => Next::Continue,
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                send_due(&mut ws, &shared, &mut transcript, closing, id).await
            }
            msg = ws.next() => match msg {
                Some(Ok(msg)) => {
                    on_message(&mut ws, &shared, &mut transcript, &mut closing, msg, id).await
                }
                Some(Err(err)) => {
                    tracing::debug!(id, %err, "fake STT stream read failed");
                    Next::End
                }
                None => Next::End,
            },
        };
    }
    match next {
        Next::Fail => {
            shared.count(|s| s.closed_1011 += 1);
            ws::close(&mut ws, CloseCode::Error, NET_0001).await;
        }
        Next::Stall => stall(&mut ws, &shared, &mut fault).await,
        Next::Continue | Next::End => {}
    }
    tracing::debug!(id, "fake STT stream over");
}

async fn on_message(
    ws: &mut Ws,
    shared: &Shared,
    transcript: &mut Transcript,
    closing: &mut bool,
    msg: Message,
    id: u64,
) -> Next {
    match msg {
        Message::Binary(audio) => {
            if *shared.fault.borrow() == SttFault::Close1011 {
                return Next::Fail;
            }
            shared.count(|s| s.audio_bytes += audio.len() as u64);
            // Audio after CloseStream is counted but not transcribed.
            if !*closing {
                transcript.push_audio(&audio, Instant::now());
            }
            Next::Continue
        }
        Message::Text(text) => match serde_json::from_str::<Control>(&text) {
            Ok(Control::KeepAlive) => {
                shared.count(|s| s.keepalives += 1);
                Next::Continue
            }
            Ok(Control::Finalize) => {
                shared.count(|s| s.finalizes += 1);
                transcript.finalize();
                Next::Continue
            }
            Ok(Control::CloseStream) => {
                shared.count(|s| s.close_streams += 1);
                transcript.finalize();
                *closing = true;
                if transcript.has_pending() {
                    Next::Continue
                } else {
                    finish(ws, transcript, id).await
                }
            }
            Err(_) => {
                tracing::debug!(id, %text, "fake STT ignores unknown text message");
                Next::Continue
            }
        },
        // tungstenite answers pings and close frames itself; keep reading until the
        // stream ends.
        Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
            Next::Continue
        }
    }
}

/// Sends every result that is due; after `CloseStream`, ends the stream once none
/// is left.
async fn send_due(
    ws: &mut Ws,
    shared: &Shared,
    transcript: &mut Transcript,
    closing: bool,
    id: u64,
) -> Next {
    while let Some(results) = transcript.pop_due(Instant::now()) {
        let text = SttMessage::Results(results).to_json();
        if !ws::send(ws, Message::Text(text.into())).await {
            return Next::End;
        }
        shared.count(|s| s.results_sent += 1);
    }
    if closing && !transcript.has_pending() {
        return finish(ws, transcript, id).await;
    }
    Next::Continue
}

/// Sends `Metadata` and closes with 1000.
async fn finish(ws: &mut Ws, transcript: &Transcript, id: u64) -> Next {
    let metadata =
        Metadata { request_id: format!("fake-stt-{id}"), duration: transcript.audio_seconds() };
    let text = SttMessage::Metadata(metadata).to_json();
    if ws::send(ws, Message::Text(text.into())).await {
        ws::close(ws, CloseCode::Normal, "").await;
    }
    Next::End
}

/// Reads and discards raw bytes (so tungstenite answers nothing, not even pings)
/// until the stall ends, the peer goes away or the fake shuts down.
async fn stall(ws: &mut Ws, shared: &Shared, fault: &mut tokio::sync::watch::Receiver<SttFault>) {
    let mut sink = vec![0u8; MAX_MESSAGE.min(16 * 1024)];
    loop {
        tokio::select! {
            _ = shared.life.cancel.cancelled() => return,
            changed = fault.changed() => {
                if changed.is_err() || *fault.borrow_and_update() != SttFault::Stall {
                    return;
                }
            }
            read = ws.get_mut().read(&mut sink) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}
