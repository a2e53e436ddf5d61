//! The shared-outbox behaviour suite, run against Postgres and the in-memory twin;
//! plus Postgres-only tests of concurrent claimers and concurrent migrations.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{pg_store, record, sleep_ms};
use hark_store::testing::PgServer;
use hark_store::{Inserted, MemoryStore, SharedOutbox};

const LONG: Duration = Duration::from_secs(30);

async fn repeat_insert_is_a_no_op_even_after_delivery(outbox: &dyn SharedOutbox) {
    let r1 = record("c-1", "u1");
    assert_eq!(outbox.insert(&r1).await.unwrap(), Inserted::New);
    assert_eq!(outbox.insert(&r1).await.unwrap(), Inserted::AlreadyPresent);
    let claimed = outbox.claim_due("pod-a", LONG, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].record, r1);
    assert_eq!(claimed[0].attempts, 1);
    assert!(outbox.claim_due("pod-b", LONG, 10).await.unwrap().is_empty(), "held under lease");
    assert!(outbox.mark_delivered("c-1").await.unwrap());
    assert!(!outbox.mark_delivered("c-1").await.unwrap(), "already a tombstone");
    assert_eq!(
        outbox.insert(&r1).await.unwrap(),
        Inserted::AlreadyPresent,
        "the tombstone keeps it"
    );
    assert!(outbox.claim_due("pod-a", LONG, 10).await.unwrap().is_empty());
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.tombstones, stats.oldest_age), (0, 1, None));
    assert!(!outbox.mark_delivered("unknown").await.unwrap());
}

async fn a_released_record_comes_back_after_its_retry_delay(outbox: &dyn SharedOutbox) {
    outbox.insert(&record("c-2", "u1")).await.unwrap();
    assert_eq!(outbox.claim_due("pod-a", LONG, 10).await.unwrap().len(), 1);
    assert!(!outbox.release("pod-b", "c-2", Duration::ZERO).await.unwrap(), "not pod-b's claim");
    assert!(outbox.release("pod-a", "c-2", Duration::from_millis(400)).await.unwrap());
    assert!(outbox.claim_due("pod-a", LONG, 10).await.unwrap().is_empty(), "not due yet");
    sleep_ms(600).await;
    let again = outbox.claim_due("pod-b", LONG, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

async fn a_crashed_claimers_records_return_when_the_lease_runs_out(outbox: &dyn SharedOutbox) {
    outbox.insert(&record("c-3", "u1")).await.unwrap();
    let lease = Duration::from_millis(400);
    assert_eq!(outbox.claim_due("pod-a", lease, 10).await.unwrap().len(), 1);
    // pod-a "crashes": it never marks or releases.
    assert!(outbox.claim_due("pod-b", lease, 10).await.unwrap().is_empty());
    sleep_ms(600).await;
    let taken = outbox.claim_due("pod-b", LONG, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "pod-b picks it up");
    assert!(!outbox.release("pod-a", "c-3", Duration::ZERO).await.unwrap(), "pod-a lost it");
    assert!(outbox.mark_delivered("c-3").await.unwrap());
}

async fn claims_are_oldest_first_and_limited(outbox: &dyn SharedOutbox) {
    for n in 0..5 {
        outbox.insert(&record(&format!("o-{n}"), "u1")).await.unwrap();
        sleep_ms(15).await;
    }
    let first = outbox.claim_due("pod-a", LONG, 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.record.conversation_id.as_str()).collect();
    assert_eq!(ids, ["o-0", "o-1"]);
    let stats = outbox.stats().await.unwrap();
    assert_eq!(stats.pending, 5, "claimed records are still pending");
    assert!(stats.oldest_age.unwrap() >= Duration::from_millis(50), "{stats:?}");
    let rest = outbox.claim_due("pod-b", LONG, 10).await.unwrap();
    assert_eq!(rest.len(), 3);
}

async fn old_tombstones_are_pruned(outbox: &dyn SharedOutbox) {
    for id in ["p-1", "p-2"] {
        outbox.insert(&record(id, "u1")).await.unwrap();
        outbox.mark_delivered(id).await.unwrap();
    }
    assert_eq!(
        outbox.prune_tombstones(Duration::from_secs(3600), 10).await.unwrap(),
        0,
        "too young"
    );
    sleep_ms(300).await;
    assert_eq!(outbox.prune_tombstones(Duration::from_millis(200), 1).await.unwrap(), 1, "limited");
    assert_eq!(outbox.prune_tombstones(Duration::from_millis(200), 10).await.unwrap(), 1);
    assert_eq!(
        outbox.insert(&record("p-1", "u1")).await.unwrap(),
        Inserted::New,
        "pruned: new again"
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = hark_store::MemoryStore::new(1_000);
                    super::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = hark_store::testing::PgServer::start();
                    let store = crate::common::pg_store(&server.url()).await;
                    super::$name(&store).await;
                }
            )*
        }
    };
}

