//! The in-memory twin of the shared stores: the same semantics as Postgres and
//! Redis, in one process, on tokio's clock.
//!
//! It serves two purposes: the gateway's paused-clock session tests, and the
//! in-process parking lot when no `--database-url` is set. Every table is
//! bounded by the capacity given to [`MemoryStore::new`]; locks are held for a
//! few instructions and never across `.await`. The twin never fails except when
//! full, so it needs no budget.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use hark_proto::ConversationRecord;

use crate::clock::WallClock;
use crate::error::StoreError;
use crate::fair::{
    ms_to_secs, secs_to_ms, LeaseGrant, QuotaStore, SessionCap, SessionGrant, SessionRefresh,
    Settle,
};
use crate::metrics::{CONVERSATIONS_PARKED, CONVERSATIONS_RESUMED};
use crate::outbox::{Claimed, Inserted, OutboxStats, SharedOutbox};
use crate::parking::{ParkedConversation, ParkingLot};
use crate::quota::Window;

/// Where [`ParkingLot::claim_expired`] puts the conversations it finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpiredParking {
    /// Into this store's outbox, as Postgres does (the twin of the shared store).
    #[default]
    IntoOutbox,
    /// Only to the caller, which hands them to its own fallback path (the
    /// in-process parking lot of a pod without Postgres, whose outbox is on disk).
    ToCaller,
}

/// The twin. One per process (or per test).
#[derive(Debug)]
pub struct MemoryStore {
    /// Wall time, following tokio's clock.
    clock: WallClock,
    /// Bound of every table.
    capacity: usize,
    /// What happens to expired parked conversations.
    expired: ExpiredParking,
    /// The tables.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Outbox rows, pending and tombstones, by conversation id.
    outbox: HashMap<String, Row>,
    /// Insertion counter, for oldest-first order among equal times.
    seq: u64,
    /// Parked conversations by conversation id.
    parked: HashMap<String, Parked>,
    /// Session leases: uid → session id → lease expiry (wall ms).
    sessions: HashMap<String, HashMap<String, u64>>,
    /// Quota accounts by (uid, window start ms).
    quota: HashMap<(String, u64), Account>,
}

#[derive(Debug)]
struct Row {
    /// The record; `None` once delivered (a tombstone).
    record: Option<ConversationRecord>,
    created_ms: u64,
    seq: u64,
    /// Due from then on.
    available_ms: u64,
    /// Claimer and lease expiry.
    claim: Option<(String, u64)>,
    attempts: u32,
    delivered_ms: Option<u64>,
}

#[derive(Debug)]
struct Parked {
    conversation: ParkedConversation,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
struct Account {
    used_ms: i64,
    leased_ms: i64,
    expires_ms: u64,
}

impl MemoryStore {
    /// A twin with `capacity` entries per table, finishing expired parked
    /// conversations into its own outbox (as Postgres does).
    pub fn new(capacity: usize) -> Self {
        Self::with_options(capacity, ExpiredParking::IntoOutbox, WallClock::system())
    }

    /// A twin with every option.
    pub fn with_options(capacity: usize, expired: ExpiredParking, clock: WallClock) -> Self {
        Self { clock, capacity: capacity.max(1), expired, state: Mutex::new(State::default()) }
    }

    /// The clock it reads.
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// Takes every parked conversation, live or not, as finished records: a pod
    /// without Postgres that is shutting down hands them to its disk outbox, since
    /// nothing would be left to resume them from this process.
    pub fn take_all_parked(&self) -> Vec<ConversationRecord> {
        let mut state = self.lock();
        let records: Vec<ConversationRecord> =
            state.parked.drain().map(|(_, parked)| parked.conversation.into_record()).collect();
        metrics::gauge!(CONVERSATIONS_PARKED).set(0.0);
        records
    }

