//! The conversation-continuity suite, run against Postgres (two store handles:
//! two pods) and the in-memory twin.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{parked, segment, sleep_ms};
use hark_store::{MemoryStore, ParkingLot, SharedOutbox};

/// Two handles on one store: two pods (the twin is one process, so both are it).
trait Lot: ParkingLot + SharedOutbox {}
impl<T: ParkingLot + SharedOutbox> Lot for T {}

const MINUTE: Duration = Duration::from_secs(60);

async fn resumed_within_its_timeout_on_another_pod(a: &dyn Lot, b: &dyn Lot) {
    let conversation = parked("conv-1", "u1", MINUTE);
    a.park(&conversation).await.unwrap();
    assert_eq!(b.count_parked().await.unwrap(), 1);
    assert_eq!(b.resume("someone-else").await.unwrap(), None);
    let resumed = b.resume("u1").await.unwrap().expect("resumed on pod b");
    assert_eq!(resumed, conversation, "same id, segments and timings");
    assert_eq!(a.resume("u1").await.unwrap(), None, "taken once");
    assert_eq!(a.count_parked().await.unwrap(), 0);
    assert!(a.claim_expired("pod-a", 10).await.unwrap().is_empty());
}

async fn not_resumed_after_its_timeout_and_finished_once(a: &dyn Lot, b: &dyn Lot) {
    a.park(&parked("conv-2", "u1", Duration::from_millis(300))).await.unwrap();
    assert!(b.claim_expired("pod-b", 10).await.unwrap().is_empty(), "still live");
    sleep_ms(500).await;
    assert_eq!(b.resume("u1").await.unwrap(), None, "too late to resume");
    let finished = b.claim_expired("pod-b", 10).await.unwrap();
    assert_eq!(finished.len(), 1);
    let record = &finished[0];
    assert_eq!(record.conversation_id, "conv-2");
    assert_eq!(record.segments.len(), 3);
    assert!(record.finished_at_ms >= record.started_at_ms);
    assert!(a.claim_expired("pod-a", 10).await.unwrap().is_empty(), "exactly once");
    let queued = a.claim_due("pod-a", MINUTE, 10).await.unwrap();
    assert_eq!(queued.len(), 1, "the outbox drainer delivers it");
    assert_eq!(&queued[0].record, record);
    assert_eq!(a.count_parked().await.unwrap(), 0);
}

async fn two_open_conversations_are_never_guessed_or_merged(a: &dyn Lot, b: &dyn Lot) {
    a.park(&parked("phone", "u1", MINUTE)).await.unwrap();
    b.park(&parked("watch", "u1", MINUTE)).await.unwrap();
    a.park(&parked("other-user", "u2", MINUTE)).await.unwrap();
    assert_eq!(a.resume("u1").await.unwrap(), None, "ambiguous: resume none");
    let finished = b.claim_expired("pod-b", 10).await.unwrap();
    let ids: HashSet<_> = finished.iter().map(|r| r.conversation_id.as_str()).collect();
    assert_eq!(ids, HashSet::from(["phone", "watch"]), "both finished at once, separately");
    assert!(b.resume("u2").await.unwrap().is_some(), "another user is unaffected");
}

async fn parking_again_replaces_and_past_deadlines_are_due_at_once(a: &dyn Lot, b: &dyn Lot) {
    let mut conversation = parked("conv-3", "u1", MINUTE);
    a.park(&conversation).await.unwrap();
    conversation.segments.push(segment(4));
    a.park(&conversation).await.unwrap();
    assert_eq!(b.count_parked().await.unwrap(), 1);
    assert_eq!(b.resume("u1").await.unwrap().unwrap().segments.len(), 4);

    let mut stale = parked("conv-4", "u1", Duration::from_secs(5));
    stale.last_transcript_at_ms -= 10_000;
    a.park(&stale).await.unwrap();
    assert_eq!(b.resume("u1").await.unwrap(), None);
    assert_eq!(b.claim_expired("pod-b", 10).await.unwrap().len(), 1);
}

async fn racing_claimers_finish_each_conversation_exactly_once(a: Arc<dyn Lot>, b: Arc<dyn Lot>) {
    for n in 0..60 {
        a.park(&parked(&format!("race-{n:02}"), &format!("user-{n}"), Duration::from_millis(200)))
            .await
            .unwrap();
    }
    sleep_ms(400).await;
    let claimer = |lot: Arc<dyn Lot>, pod: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = lot.claim_expired(pod, 4).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|r| r.conversation_id));
            }
        })
    };
    let (x, y) = tokio::join!(claimer(a.clone(), "pod-a"), claimer(b.clone(), "pod-b"));
    let (x, y) = (x.unwrap(), y.unwrap());
    let all: HashSet<_> = x.iter().chain(&y).cloned().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(x.len() + y.len(), 60, "no conversation finished twice");
    assert_eq!(a.stats().await.unwrap().pending, 60, "each in the outbox once");
    assert_eq!(a.count_parked().await.unwrap(), 0);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let store = MemoryStore::new(1_000);
                    super::$name(&store, &store).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_claimers_finish_each_conversation_exactly_once() {
                let store: Arc<dyn Lot> = Arc::new(MemoryStore::new(1_000));
                super::racing_claimers_finish_each_conversation_exactly_once(store.clone(), store).await;
            }
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let server = hark_store::testing::PgServer::start();
                    let a = crate::common::pg_store(&server.url()).await;
                    let b = crate::common::pg_store(&server.url()).await;
                    super::$name(&a, &b).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_claimers_finish_each_conversation_exactly_once() {
                let server = hark_store::testing::PgServer::start();
                let a: Arc<dyn Lot> = Arc::new(crate::common::pg_store(&server.url()).await);
                let b: Arc<dyn Lot> = Arc::new(crate::common::pg_store(&server.url()).await);
                super::racing_claimers_finish_each_conversation_exactly_once(a, b).await;
            }
        }
    };
}

suite!(
    resumed_within_its_timeout_on_another_pod,
    not_resumed_after_its_timeout_and_finished_once,
    two_open_conversations_are_never_guessed_or_merged,
    parking_again_replaces_and_past_deadlines_are_due_at_once,
);

#[tokio::test]
async fn memory_parking_for_a_pod_without_postgres_leaves_the_outbox_to_the_caller() {
    use hark_store::{ExpiredParking, WallClock};
    let store = MemoryStore::with_options(10, ExpiredParking::ToCaller, WallClock::system());
    // Stamped on the store's own clock: `system_now_ms()` can read a millisecond
    // ahead of it (the clock is a truncated base plus truncated `Instant` time), and
    // a conversation parked with no timeout would then be due only 1 ms later.
    let mut conversation = parked("c", "u", Duration::ZERO);
    conversation.last_transcript_at_ms = store.clock().now_ms();
    store.park(&conversation).await.unwrap();
    assert_eq!(store.claim_expired("pod", 10).await.unwrap().len(), 1);
    assert_eq!(store.stats().await.unwrap().pending, 0, "the caller writes it to its disk outbox");
}

#[tokio::test(start_paused = true)]
async fn memory_parking_follows_the_paused_clock() {
    let store = MemoryStore::with_options(
        10,
        Default::default(),
        hark_store::WallClock::starting_at(1_700_000_000_000),
    );
    let mut conversation = parked("c", "u", Duration::from_secs(120));
    conversation.last_transcript_at_ms = store.clock().now_ms();
    store.park(&conversation).await.unwrap();
    tokio::time::advance(Duration::from_secs(119)).await;
    assert!(store.claim_expired("pod", 10).await.unwrap().is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(store.claim_expired("pod", 10).await.unwrap().len(), 1);
}
