//! Per-user quota budgets of one process, used while the fleet store is
//! unreachable, and the usage counted meanwhile that must be reconciled with the
//! fleet store once it is back.
//!
//! A user's local budget in a window is the fleet's remaining quota as this
//! process last heard it (from the `remaining` of its last fleet grant for that
//! user), or the whole limit if it never heard: Redis being down must not refuse
//! anyone (design.md §6a: fail open). So with `N` pods serving one user during a
//! whole-window outage the user can use at most `N ×` that budget.
//!
//! Calls are made at lease boundaries (about every 25 s of audio per session),
//! never per frame; the map is bounded by [`LocalBudgets::new`]'s capacity.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::Window;
use crate::fair::{LeaseGrant, Settle};

/// Usage counted locally that the fleet store has not seen yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreconciled {
    /// The user.
    pub uid: String,
    /// The window it was used in.
    pub window: Window,
    /// Seconds used.
    pub used: f64,
}

/// One user's local account in one window.
#[derive(Clone, Copy, Debug)]
struct Account {
    /// The window.
    window: Window,
    /// The fleet's usage as last heard (limit − remaining of the last fleet grant).
    fleet_used: f64,
    /// Seconds used under local leases in this window.
    used: f64,
    /// Outstanding local leases.
    leased: f64,
    /// Part of `used` not yet committed to the fleet store.
    unreconciled: f64,
}

/// The process's local budgets. One per process, shared by every session.
#[derive(Debug)]
pub struct LocalBudgets {
    /// Most users tracked at once.
    capacity: usize,
    /// Accounts by user; held for a few instructions, never across `.await`.
    accounts: Mutex<HashMap<String, Account>>,
}

impl LocalBudgets {
    /// Budgets for at most `capacity` users at once (accounts of past windows with
    /// nothing to reconcile make room first; beyond that a new user is granted
    /// untracked, failing open).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), accounts: Mutex::new(HashMap::new()) }
    }

    /// Records what the fleet said remains for `uid` in `window` (after a grant),
    /// so a later local budget starts from there.
    pub fn note_fleet(&self, uid: &str, window: Window, limit: Duration, remaining: f64) {
        let mut accounts = self.lock();
        let Some(account) = self.account(&mut accounts, uid, window) else { return };
        account.fleet_used = (limit.as_secs_f64() - remaining).max(0.0);
        // The fleet has seen everything reconciled; what is not is still ours.
        account.used = account.unreconciled;
    }

    /// Leases up to `chunk` of the local budget, with the store's semantics.
    pub fn lease(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        chunk: Duration,
        now_ms: u64,
    ) -> LeaseGrant {
        let mut accounts = self.lock();
        let Some(account) = self.account(&mut accounts, uid, window) else {
            tracing::warn!(uid, "local quota budgets full; granting untracked (fail open)");
            return LeaseGrant::Granted { seconds: chunk.as_secs_f64(), remaining: f64::INFINITY };
        };
        let available = limit.as_secs_f64() - account.fleet_used - account.used - account.leased;
        if available <= 0.0 {
            return LeaseGrant::Exhausted { retry_after: window.retry_after(now_ms) };
        }
        let seconds = chunk.as_secs_f64().min(available);
        account.leased += seconds;
        LeaseGrant::Granted { seconds, remaining: available - seconds }
    }

    /// Settles local usage; returns the unused seconds released.
    pub fn settle(&self, uid: &str, window: Window, settle: Settle) -> f64 {
        let mut accounts = self.lock();
        let Some(account) = self.account(&mut accounts, uid, window) else { return 0.0 };
        account.leased = (account.leased - settle.release).max(0.0);
        account.used += settle.used;
        account.unreconciled += settle.used;
        (settle.release - settle.used).max(0.0)
    }

    /// Takes every usage the fleet store has not seen, for [`super::reconcile`].
    pub fn take_unreconciled(&self) -> Vec<Unreconciled> {
        let mut accounts = self.lock();
        let mut out = Vec::new();
        for (uid, account) in accounts.iter_mut() {
            if account.unreconciled > 0.0 {
                out.push(Unreconciled {
                    uid: uid.clone(),
                    window: account.window,
                    used: account.unreconciled,
                });
                account.unreconciled = 0.0;
            }
        }
        out
    }

    /// Puts back usage whose reconciliation failed.
    pub fn restore(&self, item: Unreconciled) {
        let mut accounts = self.lock();
        if let Some(account) = self.account(&mut accounts, &item.uid, item.window) {
            if account.window == item.window {
                account.unreconciled += item.used;
            }
        }
    }

    /// Users tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no user is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The account of `uid` in `window`, made or reset for a new window; `None`
    /// when the map is full.
    fn account<'a>(
        &self,
        accounts: &'a mut HashMap<String, Account>,
        uid: &str,
        window: Window,
    ) -> Option<&'a mut Account> {
        if !accounts.contains_key(uid) && accounts.len() >= self.capacity {
            accounts.retain(|_, a| a.window.end_ms > window.start_ms || a.unreconciled > 0.0);
            if accounts.len() >= self.capacity {
                return None;
            }
        }
        let fresh = Account { window, fleet_used: 0.0, used: 0.0, leased: 0.0, unreconciled: 0.0 };
        let account = accounts.entry(uid.to_owned()).or_insert(fresh);
        if account.window != window && account.window.start_ms < window.start_ms {
            if account.unreconciled > 0.0 {
                // That window is over and can refuse nobody any more: its
                // unreconciled usage only made the fleet's books exact.
                tracing::warn!(
                    uid,
                    used = account.unreconciled,
                    "unreconciled quota usage of a past window dropped"
                );
            }
            *account = fresh;
        }
        Some(account)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Account>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
