//! The fair-use suite (fleet-wide session cap, quota leases), run against Redis
//! (two store handles: two pods) and the in-memory twin; plus Redis-only checks
//! of key expiry and of how many commands a session costs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{redis_store, sleep_ms};
use hark_store::fair::SESSION_LEASE_TTL;
use hark_store::quota::{
    LocalBudgets, MeterConfig, QuotaAccount, QuotaContext, QuotaStatus, QuotaWindow, Window,
};
use hark_store::testing::RedisServer;
use hark_store::{
    LeaseGrant, MemoryStore, QuotaStore, SessionCap, SessionGrant, SessionRefresh, Settle,
    WallClock,
};

trait Fair: SessionCap + QuotaStore {}
impl<T: SessionCap + QuotaStore> Fair for T {}

const TTL: Duration = SESSION_LEASE_TTL;
const CHUNK: Duration = Duration::from_secs(30);

fn today() -> Window {
    QuotaWindow::DAY.containing(WallClock::system().now_ms())
}

fn granted(grant: LeaseGrant) -> f64 {
    match grant {
        LeaseGrant::Granted { seconds, .. } => seconds,
        LeaseGrant::Exhausted { retry_after } => panic!("exhausted ({retry_after:?})"),
    }
}

async fn the_cap_holds_across_pods(a: &dyn Fair, b: &dyn Fair) {
    assert_eq!(
        a.acquire_session("u1", "s1", 2, TTL).await.unwrap(),
        SessionGrant::Granted { open: 1 }
    );
    assert_eq!(
        b.acquire_session("u1", "s2", 2, TTL).await.unwrap(),
        SessionGrant::Granted { open: 2 }
    );
    let SessionGrant::AtCap { retry_after, open } =
        a.acquire_session("u1", "s3", 2, TTL).await.unwrap()
    else {
        panic!("third session over a cap of 2")
    };
    assert_eq!(open, 2);
    assert!(retry_after <= TTL && retry_after > TTL - Duration::from_secs(5), "{retry_after:?}");
    assert_eq!(
        b.acquire_session("u1", "s1", 2, TTL).await.unwrap(),
        SessionGrant::Granted { open: 2 },
        "held: a refresh"
    );
    assert_eq!(
        a.acquire_session("u2", "s9", 2, TTL).await.unwrap(),
        SessionGrant::Granted { open: 1 },
        "per user"
    );
    b.release_session("u1", "s1").await.unwrap();
    assert_eq!(
        a.acquire_session("u1", "s3", 2, TTL).await.unwrap(),
        SessionGrant::Granted { open: 2 }
    );
}

async fn a_crashed_pods_sessions_expire_by_themselves(a: &dyn Fair, b: &dyn Fair) {
    let short = Duration::from_millis(300);
    assert!(matches!(
        a.acquire_session("u1", "s1", 1, short).await.unwrap(),
        SessionGrant::Granted { .. }
    ));
    assert!(matches!(
        b.acquire_session("u1", "s2", 1, short).await.unwrap(),
        SessionGrant::AtCap { .. }
    ));
    sleep_ms(450).await; // pod a died: no refresh
    assert!(matches!(
        b.acquire_session("u1", "s2", 1, TTL).await.unwrap(),
        SessionGrant::Granted { open: 1 }
    ));
    assert!(b.refresh_session("u1", "s2", TTL).await.unwrap(), "still held");
    // A session whose lease lapsed (the store was away) is re-added: it is running.
    assert!(!a.refresh_session("u1", "s1", TTL).await.unwrap());
    assert!(matches!(
        b.acquire_session("u1", "s3", 2, TTL).await.unwrap(),
        SessionGrant::AtCap { open: 2, .. }
    ));
}

async fn leases_never_pass_the_limit_and_commits_refund(a: &dyn Fair, b: &dyn Fair) {
    let window = today();
    let limit = Duration::from_secs(100);
    assert_eq!(granted(a.lease("u1", window, limit, CHUNK).await.unwrap()), 30.0);
    assert_eq!(granted(b.lease("u1", window, limit, CHUNK).await.unwrap()), 30.0);
    assert_eq!(
        a.lease("u1", window, limit, CHUNK).await.unwrap(),
        LeaseGrant::Granted { seconds: 30.0, remaining: 10.0 }
    );
    assert_eq!(granted(b.lease("u1", window, limit, CHUNK).await.unwrap()), 10.0, "partial");
    let LeaseGrant::Exhausted { retry_after } = a.lease("u1", window, limit, CHUNK).await.unwrap()
    else {
        panic!("100 s leased")
    };
    assert!(retry_after <= Duration::from_secs(86_400));
    let refund = b.commit("u1", window, Settle { used: 20.0, release: 30.0 }).await.unwrap();
    assert_eq!(refund, 10.0);
    assert_eq!(
        granted(a.lease("u1", window, limit, CHUNK).await.unwrap()),
        10.0,
        "the refund is leasable"
    );
    let other = Window { start_ms: window.end_ms, end_ms: window.end_ms + 86_400_000 };
    assert_eq!(
        granted(a.lease("u1", other, limit, CHUNK).await.unwrap()),
        30.0,
        "next window is fresh"
    );
    assert_eq!(granted(a.lease("u2", window, limit, CHUNK).await.unwrap()), 30.0, "per user");
}

