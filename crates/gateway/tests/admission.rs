//! Admission over real sockets: bearer tokens at the upgrade, process and per-user
//! session limits with Retry-After, `/ready` at capacity, and every refusal counted.

mod common;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{pusher_saw_uid, Harness};
use hark_fakes::client::{ConnectError, ListenClient, Received};
use hark_fakes::fake_pusher::PusherMode;
use hark_gateway::auth::JwtConfig;
use hark_gateway::config::AuthConfig;
use hark_proto::ServiceStatus;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "an-hs256-secret-that-is-at-least-32-bytes-long";
const QUERY: &str = "sample_rate=16000&codec=pcm16";

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &json!({ "sub": sub, "exp": now + exp_in, "iat": now }), key)
        .unwrap()
}

async fn status_of(
    h: &Harness,
    query: &str,
    auth: Option<&str>,
) -> (u16, Option<String>, Option<String>) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> =
        bearer.as_deref().map(|b| ("Authorization", b)).into_iter().collect();
    match ListenClient::connect(h.addr(), query, &headers).await {
        Ok(_) => (101, None, None),
        Err(ConnectError::Refused { status, retry_after, rate_limit_reason, .. }) => {
            (status, retry_after, rate_limit_reason)
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_sessions_take_their_uid_from_sub_and_bad_tokens_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let h = Harness::start(Some(PusherMode::Up), |c| {
        c.auth = AuthConfig::Jwt(JwtConfig {
            secret_file: Some(secret.clone()),
            jwks_file: Some(keys().join("jwks.json")),
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(5),
            ..JwtConfig::default()
        });
    })
    .await;
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(keys().join("rsa.key.pem")).unwrap()).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys().join("jwks.json")).unwrap()).unwrap();
    let rsa_kid = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .and_then(|k| k["kid"].as_str());

    // Valid HS256 and RS256 tokens: accepted, uid = sub (pusher is dialed with it).
    for (token, uid) in [
        (token(Algorithm::HS256, &hs, None, "hs-user", 300), "hs-user"),
        (token(Algorithm::RS256, &rsa, rsa_kid, "rs-user", 300), "rs-user"),
    ] {
        let headers = [("Authorization", format!("Bearer {token}"))];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut client =
            ListenClient::connect(h.addr(), QUERY, &headers).await.expect("valid token accepted");
        assert!(
            client
                .wait_for(Duration::from_secs(10), |r| *r == Received::Status(ServiceStatus::Ready))
                .await
        );
        // The pusher link is dialed with the token's subject as uid.
        assert!(pusher_saw_uid(&h, uid).await, "pusher never saw uid {uid}");
        client.close().await.expect("the closing handshake completes");
    }

    // Refusals: 401 before the upgrade, counted.
    let before = h.scrape().await;
    let expired = token(Algorithm::HS256, &hs, None, "u", -3600);
    let wrong = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes!!"),
        None,
        "u",
        300,
    );
    for (name, auth) in [
        ("missing", None),
        ("expired", Some(expired.as_str())),
        ("wrong key", Some(wrong.as_str())),
        ("garbage", Some("x.y.z")),
    ] {
        let (status, _, _) = status_of(&h, QUERY, auth).await;
        assert_eq!(status, 401, "{name}");
    }
    // A uid in the query is not an identity under jwt.
    assert_eq!(status_of(&h, &format!("{QUERY}&uid=mallory"), None).await.0, 401);
    let after = h.scrape().await;
    let counted = |name, reason| after.increase(&before, name, &[("reason", reason)]);
    assert_eq!(counted("hark_session_rejections_total", "auth"), 5.0);
    assert_eq!(counted("hark_auth_failures_total", "expired"), 1.0);
    assert_eq!(counted("hark_auth_failures_total", "missing"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_per_user_limits_refuse_with_retry_after_and_ready_follows_capacity() {
    let h = Harness::start(None, |c| {
        c.limits.max_sessions = NonZeroUsize::new(3).unwrap();
        c.limits.max_sessions_per_user = NonZeroUsize::new(2).unwrap();
    })
    .await;
    let q = |uid: &str| format!("uid={uid}&{QUERY}");
    let before = h.scrape().await;
    let mut open = Vec::new();
    for uid in ["ann", "ann"] {
        open.push(ListenClient::connect(h.addr(), &q(uid), &[]).await.unwrap());
    }
    // The user's third session: 429 + Retry-After + reason header.
    let (status, retry, reason) = status_of(&h, &q("ann"), None).await;
    assert_eq!(status, 429);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(reason.as_deref(), Some("max-sessions-per-user"));
    assert_eq!(h.admin_get("/ready").await.0, 200);

    open.push(ListenClient::connect(h.addr(), &q("ben"), &[]).await.unwrap());
    // At capacity: /ready is 503 and the (max+1)th session gets 503 + Retry-After.
    assert_eq!(h.admin_get("/ready").await.0, 503);
    let (status, retry, _) = status_of(&h, &q("cat"), None).await;
    assert_eq!(status, 503);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);

    // A slot frees up: ready again, admitted again.
    open.pop().unwrap().close().await.expect("the closing handshake completes");
    let mut ready = 0;
    for _ in 0..100 {
        ready = h.admin_get("/ready").await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, 200);
    assert_eq!(status_of(&h, &q("cat"), None).await.0, 101);

    let after = h.scrape().await;
    let refused =
        |reason| after.increase(&before, "hark_session_rejections_total", &[("reason", reason)]);
    assert_eq!(refused("user_limit"), 1.0);
    assert_eq!(refused("capacity"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_over_the_per_ip_rate_get_429_with_retry_after() {
    let h = Harness::start(None, |c| {
        c.limits.upgrade_rate_per_ip = std::num::NonZeroU32::new(2);
    })
    .await;
    // Burst of twice the rate is allowed, then 429.
    let before = h.scrape().await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(status_of(&h, &format!("uid=ip{i}&{QUERY}"), None).await);
    }
    assert_eq!(statuses.iter().filter(|s| s.0 == 101).count(), 4, "{statuses:?}");
    let refused = statuses.iter().find(|s| s.0 == 429).expect("a 429");
    assert!(refused.1.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(refused.2.as_deref(), Some("upgrades-per-ip"));
    let after = h.scrape().await;
    let refused =
        after.increase(&before, "hark_session_rejections_total", &[("reason", "rate_limit")]);
    assert_eq!(refused, 2.0);
}
