//! Reading hark's `/metrics`. The text format is parsed by `prometheus-parse`; what
//! is Hark's own is here: a sample looked up by name and labels (summed over the
//! series that match), a counter's increase between two scrapes, and quantiles of a
//! histogram over the window between two scrapes.
//!
//! `prometheus-parse` splits label sets on `,` and `=` without unescaping, which is
//! exact for hark's label values: every one is a fixed identifier or number
//! (docs/metrics.md), never free text.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_parse::Value;

/// One scrape: every sample of a `/metrics` answer.
#[derive(Clone, Debug)]
pub struct Scrape {
    samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    /// Parses the text exposition format. Lines that do not parse are skipped: a
    /// scrape is best effort, never a reason to stop a run (a test that needs a
    /// series finds it missing).
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        // Reading from memory cannot fail; an error would leave an empty scrape.
        let samples = prometheus_parse::Scrape::parse(lines).map(|s| s.samples).unwrap_or_default();
        Scrape { samples }
    }

    /// The value of `name` whose labels include every pair in `labels`, summed over
    /// all matching series (so `value("x", &[])` totals a labelled counter).
    /// `None` when no series matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for sample in self.matching(name, labels) {
            if let Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) = sample.value {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// [`Scrape::value`], with an absent series read as 0 (every series hark knows
    /// of is exported from start-up, so absent means "never happened" there).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// How much `name{labels}` grew since `earlier`. Metrics are per process and
    /// tests in one file share the process: a test reads its own increase, never
    /// an absolute count.
    pub fn increase(&self, earlier: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - earlier.get(name, labels)
    }

    /// Every metric name in the scrape (a histogram by its base name).
    pub fn names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.metric.clone()).collect()
    }

    /// The cumulative buckets of histogram `name` (`le` bounds ascending, `+Inf`
    /// last), summed over label sets. Empty when the histogram is absent (or its
    /// `# TYPE` line is, which the exporter always writes).
    pub fn histogram(&self, name: &str) -> Buckets {
        let mut by_le: BTreeMap<OrderedF64, f64> = BTreeMap::new();
        for sample in self.matching(name, &[]) {
            if let Value::Histogram(buckets) = &sample.value {
                for bucket in buckets {
                    *by_le.entry(OrderedF64(bucket.less_than)).or_default() += bucket.count;
                }
            }
        }
        Buckets(by_le.into_iter().map(|(le, count)| (le.0, count)).collect())
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }
}

/// `f64` with a total order, for bucket bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrderedF64(f64);

impl Eq for OrderedF64 {}

impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Cumulative histogram buckets `(le, count)`, ascending by `le`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// Observations in the histogram.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The observations made between `earlier` and `self` (bucket-wise difference).
    /// A counter reset (a count going down) is treated as a restart from zero.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let delta = self
            .0
            .iter()
            .map(|&(le, count)| {
                let before = earlier
                    .0
                    .iter()
                    .find(|(l, _)| l.total_cmp(&le).is_eq())
                    .map_or(0.0, |(_, c)| *c);
                (le, if count >= before { count - before } else { count })
            })
            .collect();
        Buckets(delta)
    }

    /// Adds `other`'s counts to these (bounds must match; unmatched ones are kept).
    pub fn add(&mut self, other: &Buckets) {
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        for (le, count) in &other.0 {
            match self.0.iter_mut().find(|(l, _)| l.total_cmp(le).is_eq()) {
                Some((_, mine)) => *mine += count,
                None => self.0.push((*le, *count)),
            }
        }
        self.0.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The `q` quantile as Prometheus' `histogram_quantile` computes it: find the
    /// bucket holding rank `q × count` and interpolate linearly inside it (from 0
    /// for the first bucket). A rank in the `+Inf` bucket yields the largest finite
    /// bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 || self.0.is_empty() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for &(le, count) in &self.0 {
            if count >= rank && count > lower_count {
                if le.is_infinite() {
                    return Some(lower_bound);
                }
                let fraction = (rank - lower_count) / (count - lower_count);
                return Some(lower_bound + (le - lower_bound) * fraction);
            }
            if le.is_finite() {
                lower_bound = le;
            }
            lower_count = count;
        }
        Some(lower_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP pusher_connect_attempts_total Real pusher dials by result.
# TYPE pusher_connect_attempts_total counter
pusher_connect_attempts_total{result="ok"} 300
pusher_connect_attempts_total{result="timeout"} 25
pusher_circuit_breaker_state 1
hark_sessions_active 300 1700000000000
multi{a="1",b="2"} 7
multi{a="1",b="3"} 8
# TYPE hark_runtime_lag_seconds histogram
hark_runtime_lag_seconds_bucket{le="0.001"} 90
hark_runtime_lag_seconds_bucket{le="0.0025"} 98
hark_runtime_lag_seconds_bucket{le="0.005"} 100
hark_runtime_lag_seconds_bucket{le="+Inf"} 100
hark_runtime_lag_seconds_sum 0.05
hark_runtime_lag_seconds_count 100
garbage line without value
"#;

    #[test]
    fn looks_up_by_name_and_labels_and_skips_junk() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("pusher_connect_attempts_total", &[("result", "ok")]), Some(300.0));
        assert_eq!(s.value("pusher_connect_attempts_total", &[]), Some(325.0));
        assert_eq!(s.value("pusher_circuit_breaker_state", &[]), Some(1.0));
        assert_eq!(s.value("hark_sessions_active", &[]), Some(300.0));
        assert_eq!(s.value("multi", &[("a", "1"), ("b", "3")]), Some(8.0));
        assert_eq!(s.value("multi", &[("a", "1")]), Some(15.0));
        assert_eq!(s.value("missing", &[]), None);
        assert_eq!(s.get("missing", &[]), 0.0);
        assert_eq!(s.value("pusher_connect_attempts_total", &[("result", "nope")]), None);
        assert_eq!(s.value("hark_runtime_lag_seconds_count", &[]), Some(100.0));
        let names = s.names();
        assert!(names.contains("hark_runtime_lag_seconds"), "{names:?}");
        assert!(names.contains("pusher_circuit_breaker_state"), "{names:?}");
    }

    #[test]
    fn increases_are_per_series_deltas() {
        let before = Scrape::parse("x_total{r=\"a\"} 2\nx_total{r=\"b\"} 5\n");
        let after = Scrape::parse("x_total{r=\"a\"} 3\nx_total{r=\"b\"} 9\ny 1\n");
        assert_eq!(after.increase(&before, "x_total", &[("r", "a")]), 1.0);
        assert_eq!(after.increase(&before, "x_total", &[]), 5.0);
        assert_eq!(after.increase(&before, "y", &[]), 1.0, "a new series starts from 0");
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let h = Scrape::parse(TEXT).histogram("hark_runtime_lag_seconds");
        assert_eq!(h.count(), 100.0);
        // Rank 50 of 90 in the first bucket: 50/90 of the way from 0 to 1 ms.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-12, "{p50}");
        // Rank 99 lies in (2.5 ms, 5 ms], halfway.
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 0.00375).abs() < 1e-12, "{p99}");
        assert_eq!(Buckets::default().quantile(0.99), None);
    }

    #[test]
    fn windows_are_bucket_deltas() {
        let before = Buckets(vec![(0.01, 10.0), (0.02, 10.0), (f64::INFINITY, 10.0)]);
        let after = Buckets(vec![(0.01, 10.0), (0.02, 15.0), (f64::INFINITY, 20.0)]);
        let window = after.since(&before);
        assert_eq!(window.0, vec![(0.01, 0.0), (0.02, 5.0), (f64::INFINITY, 10.0)]);
        // Half the window's samples are above every finite bound: p99 reports the
        // largest finite bound, which is what "at least 20 ms" needs.
        assert_eq!(window.quantile(0.99), Some(0.02));
        assert_eq!(window.quantile(0.25), Some(0.015));
        let mut sum = window.clone();
        sum.add(&window);
        assert_eq!(sum.count(), 20.0);
        // A restarted process (counts going down) starts from zero again.
        assert_eq!(before.since(&after).count(), 10.0);
    }
}