async fn renewals_settle_keep_the_carry_and_refresh_the_session(a: &dyn Fair, b: &dyn Fair) {
    let window = today();
    let limit = Duration::from_secs(60);
    a.acquire_session("u1", "s1", 1, Duration::from_millis(300)).await.unwrap();
    assert_eq!(granted(a.lease("u1", window, limit, CHUNK).await.unwrap()), 30.0);
    let refresh = SessionRefresh { session_id: "s1", ttl: TTL };
    let renewed = b
        .renew("u1", window, limit, Settle { used: 25.0, release: 25.0 }, CHUNK, Some(refresh))
        .await
        .unwrap();
    // used 25, leased 5 (carry) → 30 left → all of the chunk.
    assert_eq!(renewed, LeaseGrant::Granted { seconds: 30.0, remaining: 0.0 });
    assert!(matches!(
        a.lease("u1", window, limit, CHUNK).await.unwrap(),
        LeaseGrant::Exhausted { .. }
    ));
    sleep_ms(450).await;
    assert!(
        b.refresh_session("u1", "s1", TTL).await.unwrap(),
        "the renewal refreshed the cap lease"
    );
    assert_eq!(a.commit("u1", window, Settle { used: 10.0, release: 35.0 }).await.unwrap(), 25.0);
    assert_eq!(granted(b.lease("u1", window, limit, CHUNK).await.unwrap()), 25.0);
}

async fn a_crashed_pods_lease_counts_as_used(a: &dyn Fair, b: &dyn Fair) {
    let window = today();
    let limit = Duration::from_secs(30);
    assert_eq!(granted(a.lease("u1", window, limit, CHUNK).await.unwrap()), 30.0);
    // pod a dies without committing.
    assert!(matches!(
        b.lease("u1", window, limit, CHUNK).await.unwrap(),
        LeaseGrant::Exhausted { .. }
    ));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = hark_store::MemoryStore::new(1_000);
                    super::$name(&store, &store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = hark_store::testing::RedisServer::start();
                    let a = crate::common::redis_store(&server.url());
                    let b = crate::common::redis_store(&server.url());
                    super::$name(&a, &b).await;
                }
            )*
        }
    };
}

suite!(
    the_cap_holds_across_pods,
    a_crashed_pods_sessions_expire_by_themselves,
    leases_never_pass_the_limit_and_commits_refund,
    renewals_settle_keep_the_carry_and_refresh_the_session,
    a_crashed_pods_lease_counts_as_used,
);

#[tokio::test]
async fn redis_keys_are_hash_tagged_and_expire_with_their_window() {
    let server = RedisServer::start();
    let store = redis_store(&server.url());
    let window = today();
    store.lease("user:7", window, Duration::from_secs(600), CHUNK).await.unwrap();
    store.acquire_session("user:7", "s1", 3, TTL).await.unwrap();
    let quota_key = format!("hark:{{user:7}}:quota:{}", window.start_secs());
    assert_eq!(server.command(&["HGET", &quota_key, "leased"]), "30000");
    let pttl: i64 = server.command(&["PTTL", &quota_key]).parse().unwrap();
    let expected = i64::try_from(window.expires_at_ms() - WallClock::system().now_ms()).unwrap();
    assert!((pttl - expected).abs() < 5_000, "expires at window end + 1 h: {pttl} vs {expected}");
    let pttl: i64 = server.command(&["PTTL", "hark:{user:7}:sessions"]).parse().unwrap();
    assert!(
        pttl > 170_000 && pttl <= 180_000,
        "the set lives as long as its longest lease: {pttl}"
    );
    // A window whose account has expired keeps nothing.
    let old =
        Window { start_ms: window.start_ms - 2 * 86_400_000, end_ms: window.start_ms - 86_400_000 };
    store.commit("user:7", old, Settle { used: 5.0, release: 0.0 }).await.unwrap();
    assert_eq!(
        server.command(&["EXISTS", &format!("hark:{{user:7}}:quota:{}", old.start_secs())]),
        "0"
    );
}

