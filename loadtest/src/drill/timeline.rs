//! The drill's timeline: one [`Row`] per second built from hark's `/metrics`,
//! fake-pusher's counters, `/proc` and the swarm's progress, plus the windowed
//! quantiles computed from histogram bucket deltas between scrapes.

use serde::Serialize;

use crate::latency::Latencies;
use hark_fakes::prom::{Buckets, Scrape};

/// hark's runtime-lag histogram.
pub const RUNTIME_LAG: &str = "hark_runtime_lag_seconds";
/// hark's STT-result → client-write histogram.
pub const TRANSCRIPT_LATENCY: &str = "hark_transcript_latency_seconds";

/// One second of the drill.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// Seconds since the swarm started.
    pub t: f64,
    /// Unix ms of the sample.
    pub unix_ms: u64,
    /// `hark_sessions_active`.
    pub sessions_active: Option<f64>,
    /// `pusher_sessions_connected`.
    pub pusher_connected: Option<f64>,
    /// `pusher_sessions_degraded`.
    pub pusher_degraded: Option<f64>,
    /// `pusher_circuit_breaker_state` (0 closed, 1 open, 2 half-open).
    pub breaker_state: Option<f64>,
    /// TCP connections fake-pusher accepted per second (dials reaching pusher).
    pub pusher_accepts_per_s: Option<f64>,
    /// `pusher_connect_attempts_total` per second (hark's own count of dials).
    pub hark_dials_per_s: Option<f64>,
    /// Client-side word latency p99 over this second, ms (live value from the
    /// swarm; replaced after the run by the exact value from its latency log).
    pub latency_p99_ms: Option<f64>,
    /// `hark_transcript_latency_seconds` p99 over this second, ms.
    pub hark_latency_p99_ms: Option<f64>,
    /// `hark_runtime_lag_seconds` p99 over this second, ms.
    pub lag_p99_ms: Option<f64>,
    /// `hark_outbox_records`.
    pub outbox_records: Option<f64>,
    /// `hark_conversations_total{via="fallback"}`.
    pub conversations_fallback: Option<f64>,
    /// Swarm clients connected.
    pub clients_connected: Option<u64>,
    /// hark's resident set, MiB.
    pub rss_mib: Option<f64>,
    /// hark's CPU seconds so far.
    pub cpu_s: Option<f64>,
    /// Runtime-lag observations in this second (bucket deltas).
    #[serde(skip)]
    pub lag: Buckets,
}

/// Turns successive scrapes into rows.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Option<Prev>,
}

/// The last good value of each source, with when it was taken.
#[derive(Debug, Default)]
struct Prev {
    scrape: Option<(u64, Scrape)>,
    accepts: Option<(u64, u64)>,
}

/// One observation of everything, taken at `unix_ms`.
#[derive(Debug, Default)]
pub struct Observation {
    /// When.
    pub unix_ms: u64,
    /// Seconds since the swarm started.
    pub t: f64,
    /// hark's `/metrics`, if it answered.
    pub scrape: Option<Scrape>,
    /// fake-pusher's `tcp_accepts`, if it answered.
    pub accepts: Option<u64>,
    /// Swarm clients connected.
    pub clients_connected: Option<u64>,
    /// Live client p99 over the last second.
    pub client_p99_ms: Option<f64>,
    /// hark's current RSS, MiB.
    pub rss_mib: Option<f64>,
    /// hark's CPU seconds.
    pub cpu_s: Option<f64>,
}

impl Sampler {
    /// The row for `obs`, with rates and windows against the previous one.
    pub fn row(&mut self, obs: Observation) -> Row {
        let mut row = Row {
            t: obs.t,
            unix_ms: obs.unix_ms,
            clients_connected: obs.clients_connected,
            latency_p99_ms: obs.client_p99_ms,
            rss_mib: obs.rss_mib,
            cpu_s: obs.cpu_s,
            ..Row::default()
        };
        if let Some(s) = &obs.scrape {
            row.sessions_active = s.value("hark_sessions_active", &[]);
            row.pusher_connected = s.value("pusher_sessions_connected", &[]);
            row.pusher_degraded = s.value("pusher_sessions_degraded", &[]);
            row.breaker_state = s.value("pusher_circuit_breaker_state", &[]);
            row.outbox_records = s.value("hark_outbox_records", &[]);
            row.conversations_fallback =
                s.value("hark_conversations_total", &[("via", "fallback")]);
        }
        let secs_since = |ms: u64| (obs.unix_ms.saturating_sub(ms) as f64 / 1000.0).max(0.001);
        if let Some(prev) = &self.prev {
            if let (Some(now), Some((at, before))) = (obs.accepts, prev.accepts) {
                row.pusher_accepts_per_s = Some(now.saturating_sub(before) as f64 / secs_since(at));
            }
            if let (Some(now), Some((at, before))) = (&obs.scrape, &prev.scrape) {
                let dials = |s: &Scrape| s.value("pusher_connect_attempts_total", &[]);
                if let (Some(a), Some(b)) = (dials(now), dials(before)) {
                    row.hark_dials_per_s = Some((a - b).max(0.0) / secs_since(*at));
                }
                row.lag = now.histogram(RUNTIME_LAG).since(&before.histogram(RUNTIME_LAG));
                row.lag_p99_ms = row.lag.quantile(0.99).map(|s| s * 1000.0);
                let latency =
                    now.histogram(TRANSCRIPT_LATENCY).since(&before.histogram(TRANSCRIPT_LATENCY));
                row.hark_latency_p99_ms = latency.quantile(0.99).map(|s| s * 1000.0);
            }
        }
        // A failed scrape keeps the last good one (and its instant) as the base of
        // the next delta.
        let prev = self.prev.take().unwrap_or_default();
        self.prev = Some(Prev {
            scrape: obs.scrape.map(|s| (obs.unix_ms, s)).or(prev.scrape),
            accepts: obs.accepts.map(|a| (obs.unix_ms, a)).or(prev.accepts),
        });
        row
    }
}

