//! The fake STT over real sockets: transcription, control messages, auth, faults.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, SttFault};
use hark_proto::deepgram::{Control, SttMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const RATE: u32 = 16_000;
/// Bytes in 100 ms of 16 kHz PCM16.
const FRAME: usize = 3_200;
const STEP: Duration = Duration::from_secs(5);

async fn connect(stt: &FakeStt, token: Option<&str>) -> Result<Client, WsError> {
    let mut req = format!("{}?sample_rate={RATE}&model=nova-3", stt.url()).into_client_request()?;
    if let Some(token) = token {
        req.headers_mut().insert("authorization", format!("Token {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn next(ws: &mut Client) -> Option<Message> {
    match tokio::time::timeout(STEP, ws.next()).await.expect("no message within 5 s") {
        Some(Ok(msg)) => Some(msg),
        Some(Err(WsError::ConnectionClosed)) | None => None,
        Some(Err(err)) => panic!("read failed: {err}"),
    }
}

/// Reads messages to the end of the stream; returns the STT messages and the close
/// frame. (Reading past the close frame is what sends tungstenite's echo.)
async fn read_to_close(ws: &mut Client) -> (Vec<SttMessage>, Option<(CloseCode, String)>) {
    let mut messages = Vec::new();
    let mut close = None;
    while let Some(msg) = next(ws).await {
        match msg {
            Message::Text(text) => messages.push(SttMessage::parse(&text).unwrap()),
            Message::Close(frame) => close = frame.map(|f| (f.code, f.reason.to_string())),
            _ => {}
        }
    }
    (messages, close)
}

async fn stream_audio(ws: &mut Client, pcm: &[u8]) {
    for frame in pcm.chunks(FRAME) {
        ws.send(Message::Binary(frame.to_vec().into())).await.unwrap();
    }
}

#[tokio::test]
async fn transcribes_synthesized_words_in_order() {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    let words = [("apple", 0), ("zebra", 1), ("guitar", 1), ("ocean", 0), ("lemon", 0)];
    let mut pcm = synth(&words[..2], RATE);
    pcm.extend(silence(1.0, RATE));
    pcm.extend(synth(&words[2..], RATE));

    let mut ws = connect(&stt, None).await.unwrap();
    stream_audio(&mut ws, &pcm).await;
    ws.send(Message::Text(Control::KeepAlive.to_json().into())).await.unwrap();
    ws.send(Message::Text(Control::CloseStream.to_json().into())).await.unwrap();
    let (messages, close) = read_to_close(&mut ws).await;

    let (results, rest) = messages.split_at(messages.len() - 1);
    let SttMessage::Metadata(metadata) = &rest[0] else { panic!("last is {:?}", rest[0]) };
    assert!((metadata.duration - 3.5).abs() < 1e-9);
    let mut got = Vec::new();
    for msg in results {
        let SttMessage::Results(r) = msg else { panic!("expected Results, got {msg:?}") };
        assert!(r.is_final);
        let words = &r.channel.alternatives[0].words;
        assert!(words[0].punctuated_word.is_some());
        assert!(words[1..].iter().all(|w| w.punctuated_word.is_none()));
        got.extend(words.iter().map(|w| (w.word.clone(), w.speaker.unwrap(), w.start)));
    }
    let expected = [
        ("apple", 0, 0.0),
        ("zebra", 1, 0.5),
        ("guitar", 1, 2.0),
        ("ocean", 0, 2.5),
        ("lemon", 0, 3.0),
    ];
    let expected: Vec<_> = expected.iter().map(|&(w, s, t)| (w.to_owned(), s, t)).collect();
    assert_eq!(got, expected);
    // The first result was cut by silence, the others by 4 words / CloseStream.
    let SttMessage::Results(first) = &results[0] else { unreachable!() };
    assert!(first.speech_final);
    assert_eq!(close, Some((CloseCode::Normal, String::new())));

    let stats = stt.stats();
    assert_eq!(stats.keepalives, 1);
    assert_eq!(stats.close_streams, 1);
    assert_eq!(stats.audio_bytes, pcm.len() as u64);
    assert_eq!(stats.results_sent, results.len() as u64);
    assert_eq!(stats.last_query.as_deref(), Some("sample_rate=16000&model=nova-3"));
    stt.shutdown().await;
}

#[tokio::test]
async fn finalize_flushes_buffered_words_after_latency() {
    let cfg = FakeSttConfig { latency: Duration::from_millis(200), ..FakeSttConfig::default() };
    let stt = FakeStt::start(cfg).await.unwrap();
    let mut ws = connect(&stt, None).await.unwrap();
    stream_audio(&mut ws, &synth(&[("copper", 1)], RATE)).await;
    let sent = tokio::time::Instant::now();
    ws.send(Message::Text(Control::Finalize.to_json().into())).await.unwrap();
    let Some(Message::Text(text)) = next(&mut ws).await else { panic!("expected a result") };
    assert!(sent.elapsed() >= Duration::from_millis(150), "latency not applied");
    let SttMessage::Results(r) = SttMessage::parse(&text).unwrap() else { panic!("{text}") };
    assert_eq!(r.channel.alternatives[0].transcript, "copper");
    assert_eq!(r.channel.alternatives[0].words[0].punctuated_word.as_deref(), Some("Copper"));
    assert_eq!(stt.stats().finalizes, 1);
    drop(ws);
    stt.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let cfg = FakeSttConfig { api_key: Some("sekrit".into()), ..FakeSttConfig::default() };
    let stt = FakeStt::start(cfg).await.unwrap();
    for token in [None, Some("wrong")] {
        match connect(&stt, token).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    connect(&stt, Some("sekrit")).await.expect("right token is accepted");
    let stats = stt.stats();
    assert_eq!((stats.rejected, stats.connections), (2, 1));
    assert_eq!(stats.last_authorization.as_deref(), Some("Token sekrit"));
    stt.shutdown().await;
}

#[tokio::test]
async fn close_1011_fault_closes_open_and_new_streams() {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    let mut open = connect(&stt, None).await.unwrap();
    stream_audio(&mut open, &silence(0.1, RATE)).await;
    stt.set_fault(SttFault::Close1011);
    let expected = Some((CloseCode::Error, "NET-0001".to_owned()));
    assert_eq!(read_to_close(&mut open).await.1, expected);

    let mut new = connect(&stt, None).await.expect("handshake still succeeds");
    stream_audio(&mut new, &silence(0.1, RATE)).await;
    assert_eq!(read_to_close(&mut new).await.1, expected);
    assert_eq!(stt.stats().closed_1011, 2);

    stt.set_fault(SttFault::None);
    let mut healed = connect(&stt, None).await.unwrap();
    stream_audio(&mut healed, &synth(&[("basket", 0)], RATE)).await;
    healed.send(Message::Text(Control::CloseStream.to_json().into())).await.unwrap();
    let (messages, close) = read_to_close(&mut healed).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(close.map(|c| c.0), Some(CloseCode::Normal));
    stt.shutdown().await;
}

/// A fault set the moment the client has its 101 reaches that stream, however late
/// the fake's task for it runs (hark's STT-blip test, on a loaded machine, caught a
/// stream that looked at the fault only after it was set, and never closed).
#[tokio::test]
async fn a_close_1011_set_right_after_the_handshake_closes_that_stream() {
    let slow = FakeSttConfig {
        stream_start_delay: Duration::from_millis(300),
        ..FakeSttConfig::default()
    };
    let stt = FakeStt::start(slow).await.unwrap();
    let mut ws = connect(&stt, None).await.unwrap();
    stt.set_fault(SttFault::Close1011);
    // No audio is sent: the fault itself must close the stream.
    let expected = Some((CloseCode::Error, "NET-0001".to_owned()));
    assert_eq!(read_to_close(&mut ws).await.1, expected);
    assert_eq!(stt.stats().closed_1011, 1);
    stt.shutdown().await;
}

#[tokio::test]
async fn refuse_fault_answers_503() {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    stt.set_fault(SttFault::Refuse);
    match connect(&stt, None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    stt.set_fault(SttFault::None);
    connect(&stt, None).await.expect("accepted again");
    stt.shutdown().await;
}

#[tokio::test]
async fn stall_fault_sends_nothing_not_even_pongs() {
    let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
    let mut ws = connect(&stt, None).await.unwrap();
    stt.set_fault(SttFault::Stall);
    stream_audio(&mut ws, &synth(&[("anchor", 0); 4], RATE)).await;
    ws.send(Message::Ping(vec![1].into())).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(quiet.is_err(), "stalled stream answered: {quiet:?}");
    assert_eq!(stt.stats().results_sent, 0);
    stt.shutdown().await;
}
