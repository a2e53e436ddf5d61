//! The pod-wide recovery ramp: when the breaker closes, degraded sessions come
//! back at a bounded, jittered rate instead of all at once (design.md §6).
//!
//! Time is cut into slots of `1 s / rate`. Each [`RecoveryRamp::acquire`] reserves
//! the next free slot and sleeps until a random instant inside it, so reconnects
//! are spread evenly and never line up on slot boundaries. Jitter alone could put
//! `rate + 1` grants just under a second apart (late in one slot, early in the
//! slot `rate` later), so the ramp also remembers its last `rate` grants and never
//! schedules one less than a second after the grant `rate` places before it. That
//! makes the bound exact: at most `rate` grants in any 1-second window. Idle time
//! does not bank credit for a later burst.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep_until, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// Pod-wide recovery ramp: at most `rate` acquisitions in any 1-second window,
/// each slot jittered inside its `1/rate` interval. Clone is cheap (`Arc` inside).
#[derive(Clone)]
pub struct RecoveryRamp {
    /// The schedule shared by every clone.
    shared: Arc<Shared>,
}

/// What every clone of a [`RecoveryRamp`] points at.
struct Shared {
    /// Acquisitions allowed per second.
    rate: NonZeroU32,
    /// Length of one slot: `1 s / rate` (zero only for rates above 10⁹/s).
    slot: Duration,
    /// The reservation book. Locked only to reserve a slot, never across `.await`.
    schedule: Mutex<Schedule>,
}

/// Reservations made so far.
struct Schedule {
    /// Source of jitter, seeded at construction so tests are deterministic.
    rng: SmallRng,
    /// Start of the next free slot; `None` before the first acquisition.
    next_slot: Option<Instant>,
    /// Recent grant instants, ascending: the last `rate` at most, and only those
    /// less than a second before the newest, since older ones constrain nothing.
    recent: VecDeque<Instant>,
}

impl RecoveryRamp {
    /// A ramp allowing `rate_per_sec` acquisitions per second, with jitter drawn
    /// from a `SmallRng` seeded with `seed`.
    pub fn new(rate_per_sec: NonZeroU32, seed: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                rate: rate_per_sec,
                slot: SECOND / rate_per_sec.get(),
                schedule: Mutex::new(Schedule {
                    rng: SmallRng::seed_from_u64(seed),
                    next_slot: None,
                    recent: VecDeque::new(),
                }),
            }),
        }
    }

    /// Acquisitions allowed per second.
    pub fn rate(&self) -> NonZeroU32 {
        self.shared.rate
    }

    /// Waits for this caller's turn. Cancel-safe enough: the slot is reserved
    /// when the call is first polled, and a waiter dropped before its turn just
    /// wastes that slot.
    pub async fn acquire(&self) {
        let at = self.reserve(Instant::now());
        sleep_until(at).await;
    }

    /// Reserves the next slot and returns the instant its holder may proceed.
    fn reserve(&self, now: Instant) -> Instant {
        let shared = &*self.shared;
        let mut schedule = shared
            .schedule
            .lock()
            // Every update below is to plain values; a panic cannot corrupt them.
            .unwrap_or_else(PoisonError::into_inner);
        let schedule = &mut *schedule;

        // A slot never starts in the past: idle time is not saved up.
        let start = schedule.next_slot.map_or(now, |next| next.max(now));
        schedule.next_slot = Some(start + shared.slot);
        let mut at = start + jitter(&mut schedule.rng, shared.slot);

        // Grants a second or more before `at` cannot share a window with it.
        while schedule
            .recent
            .front()
            .is_some_and(|&old| at.saturating_duration_since(old) >= SECOND)
        {
            schedule.recent.pop_front();
        }
        // Keep grants in order, and at least a second after the grant `rate`
        // places back; this is what makes "≤ rate per window" exact.
        if let Some(&last) = schedule.recent.back() {
            at = at.max(last);
        }
        let rate = usize::try_from(shared.rate.get()).unwrap_or(usize::MAX);
        if schedule.recent.len() >= rate {
            if let Some(oldest) = schedule.recent.pop_front() {
                at = at.max(oldest + SECOND);
            }
        }
        schedule.recent.push_back(at);
        at
    }
}

/// A uniform offset in `[0, slot)`.
fn jitter(rng: &mut SmallRng, slot: Duration) -> Duration {
    let nanos = u64::try_from(slot.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..nanos))
}

impl fmt::Debug for RecoveryRamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryRamp")
            .field("rate", &self.shared.rate)
            .field("slot", &self.shared.slot)
            .finish_non_exhaustive()
    }
}
