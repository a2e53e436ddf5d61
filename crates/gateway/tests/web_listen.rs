//! `/v4/web/listen` over real sockets: first-message authentication as omi's
//! backend does it, then a normal session. The refusals are observed by an
//! independent client — tungstenite's own blocking client on a thread of its own,
//! not Hark's `ListenClient` — which must see the exact close code and reason of a
//! completed closing handshake, never an abnormal 1006.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::independent::{observe, Seen};
use common::{pusher_saw_uid, Harness, FRAME_16K};
use futures::{SinkExt, StreamExt};
use hark_fakes::fake_pusher::PusherMode;
use hark_fakes::fake_stt::{silence, synth, words_for, VOCAB};
use hark_gateway::auth::JwtConfig;
use hark_gateway::config::AuthConfig;
use hark_proto::client::ServerMessage;
use hark_proto::{ServerEvent, ServiceStatus};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "an-hs256-secret-that-is-at-least-32-bytes-long";
const QUERY: &str = "sample_rate=16000&codec=pcm16&conversation_timeout=600";

fn token(secret: &str, sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({ "sub": sub, "exp": now + exp_in, "plan": "pro" });
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn auth_message(token: &str) -> String {
    json!({ "type": "auth", "token": token }).to_string()
}

/// A gateway with `--auth jwt --jwt-secret-file`, a fake STT and pusher.
async fn jwt_harness(
    tweak: impl FnOnce(&mut hark_gateway::config::GatewayConfig),
) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let h = Harness::start(Some(PusherMode::Up), |c| {
        c.auth = AuthConfig::Jwt(JwtConfig { secret_file: Some(secret), ..JwtConfig::default() });
        tweak(c);
    })
    .await;
    (h, dir)
}

fn url(addr: SocketAddr, query: &str) -> String {
    format!("ws://{addr}/v4/web/listen?{query}")
}

/// Connects with the independent client, sends `first` (if any), and records
/// everything until the connection ends; also whether hark then shut TCP (EOF).
async fn independent_client(
    addr: SocketAddr,
    query: &str,
    first: Option<Message>,
) -> (Vec<Seen>, bool) {
    let observed = observe(addr, url(addr, query), None, move |ws| {
        if let Some(first) = first {
            ws.send(first).unwrap();
        }
    })
    .await;
    (observed.seen, observed.ending.eof)
}

