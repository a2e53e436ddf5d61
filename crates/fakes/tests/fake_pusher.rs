//! The fake pusher over real sockets: frames and acks, duplicates, every fault mode,
//! and the control port.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_fakes::fake_pusher::{
    serve_control, FakePusher, FakePusherConfig, ModeSpec, PusherMode, PusherStats,
};
use hark_proto::pusher::{encode_audio, Ack, ProcessRequest, PusherFrame, SegmentsPayload};
use hark_proto::Segment;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const STEP: Duration = Duration::from_secs(5);

async fn start(mode: PusherMode) -> FakePusher {
    let cfg = FakePusherConfig { mode, record: true, ..FakePusherConfig::default() };
    FakePusher::start(cfg).await.unwrap()
}

async fn connect(pusher: &FakePusher, uid: &str) -> Result<Client, WsError> {
    let url = format!("{}/v1/trigger/listen?uid={uid}&sample_rate=16000", pusher.url());
    tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
}

fn process(id: &str) -> Message {
    let req = ProcessRequest { conversation_id: id.into(), language: "en".into() };
    Message::Binary(PusherFrame::Process(req).encode())
}

/// The next data message, skipping control frames; `None` at the end of the stream.
async fn next(ws: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.expect("nothing within 5 s") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(msg)) => return Some(msg),
            // A link dropped without a close frame also ends here.
            Some(Err(
                WsError::ConnectionClosed
                | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            ))
            | None => return None,
            Some(Err(err)) => panic!("read failed: {err}"),
        }
    }
}

async fn ack(ws: &mut Client) -> Ack {
    match next(ws).await {
        Some(Message::Binary(bytes)) => match PusherFrame::decode(bytes).unwrap() {
            PusherFrame::Ack(ack) => ack,
            other => panic!("expected 201, got {other:?}"),
        },
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

async fn close_code(ws: &mut Client) -> Option<CloseCode> {
    let mut code = None;
    while let Some(msg) = next(ws).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| f.code);
        }
    }
    code
}

fn segment(text: &str) -> Segment {
    Segment {
        id: "s1".into(),
        text: text.into(),
        speaker: Segment::speaker_label(1),
        speaker_id: 1,
        is_user: false,
        person_id: None,
        start: 0.0,
        end: 0.45,
    }
}

#[tokio::test]
async fn acks_every_104_and_counts_duplicates() {
    let pusher = start(PusherMode::Up).await;
    let mut ws = connect(&pusher, "user-1").await.unwrap();
    let segments = SegmentsPayload { segments: vec![segment("hello")], memory_id: "c1".into() };
    let frames = [
        Message::Binary(PusherFrame::Conversation("c1".into()).encode()),
        Message::Binary(encode_audio(1.5, &[0u8; 640])),
        Message::Binary(PusherFrame::Segments(segments).encode()),
        Message::Binary(PusherFrame::Heartbeat.encode()),
        process("c1"),
    ];
    for frame in frames {
        ws.send(frame).await.unwrap();
    }
    assert_eq!(ack(&mut ws).await, Ack::ok("c1"));
    assert!(pusher.wait_processed(1, STEP).await);

    ws.send(process("c1")).await.unwrap();
    assert_eq!(ack(&mut ws).await, Ack::ok("c1"), "duplicates are still acked");
    ws.send(Message::Binary(vec![1, 2].into())).await.unwrap();
    ws.send(process("c2")).await.unwrap();
    assert_eq!(ack(&mut ws).await, Ack::ok("c2"));

    let stats = pusher.stats();
    assert_eq!((stats.conversations_processed, stats.duplicates, stats.acks_sent), (2, 1, 3));
    assert_eq!(stats.frames_by_code.get(&104), Some(&3));
    assert_eq!(stats.bytes_by_code.get(&101), Some(&(12 + 640)));
    assert_eq!(stats.decode_errors, 1);
    assert_eq!((stats.connections_active, stats.uids_connected, stats.handshakes_ok), (1, 1, 1));
    assert_eq!(stats.accepts_per_second.iter().map(|(_, n)| n).sum::<u64>(), 1);
    assert_eq!(pusher.processed_ids(), ["c1", "c2"]);

    let recorded = pusher.frames();
    let codes: Vec<u32> = recorded.iter().map(|f| f.code).collect();
    assert_eq!(codes, [103, 101, 102, 100, 104, 104, 104]);
    assert!(recorded.iter().all(|f| f.conn == 1 && f.uid == "user-1"));
    assert_eq!(recorded[0].conversation.as_deref(), Some("c1"));
    assert_eq!((recorded[1].audio_start, recorded[1].audio_bytes), (Some(1.5), 640));
    assert_eq!(recorded[2].segments[0].text, "hello");
    assert_eq!(recorded[2].memory_id.as_deref(), Some("c1"));

    drop(ws);
    pusher.shutdown().await;
}

