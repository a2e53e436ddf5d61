//! Fair use across the fleet (design §6a): a per-user session cap that holds
//! across pods and a quota of audio per window per plan, both on Redis
//! (`--redis-url`), per user (the JWT `sub`), never per device — and never on the
//! per-frame path.
//!
//! A session talks to Redis at its upgrade (take a cap lease, lease quota), about
//! once a minute while it runs (renew the quota lease, which refreshes the cap
//! lease in the same script, or refresh the cap alone), and at its end (commit and
//! release). Per frame it adds decoded bytes to one atomic counter; its fair-use
//! task turns them into seconds once a second. When Redis is down, limits fall back
//! to this process's own count and a local per-user budget, no client sees an error
//! caused by it, and usage is reconciled when Redis answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hark_resilience::breaker::BreakerState;
use hark_store::fair::{SESSION_LEASE_TTL, SESSION_REFRESH};
use hark_store::quota::{QuotaAccount, QuotaContext, QuotaStatus};
use hark_store::{Budget, SessionCap, SessionGrant, WallClock};
use rand::Rng;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Upper bound on the jitter added to a quota refusal's `Retry-After`, so a fleet
/// of users who ran out does not come back in the same second at the window's reset.
pub const QUOTA_RETRY_JITTER: Duration = Duration::from_secs(15 * 60);
/// How long a user at the fleet-wide cap is asked to wait at most (a session that
/// ends releases its lease at once; the soonest lease expiry is only a bound).
const CAP_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often a session's fair-use task counts usage and polls its quota.
const TICK: Duration = Duration::from_secs(1);
/// How often usage counted locally during a Redis outage is pushed, while up.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// A plan's allowance per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Seconds of audio per window.
    Limit(Duration),
    /// No quota, and no quota call at all.
    Unlimited,
}

/// The quota configuration: plans, the default plan, and what every account shares.
#[derive(Clone)]
pub struct Quota {
    /// `--quota-plan NAME=…`.
    pub plans: HashMap<String, Allowance>,
    /// `--default-plan`: for tokens without a plan claim, or naming an unknown plan.
    pub default_plan: String,
    /// Store, local budgets, window, lease sizes, clock.
    pub context: QuotaContext,
}

impl Quota {
    /// The allowance of `plan` (the default plan's when it names none known).
    fn allowance(&self, plan: Option<&str>) -> Allowance {
        plan.and_then(|p| self.plans.get(p))
            .or_else(|| self.plans.get(&self.default_plan))
            .copied()
            .unwrap_or(Allowance::Unlimited)
    }
}

/// The fleet-wide session cap.
#[derive(Clone)]
pub struct FleetCap {
    /// Redis.
    pub store: Arc<dyn SessionCap>,
    /// `--max-sessions-per-user`, across the fleet.
    pub max: u32,
}

/// Why fair use refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user's quota for this window is used up; `retry_after` includes jitter.
    Quota {
        /// Until the window resets, plus up to 15 minutes.
        retry_after: Duration,
    },
    /// The user has `--max-sessions-per-user` sessions open across the fleet.
    Cap {
        /// A jittered wait.
        retry_after: Duration,
    },
}

/// This process's fair use.
#[derive(Clone, Default)]
pub struct FairUse {
    /// With `--redis-url`.
    pub cap: Option<FleetCap>,
    /// With at least one `--quota-plan`.
    pub quota: Option<Quota>,
}

/// What a session holds: its cap lease and its quota account.
pub struct Pass {
    /// The cap lease (store, uid, session id).
    lease: Option<(Arc<dyn SessionCap>, String, String)>,
    /// The quota account.
    account: Option<QuotaAccount>,
}

impl FairUse {
    /// Whether anything here needs a per-session task.
    pub fn enabled(&self) -> bool {
        self.cap.is_some() || self.quota.is_some()
    }