fn auth_response(success: bool) -> Seen {
    Seen::Text(ServerEvent::AuthResponse { success }.to_json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_message_then_audio_gives_transcripts() {
    let (h, _dir) = jwt_harness(|_| {}).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url(h.addr(), QUERY)).await.unwrap();
    ws.send(Message::text(auth_message(&token(SECRET, "webby", 300)))).await.unwrap();

    let mut first = true;
    let mut ready = false;
    while !ready {
        let Some(Ok(Message::Text(text))) =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap()
        else {
            panic!("session did not start");
        };
        let message = ServerMessage::parse(&text).unwrap();
        if first {
            assert_eq!(
                text.as_str(),
                r#"{"type":"auth_response","success":true}"#,
                "omi's exact JSON"
            );
            first = false;
        }
        ready = matches!(
            message,
            ServerMessage::Event(ServerEvent::ServiceStatus { status: ServiceStatus::Ready, .. })
        );
    }
    assert!(pusher_saw_uid(&h, "webby").await, "the session runs as the token's sub");

    let spoken: Vec<(&str, u32)> = [4, 9, 17].iter().map(|&i| (VOCAB[i], 0)).collect();
    let mut pcm = synth(&spoken, 16_000);
    pcm.extend(silence(0.5, 16_000));
    let expected: Vec<String> = words_for(&pcm, 16_000).into_iter().map(|(w, _)| w).collect();
    for frame in pcm.chunks(FRAME_16K) {
        ws.send(Message::binary(frame.to_vec())).await.unwrap();
    }
    let mut words = Vec::new();
    while words.len() < expected.len() {
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            panic!("transcript incomplete: {words:?}, expected {expected:?}");
        };
        if let Message::Text(text) = message {
            if let Ok(ServerMessage::Segments(segments)) = ServerMessage::parse(&text) {
                let text = segments.iter().map(|s| s.text.to_lowercase()).collect::<Vec<_>>();
                words.extend(text.iter().flat_map(|t| t.split_whitespace().map(str::to_owned)));
            }
        }
    }
    let expected: Vec<String> = expected.iter().map(|w| w.to_lowercase()).collect();
    assert_eq!(words, expected);
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_gets_auth_response_false_then_close_1008() {
    let (h, _dir) = jwt_harness(|_| {}).await;
    let before = h.scrape().await;
    for bad in [
        token("another-secret-that-is-also-32-bytes-long!", "mallory", 300),
        token(SECRET, "mallory", -3600),
        "x.y.z".to_owned(),
    ] {
        let (seen, eof) =
            independent_client(h.addr(), QUERY, Some(Message::text(auth_message(&bad)))).await;
        assert_eq!(
            seen,
            vec![auth_response(false), Seen::Close(1008, "Invalid token".into()), Seen::Closed]
        );
        assert!(eof, "hark shut the TCP stream after the handshake");
    }
    let after = h.scrape().await;
    let expired = after.increase(&before, "hark_auth_failures_total", &[("reason", "expired")]);
    let refused = after.increase(&before, "hark_session_rejections_total", &[("reason", "auth")]);
    assert!(expired >= 1.0, "expired tokens are counted: {expired}");
    assert!(refused >= 3.0, "refusals are counted: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_message_in_time_or_a_wrong_one_closes_1008_with_omis_reason() {
    let (h, _dir) = jwt_harness(|c| c.limits.handshake_timeout = Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let (seen, eof) = independent_client(h.addr(), QUERY, None).await;
    assert_eq!(seen, vec![Seen::Close(1008, "Auth timeout".into()), Seen::Closed]);
    assert!(eof);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(4), "{waited:?}");

    for (first, reason) in [
        (Message::binary(vec![0u8; 320]), "Expected JSON auth message"),
        (Message::text("hello"), "Invalid JSON"),
        (Message::text(r#"{"type":"listen"}"#), "First message must be auth"),
        (Message::text(r#"{"type":"auth"}"#), "Missing token"),
    ] {
        let (seen, eof) = independent_client(h.addr(), QUERY, Some(first)).await;
        assert_eq!(seen, vec![Seen::Close(1008, reason.into()), Seen::Closed], "{reason}");
        assert!(eof);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_none_the_uid_comes_from_the_query_and_the_user_limit_still_applies() {
    let h = Harness::start(Some(PusherMode::Up), |c| {
        c.limits.max_sessions_per_user = NonZeroUsize::new(1).unwrap();
    })
    .await;
    let query = format!("uid=carol&{QUERY}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url(h.addr(), &query)).await.unwrap();
    ws.send(Message::text(auth_message("anything: not checked with --auth none"))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
    assert_eq!(
        first.unwrap().unwrap(),
        Message::text(ServerEvent::AuthResponse { success: true }.to_json())
    );
    assert!(pusher_saw_uid(&h, "carol").await);

    // carol's second session: admitted only after the auth message, so it is
    // refused with a close (no HTTP status any more), and no auth_response false.
    let (seen, eof) =
        independent_client(h.addr(), &query, Some(Message::text(auth_message("t")))).await;
    assert!(
        matches!(&seen[..], [Seen::Close(1008, reason), Seen::Closed] if reason.starts_with("too many sessions for this user")),
        "{seen:?}"
    );
    assert!(eof);

    // No uid: refused at the upgrade, as on /v4/listen.
    let refused = tokio_tungstenite::connect_async(url(h.addr(), QUERY)).await.expect_err("400");
    match refused {
        tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("{other}"),
    }
    ws.close(None).await.unwrap();
}
