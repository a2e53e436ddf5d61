//! Admission control: process and per-user session limits, and drain refusal.
//!
//! Checked once per upgrade, never per frame. The `Retry-After` a refused client
//! gets is derived from state — how fast sessions are ending — and jittered, so
//! refused clients do not come back in lockstep.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use rand::Rng;
use tokio::time::Instant;

use crate::metrics::{SESSIONS_ACTIVE, SESSION_REJECTIONS};

/// Window over which session ends are counted for `Retry-After`.
const END_WINDOW: Duration = Duration::from_secs(60);
/// Session ends remembered (bounds the window's memory).
const END_MEMORY: usize = 4096;

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The process is at `--max-sessions` (503).
    Capacity {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The user is at `--max-sessions-per-user` (429).
    UserLimit {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The process is draining (503).
    Draining {
        /// Suggested wait.
        retry_after: Duration,
    },
}

impl Rejection {
    /// The `reason` label of `hark_session_rejections_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Capacity { .. } => "capacity",
            Rejection::UserLimit { .. } => "user_limit",
            Rejection::Draining { .. } => "draining",
        }
    }

    /// The suggested wait.
    pub fn retry_after(self) -> Duration {
        match self {
            Rejection::Capacity { retry_after }
            | Rejection::UserLimit { retry_after }
            | Rejection::Draining { retry_after } => retry_after,
        }
    }
}

/// Process-wide admission state.
#[derive(Debug)]
pub struct Admission {
    max_sessions: usize,
    max_per_user: usize,
    active: AtomicUsize,
    per_user: DashMap<String, usize>,
    draining: AtomicBool,
    /// Recent session ends, for `Retry-After`.
    ends: Mutex<VecDeque<Instant>>,
}

impl Admission {
    /// Creates the admission state.
    pub fn new(max_sessions: NonZeroUsize, max_per_user: NonZeroUsize) -> Arc<Self> {
        metrics::gauge!(SESSIONS_ACTIVE).set(0.0);
        Arc::new(Self {
            max_sessions: max_sessions.get(),
            max_per_user: max_per_user.get(),
            active: AtomicUsize::new(0),
            per_user: DashMap::new(),
            draining: AtomicBool::new(false),
            ends: Mutex::new(VecDeque::new()),
        })
    }

    /// Open sessions.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Whether new sessions would be admitted (drives `/ready`).
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.active() < self.max_sessions
    }

    /// Stops admitting sessions (drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the process is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Admits a session for `uid` or says why not (and counts the refusal).
    pub fn admit(self: &Arc<Self>, uid: &str) -> Result<AdmissionGuard, Rejection> {
        let result = self.try_admit(uid);
        if let Err(rejection) = result {
            metrics::counter!(SESSION_REJECTIONS, "reason" => rejection.reason()).increment(1);
        }
        result
    }

    /// Refuses early, before the user is known, when no session could be admitted
    /// now (draining, or at capacity); counted like `admit`. For `/v4/web/listen`,
    /// whose user is known only after the upgrade: a full process should not hold
    /// sockets open waiting for auth messages it would refuse anyway. Admits
    /// nothing: `admit` still decides.
    pub fn precheck(&self) -> Result<(), Rejection> {
        let result = if self.draining() {
            Err(Rejection::Draining { retry_after: jitter(Duration::from_secs(2)) })
        } else if self.active() >= self.max_sessions {
            Err(Rejection::Capacity { retry_after: self.capacity_retry_after() })
        } else {
            Ok(())
        };
        if let Err(rejection) = result {
            metrics::counter!(SESSION_REJECTIONS, "reason" => rejection.reason()).increment(1);
        }
        result
    }

    fn try_admit(self: &Arc<Self>, uid: &str) -> Result<AdmissionGuard, Rejection> {
        if self.draining() {
            return Err(Rejection::Draining { retry_after: jitter(Duration::from_secs(2)) });
        }
        // Reserve a process slot first; give it back if the user is over limit.
        let previous = self.active.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max_sessions {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::Capacity { retry_after: self.capacity_retry_after() });
        }
        {
            let mut count = self.per_user.entry(uid.to_owned()).or_insert(0);
            if *count >= self.max_per_user {
                drop(count);
                self.active.fetch_sub(1, Ordering::AcqRel);
                // A user's own sessions rarely end within seconds; ask for longer.
                return Err(Rejection::UserLimit { retry_after: jitter(Duration::from_secs(30)) });
            }
            *count += 1;
        }
        metrics::gauge!(SESSIONS_ACTIVE).increment(1.0);
        Ok(AdmissionGuard { admission: self.clone(), uid: uid.to_owned() })
    }

    /// Expected wait for a free slot: the mean gap between recent session ends,
    /// clamped to 1–60 s, jittered ±50 %.
    fn capacity_retry_after(&self) -> Duration {
        let now = Instant::now();
        let ends = {
            let mut ends = self.ends.lock().expect("admission ends lock");
            while ends.front().is_some_and(|t| now.duration_since(*t) > END_WINDOW) {
                ends.pop_front();
            }
            ends.len()
        };
        let gap = if ends == 0 { END_WINDOW } else { END_WINDOW / ends as u32 };
        jitter(gap.clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }

    fn release(&self, uid: &str) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(SESSIONS_ACTIVE).decrement(1.0);
        self.per_user.remove_if_mut(uid, |_, count| {
            *count -= 1;
            *count == 0
        });
        let mut ends = self.ends.lock().expect("admission ends lock");
        if ends.len() >= END_MEMORY {
            ends.pop_front();
        }
        ends.push_back(Instant::now());
    }
}

