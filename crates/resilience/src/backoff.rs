//! Exponential backoff with full jitter: *how long* to wait before reconnect
//! attempt `n`. Whether to retry at all is the caller's decision (design.md §6,
//! session reconnect loop).

use std::time::Duration;

use rand::Rng;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a [`Backoff`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// A zero base would make every ceiling zero: a tight retry loop.
    #[error("backoff base must be greater than zero")]
    ZeroBase,
    /// The cap is below the first delay, so the schedule would never grow.
    #[error("backoff max ({max:?}) must not be less than base ({base:?})")]
    MaxBelowBase {
        /// The requested first ceiling.
        base: Duration,
        /// The requested cap.
        max: Duration,
    },
}

/// Validated exponential-backoff parameters.
///
/// Attempt `n` (0-based) has ceiling `min(max, base · 2ⁿ)`; its delay is drawn
/// uniformly from `[0, ceiling]` ("full jitter"), so a crowd of sessions that
/// failed together does not retry together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of attempt 0; never zero.
    base: Duration,
    /// Largest ceiling of any attempt; never below `base`.
    max: Duration,
}

impl Backoff {
    /// Builds a backoff from `base` (ceiling of the first attempt) and `max`
    /// (the cap on every ceiling).
    ///
    /// # Errors
    /// [`BackoffError::ZeroBase`] if `base` is zero, [`BackoffError::MaxBelowBase`]
    /// if `max < base`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase { base, max });
        }
        Ok(Self { base, max })
    }

    /// Ceiling of the first attempt.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// Cap on every ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Upper bound for attempt `attempt` (0-based): `min(max, base · 2^attempt)`,
    /// saturating, never overflows for huge `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let max = self.max.as_nanos();
        // Work in u128 nanoseconds: base · 2^attempt either fits or is capped.
        let ceiling = 1u128
            .checked_shl(attempt)
            .and_then(|factor| self.base.as_nanos().checked_mul(factor))
            .map_or(max, |nanos| nanos.min(max));
        from_nanos(ceiling)
    }

    /// Full jitter: a delay drawn uniformly from `[0, ceiling(attempt)]` using `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos();
        from_nanos(rng.random_range(0..=ceiling))
    }

    /// The jittered schedule as an endless iterator: attempt 0, 1, 2, … Callers
    /// bound it themselves (`.take(max_attempts)`).
    pub fn delays<'a, R: Rng + ?Sized>(&'a self, rng: &'a mut R) -> Delays<'a, R> {
        Delays { backoff: self, rng, attempt: 0 }
    }
}

/// Endless iterator of jittered delays, from [`Backoff::delays`].
#[derive(Debug)]
pub struct Delays<'a, R: ?Sized> {
    /// The parameters the delays come from.
    backoff: &'a Backoff,
    /// Source of jitter.
    rng: &'a mut R,
    /// The next attempt number; saturates at `u32::MAX` (the ceiling is capped long before).
    attempt: u32,
}

impl<R: Rng + ?Sized> Iterator for Delays<'_, R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.backoff.delay(self.attempt, self.rng);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

/// Converts nanoseconds that are known to be at most some `Duration` back into one.
fn from_nanos(nanos: u128) -> Duration {
    // `nanos` never exceeds a Duration's range (it is ≤ a ceiling taken from one),
    // so the seconds fit in u64; saturate rather than panic all the same.
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is < 1e9, so it always fits in u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        assert_eq!(Backoff::new(Duration::ZERO, secs(1)), Err(BackoffError::ZeroBase));
        assert_eq!(
            Backoff::new(secs(2), secs(1)),
            Err(BackoffError::MaxBelowBase { base: secs(2), max: secs(1) })
        );
        assert!(Backoff::new(secs(1), secs(1)).is_ok());
    }

    #[test]
    fn ceilings_double_from_base_and_cap_at_max() {
        let backoff = Backoff::new(secs(1), secs(60)).unwrap();
        let ceilings: Vec<u64> = (0..9).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let backoff = Backoff::new(secs(1), secs(60)).unwrap();
        for attempt in [31, 32, 63, 64, 127, 128, 1_000, u32::MAX] {
            assert_eq!(backoff.ceiling(attempt), secs(60), "attempt {attempt}");
        }
        // Even with the largest possible cap, a huge attempt saturates at max.
        let unbounded = Backoff::new(Duration::from_nanos(1), Duration::MAX).unwrap();
        assert_eq!(unbounded.ceiling(u32::MAX), Duration::MAX);
        assert_eq!(unbounded.ceiling(10), Duration::from_nanos(1024));
        // Drawing from the full u128 nanosecond range must not panic either.
        let mut rng = SmallRng::seed_from_u64(1);
        let _ = unbounded.delay(u32::MAX, &mut rng);
    }

    #[test]
    fn jittered_delays_stay_within_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(100), secs(60)).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 0..40 {
            for _ in 0..200 {
                let delay = backoff.delay(attempt, &mut rng);
                assert!(delay <= backoff.ceiling(attempt), "attempt {attempt}: {delay:?}");
            }
        }
    }

    #[test]
    fn jitter_actually_spreads_delays() {
        let backoff = Backoff::new(secs(1), secs(60)).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let delays: Vec<Duration> = (0..100).map(|_| backoff.delay(6, &mut rng)).collect();
        assert!(delays.iter().any(|d| *d < secs(20)));
        assert!(delays.iter().any(|d| *d > secs(40)));
    }

    #[test]
    fn same_seed_gives_same_schedule() {
        let backoff = Backoff::new(secs(1), secs(60)).unwrap();
        let mut a = SmallRng::seed_from_u64(42);
        let mut b = SmallRng::seed_from_u64(42);
        let first: Vec<Duration> = backoff.delays(&mut a).take(12).collect();
        let second: Vec<Duration> = backoff.delays(&mut b).take(12).collect();
        assert_eq!(first, second);
        let mut c = SmallRng::seed_from_u64(43);
        let other: Vec<Duration> = backoff.delays(&mut c).take(12).collect();
        assert_ne!(first, other);
    }

    #[test]
    fn delays_iterator_follows_the_ceilings() {
        let backoff = Backoff::new(secs(1), secs(8)).unwrap();
        let mut rng = SmallRng::seed_from_u64(9);
        for (attempt, delay) in (0u32..).zip(backoff.delays(&mut rng).take(10)) {
            assert!(delay <= backoff.ceiling(attempt));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_valid_backoff_stays_within_its_ceilings(
            base_ms in 1u64..10_000,
            extra_ms in 0u64..1_000_000,
            attempt in proptest::prelude::any::<u32>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let backoff = Backoff::new(base, base + Duration::from_millis(extra_ms)).unwrap();
            let ceiling = backoff.ceiling(attempt);
            proptest::prop_assert!(ceiling >= base && ceiling <= backoff.max());
            let mut rng = SmallRng::seed_from_u64(seed);
            proptest::prop_assert!(backoff.delay(attempt, &mut rng) <= ceiling);
        }
    }

    #[test]
    fn works_with_a_dyn_rng() {
        let backoff = Backoff::new(secs(1), secs(8)).unwrap();
        let mut rng = SmallRng::seed_from_u64(5);
        let dyn_rng: &mut dyn rand::RngCore = &mut rng;
        assert!(backoff.delay(2, dyn_rng) <= secs(4));
    }
}
