//! Paused-clock tests of the store budget and its breaker.

use std::time::Duration;

use super::*;

fn config() -> BudgetConfig {
    BudgetConfig {
        timeout: Duration::from_millis(100),
        failure_threshold: NonZeroU32::new(3).unwrap(),
        cooldown: Duration::from_secs(5),
    }
}

fn down() -> Result<(), StoreError> {
    Err(StoreError::Unavailable { store: "redis", message: "connection refused".into() })
}

async fn fail(budget: &Budget) -> StoreError {
    budget.call("op", async { down() }).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn up_only_after_the_first_answer() {
    let budget = Budget::new(StoreKind::Redis, config());
    assert!(!budget.is_up(), "unknown is not up");
    budget.call("op", async { Ok(()) }).await.unwrap();
    assert!(budget.is_up());
    assert_eq!(budget.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_times_out_within_its_budget() {
    let budget = Budget::new(StoreKind::Redis, config());
    let started = Instant::now();
    let error = budget
        .call("slow", async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Timeout { op: "slow", .. }), "{error}");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_then_one_trial_closes() {
    let budget = Budget::new(StoreKind::Redis, config());
    budget.call("op", async { Ok(()) }).await.unwrap();
    fail(&budget).await;
    fail(&budget).await;
    assert_eq!(budget.state(), BreakerState::Closed, "two in a row is not an outage");
    assert!(budget.is_up());
    fail(&budget).await;
    assert_eq!(budget.state(), BreakerState::Open);
    assert!(!budget.is_up());

    // While open nothing is attempted.
    let mut attempted = false;
    let error = budget
        .call("op", async {
            attempted = true;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Rejected { .. }));
    assert!(!attempted);
    assert!(!budget.would_attempt());

    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(budget.would_attempt());
    budget.call("op", async { Ok(()) }).await.unwrap();
    assert_eq!(budget.state(), BreakerState::Closed);
    assert!(budget.is_up());
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count() {
    let budget = Budget::new(StoreKind::Postgres, config());
    for _ in 0..10 {
        fail(&budget).await;
        fail(&budget).await;
        budget.call("op", async { Ok(()) }).await.unwrap();
    }
    assert_eq!(budget.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_bad_answer_is_not_an_outage() {
    let budget = Budget::new(StoreKind::Postgres, config());
    for _ in 0..5 {
        let result: Result<(), _> =
            budget.call("op", async { Err(StoreError::Data("bad row".into())) }).await;
        assert!(matches!(result, Err(StoreError::Data(_))));
    }
    assert_eq!(budget.state(), BreakerState::Closed);
    assert!(budget.is_up(), "the store answered");
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_a_fresh_cooldown() {
    let budget = Budget::new(StoreKind::Redis, config());
    for _ in 0..3 {
        fail(&budget).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    fail(&budget).await;
    assert_eq!(budget.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(!budget.would_attempt(), "the cooldown restarted at the failed trial");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(budget.would_attempt());
}

#[tokio::test(start_paused = true)]
async fn only_one_trial_at_a_time() {
    let budget = Budget::new(StoreKind::Redis, config());
    for _ in 0..3 {
        fail(&budget).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let trial_budget = budget.clone();
    let trial = tokio::spawn(async move {
        trial_budget
            .call("trial", async {
                let _ = wait.await;
                Ok(())
            })
            .await
    });
    tokio::task::yield_now().await;
    assert_eq!(budget.state(), BreakerState::HalfOpen);
    let second = budget.call("op", async { Ok(()) }).await;
    assert!(matches!(second, Err(StoreError::Rejected { .. })), "a second call is not a trial");
    release.send(()).unwrap();
    trial.await.unwrap().unwrap();
    assert_eq!(budget.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_cannot_leave_the_breaker_stuck() {
    let budget = Budget::new(StoreKind::Redis, config());
    for _ in 0..3 {
        fail(&budget).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let trial = budget.call("trial", std::future::pending::<Result<(), StoreError>>());
    // Dropped before its timeout: cancelled.
    let _ = tokio::time::timeout(Duration::from_millis(10), trial).await;
    assert_eq!(budget.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    budget.call("op", async { Ok(()) }).await.unwrap();
    assert_eq!(budget.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_changes_are_published() {
    let budget = Budget::new(StoreKind::Redis, config());
    let mut state = budget.subscribe();
    for _ in 0..3 {
        fail(&budget).await;
    }
    state.changed().await.unwrap();
    assert_eq!(*state.borrow_and_update(), BreakerState::Open);
}
