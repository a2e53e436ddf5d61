//! `--jwks-url` over real sockets: a fake identity provider on `127.0.0.1:0` serves
//! a JWKS whose contents, `Cache-Control` and failure mode the test switches, and
//! counts requests. Tokens are RS256, signed with the keys under `tests/keys/`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{pusher_saw_uid, Harness};
use futures::future::join_all;
use hark_fakes::client::{ConnectError, ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_gateway::auth::{JwksFetchPolicy, JwtConfig};
use hark_gateway::config::{AuthConfig, GatewayConfig};
use hark_gateway::{Gateway, StartError};
use hark_proto::ServiceStatus;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

const QUERY: &str = "sample_rate=16000&codec=pcm16";
const PROJECT: &str = "hark-test";

fn key_file(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    std::fs::read(dir.join(name)).expect("test key file")
}

/// The public JWK of `file` (by kid), published under `as_kid`.
fn jwk(file: &str, kid: &str, as_kid: &str) -> Value {
    let jwks: Value = serde_json::from_slice(&key_file(file)).expect("jwks");
    let mut key =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap().clone();
    key["kid"] = json!(as_kid);
    key
}

/// The first key: `rsa.key.pem` as `rsa-a`.
fn key_a() -> Value {
    jwk("jwks.json", "rsa-a", "rsa-a")
}

/// A rotated key: `rsa_wrong.key.pem`, published under a new kid.
fn rotated(kid: &str) -> Value {
    jwk("jwks_wrong.json", "rsa-wrong", kid)
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// An RS256 token, Firebase-shaped (`iss`, `aud` = the project).
fn token(pem: &str, kid: &str, sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "sub": sub, "exp": now + exp_in, "iat": now,
        "iss": format!("https://securetoken.google.com/{PROJECT}"), "aud": PROJECT,
    });
    let key = EncodingKey::from_rsa_pem(&key_file(pem)).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// How the fake identity provider answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// 200 with the current set.
    Up,
    /// 503.
    Error,
    /// Accepts, then closes without a word.
    HangUp,
}

struct IdpState {
    body: Mutex<String>,
    cache_control: Mutex<&'static str>,
    mode: Mutex<Mode>,
    /// When each request arrived.
    requests: Mutex<Vec<Instant>>,
    connections: AtomicUsize,
}

/// A fake identity provider serving a JWKS over HTTP/1.1.
#[derive(Clone)]
struct Idp {
    state: Arc<IdpState>,
    url: String,
}

impl Idp {
    async fn start(body: String, cache_control: &'static str) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/service_accounts/v1/jwk", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            body: Mutex::new(body),
            cache_control: Mutex::new(cache_control),
            mode: Mutex::new(Mode::Up),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if !head.starts_with(b"GET") {
                            // Not HTTP (a TLS ClientHello): answer as a plain server would.
                            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                            return;
                        }
                    }
                    state.requests.lock().unwrap().push(Instant::now());
                    let mode = *state.mode.lock().unwrap();
                    let answer = match mode {
                        Mode::HangUp => return,
                        Mode::Error => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                        Mode::Up => {
                            let body = state.body.lock().unwrap().clone();
                            let cache = *state.cache_control.lock().unwrap();
                            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                        }
                    };
                    let _ = tcp.write_all(answer.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Idp { state, url }
    }

