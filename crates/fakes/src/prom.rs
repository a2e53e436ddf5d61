//! Just enough of the Prometheus text format to read hark's `/metrics`: samples
//! with labels, and quantiles of a histogram over the window between two scrapes.

use std::collections::BTreeMap;

/// A sample's labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One scrape: every sample, keyed by metric name and sorted label pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// Parses the text exposition format. Comments, blank lines and lines that do
    /// not parse are skipped: a scrape is best effort, never a reason to stop a run.
    pub fn parse(text: &str) -> Scrape {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((name, labels, value)) = parse_line(line) {
                samples.entry(name).or_default().push((labels, value));
            }
        }
        Scrape { samples }
    }

    /// The value of `name` whose labels include every pair in `labels`, summed over
    /// all matching series (so `value("x", &[])` totals a labelled counter).
    /// `None` when no series matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = self.samples.get(name)?;
        let mut found = None;
        for (have, value) in series {
            let matches =
                labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v));
            if matches {
                *found.get_or_insert(0.0) += value;
            }
        }
        found
    }

    /// The cumulative buckets of histogram `name` (`le` bounds ascending, `+Inf`
    /// last), summed over label sets. Empty when the histogram is absent.
    pub fn histogram(&self, name: &str) -> Buckets {
        let mut by_le: BTreeMap<OrderedF64, f64> = BTreeMap::new();
        if let Some(series) = self.samples.get(&format!("{name}_bucket")) {
            for (labels, value) in series {
                let Some((_, le)) = labels.iter().find(|(k, _)| k == "le") else { continue };
                let Some(bound) = parse_value(le) else { continue };
                *by_le.entry(OrderedF64(bound)).or_default() += value;
            }
        }
        Buckets(by_le.into_iter().map(|(le, count)| (le.0, count)).collect())
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

fn parse_line(line: &str) -> Option<(String, Labels, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        let end = closing_brace(body)?;
        (parse_labels(&body[..end])?, &body[end + 1..])
    } else {
        (Vec::new(), rest)
    };
    // `value [timestamp]`
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some((name.to_owned(), labels, value))
}

/// Index of the `}` closing a label set, skipping quoted values.
fn closing_brace(body: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_labels(body: &str) -> Option<Labels> {
    let mut labels = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        labels.push((key, value));
        rest = after[end? + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    labels.sort();
    Some(labels)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
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
weird{reason="a \"quoted\" } brace",x="y"} 7
hark_runtime_lag_seconds_bucket{le="0.001"} 90
hark_runtime_lag_seconds_bucket{le="0.0025"} 98
hark_runtime_lag_seconds_bucket{le="0.005"} 100
hark_runtime_lag_seconds_bucket{le="+Inf"} 100
hark_runtime_lag_seconds_sum 0.05
hark_runtime_lag_seconds_count 100
garbage line without value
"#;

    #[test]
    fn parses_samples_labels_and_skips_junk() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.value("pusher_connect_attempts_total", &[("result", "ok")]), Some(300.0));
        assert_eq!(s.value("pusher_connect_attempts_total", &[]), Some(325.0));
        assert_eq!(s.value("pusher_circuit_breaker_state", &[]), Some(1.0));
        assert_eq!(s.value("hark_sessions_active", &[]), Some(300.0));
        assert_eq!(s.value("weird", &[("reason", "a \"quoted\" } brace")]), Some(7.0));
        assert_eq!(s.value("weird", &[("x", "y")]), Some(7.0));
        assert_eq!(s.value("missing", &[]), None);
        assert_eq!(s.value("pusher_connect_attempts_total", &[("result", "nope")]), None);
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