    /// The quota account of `uid` in `window` as (used, leased) seconds (tests).
    pub fn quota_account(&self, uid: &str, window: Window) -> Option<(f64, f64)> {
        let state = self.lock();
        let account = state.quota.get(&(uid.to_owned(), window.start_ms))?;
        (account.expires_ms > self.clock.now_ms())
            .then(|| (ms_to_secs(account.used_ms), ms_to_secs(account.leased_ms)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn full(&self, what: &'static str) -> StoreError {
        StoreError::Full { what, capacity: self.capacity }
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl State {
    /// Inserts unless present; evicts the oldest tombstone to make room.
    fn insert(
        &mut self,
        record: &ConversationRecord,
        now: u64,
        capacity: usize,
    ) -> Option<Inserted> {
        if self.outbox.contains_key(&record.conversation_id) {
            return Some(Inserted::AlreadyPresent);
        }
        if self.outbox.len() >= capacity {
            let oldest = self
                .outbox
                .iter()
                .filter_map(|(id, row)| row.delivered_ms.map(|at| (at, row.seq, id.clone())))
                .min();
            let (_, _, id) = oldest?;
            self.outbox.remove(&id);
        }
        self.seq += 1;
        let row = Row {
            record: Some(record.clone()),
            created_ms: now,
            seq: self.seq,
            available_ms: now,
            claim: None,
            attempts: 0,
            delivered_ms: None,
        };
        self.outbox.insert(record.conversation_id.clone(), row);
        Some(Inserted::New)
    }

    fn live_sessions(&mut self, uid: &str, now: u64) -> Option<&mut HashMap<String, u64>> {
        let sessions = self.sessions.get_mut(uid)?;
        sessions.retain(|_, expires| *expires > now);
        Some(sessions)
    }

    fn account(
        &mut self,
        uid: &str,
        window: Window,
        now: u64,
        capacity: usize,
    ) -> Option<&mut Account> {
        let key = (uid.to_owned(), window.start_ms);
        if !self.quota.contains_key(&key) {
            if self.quota.len() >= capacity {
                self.quota.retain(|_, account| account.expires_ms > now);
            }
            if self.quota.len() >= capacity {
                return None;
            }
        }
        let account = self.quota.entry(key).or_default();
        if account.expires_ms <= now {
            // Expired with its window: a new account, as Redis would start one.
            *account = Account::default();
        }
        account.expires_ms = window.expires_at_ms();
        Some(account)
    }
}

#[async_trait]
impl SharedOutbox for MemoryStore {
    async fn insert(&self, record: &ConversationRecord) -> Result<Inserted, StoreError> {
        let now = self.clock.now_ms();
        self.lock().insert(record, now, self.capacity).ok_or_else(|| self.full("outbox"))
    }

    async fn claim_due(
        &self,
        pod: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let mut due: Vec<(u64, u64, String)> = state
            .outbox
            .iter()
            .filter(|(_, row)| {
                row.delivered_ms.is_none()
                    && row.available_ms <= now
                    && row.claim.as_ref().is_none_or(|(_, until)| *until <= now)
            })
            .map(|(id, row)| (row.available_ms, row.seq, id.clone()))
            .collect();
        due.sort();
        let mut claimed = Vec::new();
        for (_, _, id) in due.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)) {
            if let Some(row) = state.outbox.get_mut(&id) {
                row.claim = Some((pod.to_owned(), now.saturating_add(ms(lease))));
                row.attempts = row.attempts.saturating_add(1);
                if let Some(record) = &row.record {
                    claimed.push(Claimed { record: record.clone(), attempts: row.attempts });
                }
            }
        }
        Ok(claimed)
    }

    async fn mark_delivered(&self, conversation_id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(row) = state.outbox.get_mut(conversation_id) else { return Ok(false) };
        if row.delivered_ms.is_some() {
            return Ok(false);
        }
        row.delivered_ms = Some(now);
        row.record = None;
        row.claim = None;
        Ok(true)
    }

    async fn release(
        &self,
        pod: &str,
        conversation_id: &str,
        retry_in: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(row) = state.outbox.get_mut(conversation_id) else { return Ok(false) };
        let held = row.delivered_ms.is_none()
            && row.claim.as_ref().is_some_and(|(holder, _)| holder == pod);
        if held {
            row.claim = None;
            row.available_ms = now.saturating_add(ms(retry_in));
        }
        Ok(held)
    }

    async fn stats(&self) -> Result<OutboxStats, StoreError> {
        let now = self.clock.now_ms();
        let state = self.lock();
        let mut stats = OutboxStats::default();
        for row in state.outbox.values() {
            if row.delivered_ms.is_some() {
                stats.tombstones += 1;
                continue;
            }
            stats.pending += 1;
            let age = Duration::from_millis(now.saturating_sub(row.created_ms));
            stats.oldest_age = Some(stats.oldest_age.map_or(age, |oldest| oldest.max(age)));
        }
        Ok(stats)
    }

    async fn prune_tombstones(&self, older_than: Duration, limit: u32) -> Result<u64, StoreError> {
        let cutoff = self.clock.now_ms().saturating_sub(ms(older_than));
        let mut state = self.lock();
        let mut old: Vec<(u64, String)> = state
            .outbox
            .iter()
            .filter_map(|(id, row)| {
                row.delivered_ms.filter(|at| *at < cutoff).map(|at| (at, id.clone()))
            })
            .collect();
        old.sort();
        old.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for (_, id) in &old {
            state.outbox.remove(id);
        }
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl ParkingLot for MemoryStore {
    async fn park(&self, conversation: &ParkedConversation) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let deadline_ms = now.saturating_add(ms(conversation.remaining(now)));
        let mut state = self.lock();
        if !state.parked.contains_key(&conversation.conversation_id)
            && state.parked.len() >= self.capacity
        {
            return Err(self.full("parked conversations"));
        }
        let parked = Parked { conversation: conversation.clone(), deadline_ms };
        state.parked.insert(conversation.conversation_id.clone(), parked);
        Ok(())
    }

    async fn resume(&self, uid: &str) -> Result<Option<ParkedConversation>, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let live: Vec<String> = state
            .parked
            .iter()
            .filter(|(_, p)| p.conversation.uid == uid && p.deadline_ms > now)
            .map(|(id, _)| id.clone())
            .collect();
        match live.as_slice() {
            [] => Ok(None),
            [only] => {
                let parked = state.parked.remove(only).map(|p| p.conversation);
                metrics::counter!(CONVERSATIONS_RESUMED).increment(1);
                Ok(parked)
            }
            several => {
                tracing::info!(
                    uid,
                    parked = several.len(),
                    "several parked conversations; resuming none, finishing all"
                );
                for id in several {
                    if let Some(parked) = state.parked.get_mut(id) {
                        parked.deadline_ms = now;
                    }
                }
                Ok(None)
            }
        }
    }

    async fn claim_expired(
        &self,
        _pod: &str,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let mut expired: Vec<(u64, String)> = state
            .parked
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now)
            .map(|(id, p)| (p.deadline_ms, id.clone()))
            .collect();
        expired.sort();
        let mut records = Vec::new();
        for (_, id) in expired.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)) {
            let Some(parked) = state.parked.get(&id) else { continue };
            let record = parked.conversation.clone().into_record();
            if self.expired == ExpiredParking::IntoOutbox
                && state.insert(&record, now, self.capacity).is_none()
            {
                // The outbox is full of pending records: leave it parked (due) for later.
                break;
            }
            state.parked.remove(&id);
            records.push(record);
        }
        Ok(records)
    }

