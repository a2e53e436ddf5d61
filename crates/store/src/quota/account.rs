//! The quota driver a session owns: a [`QuotaMeter`] wired to the fleet store
//! and the process's [`LocalBudgets`], falling back to the latter when the fleet
//! store does not answer, and back again when it does.

use std::sync::Arc;
use std::time::Duration;

use super::{Closing, Due, LocalBudgets, MeterConfig, QuotaMeter, QuotaWindow, Source, Window};
use crate::clock::WallClock;
use crate::error::StoreError;
use crate::fair::{LeaseGrant, QuotaStore, SessionRefresh, Settle};

/// What every session's quota account shares. Cheap to clone.
#[derive(Clone)]
pub struct QuotaContext {
    /// The fleet store, already under its [`crate::budget::Budget`]; `None`
    /// without `--redis-url` (then every lease is local).
    pub fleet: Option<Arc<dyn QuotaStore>>,
    /// The process's local budgets.
    pub local: Arc<LocalBudgets>,
    /// `--quota-window`.
    pub window: QuotaWindow,
    /// Lease sizes (`--quota-lease`).
    pub meter: MeterConfig,
    /// Wall time (follows tokio's clock in tests).
    pub clock: WallClock,
}

impl std::fmt::Debug for QuotaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaContext")
            .field("fleet", &self.fleet.is_some())
            .field("window", &self.window)
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

/// What [`QuotaAccount::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaStatus {
    /// Keep streaming.
    Ok,
    /// Used up: send `quota_exceeded`, hand off the conversation, close 1008.
    Exhausted {
        /// Until the window resets.
        retry_after: Duration,
    },
}

/// One session's quota. Created at the upgrade, fed per frame, polled on the
/// session's timer, closed at the end. Dropping it without [`close`](Self::close)
/// (a crash) leaves its lease counted as used.
pub struct QuotaAccount {
    /// Shared pieces.
    ctx: QuotaContext,
    /// The user.
    uid: String,
    /// The user's plan limit per window.
    limit: Duration,
    /// The session's cap lease, refreshed by every fleet renewal.
    session: Option<(String, Duration)>,
    /// The lease state.
    meter: QuotaMeter,
    /// When a fleet renewal last refreshed the session's cap lease.
    session_refreshed_ms: Option<u64>,
}