/// Holds a session's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct AdmissionGuard {
    admission: Arc<Admission>,
    uid: String,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.admission.release(&self.uid);
    }
}

/// `d` scaled by a random factor in [0.5, 1.5), at least one second.
fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..1.5);
    d.mul_f64(factor).max(Duration::from_secs(1))
}

/// Seconds for a `Retry-After` header (rounded up).
pub fn retry_after_header(d: Duration) -> String {
    d.as_secs_f64().ceil().max(1.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[tokio::test]
    async fn process_and_user_limits() {
        let a = Admission::new(nz(3), nz(2));
        let g1 = a.admit("u").unwrap();
        let _g2 = a.admit("u").unwrap();
        assert!(matches!(a.admit("u"), Err(Rejection::UserLimit { .. })));
        let _g3 = a.admit("v").unwrap();
        assert!(!a.ready());
        assert!(matches!(a.admit("w"), Err(Rejection::Capacity { .. })));
        drop(g1);
        assert!(a.ready());
        assert_eq!(a.active(), 2);
        let _g4 = a.admit("u").unwrap();
    }

    #[tokio::test]
    async fn draining_refuses_everyone() {
        let a = Admission::new(nz(3), nz(2));
        a.start_draining();
        assert!(!a.ready());
        assert!(matches!(a.admit("u"), Err(Rejection::Draining { .. })));
        assert!(matches!(a.precheck(), Err(Rejection::Draining { .. })));
    }

    #[tokio::test]
    async fn precheck_refuses_at_capacity_and_admits_nothing() {
        let a = Admission::new(nz(1), nz(1));
        assert_eq!(a.precheck(), Ok(()));
        assert_eq!(a.active(), 0);
        let _g = a.admit("u").unwrap();
        assert!(matches!(a.precheck(), Err(Rejection::Capacity { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_follows_the_end_rate() {
        let a = Admission::new(nz(100), nz(100));
        // No ends seen: about a minute.
        let idle = a.capacity_retry_after();
        assert!(idle >= Duration::from_secs(30) && idle <= Duration::from_secs(90), "{idle:?}");
        for _ in 0..60 {
            drop(a.admit("u").unwrap());
        }
        // 60 ends in the last minute: about a second.
        let busy = a.capacity_retry_after();
        assert!(busy <= Duration::from_secs(2), "{busy:?}");
    }
}
