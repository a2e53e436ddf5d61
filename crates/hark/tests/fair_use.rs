//! Fair use across the fleet: two real `hark` processes share one real
//! `redis-server` (started by the test from Debian's package; it fails, never
//! skips, without it). Quotas and the per-user cap hold across pods, per user
//! (the JWT `sub`), with a constant handful of Redis commands per session, and
//! Redis going away costs clients nothing.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{metric, Hark};
use hark_fakes::client::{ConnectError, ListenClient, Received};
use hark_fakes::fake_stt::{silence, synth, FakeStt, FakeSttConfig, VOCAB};
use hark_proto::ServiceStatus;
use hark_store::testing::RedisServer;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "an-hs256-secret-that-is-at-least-32-bytes-long";
const QUERY: &str = "sample_rate=16000&codec=pcm16&conversation_timeout=600";
const WAIT: Duration = Duration::from_secs(20);
/// 100 ms of 16 kHz PCM16.
const FRAME: usize = 3_200;

fn token(sub: &str, plan: Option<&str>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut claims = json!({ "sub": sub, "exp": now + 3600 });
    if let Some(plan) = plan {
        claims["plan"] = json!(plan);
    }
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

struct Fleet {
    stt: FakeStt,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let stt = FakeStt::start(FakeSttConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        Self { stt, redis, dir }
    }

    async fn pod(&self, name: &str, extra: &[&str]) -> Hark {
        self.pod_with_pusher(name, None, extra).await
    }

    /// A pod of the fleet with a pusher (`None`: none) and `extra` flags.
    async fn pod_with_pusher(&self, name: &str, pusher: Option<&str>, extra: &[&str]) -> Hark {
        let outbox = self.dir.path().join(name);
        let secret = self.dir.path().join("secret");
        let url = self.redis.url();
        let mut flags = vec![
            "--auth",
            "jwt",
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--redis-url",
            url.as_str(),
        ];
        flags.extend_from_slice(extra);
        let args = common::fake_upstream_args(&self.stt.url(), pusher, Path::new(&outbox), &flags);
        common::start(&args).await
    }
}

async fn connect(pod: &Hark, token: &str) -> Result<ListenClient, ConnectError> {
    let auth = format!("Bearer {token}");
    ListenClient::connect(pod.client, QUERY, &[("Authorization", auth.as_str())]).await
}

async fn ready(pod: &Hark, token: &str) -> ListenClient {
    let mut client = connect(pod, token).await.expect("admitted");
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    client
}

/// Streams `seconds` of speech-like audio at `speed` times real time; stops early
/// when the session is closed. Returns the seconds sent and the close seen, if any.
async fn stream(
    client: &mut ListenClient,
    seconds: f64,
    speed: f64,
) -> (f64, Option<(u16, String)>) {
    let words: Vec<(&str, u32)> =
        (0..((seconds * 2.0) as usize)).map(|i| (VOCAB[i % 32], 0)).collect();
    let pcm = synth(&words, 16_000);
    let pace = Duration::from_secs_f64(0.1 / speed);
    let mut sent = 0.0;
    for chunk in pcm.chunks(FRAME) {
        if client.send_frame(Bytes::copy_from_slice(chunk)).await.is_err() {
            break;
        }
        sent += 0.1;
        while let Some(received) = client.next(Duration::ZERO).await {
            if let Received::Closed(Some(code), reason) = received {
                return (sent, Some((code, reason)));
            }
        }
        tokio::time::sleep(pace).await;
    }
    (sent, None)
}

fn seconds_to_utc_midnight() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    86_400 - now % 86_400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_is_shared_by_the_fleet_and_a_paid_plan_streams_past_it() {
    let fleet = Fleet::start().await;
    let plans =
        ["--quota-plan", "free=20s", "--quota-plan", "pro=unlimited", "--quota-lease", "5s"];
    let a = fleet.pod("a", &plans).await;
    let b = fleet.pod("b", &plans).await;
    let user = token("ursula", None);

    // 12 s of audio on pod A, then the session ends and commits its usage.
    let mut on_a = ready(&a, &user).await;
    let (sent, closed) = stream(&mut on_a, 12.0, 4.0).await;
    assert_eq!((sent.round(), closed), (12.0, None));
    on_a.close().await.expect("the closing handshake completes");
    // The client has its Close reply at once; pod A commits the usage and releases
    // the rest of its lease a Redis round trip later. Until then the fleet counts
    // A's whole lease (up to 20 s here) and B would refuse: wait for the commit.
    let commit = r#"hark_store_calls_total{store="redis",op="quota_commit",result="ok"}"#;
    let mut committed = 0.0;
    for _ in 0..100 {
        committed = metric(&a, commit).await;
        if committed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(committed >= 1.0, "pod A committed the session's usage within 10 s");

    // On pod B the same user has about 8 s left: cut off at the shared limit,
    // within the lease bound, with the reason and a quota_exceeded event first.
    let mut on_b = ready(&b, &user).await;
    let (sent, closed) = stream(&mut on_b, 30.0, 4.0).await;
    let (code, reason) = closed.expect("pod B closes the session at the quota");
    assert_eq!(code, 1008);
    assert!(reason.contains("quota"), "{reason}");
    // 8 s left + one 5 s lease + one second of polling at 4x real time.
    assert!((7.0..=8.0 + 5.0 + 4.5).contains(&sent), "cut after {sent} s of audio");
    let retry = on_b.received.iter().find_map(|r| match r {
        Received::QuotaExceeded(retry) => Some(*retry),
        _ => None,
    });
    let reset = seconds_to_utc_midnight();
    let retry = retry.expect("quota_exceeded before the close");
    assert!(retry + 5 >= reset && retry <= reset + 15 * 60 + 5, "{retry} vs reset in {reset}");

    // The next upgrade, on either pod: 429, Retry-After at the window's reset plus
    // jitter, X-Rate-Limit-Reason quota.
    for pod in [&a, &b] {
        match connect(pod, &user).await {
            Err(ConnectError::Refused { status, retry_after, rate_limit_reason, .. }) => {
                assert_eq!(status, 429);
                assert_eq!(rate_limit_reason.as_deref(), Some("quota"));
                let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
                assert!(secs + 5 >= reset && secs <= reset + 15 * 60 + 5, "{secs} vs {reset}");
            }
            other => panic!("expected 429, got {:?}", other.map(|_| "a session")),
        }
    }
    assert!(metric(&b, r#"hark_quota_rejections_total{reason="quota"}"#).await >= 1.0);

    // A paying user on `pro=unlimited` streams past 20 s (and costs no quota call).
    let mut pro = ready(&a, &token("petra", Some("pro"))).await;
    let (sent, closed) = stream(&mut pro, 24.0, 8.0).await;
    assert_eq!(closed, None, "pro streamed {sent} s");
    assert!(sent >= 23.9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_cap_holds_across_two_pods() {
    let fleet = Fleet::start().await;
    let cap = ["--max-sessions-per-user", "2"];
    let a = fleet.pod("a", &cap).await;
    let b = fleet.pod("b", &cap).await;
    let user = token("carla", None);
    let first = ready(&a, &user).await;
    let _second = ready(&b, &user).await;
    match connect(&a, &user).await {
        Err(ConnectError::Refused { status, retry_after, rate_limit_reason, .. }) => {
            assert_eq!(status, 429);
            assert_eq!(rate_limit_reason.as_deref(), Some("max-sessions-per-user"));
            assert!(retry_after.expect("Retry-After").parse::<u64>().unwrap() >= 1);
        }
        other => panic!("the third session was not refused: {:?}", other.map(|_| "admitted")),
    }
    // One ends: a new one is admitted (on the other pod, even).
    first.close().await.expect("the closing handshake completes");
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(client) = connect(&b, &user).await {
            admitted = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "the freed slot was not reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_costs_a_constant_handful_of_redis_commands() {
    let fleet = Fleet::start().await;
    let flags = ["--quota-plan", "free=1h", "--max-sessions-per-user", "5"];
    let pod = fleet.pod("a", &flags).await;
    // A first session loads the Lua scripts (once per process and Redis); the one
    // measured is every session after it.
    let warm = ready(&pod, &token("wanda", None)).await;
    warm.close().await.expect("the closing handshake completes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.redis.reset_stats();
    // 10 s of audio in 20 ms frames: 500 frames.
    let mut client = ready(&pod, &token("frank", None)).await;
    let pcm = {
        let mut pcm = synth(&[(VOCAB[1], 0); 18], 16_000);
        pcm.extend(silence(1.0, 16_000));
        pcm
    };
    let mut frames = 0;
    for chunk in pcm.chunks(640) {
        client.send_frame(Bytes::copy_from_slice(chunk)).await.unwrap();
        frames += 1;
        if frames % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(frames, 500);
    client.close().await.expect("the closing handshake completes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut stats = fleet.redis.command_stats();
    stats.remove("config|resetstat");
    let total: u64 = stats.values().sum();
    eprintln!("Redis commands for a 10 s session in 500 frames: {total} ({stats:?})");
    assert!(total <= 25, "{total} Redis commands for one session: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_costs_clients_nothing() {
    let mut fleet = Fleet::start().await;
    let flags = ["--quota-plan", "free=1h", "--quota-lease", "2s"];
    let pod = fleet.pod("a", &flags).await;
    let user = token("rita", None);
    let mut live = ready(&pod, &user).await;
    let (_, closed) = stream(&mut live, 3.0, 4.0).await;
    assert_eq!(closed, None);
    assert_eq!(metric(&pod, r#"hark_store_up{store="redis"}"#).await, 1.0);

    fleet.redis.stop();
    // The live session keeps streaming (its renewals fall back to a local budget)…
    let (sent, closed) = stream(&mut live, 6.0, 4.0).await;
    assert_eq!(closed, None, "closed after {sent} s with Redis down");
    // …new sessions are admitted and transcribed…
    let mut fresh = ready(&pod, &token("rolf", None)).await;
    let mut pcm = synth(&[(VOCAB[7], 0)], 16_000);
    pcm.extend(silence(0.5, 16_000));
    fresh.send_audio(&pcm, FRAME).await.unwrap();
    assert!(fresh.wait_for(WAIT, |r| matches!(r, Received::Segments(..))).await);
    // …and the gauge says the pod runs on local state.
    let mut down = 1.0;
    for _ in 0..50 {
        down = metric(&pod, r#"hark_store_up{store="redis"}"#).await;
        if down == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(down, 0.0);

    // Redis returns: the gauge goes back to 1, and the usage counted meanwhile is
    // reconciled into the user's account.
    fleet.redis.restart();
    let (_, closed) = stream(&mut live, 4.0, 4.0).await;
    assert_eq!(closed, None);
    let mut up = 0.0;
    for _ in 0..150 {
        up = metric(&pod, r#"hark_store_up{store="redis"}"#).await;
        if up == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up, 1.0, "the gauge returned");
    live.close().await.expect("the closing handshake completes");
    fresh.close().await.expect("the closing handshake completes");
    // Redis restarted empty (no persistence): what the account holds now is the
    // usage reconciled from the local budget, plus what was committed after.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let key = format!("hark:{{rita}}:quota:{}", now - now % 86_400);
    let mut used_ms = 0.0;
    for _ in 0..100 {
        used_ms = fleet.redis.command(&["HGET", &key, "used"]).parse().unwrap_or(0.0);
        if used_ms >= 8_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // About 4 s streamed after the restart, plus the ~6 s of the outage only
    // reconciliation can bring back.
    eprintln!("rita's usage in Redis after the restart: {used_ms} ms");
    assert!(used_ms >= 8_000.0, "rita's outage usage reached Redis: {used_ms} ms");
}

/// Decision 70: a session's quota is committed when its audio ends, not when its
/// hand-off does. Pusher acks each 104 only after 8 s; the conversation ends by its
/// 1 s timeout and its 104 goes out, then the client closes, so the session's
/// hand-off waits for that ack (up to its 5 s grace). The commit comes first,
/// while the session has not ended yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_is_committed_when_the_audio_ends_not_after_the_hand_off() {
    use hark_fakes::fake_pusher::{FakePusher, FakePusherConfig, PusherMode};
    use hark_proto::pusher as codes;

    let fleet = Fleet::start().await;
    let pusher = FakePusher::start(FakePusherConfig {
        mode: PusherMode::SlowAck { delay: Duration::from_secs(8) },
        record: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let flags = ["--quota-plan", "free=600s", "--quota-lease", "5s"];
    let pod = fleet.pod_with_pusher("slow-ack", Some(&pusher.url()), &flags).await;

    let auth = format!("Bearer {}", token("quinn", None));
    let query = "sample_rate=16000&codec=pcm16&conversation_timeout=1";
    let mut client = ListenClient::connect(pod.client, query, &[("Authorization", auth.as_str())])
        .await
        .unwrap();
    assert!(client.wait_for(WAIT, |r| *r == Received::Status(ServiceStatus::Ready)).await);
    let (sent, closed) = stream(&mut client, 3.0, 2.0).await;
    assert_eq!((sent.round(), closed), (3.0, None));
    // The conversation ends 1 s after its last transcript: its 104 reaches pusher,
    // which holds the ack.
    let processed = || pusher.frames().iter().any(|f| f.code == codes::PROCESS && f.uid == "quinn");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !processed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processed(), "the conversation went to pusher as a 104");
    // The client's close completes only once hark closes TCP, after the hand-off:
    // close in the background and watch the pod meanwhile.
    let closing = tokio::spawn(client.close());

    let commit = r#"hark_store_calls_total{store="redis",op="quota_commit",result="ok"}"#;
    let ended = r#"hark_sessions_total{outcome="client_closed"}"#;
    let mut sessions_ended_at_commit = None;
    for _ in 0..40 {
        if metric(&pod, commit).await >= 1.0 {
            sessions_ended_at_commit = Some(metric(&pod, ended).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sessions_ended_at_commit,
        Some(0.0),
        "the quota was committed within 2 s of the close, while the hand-off still waited"
    );
    // And the hand-off does end, after the ack grace: the check above can fail.
    let mut session_ended = false;
    for _ in 0..200 {
        if metric(&pod, ended).await >= 1.0 {
            session_ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(session_ended, "the session ended once its hand-off was done");
    let close = closing.await.expect("the close task");
    assert!(close.is_ok(), "the closing handshake completes: {close:?}");
}
