//! The per-session quota meter: a pure state machine over one session's lease.
//!
//! The meter holds a lease of `lease` seconds from one [`Source`] and counts
//! `used` seconds against it. [`QuotaMeter::add`] is the only thing the hot path
//! calls. [`QuotaMeter::check`], called on the session's timer, says what is due:
//!
//! ```text
//! IDLE      ── lease − used ≤ renew_margin ──▶ RENEWING   (Due::Renew: settle used, ask for a chunk)
//! IDLE      ── the window ended ─────────────▶ RENEWING   (Due::Rollover: commit, lease in the next)
//! RENEWING  ── granted ──────────────────────▶ IDLE       (lease grows by the grant)
//! RENEWING  ── exhausted ────────────────────▶ DENIED
//! DENIED    ── used ≥ lease ─────────────────▶ Due::Exhausted (the session ends)
//! ```
//!
//! A renewal settles what was used so far (converting it from leased to used)
//! and keeps the rest of the lease (the *carry*) in the session's hands, so the
//! session keeps streaming on the carry while the renewal is in flight and never
//! runs on seconds nobody leased to it. The margin is there for that round trip.

use std::time::Duration;

use super::Window;
use crate::fair::{LeaseGrant, Settle};

/// Where the meter's current lease came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The fleet store (Redis).
    Fleet,
    /// This process's [`super::LocalBudgets`], while the fleet store is unreachable.
    Local,
}

/// Lease sizes of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterConfig {
    /// Seconds of audio asked for per lease (`--quota-lease`, default 30 s).
    pub chunk: Duration,
    /// Renew when this much of the lease is left: covers the audio that arrives
    /// during the renewal round trip (default 5 s: 20× real time for a 250 ms call).
    pub renew_margin: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self { chunk: Duration::from_secs(30), renew_margin: Duration::from_secs(5) }
    }
}

/// What the meter wants done now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Due {
    /// Nothing: keep streaming.
    Nothing,
    /// Settle `settle` with `source` and ask for `chunk` more in `window`; then
    /// call [`QuotaMeter::granted`].
    Renew {
        /// The window the lease is in.
        window: Window,
        /// The source of the current lease, which `settle` belongs to.
        source: Source,
        /// Usage to settle.
        settle: Settle,
        /// How much to ask for.
        chunk: Duration,
    },
    /// The window ended: commit `closing`, then lease `chunk` in `next` and call
    /// [`QuotaMeter::granted`].
    Rollover {
        /// What to commit for the old window.
        closing: Closing,
        /// The new window.
        next: Window,
        /// How much to ask for.
        chunk: Duration,
    },
    /// The quota is used up: tell the client, hand off the conversation, close 1008.
    Exhausted {
        /// Until the window ends.
        retry_after: Duration,
    },
}

/// The final settlement of a lease: for [`crate::fair::QuotaStore::commit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closing {
    /// The window it belongs to.
    pub window: Window,
    /// Who granted the lease.
    pub source: Source,
    /// Used seconds, and the whole remaining lease released.
    pub settle: Settle,
}

/// Where the meter is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Holding a lease, nothing in flight.
    Idle,
    /// A renewal (or the first lease of a new window) is in flight.
    Renewing,
    /// The last renewal was refused: finish the carry, then stop.
    Denied,
}

/// One session's quota meter. See the module docs.
#[derive(Clone, Debug)]
pub struct QuotaMeter {
    /// Lease sizes.
    config: MeterConfig,
    /// The window of the current lease.
    window: Window,
    /// Who granted the current lease.
    source: Source,
    /// Seconds held: what was granted and not yet settled.
    lease: f64,
    /// Seconds used since the last settle.
    used: f64,
    /// Where the machine is.
    state: State,
}

impl QuotaMeter {
    /// A meter holding a first grant of `seconds` from `source` in `window`.
    pub fn new(config: MeterConfig, window: Window, source: Source, seconds: f64) -> Self {
        Self { config, window, source, lease: seconds.max(0.0), used: 0.0, state: State::Idle }
    }

    /// Counts `seconds` of decoded audio. The only per-frame call.
    #[inline]
    pub fn add(&mut self, seconds: f64) {
        self.used += seconds;
    }

    /// The window of the current lease.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Who granted the current lease.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Seconds of lease left (negative when the session overran it).
    pub fn remaining(&self) -> f64 {
        self.lease - self.used
    }

    /// What is due at wall-clock `now_ms`. Cheap: a few comparisons unless
    /// something is due.
    pub fn check(&mut self, now_ms: u64) -> Due {
        match self.state {
            State::Renewing => Due::Nothing,
            State::Idle | State::Denied if now_ms >= self.window.end_ms => {
                // IDLE/DENIED → RENEWING: the window ended; settle it whole.
                let closing = self.closing();
                let next = Window {
                    start_ms: self.window.end_ms,
                    end_ms: self.window.end_ms + (self.window.end_ms - self.window.start_ms),
                };
                let next = if next.contains(now_ms) { next } else { realign(self.window, now_ms) };
                self.window = next;
                self.lease = 0.0;
                self.used = 0.0;
                self.state = State::Renewing;
                Due::Rollover { closing, next, chunk: self.config.chunk }
            }
            State::Denied if self.used >= self.lease => {
                Due::Exhausted { retry_after: self.window.retry_after(now_ms) }
            }
            State::Denied => Due::Nothing,
            State::Idle if self.lease - self.used <= self.config.renew_margin.as_secs_f64() => {
                // IDLE → RENEWING: settle what was used, keep the carry.
                let release = self.used.min(self.lease).max(0.0);
                let settle = Settle { used: self.used.max(0.0), release };
                self.lease -= release;
                self.used = 0.0;
                self.state = State::Renewing;
                Due::Renew {
                    window: self.window,
                    source: self.source,
                    settle,
                    chunk: self.config.chunk,
                }
            }
            State::Idle => Due::Nothing,
        }
    }

    /// The carry: seconds of the current lease left while a renewal is in flight.
    /// A caller that switches source settles it with the old source first.
    pub fn carry(&self) -> f64 {
        (self.lease - self.used).max(0.0)
    }

    /// The answer to the renewal or rollover lease that [`check`](Self::check)
    /// asked for, from `source`. When `source` differs from the current lease's,
    /// the carry is dropped (the caller settled or forfeited it with the old source).
    pub fn granted(&mut self, source: Source, grant: LeaseGrant) {
        if source != self.source {
            self.lease = 0.0;
            self.source = source;
        }
        match grant {
            // RENEWING → IDLE.
            LeaseGrant::Granted { seconds, .. } => {
                self.lease += seconds.max(0.0);
                self.state = State::Idle;
            }
            // RENEWING → DENIED.
            LeaseGrant::Exhausted { .. } => self.state = State::Denied,
        }
    }

    /// The end of the session: what to commit (everything used, the whole lease
    /// released, so the store refunds the unused rest).
    pub fn finish(self) -> Closing {
        self.closing()
    }

    fn closing(&self) -> Closing {
        Closing {
            window: self.window,
            source: self.source,
            settle: Settle { used: self.used.max(0.0), release: self.lease.max(0.0) },
        }
    }
}

/// The window of the same length containing `now_ms` (a session that slept past
/// a whole window, e.g. a suspended process).
fn realign(window: Window, now_ms: u64) -> Window {
    let length = (window.end_ms - window.start_ms).max(1);
    let start_ms = now_ms - now_ms % length;
    Window { start_ms, end_ms: start_ms + length }
}