impl std::fmt::Debug for QuotaAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaAccount")
            .field("uid", &self.uid)
            .field("limit", &self.limit)
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl QuotaAccount {
    /// Leases the session's first chunk (one store call). `session` is the
    /// session's id and cap-lease ttl when the fleet-wide cap is in use, so
    /// renewals refresh it too.
    ///
    /// # Errors
    /// `Err(retry_after)` when the user's window is used up: refuse the upgrade
    /// with 429 and `Retry-After` (plus jitter).
    pub async fn open(
        ctx: QuotaContext,
        uid: &str,
        limit: Duration,
        session: Option<(String, Duration)>,
    ) -> Result<Self, Duration> {
        let window = ctx.window.containing(ctx.clock.now_ms());
        let chunk = ctx.meter.chunk;
        let mut account = Self {
            meter: QuotaMeter::new(ctx.meter, window, Source::Local, 0.0),
            ctx,
            uid: uid.to_owned(),
            limit,
            session,
            session_refreshed_ms: None,
        };
        let (source, grant) = account.lease_from(window, chunk).await;
        match grant {
            LeaseGrant::Granted { seconds, .. } => {
                account.meter = QuotaMeter::new(account.ctx.meter, window, source, seconds);
                Ok(account)
            }
            LeaseGrant::Exhausted { retry_after } => Err(retry_after),
        }
    }

    /// Counts decoded audio. The only per-frame call: one `f64` add.
    #[inline]
    pub fn add(&mut self, seconds: f64) {
        self.meter.add(seconds);
    }

    /// The meter (for logs and tests).
    pub fn meter(&self) -> &QuotaMeter {
        &self.meter
    }

    /// When a renewal last refreshed the session's cap lease (wall ms), so the
    /// session skips its own once-a-minute refresh while renewals do it.
    pub fn session_refreshed_at_ms(&self) -> Option<u64> {
        self.session_refreshed_ms
    }

    /// Does what the meter says is due. Call it on the session's timer (about
    /// once a second); it makes a store call only when a lease is about to run
    /// out or the window ended, bounded by the store's budget.
    pub async fn poll(&mut self) -> QuotaStatus {
        let now = self.ctx.clock.now_ms();
        match self.meter.check(now) {
            Due::Nothing => QuotaStatus::Ok,
            Due::Exhausted { retry_after } => QuotaStatus::Exhausted { retry_after },
            Due::Renew { window, source, settle, chunk } => {
                let (source, grant) = self.renew(window, source, settle, chunk).await;
                self.meter.granted(source, grant);
                QuotaStatus::Ok
            }
            Due::Rollover { closing, next, chunk } => {
                self.settle_closing(closing).await;
                let (source, grant) = self.lease_from(next, chunk).await;
                self.meter.granted(source, grant);
                QuotaStatus::Ok
            }
        }
    }

    /// Commits the session's usage and releases the rest of its lease (one store
    /// call); returns the seconds refunded.
    pub async fn close(self) -> f64 {
        let closing = self.meter.clone().finish();
        self.settle_closing(closing).await
    }

    /// Renews with the source of the current lease, switching source as needed.
    async fn renew(
        &mut self,
        window: Window,
        source: Source,
        settle: Settle,
        chunk: Duration,
    ) -> (Source, LeaseGrant) {
        if source == Source::Local {
            // Local usage is settled locally; then try the fleet again (free while
            // its breaker is open) and hand the carry back locally if it answers.
            self.ctx.local.settle(&self.uid, window, settle);
            let carry = self.meter.carry();
            let (source, grant) = self.lease_from(window, chunk).await;
            if source == Source::Fleet {
                self.ctx.local.settle(&self.uid, window, Settle { used: 0.0, release: carry });
            }
            return (source, grant);
        }
        if let Some(fleet) = &self.ctx.fleet {
            let refresh = self
                .session
                .as_ref()
                .map(|(session_id, ttl)| SessionRefresh { session_id, ttl: *ttl });
            match fleet.renew(&self.uid, window, self.limit, settle, chunk, refresh).await {
                Ok(grant) => {
                    self.noted(window, &grant);
                    if self.session.is_some() {
                        self.session_refreshed_ms = Some(self.ctx.clock.now_ms());
                    }
                    return (Source::Fleet, grant);
                }
                // Whether or not the settle landed, the fleet charges the user at
                // least what was used (an unsettled lease counts as used), so the
                // carry is forfeited and the session continues on a local lease.
                Err(error) => log_fallback(&self.uid, "renew", &error),
            }
        }
        (Source::Local, self.local_lease(window, chunk))
    }

    /// A fresh lease: the fleet if it answers, else the local budget.
    async fn lease_from(&mut self, window: Window, chunk: Duration) -> (Source, LeaseGrant) {
        if let Some(fleet) = &self.ctx.fleet {
            match fleet.lease(&self.uid, window, self.limit, chunk).await {
                Ok(grant) => {
                    self.noted(window, &grant);
                    return (Source::Fleet, grant);
                }
                Err(error) => log_fallback(&self.uid, "lease", &error),
            }
        }
        (Source::Local, self.local_lease(window, chunk))
    }

    fn local_lease(&self, window: Window, chunk: Duration) -> LeaseGrant {
        let now = self.ctx.clock.now_ms();
        self.ctx.local.lease(&self.uid, window, self.limit, chunk, now)
    }

    fn noted(&self, window: Window, grant: &LeaseGrant) {
        if let LeaseGrant::Granted { remaining, .. } = grant {
            self.ctx.local.note_fleet(&self.uid, window, self.limit, *remaining);
        }
    }

    /// Commits a lease for good with whoever granted it. A fleet commit that
    /// fails leaves the lease counted as used, as a crash would.
    async fn settle_closing(&self, closing: Closing) -> f64 {
        match (closing.source, &self.ctx.fleet) {
            (Source::Fleet, Some(fleet)) => {
                match fleet.commit(&self.uid, closing.window, closing.settle).await {
                    Ok(refund) => refund,
                    Err(error) => {
                        log_fallback(&self.uid, "commit", &error);
                        0.0
                    }
                }
            }
            (Source::Local, _) | (Source::Fleet, None) => {
                self.ctx.local.settle(&self.uid, closing.window, closing.settle)
            }
        }
    }
}

fn log_fallback(uid: &str, op: &str, error: &StoreError) {
    tracing::debug!(uid, op, %error, "quota store unavailable; using the local budget");
}

/// Commits usage counted locally while the fleet store was down. Call it when
/// the fleet store's budget closes again (and now and then while it is up).
/// Usage of windows whose account has expired is dropped. Returns how many users'
/// usage was committed.
///
/// # Errors
/// The first store error; what was not committed is kept for the next call.
pub async fn reconcile(
    fleet: &dyn QuotaStore,
    local: &LocalBudgets,
    clock: WallClock,
) -> Result<usize, StoreError> {
    let mut items = local.take_unreconciled().into_iter();
    let mut done = 0;
    while let Some(item) = items.next() {
        if clock.now_ms() >= item.window.expires_at_ms() {
            tracing::warn!(uid = %item.uid, used = item.used, "local quota usage too old to reconcile");
            continue;
        }
        let settle = Settle { used: item.used, release: 0.0 };
        if let Err(error) = fleet.commit(&item.uid, item.window, settle).await {
            local.restore(item);
            items.for_each(|rest| local.restore(rest));
            return Err(error);
        }
        done += 1;
    }
    Ok(done)
}