suite!(
    repeat_insert_is_a_no_op_even_after_delivery,
    a_released_record_comes_back_after_its_retry_delay,
    a_crashed_claimers_records_return_when_the_lease_runs_out,
    claims_are_oldest_first_and_limited,
    old_tombstones_are_pruned,
);

#[tokio::test]
async fn memory_outbox_is_bounded() {
    let store = MemoryStore::new(2);
    store.insert(&record("a", "u")).await.unwrap();
    store.insert(&record("b", "u")).await.unwrap();
    assert!(store.insert(&record("c", "u")).await.is_err(), "full of pending records");
    store.mark_delivered("a").await.unwrap();
    assert_eq!(
        store.insert(&record("c", "u")).await.unwrap(),
        Inserted::New,
        "a tombstone made room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_claimers_never_share_a_row() {
    let server = PgServer::start();
    let a = Arc::new(pg_store(&server.url()).await);
    let b = Arc::new(pg_store(&server.url()).await);
    for n in 0..200 {
        a.insert(&record(&format!("r-{n:03}"), "u1")).await.unwrap();
    }
    // Each claimer takes its first batch, then waits for the other's: on a busy
    // machine one task could otherwise drain all 200 rows before the other's first
    // query (a failure of the test's scheduling, not of the store). After the
    // barrier both race for the rest.
    let both_started = Arc::new(tokio::sync::Barrier::new(2));
    let claimer = |store: Arc<hark_store::PgStore>, pod: &'static str| {
        let both_started = both_started.clone();
        tokio::spawn(async move {
            let mut mine: Vec<String> = store
                .claim_due(pod, LONG, 7)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.record.conversation_id)
                .collect();
            both_started.wait().await;
            loop {
                let batch = store.claim_due(pod, LONG, 7).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.record.conversation_id));
            }
        })
    };
    let (got_a, got_b) = tokio::join!(claimer(a.clone(), "pod-a"), claimer(b.clone(), "pod-b"));
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both claimers worked: {} / {}",
        got_a.len(),
        got_b.len()
    );
    let all: HashSet<_> = got_a.iter().chain(&got_b).collect();
    assert_eq!(all.len(), 200, "every row claimed");
    assert_eq!(got_a.len() + got_b.len(), 200, "no row claimed twice");
    let claimed_twice = server.psql("SELECT count(*) FROM hark_outbox WHERE attempts <> 1");
    assert_eq!(claimed_twice, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pods_starting_at_once_migrate_once() {
    let server = PgServer::start();
    let url = server.url();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { pg_store(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap();
    }
    assert_eq!(
        server.psql(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM hark_schema_migrations"
        ),
        "1,2"
    );
    // And again on an up-to-date database.
    pg_store(&url).await;
    assert_eq!(server.psql("SELECT count(*) FROM hark_schema_migrations"), "2");
}

#[tokio::test]
async fn postgres_outage_fails_fast_then_recovers() {
    let mut server = PgServer::start();
    let config = hark_store::PgConfig {
        budget: hark_store::BudgetConfig {
            timeout: Duration::from_secs(2),
            failure_threshold: std::num::NonZeroU32::new(3).unwrap(),
            cooldown: Duration::from_millis(500),
        },
        ..hark_store::PgConfig::new(server.url())
    };
    let store = hark_store::PgStore::connect(config).await.unwrap();
    store.insert(&record("before", "u1")).await.unwrap();
    assert!(store.budget().is_up());
    server.stop();
    for n in 0..3 {
        let started = std::time::Instant::now();
        let error = store.insert(&record(&format!("down-{n}"), "u1")).await.unwrap_err();
        assert!(error.is_outage(), "{error}");
        assert!(started.elapsed() <= Duration::from_millis(2_500), "bounded by the budget");
    }
    assert!(!store.budget().is_up(), "breaker open after 3 failures");
    let started = std::time::Instant::now();
    let rejected = store.insert(&record("rejected", "u1")).await.unwrap_err();
    assert!(matches!(rejected, hark_store::StoreError::Rejected { .. }), "{rejected}");
    // `Rejected` is the breaker's answer, not an I/O error; the bound only says it
    // did not wait out a 2 s budget (with room for a loaded machine).
    assert!(started.elapsed() < Duration::from_millis(500), "no I/O while open");
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        sleep_ms(550).await;
        if store.insert(&record("after", "u1")).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "postgres did not come back");
    }
    assert!(store.budget().is_up());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.pending, 2, "before and after; nothing from the outage");
}