    fn requests(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    fn serve(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }
}

/// `--auth jwt --jwks-url <idp> --jwt-issuer … --jwt-audience …`, with a cache
/// floor of 1 s so a test can see `max-age=1` honoured.
fn jwt_config(url: &str) -> JwtConfig {
    JwtConfig {
        jwks_url: Some(url.to_owned()),
        jwks_fetch: JwksFetchPolicy {
            min_ttl: Duration::from_secs(1),
            ..JwksFetchPolicy::default()
        },
        audience: Some(PROJECT.to_owned()),
        issuer: Some(format!("https://securetoken.google.com/{PROJECT}")),
        ..JwtConfig::default()
    }
}

async fn harness(idp: &Idp) -> Harness {
    let config = jwt_config(&idp.url);
    Harness::start(Some(PusherMode::Up), move |c| c.auth = AuthConfig::Jwt(config)).await
}

/// Upgrades with `token`: the HTTP status (101 when accepted) and the client.
async fn upgrade(h: &Harness, token: &str) -> (u16, Option<ListenClient>) {
    let header = format!("Bearer {token}");
    match ListenClient::connect(h.addr(), QUERY, &[("Authorization", header.as_str())]).await {
        Ok(client) => (101, Some(client)),
        Err(ConnectError::Refused { status, .. }) => (status, None),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_url_verify_tokens_and_a_rotation_is_picked_up_with_one_fetch() {
    let idp = Idp::start(set(&[key_a()]), "public, max-age=3600").await;
    let h = harness(&idp).await;
    assert_eq!(idp.requests(), 1, "fetched once at start");

    // A token signed by a key of the set: accepted, uid = sub reaches pusher.
    let (status, client) = upgrade(&h, &token("rsa.key.pem", "rsa-a", "alice", 300)).await;
    assert_eq!(status, 101);
    let mut client = client.unwrap();
    assert!(
        client
            .wait_for(Duration::from_secs(10), |r| *r == Received::Status(ServiceStatus::Ready))
            .await
    );
    assert!(pusher_saw_uid(&h, "alice").await, "pusher was dialed for the token's sub");
    client.close().await.expect("the closing handshake completes");

    // The provider rotates: 20 upgrades at once with the new kid cause one fetch,
    // and all of them are accepted (the first waits for it, the others join it).
    idp.serve(set(&[key_a(), rotated("rsa-b")]));
    let tokens: Vec<String> =
        (0..20).map(|i| token("rsa_wrong.key.pem", "rsa-b", &format!("bob-{i}"), 300)).collect();
    let results = join_all(tokens.iter().map(|t| upgrade(&h, t))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert!(statuses.iter().all(|s| *s == 101), "{statuses:?}");
    assert_eq!(idp.requests(), 2, "20 upgrades with a new kid: one fetch");
    for (_, client) in results {
        client.unwrap().close().await.expect("the closing handshake completes");
    }

    // A second rotation within the minute: no fetch, 401 unknown_key; the
    // rate limit protects the provider from tokens with made-up kids.
    idp.serve(set(&[key_a(), rotated("rsa-b"), rotated("rsa-c")]));
    let before = h.scrape().await;
    let (status, _) = upgrade(&h, &token("rsa_wrong.key.pem", "rsa-c", "carol", 300)).await;
    assert_eq!(status, 401);
    assert_eq!(idp.requests(), 2);
    let failures = h.scrape().await.increase(
        &before,
        "hark_auth_failures_total",
        &[("reason", "unknown_key")],
    );
    assert_eq!(failures, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_foreign_tokens_are_refused_with_401() {
    let idp = Idp::start(set(&[key_a()]), "max-age=3600").await;
    let h = harness(&idp).await;
    let expired = token("rsa.key.pem", "rsa-a", "dave", -3600);
    assert_eq!(upgrade(&h, &expired).await.0, 401);
    // Signed by a key the provider never published, under a published kid.
    let forged = token("rsa_wrong.key.pem", "rsa-a", "dave", 300);
    assert_eq!(upgrade(&h, &forged).await.0, 401);
    assert_eq!(upgrade(&h, &token("rsa.key.pem", "rsa-a", "dave", 300)).await.0, 101);
    assert_eq!(idp.requests(), 1, "no refusal above needed a fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_honoured_and_cached_keys_stay_in_force_while_the_provider_is_down() {
    let idp = Idp::start(set(&[key_a()]), "max-age=1").await;
    let h = harness(&idp).await;

    // max-age=1: re-fetched about every 0.9 s (a tenth early), never faster.
    let started = Instant::now();
    while idp.requests() < 3 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times = idp.state.requests.lock().unwrap().clone();
    assert!(times.len() >= 3, "re-fetched after max-age: {} requests", times.len());
    for gap in times.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= Duration::from_millis(850), "re-fetched after only {gap:?}");
        assert!(gap <= Duration::from_secs(3), "re-fetched only after {gap:?}");
    }

    // The provider fails, both ways: the last good keys keep verifying.
    let scrape_before = h.scrape().await;
    for mode in [Mode::Error, Mode::HangUp] {
        idp.set_mode(mode);
        let before = idp.requests();
        let started = Instant::now();
        while idp.requests() < before + 2 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(idp.requests() >= before + 2, "failed fetches are retried");
        let (status, client) = upgrade(&h, &token("rsa.key.pem", "rsa-a", "erin", 300)).await;
        assert_eq!(status, 101, "cached keys still used");
        client.unwrap().close().await.expect("the closing handshake completes");
    }
    let errors = h.scrape().await.increase(
        &scrape_before,
        "hark_jwks_fetches_total",
        &[("result", "error")],
    );
    assert!(errors >= 4.0, "failed fetches are counted: {errors}");

    // Back up: fetched again, and a rotation is seen.
    idp.serve(set(&[rotated("rsa-new")]));
    idp.set_mode(Mode::Up);
    let started = Instant::now();
    let mut status = 0;
    while started.elapsed() < Duration::from_secs(30) {
        status = upgrade(&h, &token("rsa_wrong.key.pem", "rsa-new", "erin", 300)).await.0;
        if status == 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 101, "the healed provider's keys are picked up");
}

async fn start_with(url: &str, attempts: u32) -> Result<Gateway, StartError> {
    let outbox = tempfile::tempdir().unwrap();
    let mut config =
        GatewayConfig::for_tests("ws://127.0.0.1:9/v1/listen", None, outbox.path().into());
    let mut jwt = jwt_config(url);
    jwt.jwks_fetch.startup_attempts = attempts;
    jwt.jwks_fetch.timeout = Duration::from_secs(2);
    config.auth = AuthConfig::Jwt(jwt);
    Gateway::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_with_a_clear_error_when_the_jwks_cannot_be_fetched() {
    // Nothing listens: refused after its attempts, naming the URL.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/jwks");
    let started = Instant::now();
    let error = start_with(&url, 2).await.err().expect("start fails").to_string();
    eprintln!("{error}");
    assert!(error.contains(&url) && error.contains("connect"), "{error}");
    assert!(started.elapsed() >= Duration::from_secs(1), "retried once after a pause");

    // An empty set is as bad as no answer.
    let idp = Idp::start(set(&[]), "max-age=60").await;
    let error = start_with(&idp.url, 1).await.err().expect("start fails").to_string();
    assert!(error.contains("no usable"), "{error}");

    // https:// goes through rustls: against a server that does not speak TLS, the
    // failure comes from the TLS layer.
    let plain = Idp::start(set(&[key_a()]), "max-age=60").await;
    let https = plain.url.replace("http://127.0.0.1", "https://localhost");
    let error = start_with(&https, 1).await.err().expect("start fails").to_string();
    eprintln!("{error}");
    assert!(error.to_lowercase().contains("tls"), "{error}");
}
