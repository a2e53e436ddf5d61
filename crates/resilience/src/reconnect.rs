//! One link's reconnect budget: *whether* to try again and *how long* to wait, for
//! every reconnect loop Hark runs (the pusher link, the STT link, the outbox
//! drainer). The loops keep their own states; what counts as a failure, when the
//! budget is spent and which backoff applies is decided here, once.
//!
//! A failure is a failed dial, or a link that died younger than
//! [`ReconnectPolicy::stable_after`]: a peer (or proxy) that accepts handshakes and
//! drops them at once must grow the backoff like a refusal, or every session would
//! redial it about once a second forever. A link that lived longer resets the count.

use std::time::Duration;

use rand::Rng;

use crate::backoff::Backoff;

/// A link that dies younger than this did not really recover.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A validated reconnect policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Consecutive failures after which the budget is spent; `None`: never (the
    /// drainer, which waits on the breaker instead).
    pub max_failures: Option<u32>,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Links younger than this at their death count as failures.
    pub stable_after: Duration,
}

impl ReconnectPolicy {
    /// A policy with the standard [`STABLE_AFTER`].
    pub fn new(max_failures: Option<u32>, backoff: Backoff) -> Self {
        Self { max_failures, backoff, stable_after: STABLE_AFTER }
    }
}

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then dial again.
    Retry(Duration),
    /// The budget is spent: degrade (pusher) or give up (STT).
    Exhausted,
}

/// How a live link's death was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It had lived past `stable_after`: a fresh outage, the count restarts.
    AfterStable(Next),
    /// It died young: as bad as a failed dial (report it to any breaker too).
    Young(Next),
}

impl Ended {
    /// The decision, whatever the age.
    pub fn next(self) -> Next {
        match self {
            Ended::AfterStable(next) | Ended::Young(next) => next,
        }
    }
}

/// Consecutive failures of one link under a policy.
#[derive(Clone, Debug)]
pub struct Attempts {
    policy: ReconnectPolicy,
    failures: u32,
}

impl Attempts {
    /// No failures yet.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self { policy, failures: 0 }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The policy.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// A dial failed.
    pub fn dial_failed<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Next {
        self.failures = self.failures.saturating_add(1);
        self.next(rng)
    }

    /// A connected link ended after living `lived`.
    pub fn link_ended<R: Rng + ?Sized>(&mut self, lived: Duration, rng: &mut R) -> Ended {
        if lived >= self.policy.stable_after {
            self.failures = 0;
            Ended::AfterStable(self.next(rng))
        } else {
            self.failures = self.failures.saturating_add(1);
            Ended::Young(self.next(rng))
        }
    }

    /// The ceiling the next delay is drawn under (for logs and tests).
    pub fn ceiling(&self) -> Duration {
        self.policy.backoff.ceiling(self.failures)
    }

    /// Forgets the failures (the link is healthy again by other means, e.g. the
    /// breaker closed and a probe succeeded).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// After `n` consecutive failures the next dial waits `backoff.delay(n)`: the
    /// first redial after a stable link's death waits attempt 0's delay.
    fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> Next {
        if self.policy.max_failures.is_some_and(|max| self.failures >= max) {
            return Next::Exhausted;
        }
        Next::Retry(self.policy.backoff.delay(self.failures, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn policy(max: Option<u32>) -> ReconnectPolicy {
        ReconnectPolicy::new(
            max,
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8)).unwrap(),
        )
    }

    /// The decision as the ceiling its delay was drawn under (`None`: exhausted),
    /// checking the jittered delay is below it.
    fn ceiling_of(a: &Attempts, next: Next) -> Option<u64> {
        match next {
            Next::Retry(delay) => {
                let ceiling = a.ceiling();
                assert!(delay <= ceiling, "{delay:?} above {ceiling:?}");
                Some(ceiling.as_secs())
            }
            Next::Exhausted => None,
        }
    }

    #[test]
    fn failed_dials_grow_the_delay_until_the_budget_is_spent() {
        let mut a = Attempts::new(policy(Some(4)));
        let rng = &mut SmallRng::seed_from_u64(1);
        let ceilings: Vec<Option<u64>> = (0..5)
            .map(|_| {
                let next = a.dial_failed(rng);
                ceiling_of(&a, next)
            })
            .collect();
        assert_eq!(ceilings, vec![Some(2), Some(4), Some(8), None, None]);
        assert_eq!(a.failures(), 5);
    }

    #[test]
    fn a_stable_link_restarts_the_count_and_a_young_one_adds_to_it() {
        let mut a = Attempts::new(policy(Some(3)));
        let rng = &mut SmallRng::seed_from_u64(2);
        a.dial_failed(rng);
        a.dial_failed(rng);
        let ended = a.link_ended(STABLE_AFTER, rng);
        assert!(matches!(ended, Ended::AfterStable(Next::Retry(_))), "{ended:?}");
        assert_eq!((a.failures(), ceiling_of(&a, ended.next())), (0, Some(1)));
        // Accept-then-drop: each young death is a failure, and the budget runs out.
        let young = Duration::from_secs(1);
        let mut ages = Vec::new();
        for _ in 0..3 {
            let ended = a.link_ended(young, rng);
            assert!(matches!(ended, Ended::Young(_)), "{ended:?}");
            ages.push(ceiling_of(&a, ended.next()));
        }
        assert_eq!(ages, vec![Some(2), Some(4), None]);
    }

    #[test]
    fn zero_max_failures_degrades_at_the_first_failure() {
        let rng = &mut SmallRng::seed_from_u64(3);
        let mut a = Attempts::new(policy(Some(0)));
        assert_eq!(a.dial_failed(rng), Next::Exhausted);
        let mut a = Attempts::new(policy(Some(0)));
        assert_eq!(a.link_ended(STABLE_AFTER, rng).next(), Next::Exhausted);
    }

    #[test]
    fn an_unbounded_policy_never_gives_up_and_caps_its_delay() {
        let mut a = Attempts::new(policy(None));
        let rng = &mut SmallRng::seed_from_u64(4);
        for _ in 0..100 {
            let next = a.dial_failed(rng);
            assert!(ceiling_of(&a, next).is_some());
        }
        assert_eq!(a.ceiling(), Duration::from_secs(8));
        a.reset();
        let next = a.dial_failed(rng);
        assert_eq!(ceiling_of(&a, next), Some(2));
    }
}