#[tokio::test]
async fn http_429_and_503_send_retry_after_verbatim() {
    let pusher = start(PusherMode::Http429 { retry_after: Some("5".into()) }).await;
    let cases = [
        (PusherMode::Http429 { retry_after: Some("5".into()) }, 429, Some("5")),
        (
            PusherMode::Http503 { retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()) },
            503,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        ),
        (PusherMode::Http503 { retry_after: None }, 503, None),
    ];
    for (mode, status, retry_after) in cases {
        pusher.set_mode(mode);
        match connect(&pusher, "u").await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), status);
                let header = resp.headers().get("retry-after").map(|v| v.to_str().unwrap());
                assert_eq!(header, retry_after);
            }
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
    }
    let stats = pusher.stats();
    assert_eq!((stats.handshakes, stats.rejected_http, stats.handshakes_ok), (3, 3, 0));
    assert!(pusher.wait_handshakes(3, STEP).await);
    pusher.shutdown().await;
}

#[tokio::test]
async fn refuse_closes_the_port_and_up_reopens_the_same_one() {
    let pusher = start(PusherMode::Up).await;
    let mut open = connect(&pusher, "u").await.unwrap();
    pusher.set_mode(PusherMode::Refuse);
    let err = TcpStream::connect(pusher.addr()).await.expect_err("port should be closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(close_code(&mut open).await, None, "open links are dropped without a close");

    pusher.set_mode(PusherMode::Up);
    let mut ws = connect(&pusher, "u").await.expect("same port serves again");
    ws.send(process("c9")).await.unwrap();
    assert_eq!(ack(&mut ws).await, Ack::ok("c9"));
    assert_eq!(pusher.stats().tcp_accepts, 2);
    drop(ws);
    pusher.shutdown().await;
}

#[tokio::test]
async fn refuse_at_start_still_reserves_the_port() {
    let pusher = start(PusherMode::Refuse).await;
    assert!(TcpStream::connect(pusher.addr()).await.is_err());
    pusher.set_mode(PusherMode::Up);
    connect(&pusher, "u").await.expect("serves after refuse");
    pusher.shutdown().await;
}

#[tokio::test]
async fn blackhole_accepts_tcp_but_never_answers() {
    let pusher = start(PusherMode::Blackhole).await;
    let attempt = tokio::time::timeout(Duration::from_millis(500), connect(&pusher, "u")).await;
    assert!(attempt.is_err(), "handshake completed: {attempt:?}");
    let stats = pusher.stats();
    assert_eq!((stats.tcp_accepts, stats.handshakes), (1, 0));
    // The held socket is released once its client gives up.
    assert!(pusher.wait_stats(STEP, |s| s.tcp_active == 0).await, "held socket not released");

    pusher.set_mode(PusherMode::Up);
    connect(&pusher, "u").await.expect("healed");
    pusher.shutdown().await;
}

#[tokio::test]
async fn close_1011_closes_new_and_open_links() {
    let pusher = start(PusherMode::Up).await;
    let mut open = connect(&pusher, "u").await.unwrap();
    pusher.set_mode(PusherMode::Close1011);
    assert_eq!(close_code(&mut open).await, Some(CloseCode::Error));
    let mut new = connect(&pusher, "u").await.expect("handshake completes");
    assert_eq!(close_code(&mut new).await, Some(CloseCode::Error));
    assert_eq!(pusher.stats().handshakes_ok, 2);
    pusher.shutdown().await;
}

#[tokio::test]
async fn stall_stops_pongs_and_acks_until_up() {
    let pusher = start(PusherMode::Up).await;
    let mut ws = connect(&pusher, "u").await.unwrap();
    pusher.set_mode(PusherMode::Stall);
    ws.send(Message::Ping(vec![7].into())).await.unwrap();
    ws.send(process("c1")).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(quiet.is_err(), "stalled link answered: {quiet:?}");
    let held = tokio::time::timeout(Duration::from_millis(300), connect(&pusher, "v")).await;
    assert!(held.is_err(), "new handshake answered during stall");

    pusher.set_mode(PusherMode::Up);
    let pong = tokio::time::timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(vec![7].into()));
    assert_eq!(ack(&mut ws).await, Ack::ok("c1"));
    drop(ws);
    pusher.shutdown().await;
}