/// The runtime-lag p99 (ms) of each run of `window` consecutive rows, as
/// `(t of the window's first row, p99)`.
pub fn lag_windows(rows: &[Row], window: usize) -> Vec<(f64, f64)> {
    rows.chunks(window.max(1))
        .filter_map(|chunk| {
            let mut sum = Buckets::default();
            for row in chunk {
                sum.add(&row.lag);
            }
            sum.quantile(0.99).map(|p| (chunk[0].t, p * 1000.0))
        })
        .collect()
}

/// The runtime-lag p99 (ms) over every row.
pub fn lag_overall(rows: &[Row]) -> Option<f64> {
    let mut sum = Buckets::default();
    for row in rows {
        sum.add(&row.lag);
    }
    sum.quantile(0.99).map(|p| p * 1000.0)
}

/// Client latency samples `(sent unix ms, µs)` whose audio left in `[from, to)`.
pub fn latencies_between(samples: &[(u64, u64)], from: u64, to: u64) -> Latencies {
    let mut h = Latencies::default();
    for &(at, micros) in samples {
        if at >= from && at < to {
            h.record_micros(micros);
        }
    }
    h
}

/// Replaces each row's client p99 with the exact value over the second before it,
/// from the latency log.
pub fn fill_client_p99(rows: &mut [Row], samples: &[(u64, u64)]) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let mut prev_ms = None;
    for row in rows.iter_mut() {
        let from = prev_ms.unwrap_or(row.unix_ms.saturating_sub(1000));
        let start = sorted.partition_point(|s| s.0 < from);
        let end = sorted.partition_point(|s| s.0 < row.unix_ms);
        let mut h = Latencies::default();
        for &(_, micros) in &sorted[start..end] {
            h.record_micros(micros);
        }
        row.latency_p99_ms = h.quantile_ms(0.99);
        prev_ms = Some(row.unix_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(accepts_ok: u64, lag_fast: u64, lag_slow: u64) -> Scrape {
        Scrape::parse(&format!(
            "pusher_connect_attempts_total{{result=\"ok\"}} {accepts_ok}\n\
             pusher_sessions_connected 3\n\
             # TYPE hark_runtime_lag_seconds histogram\n\
             hark_runtime_lag_seconds_bucket{{le=\"0.01\"}} {lag_fast}\n\
             hark_runtime_lag_seconds_bucket{{le=\"0.05\"}} {}\n\
             hark_runtime_lag_seconds_bucket{{le=\"+Inf\"}} {}\n",
            lag_fast + lag_slow,
            lag_fast + lag_slow
        ))
    }

    #[test]
    fn rows_take_rates_and_windows_from_deltas() {
        let mut sampler = Sampler::default();
        let first = sampler.row(Observation {
            unix_ms: 10_000,
            scrape: Some(scrape(5, 100, 0)),
            accepts: Some(7),
            ..Observation::default()
        });
        assert_eq!(first.pusher_connected, Some(3.0));
        assert_eq!(first.hark_dials_per_s, None);
        // A failed scrape in between: the next delta spans both seconds.
        let gap = sampler.row(Observation { unix_ms: 11_000, ..Observation::default() });
        assert_eq!(gap.lag_p99_ms, None);
        let row = sampler.row(Observation {
            unix_ms: 12_000,
            scrape: Some(scrape(25, 110, 10)),
            accepts: Some(17),
            ..Observation::default()
        });
        assert_eq!(row.hark_dials_per_s, Some(10.0));
        assert_eq!(row.pusher_accepts_per_s, Some(5.0));
        assert_eq!(row.lag.count(), 20.0);
        // Half the window's ticks were late by 10-50 ms: p99 interpolates to 49.2 ms.
        assert!((row.lag_p99_ms.unwrap() - 49.2).abs() < 1e-6);
        let windows = lag_windows(&[first, gap, row.clone()], 2);
        assert_eq!(windows.len(), 1, "the first window has no samples");
        assert_eq!(lag_overall(&[row]).map(|v| v.round()), Some(49.0));
    }

    #[test]
    fn client_p99_per_second_and_between() {
        let samples = vec![(500, 1000), (1500, 2000), (1600, 4000), (2500, 9000)];
        let mut rows =
            vec![Row { unix_ms: 1000, ..Row::default() }, Row { unix_ms: 2000, ..Row::default() }];
        fill_client_p99(&mut rows, &samples);
        let close = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < 0.01;
        assert!(close(rows[0].latency_p99_ms, 1.0));
        assert!(close(rows[1].latency_p99_ms, 4.0));
        assert_eq!(latencies_between(&samples, 1000, 3000).count(), 3);
    }
}
