//! The recovery ramp on the paused clock: the rate bound holds in every sliding
//! second, slots are jittered, schedules are reproducible from the seed.

use std::num::NonZeroU32;
use std::time::Duration;

use hark_resilience::RecoveryRamp;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

fn rate(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Starts `n` acquirers at once and returns when each got through, sorted.
async fn acquire_concurrently(ramp: &RecoveryRamp, n: usize) -> Vec<Instant> {
    let mut waiters = JoinSet::new();
    for _ in 0..n {
        let ramp = ramp.clone();
        waiters.spawn(async move {
            ramp.acquire().await;
            Instant::now()
        });
    }
    let mut granted = waiters.join_all().await;
    granted.sort();
    granted
}

/// The most grants that fall in any half-open window `[t, t + 1 s)`.
fn busiest_second(sorted: &[Instant]) -> usize {
    let mut busiest = 0;
    let mut end = 0;
    for (start, &at) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < at + Duration::from_secs(1) {
            end += 1;
        }
        busiest = busiest.max(end - start);
    }
    busiest
}

#[tokio::test(start_paused = true)]
async fn five_hundred_acquirers_at_fifty_per_second() {
    let ramp = RecoveryRamp::new(rate(50), 7);
    let started = Instant::now();
    let granted = acquire_concurrently(&ramp, 500).await;

    assert_eq!(granted.len(), 500);
    assert!(busiest_second(&granted) <= 50, "{}", busiest_second(&granted));
    let took = *granted.last().unwrap() - started;
    assert!(
        took > Duration::from_millis(9_900) && took <= Duration::from_secs(10),
        "500 at 50/s took {took:?}"
    );
    // Spread evenly: every whole second gets its 50, no more and no fewer.
    for second in 0..10 {
        let from = started + Duration::from_secs(second);
        let to = from + Duration::from_secs(1);
        let in_second = granted.iter().filter(|&&t| t >= from && t < to).count();
        assert!((49..=51).contains(&in_second), "second {second}: {in_second}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_bound_holds_for_awkward_rates() {
    for (per_sec, seed) in [(1, 1), (3, 2), (7, 3), (1_000, 4)] {
        let ramp = RecoveryRamp::new(rate(per_sec), seed);
        let granted = acquire_concurrently(&ramp, per_sec as usize * 4 + 1).await;
        let busiest = busiest_second(&granted);
        assert!(busiest <= per_sec as usize, "rate {per_sec}: {busiest}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_grant_is_jittered_inside_its_own_slot() {
    let ramp = RecoveryRamp::new(rate(10), 11);
    let slot = Duration::from_millis(100);
    let started = Instant::now();
    let mut offsets = Vec::new();
    for k in 0..50u32 {
        ramp.acquire().await;
        let at = Instant::now() - started;
        let slot_start = slot * k;
        // The paused clock wakes timers on whole milliseconds, hence `<=` at the end.
        assert!(at >= slot_start && at <= slot_start + slot, "grant {k} at {at:?}");
        offsets.push(at - slot_start);
    }
    offsets.sort();
    offsets.dedup();
    assert!(offsets.len() > 10, "offsets barely vary: {offsets:?}");
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_schedule() {
    async fn schedule(seed: u64) -> Vec<Duration> {
        let started = Instant::now();
        let ramp = RecoveryRamp::new(rate(20), seed);
        let granted = acquire_concurrently(&ramp, 60).await;
        granted.into_iter().map(|t| t - started).collect()
    }
    let first = schedule(99).await;
    assert_eq!(first, schedule(99).await);
    assert_ne!(first, schedule(100).await);
}

#[tokio::test(start_paused = true)]
async fn idle_time_does_not_bank_a_burst() {
    let ramp = RecoveryRamp::new(rate(5), 3);
    ramp.acquire().await;
    sleep(Duration::from_secs(60)).await;
    let started = Instant::now();
    let granted = acquire_concurrently(&ramp, 10).await;
    assert!(busiest_second(&granted) <= 5);
    let took = *granted.last().unwrap() - started;
    assert!(took > Duration::from_millis(1_800) && took <= Duration::from_secs(2), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_only_wastes_its_slot() {
    let ramp = RecoveryRamp::new(rate(1), 5);
    let started = Instant::now();
    ramp.acquire().await; // slot 0: [0 s, 1 s)
                          // Reserves slot 1, then gives up before it comes.
    assert!(timeout(Duration::from_millis(1), ramp.acquire()).await.is_err());
    ramp.acquire().await; // slot 2: the wasted slot is not handed out again
    let at = Instant::now() - started;
    assert!(at >= Duration::from_secs(2) && at <= Duration::from_secs(3), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn enormous_rates_do_not_panic() {
    let ramp = RecoveryRamp::new(NonZeroU32::MAX, 1);
    let started = Instant::now();
    acquire_concurrently(&ramp, 1_000).await;
    assert!(Instant::now() - started <= Duration::from_millis(1));
    assert_eq!(ramp.rate(), NonZeroU32::MAX);
}