    /// Admits a session of `uid` on `plan`: a fleet-wide cap lease, then the first
    /// quota lease. A store that does not answer admits (the process's own limits
    /// apply); only a real "no" refuses.
    pub async fn admit(
        &self,
        uid: &str,
        plan: Option<&str>,
        session_id: &str,
    ) -> Result<Pass, Refusal> {
        let mut pass = Pass { lease: None, account: None };
        if let Some(cap) = &self.cap {
            match cap.store.acquire_session(uid, session_id, cap.max, SESSION_LEASE_TTL).await {
                Ok(SessionGrant::Granted { .. }) => {
                    pass.lease = Some((cap.store.clone(), uid.to_owned(), session_id.to_owned()));
                }
                Ok(SessionGrant::AtCap { retry_after, .. }) => {
                    let wait = retry_after.min(CAP_RETRY_MAX).max(Duration::from_secs(1));
                    return Err(Refusal::Cap { retry_after: jitter(wait, wait / 2) });
                }
                Err(error) => {
                    tracing::debug!(uid, %error, "session cap store unavailable: admitting on this pod's limits");
                }
            }
        }
        if let Some(quota) = &self.quota {
            if let Allowance::Limit(limit) = quota.allowance(plan) {
                let session =
                    pass.lease.as_ref().map(|(_, _, sid)| (sid.clone(), SESSION_LEASE_TTL));
                match QuotaAccount::open(quota.context.clone(), uid, limit, session).await {
                    Ok(account) => pass.account = Some(account),
                    Err(until_reset) => {
                        pass.release().await;
                        return Err(Refusal::Quota {
                            retry_after: jitter(until_reset, QUOTA_RETRY_JITTER),
                        });
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Keeps usage counted during a Redis outage from being lost: commits it when
    /// the store's breaker closes again, and every 30 s while it is up.
    pub async fn reconcile(self, budget: Budget, shutdown: CancellationToken) {
        let Some(quota) = self.quota else { return };
        let Some(fleet) = quota.context.fleet.clone() else { return };
        let mut state = budget.subscribe();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = state.changed() => {
                    if changed.is_err() || *state.borrow_and_update() != BreakerState::Closed {
                        continue;
                    }
                }
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
            match hark_store::quota::reconcile(&*fleet, &quota.context.local, quota.context.clock)
                .await
            {
                Ok(0) => {}
                Ok(users) => {
                    tracing::info!(users, "quota usage counted during a Redis outage reconciled")
                }
                Err(error) => {
                    tracing::debug!(%error, "quota reconciliation pending: Redis unavailable")
                }
            }
        }
    }
}

impl Pass {
    /// Whether the session has anything to account.
    pub fn is_empty(&self) -> bool {
        self.lease.is_none() && self.account.is_none()
    }

    /// Ends the session's fair use: commits its usage, releases its cap lease.
    async fn release(&mut self) {
        if let Some(account) = self.account.take() {
            let refunded = account.close().await;
            tracing::debug!(refunded, "quota lease committed");
        }
        if let Some((store, uid, sid)) = self.lease.take() {
            if let Err(error) = store.release_session(&uid, &sid).await {
                // The lease expires by itself within its ttl.
                tracing::debug!(uid, %error, "session cap lease not released");
            }
        }
    }
}

/// A session's side of fair use: the counter it feeds per frame and the signal
/// that its quota ran out.
pub struct Meter {
    /// Decoded PCM16 bytes, fed per frame with one relaxed atomic add.
    bytes: Arc<AtomicU64>,
    /// Fires once with the `Retry-After` when the quota is used up (taken by the
    /// session's loop).
    exhausted: Option<oneshot::Receiver<Duration>>,
    /// Ends the task: commit, release.
    stop: Option<oneshot::Sender<()>>,
}

impl Meter {
    /// Counts `bytes` of decoded PCM16. Lock-free, no store call.
    #[inline]
    pub fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The signal that the quota ran out; `None` once taken.
    pub fn take_exhausted(&mut self) -> Option<oneshot::Receiver<Duration>> {
        self.exhausted.take()
    }

    /// Tells the task the session ended (it commits and releases on its own task).
    pub fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts the session's fair-use task on `tasks`. `bytes_per_second` turns
/// decoded bytes into seconds of audio.
pub fn spawn(mut pass: Pass, bytes_per_second: f64, tasks: &TaskTracker) -> Meter {
    let bytes = Arc::new(AtomicU64::new(0));
    let (exhausted_tx, exhausted) = oneshot::channel();
    let (stop, mut stopped) = oneshot::channel();
    let counter = bytes.clone();
    tasks.spawn(async move {
        let mut exhausted_tx = Some(exhausted_tx);
        let mut counted = 0u64;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            let total = counter.load(Ordering::Relaxed);
            let new = total - counted;
            counted = total;
            if let Some(account) = pass.account.as_mut() {
                account.add(new as f64 / bytes_per_second);
                if let QuotaStatus::Exhausted { retry_after } = account.poll().await {
                    if let Some(tx) = exhausted_tx.take() {
                        let _ = tx.send(retry_after);
                    }
                }
            }
            // The cap lease: refreshed by quota renewals, else once a minute here.
            if let Some((store, uid, sid)) = &pass.lease {
                let renewed = pass
                    .account
                    .as_ref()
                    .and_then(QuotaAccount::session_refreshed_at_ms)
                    .is_some_and(|at| WallClock::system().now_ms().saturating_sub(at) < 60_000);
                if !renewed && last_refresh.elapsed() >= SESSION_REFRESH {
                    last_refresh = tokio::time::Instant::now();
                    let _ = store.refresh_session(uid, sid, SESSION_LEASE_TTL).await;
                }
            }
        }
        // The session ended: count the last bytes, then commit and release.
        if let Some(account) = pass.account.as_mut() {
            let total = counter.load(Ordering::Relaxed);
            account.add((total - counted) as f64 / bytes_per_second);
        }
        pass.release().await;
    });
    Meter { bytes, exhausted: Some(exhausted), stop: Some(stop) }
}

/// `base` plus a uniform jitter in `[0, spread]`.
fn jitter(base: Duration, spread: Duration) -> Duration {
    let extra = rand::rng().random_range(0.0..=1.0);
    base + spread.mul_f64(extra)
}
