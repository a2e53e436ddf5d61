//! Streams a WAV file (16-bit PCM; the first channel) to a running hark at
//! real-time pace and prints the live transcript as it arrives.
//!
//! ```sh
//! cargo run -p hark --example listen -- /usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav
//! cargo run -p hark --example listen -- --url ws://127.0.0.1:8080 --uid me speech.wav
//! ```

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_proto::client::ServerMessage;
use hark_proto::ServerEvent;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: listen [--url ws://127.0.0.1:8080] [--uid UID] FILE.wav";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut uid, mut file) =
        ("ws://127.0.0.1:8080".to_owned(), "listen-example".to_owned(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().ok_or(USAGE)?,
            "--uid" => uid = args.next().ok_or(USAGE)?,
            "-h" | "--help" => {
                println!("{USAGE}\nStreams FILE at real-time pace to hark's /v4/listen and prints the transcript.");
                return Ok(());
            }
            other => file = Some(other.to_owned()),
        }
    }
    let file = file.ok_or(USAGE)?;
    let wav = hark_fakes::wav::read_pcm16(std::path::Path::new(&file))?;
    let (rate, pcm) = (wav.sample_rate, wav.pcm);
    let endpoint = format!("{url}/v4/listen?uid={uid}&sample_rate={rate}&codec=pcm16");
    let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    eprintln!(
        "streaming {file} ({:.1} s at {rate} Hz) to {url}",
        pcm.len() as f64 / (2.0 * f64::from(rate))
    );

    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Segments(segments)) => {
                        for s in segments {
                            println!("[{:>6.2}–{:>6.2}] {}: {}", s.start, s.end, s.speaker, s.text);
                        }
                    }
                    Ok(ServerMessage::Event(ServerEvent::ServiceStatus {
                        status,
                        status_text,
                    })) => {
                        eprintln!("status: {status:?} ({status_text})");
                    }
                    // Pusher health: transcription goes on either way.
                    Ok(ServerMessage::Event(ServerEvent::ProcessingStatus {
                        status,
                        status_text,
                    })) => {
                        eprintln!("processing: {status:?} ({status_text})");
                    }
                    Ok(ServerMessage::Event(event)) => eprintln!("{}", event.to_json()),
                    Err(_) => {}
                },
                Message::Close(frame) => {
                    eprintln!("closed: {frame:?}");
                    break;
                }
                _ => {}
            }
        }
    });

    // 100 ms frames at real-time pace, then a second of silence to end the utterance.
    let frame_bytes = rate as usize / 10 * 2;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let silence = vec![0u8; frame_bytes];
    for chunk in pcm.chunks(frame_bytes).chain(std::iter::repeat_n(silence.as_slice(), 10)) {
        tick.tick().await;
        sink.send(Message::Binary(bytes::Bytes::copy_from_slice(chunk))).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sink.send(Message::Close(None)).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    Ok(())
}