    async fn count_parked(&self) -> Result<u64, StoreError> {
        let count = self.lock().parked.len() as u64;
        metrics::gauge!(CONVERSATIONS_PARKED).set(count as f64);
        Ok(count)
    }
}

#[async_trait]
impl SessionCap for MemoryStore {
    async fn acquire_session(
        &self,
        uid: &str,
        session_id: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<SessionGrant, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        if !state.sessions.contains_key(uid) {
            if state.sessions.len() >= self.capacity {
                state
                    .sessions
                    .retain(|_, sessions| sessions.values().any(|expires| *expires > now));
            }
            if state.sessions.len() >= self.capacity {
                return Err(self.full("session leases"));
            }
        }
        let sessions = state.sessions.entry(uid.to_owned()).or_default();
        sessions.retain(|_, expires| *expires > now);
        let open = u32::try_from(sessions.len()).unwrap_or(u32::MAX);
        if sessions.contains_key(session_id) || open < max {
            sessions.insert(session_id.to_owned(), now.saturating_add(ms(ttl)));
            let open = u32::try_from(sessions.len()).unwrap_or(u32::MAX);
            return Ok(SessionGrant::Granted { open });
        }
        let soonest = sessions.values().copied().min().unwrap_or(now);
        Ok(SessionGrant::AtCap {
            retry_after: Duration::from_millis(soonest.saturating_sub(now)),
            open,
        })
    }

