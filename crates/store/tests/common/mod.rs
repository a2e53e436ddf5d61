//! Helpers shared by the integration tests: records, parked conversations, and
//! stores on real engines with short budgets.
#![allow(dead_code)]

use std::time::Duration;

use hark_proto::{ConversationRecord, Segment};
use hark_store::budget::BudgetConfig;
use hark_store::clock::system_now_ms;
use hark_store::{ParkedConversation, PgConfig, PgStore, RedisConfig, RedisStore};

pub fn segment(n: u32) -> Segment {
    Segment {
        id: format!("seg-{n}"),
        text: format!("words {n}"),
        speaker: Segment::speaker_label(0),
        speaker_id: 0,
        is_user: false,
        person_id: None,
        start: f64::from(n),
        end: f64::from(n) + 0.5,
    }
}

pub fn record(id: &str, uid: &str) -> ConversationRecord {
    let now = system_now_ms();
    ConversationRecord {
        version: ConversationRecord::VERSION,
        conversation_id: id.to_owned(),
        uid: uid.to_owned(),
        language: "en".into(),
        sample_rate: 16_000,
        session_id: "session-1".into(),
        started_at_ms: now - 60_000,
        finished_at_ms: now,
        segments: vec![segment(1), segment(2)],
    }
}

/// A conversation whose last transcript was just now.
pub fn parked(id: &str, uid: &str, timeout: Duration) -> ParkedConversation {
    let now = system_now_ms();
    ParkedConversation {
        conversation_id: id.to_owned(),
        uid: uid.to_owned(),
        session_id: "session-1".into(),
        language: "en".into(),
        sample_rate: 16_000,
        segments: vec![segment(1), segment(2), segment(3)],
        started_at_ms: now - 30_000,
        last_transcript_at_ms: now,
        conversation_timeout: timeout,
    }
}

pub fn pg_budget() -> BudgetConfig {
    BudgetConfig { timeout: Duration::from_secs(5), ..BudgetConfig::postgres() }
}

pub async fn pg_store(url: &str) -> PgStore {
    let config = PgConfig { budget: pg_budget(), ..PgConfig::new(url) };
    PgStore::connect(config).await.expect("connect to the test postgres")
}

pub fn redis_store(url: &str) -> RedisStore {
    // A test host is shared with other builds: give the real Redis more room
    // than production's 250 ms, so only a real outage trips the breaker.
    let budget = BudgetConfig { timeout: Duration::from_secs(2), ..BudgetConfig::redis() };
    RedisStore::new(RedisConfig { budget, ..RedisConfig::new(url) }).expect("redis url")
}

/// Real-clock waits for lease expiry (Postgres and Redis run on their own clocks).
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
