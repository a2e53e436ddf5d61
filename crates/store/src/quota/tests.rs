//! Paused-clock tests of quota windows, the meter and the session driver,
//! against the in-memory twin (the same suite runs against Redis in
//! `tests/fair.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::clock::WallClock;
use crate::error::StoreError;
use crate::fair::{LeaseGrant, QuotaStore, SessionRefresh, Settle};
use crate::memory::MemoryStore;

/// 2023-11-14 22:13:20 UTC.
const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 86_400_000;
const LIMIT: Duration = Duration::from_secs(600);

#[test]
fn day_windows_start_at_utc_midnight() {
    let window = QuotaWindow::DAY.containing(T0);
    assert_eq!(window.start_ms, 1_699_920_000_000, "2023-11-14 00:00:00 UTC");
    assert_eq!(window.end_ms, window.start_ms + DAY);
    assert!(window.contains(T0));
    assert_eq!(QuotaWindow::DAY.containing(window.end_ms).start_ms, window.end_ms);
    assert_eq!(QuotaWindow::DAY.containing(window.end_ms - 1), window);
    assert_eq!(window.retry_after(window.end_ms - 1_500), Duration::from_millis(1_500));
    assert_eq!(window.expires_at_ms(), window.end_ms + 3_600_000);
}

#[test]
fn other_lengths_align_to_multiples_since_the_epoch() {
    let hour = QuotaWindow::new(Duration::from_secs(3600)).unwrap();
    assert_eq!(hour.containing(T0).start_ms % 3_600_000, 0);
    assert_eq!(QuotaWindow::new(Duration::from_secs(86_400)).unwrap(), QuotaWindow::DAY);
    assert!(QuotaWindow::new(Duration::ZERO).is_err());
    assert!(QuotaWindow::new(Duration::from_millis(1500)).is_err());
    assert!(QuotaWindow::new(Duration::from_secs(400 * 86_400)).is_err());
}

fn window() -> Window {
    QuotaWindow::DAY.containing(T0)
}

#[test]
fn the_meter_renews_before_the_lease_runs_out_and_keeps_the_carry() {
    let mut meter = QuotaMeter::new(MeterConfig::default(), window(), Source::Fleet, 30.0);
    meter.add(24.0);
    assert_eq!(meter.check(T0), Due::Nothing, "6 s left is more than the 5 s margin");
    meter.add(1.5);
    let Due::Renew { settle, source, chunk, .. } = meter.check(T0) else { panic!("renewal due") };
    assert_eq!(source, Source::Fleet);
    assert_eq!(settle, Settle { used: 25.5, release: 25.5 });
    assert_eq!(chunk, Duration::from_secs(30));
    assert_eq!(meter.carry(), 4.5, "the session streams on what is left meanwhile");
    meter.add(1.0);
    assert_eq!(meter.check(T0), Due::Nothing, "one renewal in flight at a time");
    meter.granted(Source::Fleet, LeaseGrant::Granted { seconds: 30.0, remaining: 100.0 });
    assert_eq!(meter.remaining(), 33.5);
    let closing = meter.finish();
    assert_eq!(closing.settle, Settle { used: 1.0, release: 34.5 });
}

#[test]
fn a_refused_renewal_ends_the_session_when_the_carry_is_used() {
    let mut meter = QuotaMeter::new(MeterConfig::default(), window(), Source::Fleet, 30.0);
    meter.add(27.0);
    assert!(matches!(meter.check(T0), Due::Renew { .. }));
    meter.granted(Source::Fleet, LeaseGrant::Exhausted { retry_after: Duration::from_secs(9) });
    assert_eq!(meter.check(T0), Due::Nothing, "3 s of carry left");
    meter.add(3.0);
    let end = window().end_ms;
    assert_eq!(meter.check(end - 60_000), Due::Exhausted { retry_after: Duration::from_secs(60) });
}

#[test]
fn the_window_rolls_over_with_a_commit_and_a_fresh_lease() {
    let mut meter = QuotaMeter::new(MeterConfig::default(), window(), Source::Fleet, 30.0);
    meter.add(10.0);
    let Due::Rollover { closing, next, .. } = meter.check(window().end_ms) else {
        panic!("rollover")
    };
    assert_eq!(closing.window, window());
    assert_eq!(closing.settle, Settle { used: 10.0, release: 30.0 });
    assert_eq!(next.start_ms, window().end_ms);
    assert_eq!(meter.window(), next);
}