/// Counts the Redis commands of whole sessions: 10 s and 10 min of real-time
/// audio (simulated as fast as the store answers), with the cap and a quota.
#[tokio::test]
async fn redis_commands_per_session_are_a_small_constant() {
    let server = RedisServer::start();
    let store = Arc::new(redis_store(&server.url()));
    let ctx = QuotaContext {
        fleet: Some(store.clone()),
        local: Arc::new(LocalBudgets::new(100)),
        window: QuotaWindow::DAY,
        meter: MeterConfig::default(),
        clock: WallClock::system(),
    };
    // Load the scripts once, as the first sessions of a pod do.
    session(&store, &ctx, "warm-up", 60).await;
    // INFO commandstats also counts the commands a script runs inside Redis;
    // the round trips are the commands a client sent.
    const INSIDE_SCRIPTS: &[&str] = &[
        "time",
        "zremrangebyscore",
        "zscore",
        "zcard",
        "zadd",
        "zrange",
        "pexpireat",
        "hget",
        "hset",
    ];
    for (seconds, max_round_trips) in [(10, 4), (600, 25)] {
        server.reset_stats();
        let user = format!("u-{seconds}");
        session(&store, &ctx, &user, seconds).await;
        let mut stats = server.command_stats();
        stats.remove("config|resetstat");
        let executed: u64 = stats.values().sum();
        let round_trips: u64 = stats
            .iter()
            .filter(|(name, _)| !INSIDE_SCRIPTS.contains(&name.as_str()))
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "redis for a {seconds} s session: {round_trips} round trips, {executed} commands executed: {stats:?}"
        );
        assert!(
            round_trips <= max_round_trips,
            "{seconds} s session: {round_trips} round trips: {stats:?}"
        );
        assert!(executed <= 10 * round_trips, "scripts stay small: {stats:?}");
        assert!(!stats.contains_key("script|load"), "scripts stay loaded: {stats:?}");
    }
}

/// One session as the gateway runs it: acquire, first lease, 20 ms frames with a
/// poll every second (the cap lease refreshed by renewals, or once a minute),
/// commit, release. Returns nothing; the server counts.
async fn session(store: &hark_store::RedisStore, ctx: &QuotaContext, uid: &str, seconds: u32) {
    let session_id = format!("{uid}-session");
    assert!(matches!(
        store.acquire_session(uid, &session_id, 3, TTL).await.unwrap(),
        SessionGrant::Granted { .. }
    ));
    let mut account = QuotaAccount::open(
        ctx.clone(),
        uid,
        Duration::from_secs(3_600),
        Some((session_id.clone(), TTL)),
    )
    .await
    .unwrap();
    let mut last_refresh_s = 0;
    for second in 1..=seconds {
        for _ in 0..50 {
            account.add(0.02);
        }
        assert_eq!(account.poll().await, QuotaStatus::Ok);
        if account.session_refreshed_at_ms().is_some() {
            last_refresh_s = second; // a renewal just did it (or earlier): good enough here
        }
        if second - last_refresh_s >= 60 {
            store.refresh_session(uid, &session_id, TTL).await.unwrap();
            last_refresh_s = second;
        }
    }
    account.close().await;
    store.release_session(uid, &session_id).await.unwrap();
}

#[tokio::test]
async fn memory_twin_quota_accounts_are_inspectable() {
    let store = MemoryStore::new(10);
    let window = today();
    store.lease("u", window, Duration::from_secs(60), CHUNK).await.unwrap();
    assert_eq!(store.quota_account("u", window), Some((0.0, 30.0)));
}

/// A server whose test process was killed (so its drop never ran) is stopped and
/// deleted by the next start, and cannot block a later run.
#[tokio::test]
async fn a_stale_server_of_a_dead_test_process_is_reaped() {
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let dir = std::env::temp_dir().join(format!("hark-redis-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pidfile = dir.join("redis.pid");
    let mut stale = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        assert!(std::time::Instant::now() < deadline, "the stale server did not start");
        sleep_ms(20).await;
    }
    std::fs::write(dir.join("owner"), format!("{dead_pid} 1")).unwrap();

    let _fresh = RedisServer::start();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stale.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the stale server is still running");
        sleep_ms(20).await;
    }
    assert!(!dir.exists(), "its directory is gone");
}
