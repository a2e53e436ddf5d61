//! Latency recording with HDR histograms: one [`Latencies`] per window, merged
//! freely, summarised as milliseconds for reports.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded exactly (an hour); longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds (3 significant figures).
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static bounds are valid"))
    }
}

impl Latencies {
    /// Records one latency (clamped to 1 µs … 1 h).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.record_micros(micros);
    }

    /// Records one latency in microseconds (clamped to 1 µs … 1 h).
    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Forgets every observation.
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// Count, mean, p50, p90, p99, p99.9 and max in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        if self.count() == 0 {
            return LatencySummary::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        LatencySummary {
            count: self.count(),
            mean_ms: Some(self.0.mean() / 1000.0),
            p50_ms: Some(ms(self.0.value_at_quantile(0.5))),
            p90_ms: Some(ms(self.0.value_at_quantile(0.9))),
            p99_ms: Some(ms(self.0.value_at_quantile(0.99))),
            p999_ms: Some(ms(self.0.value_at_quantile(0.999))),
            max_ms: Some(ms(self.0.max())),
        }
    }
}

/// A latency distribution in milliseconds; the fields are `None` without samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Observations.
    pub count: u64,
    /// Mean.
    pub mean_ms: Option<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// Largest.
    pub max_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merging() {
        let mut a = Latencies::default();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        let s = a.summary();
        assert_eq!(s.count, 100);
        let p99 = s.p99_ms.unwrap();
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        let mut b = Latencies::default();
        b.record(Duration::from_secs(7200));
        b.record_micros(0);
        a.merge(&b);
        assert_eq!(a.count(), 102);
        assert!(a.summary().max_ms.unwrap() >= 3_599_000.0);
        a.clear();
        assert_eq!(a.summary(), LatencySummary::default());
        assert_eq!(a.quantile_ms(0.99), None);
    }
}