/// A fleet store that can be switched off, as Redis going down looks to a session.
struct Flaky {
    store: MemoryStore,
    down: AtomicBool,
    calls: std::sync::atomic::AtomicU32,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable {
                store: "redis",
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl QuotaStore for Flaky {
    async fn lease(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        chunk: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        self.check()?;
        self.store.lease(uid, window, limit, chunk).await
    }

    async fn renew(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        settle: Settle,
        chunk: Duration,
        session: Option<SessionRefresh<'_>>,
    ) -> Result<LeaseGrant, StoreError> {
        self.check()?;
        self.store.renew(uid, window, limit, settle, chunk, session).await
    }

    async fn commit(&self, uid: &str, window: Window, settle: Settle) -> Result<f64, StoreError> {
        self.check()?;
        self.store.commit(uid, window, settle).await
    }
}

struct Rig {
    fleet: Arc<Flaky>,
    ctx: QuotaContext,
}

fn rig(start_ms: u64) -> Rig {
    let clock = WallClock::starting_at(start_ms);
    let fleet = Arc::new(Flaky {
        store: MemoryStore::with_options(64, crate::memory::ExpiredParking::IntoOutbox, clock),
        down: AtomicBool::new(false),
        calls: Default::default(),
    });
    let ctx = QuotaContext {
        fleet: Some(fleet.clone()),
        local: Arc::new(LocalBudgets::new(64)),
        window: QuotaWindow::DAY,
        meter: MeterConfig::default(),
        clock,
    };
    Rig { fleet, ctx }
}

impl Rig {
    /// (used, leased) in the fleet store for `uid` in `window`.
    fn fleet_account(&self, window: Window) -> (f64, f64) {
        self.fleet.store.quota_account("u1", window).unwrap_or((0.0, 0.0))
    }
}

/// Streams `seconds` of real-time audio in 20 ms frames, polling once a second.
async fn stream(account: &mut QuotaAccount, seconds: u32) -> QuotaStatus {
    for _ in 0..seconds {
        for _ in 0..50 {
            account.add(0.02);
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        if let QuotaStatus::Exhausted { retry_after } = account.poll().await {
            return QuotaStatus::Exhausted { retry_after };
        }
    }
    QuotaStatus::Ok
}

fn close_to(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 0.01
}

#[tokio::test(start_paused = true)]
async fn renewals_come_before_expiry_and_the_commit_refunds_the_rest() {
    let rig = rig(T0);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", LIMIT, None).await.unwrap();
    assert_eq!(rig.fleet_account(window()), (0.0, 30.0), "first chunk leased");
    assert_eq!(stream(&mut account, 100).await, QuotaStatus::Ok);
    assert!(
        account.meter().remaining() > 0.0,
        "the lease never ran out: {}",
        account.meter().remaining()
    );
    let (used, leased) = rig.fleet_account(window());
    assert!(used > 70.0 && used <= 100.0, "renewals settled usage as it went: {used}");
    assert!(leased <= 30.0 + 5.0, "one chunk plus the carry outstanding: {leased}");
    let calls = rig.fleet.calls.load(Ordering::Relaxed);
    let refund = account.close().await;
    assert!(refund > 0.0, "the unused lease comes back");
    let (used, leased) = rig.fleet_account(window());
    assert!(close_to(used, 100.0), "exactly what was streamed: {used}");
    assert_eq!(leased, 0.0);
    // 1 lease + a renewal every ~25 s of audio.
    assert!((4..=6).contains(&calls), "{calls} store calls for 100 s of audio");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_session_leaves_its_lease_counted_as_used() {
    let rig = rig(T0);
    let limit = Duration::from_secs(60);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await.unwrap();
    stream(&mut account, 10).await;
    drop(account); // the pod died: no commit
    assert_eq!(rig.fleet_account(window()), (0.0, 30.0));
    let second = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await.unwrap();
    assert_eq!(second.meter().remaining(), 30.0, "only what the crashed lease left");
    let refused = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await;
    assert!(refused.is_err(), "60 s limit: two 30 s leases outstanding");
}

#[tokio::test(start_paused = true)]
async fn the_quota_runs_out_mid_session() {
    let rig = rig(T0);
    let limit = Duration::from_secs(70);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await.unwrap();
    let QuotaStatus::Exhausted { retry_after } = stream(&mut account, 120).await else {
        panic!("70 s of quota cannot cover 120 s of audio")
    };
    let (used, leased) = rig.fleet_account(window());
    assert!(used + leased <= 70.0, "grants never pass the limit: {used} + {leased}");
    assert!(retry_after > Duration::from_secs(3600), "until UTC midnight: {retry_after:?}");
    account.close().await;
    let (used, leased) = rig.fleet_account(window());
    // The session stops at the first poll after its last lease ran out: the
    // overshoot is at most one poll interval (1 s here) of audio.
    assert!((69.9..=71.01).contains(&used), "{used}");
    assert_eq!(leased, 0.0);
    let again = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await;
    assert!(again.is_err(), "exhausted at the next upgrade too");
}

#[tokio::test(start_paused = true)]
async fn a_session_across_midnight_is_split_between_the_windows() {
    let start = window().end_ms - 10_000;
    let rig = rig(start);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", LIMIT, None).await.unwrap();
    assert_eq!(stream(&mut account, 20).await, QuotaStatus::Ok);
    account.close().await;
    let first = window();
    let second = Window { start_ms: first.end_ms, end_ms: first.end_ms + DAY };
    let (used_first, leased_first) = rig.fleet_account(first);
    let (used_second, leased_second) = rig.fleet_account(second);
    assert!(close_to(used_first, 10.0) || close_to(used_first, 11.0), "{used_first}");
    assert!(close_to(used_first + used_second, 20.0), "{used_first} + {used_second}");
    assert_eq!((leased_first, leased_second), (0.0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn redis_down_then_back_is_reconciled() {
    let rig = rig(T0);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", LIMIT, None).await.unwrap();
    stream(&mut account, 20).await;
    rig.fleet.down.store(true, Ordering::Relaxed);
    // The renewal fails: the session carries on under the local budget.
    assert_eq!(stream(&mut account, 60).await, QuotaStatus::Ok);
    assert_eq!(account.meter().source(), Source::Local);
    rig.fleet.down.store(false, Ordering::Relaxed);
    // The next renewal finds the fleet again.
    stream(&mut account, 40).await;
    assert_eq!(account.meter().source(), Source::Fleet);
    account.close().await;
    let before = rig.fleet_account(window());
    let done = reconcile(rig.fleet.as_ref(), &rig.ctx.local, rig.ctx.clock).await.unwrap();
    assert_eq!(done, 1, "one user's local usage committed");
    let (used, leased) = rig.fleet_account(window());
    assert!(used > before.0);
    // Every second streamed is counted; the lease that was outstanding when the
    // store went away cannot be told apart from a crashed pod's, so it stays
    // leased and counts as used (the 25 s streamed on it and its unused 5 s).
    assert_eq!(leased, 30.0);
    assert!((119.9..=125.1).contains(&(used + leased)), "{used} + {leased}");
    assert_eq!(reconcile(rig.fleet.as_ref(), &rig.ctx.local, rig.ctx.clock).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_reconciliation_is_kept_for_the_next_try() {
    let rig = rig(T0);
    rig.fleet.down.store(true, Ordering::Relaxed);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", LIMIT, None).await.unwrap();
    assert_eq!(account.meter().source(), Source::Local, "no client sees an error caused by Redis");
    stream(&mut account, 30).await;
    account.close().await;
    assert!(reconcile(rig.fleet.as_ref(), &rig.ctx.local, rig.ctx.clock).await.is_err());
    rig.fleet.down.store(false, Ordering::Relaxed);
    assert_eq!(reconcile(rig.fleet.as_ref(), &rig.ctx.local, rig.ctx.clock).await.unwrap(), 1);
    let (used, _) = rig.fleet_account(window());
    assert!(close_to(used, 30.0), "{used}");
}

#[tokio::test(start_paused = true)]
async fn the_local_budget_starts_from_what_the_fleet_said_remains() {
    let rig = rig(T0);
    let limit = Duration::from_secs(100);
    let mut account = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await.unwrap();
    stream(&mut account, 60).await;
    account.close().await;
    rig.fleet.down.store(true, Ordering::Relaxed);
    let mut local = QuotaAccount::open(rig.ctx.clone(), "u1", limit, None).await.unwrap();
    let QuotaStatus::Exhausted { .. } = stream(&mut local, 100).await else {
        panic!("about 40 s were left when the fleet was last heard")
    };
    local.close().await;
    let used_locally: f64 = rig.ctx.local.take_unreconciled().iter().map(|u| u.used).sum();
    assert!(used_locally <= 41.0, "{used_locally}");
}