    async fn refresh_session(
        &self,
        uid: &str,
        session_id: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let held = state.live_sessions(uid, now).is_some_and(|s| s.contains_key(session_id));
        state
            .sessions
            .entry(uid.to_owned())
            .or_default()
            .insert(session_id.to_owned(), now.saturating_add(ms(ttl)));
        Ok(held)
    }

    async fn release_session(&self, uid: &str, session_id: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(sessions) = state.sessions.get_mut(uid) {
            sessions.remove(session_id);
            if sessions.is_empty() {
                state.sessions.remove(uid);
            }
        }
        Ok(())
    }
}

/// Grants from an account, as the Redis script does.
fn grant(
    account: &mut Account,
    limit: Duration,
    chunk: Duration,
    window: Window,
    now: u64,
) -> LeaseGrant {
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    let chunk_ms = i64::try_from(chunk.as_millis()).unwrap_or(i64::MAX);
    let available = limit_ms - account.used_ms - account.leased_ms;
    if available <= 0 {
        return LeaseGrant::Exhausted { retry_after: window.retry_after(now) };
    }
    let granted = chunk_ms.min(available);
    account.leased_ms += granted;
    LeaseGrant::Granted { seconds: ms_to_secs(granted), remaining: ms_to_secs(available - granted) }
}

fn settle(account: &mut Account, settle: Settle) -> i64 {
    let used = secs_to_ms(settle.used);
    let release = secs_to_ms(settle.release);
    account.leased_ms = (account.leased_ms - release).max(0);
    account.used_ms += used;
    (release - used).max(0)
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn lease(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        chunk: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let account = state
            .account(uid, window, now, self.capacity)
            .ok_or_else(|| self.full("quota accounts"))?;
        Ok(grant(account, limit, chunk, window, now))
    }

    async fn renew(
        &self,
        uid: &str,
        window: Window,
        limit: Duration,
        settlement: Settle,
        chunk: Duration,
        session: Option<SessionRefresh<'_>>,
    ) -> Result<LeaseGrant, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let account = state
            .account(uid, window, now, self.capacity)
            .ok_or_else(|| self.full("quota accounts"))?;
        settle(account, settlement);
        let granted = grant(account, limit, chunk, window, now);
        if let Some(refresh) = session {
            state
                .sessions
                .entry(uid.to_owned())
                .or_default()
                .insert(refresh.session_id.to_owned(), now.saturating_add(ms(refresh.ttl)));
        }
        Ok(granted)
    }

    async fn commit(
        &self,
        uid: &str,
        window: Window,
        settlement: Settle,
    ) -> Result<f64, StoreError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let account = state
            .account(uid, window, now, self.capacity)
            .ok_or_else(|| self.full("quota accounts"))?;
        Ok(ms_to_secs(settle(account, settlement)))
    }
}