#[tokio::test]
async fn slow_ack_delays_acks() {
    let delay = Duration::from_millis(300);
    let pusher = start(PusherMode::SlowAck { delay }).await;
    let mut ws = connect(&pusher, "u").await.unwrap();
    let sent = tokio::time::Instant::now();
    ws.send(process("c1")).await.unwrap();
    assert!(pusher.wait_processed(1, STEP).await, "processed on arrival");
    assert_eq!(ack(&mut ws).await, Ack::ok("c1"));
    assert!(sent.elapsed() >= Duration::from_millis(250), "ack came after {:?}", sent.elapsed());
    drop(ws);
    pusher.shutdown().await;
}

#[tokio::test]
async fn bad_upgrades_are_refused() {
    let pusher = start(PusherMode::Up).await;
    let cases = [("/v1/other?uid=u", 404), ("/v1/trigger/listen?sample_rate=16000", 400)];
    for (path, status) in cases {
        match tokio_tungstenite::connect_async(format!("{}{path}", pusher.url())).await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), status, "{path}"),
            other => panic!("{path}: expected {status}, got {other:?}"),
        }
    }
    pusher.shutdown().await;
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn control_port_sets_modes_and_serves_stats() {
    let pusher = start(PusherMode::Up).await;
    let control = serve_control(pusher.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();

    let body = r#"{"mode":"http-429","retry_after":"5"}"#;
    let (status, reply) = http(control, "POST", "/mode", body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(pusher.mode(), PusherMode::Http429 { retry_after: Some("5".into()) });
    let (_, mode) = http(control, "GET", "/mode", "").await;
    let mode: ModeSpec = serde_json::from_str(&mode).unwrap();
    assert_eq!((mode.mode.as_str(), mode.retry_after.as_deref()), ("http-429", Some("5")));

    assert!(connect(&pusher, "u").await.is_err());
    let (status, stats) = http(control, "GET", "/stats", "").await;
    assert_eq!(status, 200);
    let stats: PusherStats = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats, pusher.stats());
    assert_eq!((stats.mode.as_str(), stats.rejected_http), ("http-429", 1));

    let (status, reason) = http(control, "POST", "/mode", r#"{"mode":"sideways"}"#).await;
    assert_eq!(status, 400);
    assert!(reason.contains("unknown mode"), "{reason}");
    let (status, _) = http(control, "POST", "/mode", r#"{"mode":"up","delay":"1s"}"#).await;
    assert_eq!(status, 400);
    let (status, _) = http(control, "POST", "/mode", r#"{"mode":"slow-ack","delay":"2s"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(pusher.mode(), PusherMode::SlowAck { delay: Duration::from_secs(2) });
    pusher.shutdown().await;
}

#[tokio::test]
async fn drop_links_drops_open_links_and_accepts_are_timed() {
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let pusher = start(PusherMode::Up).await;
    let control = serve_control(pusher.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut a = connect(&pusher, "a").await.unwrap();
    let mut b = connect(&pusher, "b").await.unwrap();
    // A stalled link is dropped too, unread.
    pusher.set_mode(PusherMode::Stall);
    a.send(process("c1")).await.unwrap();
    let (status, body) = http(control, "POST", "/drop-links", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"dropped\":2"), "{body}");
    // `a` had unread bytes, so its drop is a reset; `b` just ends. No close frames.
    let ended = tokio::time::timeout(STEP, a.next()).await.unwrap();
    assert!(matches!(ended, None | Some(Err(_))), "{ended:?}");
    assert_eq!(next(&mut b).await, None);
    pusher.set_mode(PusherMode::Up);
    assert!(pusher.wait_stats(STEP, |s| s.connections_active == 0).await);
    assert_eq!(pusher.stats().conversations_processed, 0, "the backlog died with the link");
    // Links opened later are unaffected.
    let mut c = connect(&pusher, "c").await.unwrap();
    c.send(process("c2")).await.unwrap();
    assert_eq!(ack(&mut c).await, Ack::ok("c2"));

    let times = pusher.accept_times(since);
    assert_eq!(times.len(), 3);
    assert!(times.windows(2).all(|w| w[0] <= w[1]) && times[0] >= since);
    // Accept times have millisecond resolution, so two accepts can share a stamp:
    // `since` keeps every accept *at or after* it, which is the last one together
    // with any earlier accept of the same millisecond.
    let accepts = |since: u64| async move {
        let (status, body) = http(control, "GET", &format!("/accepts?since={since}"), "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<u64>>(&body).unwrap()
    };
    let same_ms = times.iter().filter(|&&t| t == times[2]).count();
    assert_eq!(accepts(times[2]).await, vec![times[2]; same_ms]);
    assert_eq!(accepts(times[0]).await, times);
    assert_eq!(accepts(times[2] + 1).await, Vec::<u64>::new());
}
