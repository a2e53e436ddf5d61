//! The drill's targets, each judged pass/fail from the evidence a run collected.
//!
//! Every function here is pure, so each target can be tested with hand-made
//! evidence on both sides of its threshold.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::hark_metrics::{DialWindow, Transition};
use super::timeline::{lag_windows, latencies_between, Row};
use crate::latency::LatencySummary;

/// Verdict of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Met.
    Pass,
    /// Missed.
    Fail,
    /// Measured and reported; no target yet.
    Reported,
    /// Does not apply to this scenario.
    NotApplicable,
}

impl Verdict {
    /// The Markdown cell.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "✅ pass",
            Verdict::Fail => "❌ FAIL",
            Verdict::Reported => "ℹ️ reported",
            Verdict::NotApplicable => "— n/a",
        }
    }
}

/// One judged target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// Stable id.
    pub id: &'static str,
    /// What is judged.
    pub name: String,
    /// The threshold, in words and numbers.
    pub threshold: String,
    /// What was measured.
    pub measured: String,
    /// The measured number the threshold applies to, if one.
    pub value: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Everything the targets are judged on. Instants are unix milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Whether the fault is pusher's (breaker and recovery targets apply).
    pub breaks_pusher: bool,
    /// When the fault began.
    pub fault_ms: u64,
    /// When the last fault action healed it.
    pub heal_ms: u64,
    /// Start of the "before" latency window (the ramp-up is over).
    pub baseline_from_ms: u64,
    /// End of the "during" latency window.
    pub during_to_ms: u64,
    /// End of the streaming run.
    pub end_ms: u64,
    /// hark's `--pusher-ping-timeout`.
    pub ping_timeout: Duration,
    /// hark's `--pusher-connect-timeout`: the longest a dial takes, so a dial
    /// counted at `t` began no earlier than `t` minus this.
    pub connect_timeout: Duration,
    /// hark's `--breaker-cooldown`.
    pub cooldown: Duration,
    /// hark's `--recovery-rate`.
    pub recovery_rate: f64,
    /// Breaker transitions from hark's `/metrics`.
    pub transitions: Vec<Transition>,
    /// hark's dials per scrape interval, in time order.
    pub dials: Vec<DialWindow>,
    /// The timeline.
    pub rows: Vec<Row>,
    /// `(sent unix ms, latency µs)` per matched word.
    pub samples: Vec<(u64, u64)>,
    /// `(unix ms, close code)` per client disconnect.
    pub disconnects: Vec<(u64, String)>,
    /// Conversation ids the clients were told were created.
    pub created: Vec<String>,
    /// Conversation ids fake-pusher processed.
    pub processed: HashSet<String>,
    /// fake-pusher's duplicate 104s.
    pub duplicates: u64,
    /// Talk stretches with transcript whose conversation was never announced
    /// although the session lasted.
    pub never_announced: u64,
    /// hark's outbox records left when judged.
    pub outbox_left: Option<f64>,
    /// hark's peak RSS, MiB.
    pub rss_peak_mib: Option<f64>,
    /// hark's CPU seconds.
    pub cpu_s: Option<f64>,
    /// Seconds hark ran (for the CPU share).
    pub hark_seconds: f64,
    /// `service_status` events the clients received, by status.
    pub service_statuses: BTreeMap<String, u64>,
    /// `processing_status` events the clients received, by status.
    pub processing_statuses: BTreeMap<String, u64>,
    /// Clients whose last `service_status` was not `ready` when they finished.
    pub ended_not_ready: u64,
}

/// Headline figures for the report besides the verdicts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Seconds from the fault to the breaker's first open.
    pub breaker_open_after_s: Option<f64>,
    /// Dials hark made while the breaker was open or half-open.
    pub dials_while_open: u64,
    /// Seconds the breaker was open or half-open.
    pub open_seconds: f64,
    /// Dials hark made between the fault and the heal.
    pub dials_during_fault: u64,
    /// Most dials in any cooldown-long window while open.
    pub max_dials_per_cooldown: u64,
    /// Client latency before the fault.
    pub latency_before: LatencySummary,
    /// During the fault.
    pub latency_during: LatencySummary,
    /// After the heal.
    pub latency_after: LatencySummary,
    /// Seconds from the heal to the breaker's close (unjudged: bounded by the cooldown).
    pub heal_to_close_s: Option<f64>,
    /// Seconds from the breaker's close to every session back on pusher.
    pub recovery_s: Option<f64>,
    /// Peak sessions returning per second during recovery.
    pub peak_reconnect_rate: Option<f64>,
    /// Conversations the clients saw created.
    pub conversations_created: u64,
    /// Of those, never processed by pusher.
    pub conversations_lost: u64,
    /// fake-pusher duplicates.
    pub duplicates: u64,
    /// Client disconnects, whole run.
    pub disconnects: u64,
    /// Runtime lag p99 over the run, ms.
    pub lag_p99_ms: Option<f64>,
    /// Worst 10-second runtime-lag p99, ms, and when.
    pub lag_worst_window: Option<(f64, f64)>,
}

/// Seconds of timeline per runtime-lag window (100 samples of the 100 ms ticker).
pub const LAG_WINDOW_ROWS: usize = 10;

/// Judges every target; returns them and the headline figures.
pub fn judge(e: &Evidence) -> (Vec<Target>, Figures) {
    let mut f = Figures::default();
    let targets = vec![
        breaker_trip(e, &mut f),
        dials_while_open(e, &mut f),
        disconnects(e, &mut f),
        latency(e, &mut f),
        conversations(e, &mut f),
        recovery_time(e, &mut f),
        recovery_rate(e, &mut f),
        runtime_lag(e, &mut f),
        app_listening(e),
        resources(e),
    ];
    (targets, f)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

fn breaker_trip(e: &Evidence, f: &mut Figures) -> Target {
    let first_open =
        e.transitions.iter().find(|t| t.to == "open" && t.unix_ms >= e.fault_ms).map(|t| t.unix_ms);
    if !e.breaks_pusher {
        let opened = e.transitions.iter().any(|t| t.to == "open");
        return Target {
            id: "breaker_trip",
            name: "Breaker stays closed (pusher is healthy)".into(),
            threshold: "no transition to open".into(),
            measured: if opened { "opened".into() } else { "stayed closed".into() },
            value: None,
            verdict: verdict(!opened),
        };
    }
    let limit = e.ping_timeout + Duration::from_secs(5);
    let delay = first_open.map(|at| secs(at - e.fault_ms));
    f.breaker_open_after_s = delay;
    Target {
        id: "breaker_trip",
        name: "Breaker opens after the fault".into(),
        threshold: format!("≤ ping-timeout + 5 s = {:.0} s after the fault", limit.as_secs_f64()),
        measured: delay.map_or("never opened".into(), |d| format!("{d:.1} s")),
        value: delay,
        verdict: verdict(delay.is_some_and(|d| d <= limit.as_secs_f64())),
    }
}

/// `[from, to)` spans in which the breaker was not closed, from the first open
/// at or after the fault; an interval still open at the end runs to `end`.
pub fn open_intervals(transitions: &[Transition], from: u64, end: u64) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let mut open_since = None;
    for t in transitions {
        match (t.to.as_str(), open_since) {
            ("open" | "half_open", None) if t.unix_ms >= from => open_since = Some(t.unix_ms),
            ("closed", Some(since)) => {
                spans.push((since, t.unix_ms));
                open_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = open_since {
        spans.push((since, end.max(since)));
    }
    spans
}

/// Dials in the windows lying wholly inside `[from, to]`: a window that straddles
/// a boundary cannot say on which side its dials fell, so it is left out.
fn inside(windows: &[DialWindow], from: u64, to: u64) -> impl Iterator<Item = &DialWindow> {
    windows.iter().filter(move |w| w.from_ms >= from && w.to_ms <= to)
}

/// Most dials in any `window_ms`-long stretch, counting each window at its end
/// (`windows` in time order).
pub fn max_in_window(windows: &[DialWindow], window_ms: u64) -> u64 {
    let mut best = 0;
    let mut start = 0;
    let mut sum = 0;
    for (end, w) in windows.iter().enumerate() {
        sum += w.dials;
        while start <= end && windows[start].to_ms + window_ms <= w.to_ms {
            sum -= windows[start].dials;
            start += 1;
        }
        best = best.max(sum);
    }
    best
}

fn dials_while_open(e: &Evidence, f: &mut Figures) -> Target {
    let window = e.cooldown.max(Duration::from_secs(1));
    let name = "Dials while the breaker is open".to_owned();
    let threshold = format!(
        "≤ 2 per breaker-cooldown ({:.0} s) window{}",
        window.as_secs_f64(),
        if window == Duration::from_secs(60) { " = 2/min" } else { "" }
    );
    f.dials_during_fault = inside(&e.dials, e.fault_ms, e.heal_ms).map(|w| w.dials).sum();
    if !e.breaks_pusher {
        return Target {
            id: "dials_while_open",
            name,
            threshold,
            measured: format!("{} dials during the fault (pusher healthy)", f.dials_during_fault),
            value: None,
            verdict: Verdict::NotApplicable,
        };
    }
    let mut spans = open_intervals(&e.transitions, e.fault_ms, e.end_ms);
    let never_opened = spans.is_empty();
    if never_opened {
        // Judge the time it should have been open: from the trip deadline to the heal.
        let deadline = e.fault_ms + (e.ping_timeout + Duration::from_secs(5)).as_millis() as u64;
        spans.push((deadline, e.heal_ms.max(deadline)));
    }
    // hark counts a dial when it ends: a window counts as "while open" once even
    // its earliest dial must have begun after the span started.
    let began_after = |start: u64| start + e.connect_timeout.as_millis() as u64;
    let open: Vec<DialWindow> =
        spans.iter().flat_map(|&(a, b)| inside(&e.dials, began_after(a), b)).copied().collect();
    let dials: u64 = open.iter().map(|w| w.dials).sum();
    let open_ms: u64 = spans.iter().map(|(a, b)| b - a).sum();
    let max = max_in_window(&open, window.as_millis() as u64);
    f.dials_while_open = dials;
    f.open_seconds = secs(open_ms);
    f.max_dials_per_cooldown = max;
    let per_minute = if open_ms > 0 { dials as f64 * 60_000.0 / open_ms as f64 } else { 0.0 };
    let measured = format!(
        "max {max} in any {:.0} s; {dials} dials in {:.0} s {} ({per_minute:.1}/min; \
         pusher_connect_attempts_total per 1 s scrape)",
        window.as_secs_f64(),
        secs(open_ms),
        if never_opened { "after the trip deadline (never opened)" } else { "open" },
    );
    Target {
        id: "dials_while_open",
        name,
        threshold,
        measured,
        value: Some(max as f64),
        verdict: verdict(max <= 2),
    }
}

fn disconnects(e: &Evidence, f: &mut Figures) -> Target {
    f.disconnects = e.disconnects.len() as u64;
    let during: Vec<&(u64, String)> =
        e.disconnects.iter().filter(|(t, _)| *t >= e.fault_ms).collect();
    let mut codes: Vec<String> = during.iter().map(|(_, c)| c.clone()).collect();
    codes.sort();
    codes.dedup();
    let measured = if during.is_empty() {
        format!("0 (whole run: {})", e.disconnects.len())
    } else {
        format!("{} (codes {})", during.len(), codes.join(", "))
    };
    Target {
        id: "no_disconnects",
        name: "Client disconnects from the fault on".into(),
        threshold: "0 (any close by hark, or dead socket)".into(),
        measured,
        value: Some(during.len() as f64),
        verdict: verdict(during.is_empty()),
    }
}

fn latency(e: &Evidence, f: &mut Figures) -> Target {
    let before = latencies_between(&e.samples, e.baseline_from_ms, e.fault_ms);
    let during = latencies_between(&e.samples, e.fault_ms, e.during_to_ms);
    let after = latencies_between(&e.samples, e.during_to_ms, e.end_ms);
    f.latency_before = before.summary();
    f.latency_during = during.summary();
    f.latency_after = after.summary();
    let name = "Transcript latency p99 during the fault (client view)".to_owned();
    let (Some(b), Some(d)) = (before.quantile_ms(0.99), during.quantile_ms(0.99)) else {
        return Target {
            id: "latency",
            name,
            threshold: "≤ 1.5 × p99 before".into(),
            measured: format!(
                "too few samples (before {}, during {})",
                before.count(),
                during.count()
            ),
            value: None,
            verdict: Verdict::Fail,
        };
    };
    Target {
        id: "latency",
        name,
        threshold: format!("≤ 1.5 × p99 before = {:.0} ms", 1.5 * b),
        measured: format!(
            "{d:.0} ms (before {b:.0} ms; ratio {:.2}; {} / {} words)",
            d / b,
            before.count(),
            during.count()
        ),
        value: Some(d / b),
        verdict: verdict(d <= 1.5 * b),
    }
}

fn conversations(e: &Evidence, f: &mut Figures) -> Target {
    let lost: Vec<&String> = e.created.iter().filter(|id| !e.processed.contains(*id)).collect();
    f.conversations_created = e.created.len() as u64;
    f.conversations_lost = lost.len() as u64;
    f.duplicates = e.duplicates;
    let drained = match e.outbox_left {
        Some(n) if n > 0.0 => format!("; outbox still held {n:.0}"),
        _ => String::new(),
    };
    let ok = lost.is_empty() && e.duplicates == 0 && e.never_announced == 0;
    Target {
        id: "conversations",
        name: "Conversations lost / processed twice".into(),
        threshold: "0 lost (announced but never processed, or never announced) and 0 duplicates"
            .into(),
        measured: format!(
            "{} lost of {} created, {} never announced, {} duplicates{drained}",
            lost.len(),
            e.created.len(),
            e.never_announced,
            e.duplicates
        ),
        value: Some((lost.len() as u64 + e.never_announced + e.duplicates) as f64),
        verdict: verdict(ok),
    }
}

/// When recovery starts: the breaker's first close at or after the heal, or the
/// heal itself if the breaker was already closed then. `None`: never closed.
fn recovery_start(e: &Evidence) -> Option<u64> {
    if let Some(t) = e.transitions.iter().find(|t| t.to == "closed" && t.unix_ms >= e.heal_ms) {
        return Some(t.unix_ms);
    }
    let state_at_heal = e.transitions.iter().rfind(|t| t.unix_ms < e.heal_ms);
    match state_at_heal {
        None => Some(e.heal_ms),
        Some(t) if t.to == "closed" => Some(e.heal_ms),
        Some(_) => None,
    }
}

/// The first row at or after `start` with every session on pusher.
fn recovered_at(rows: &[Row], start: u64) -> Option<&Row> {
    rows.iter().filter(|r| r.unix_ms >= start).find(|r| {
        matches!((r.pusher_connected, r.sessions_active), (Some(c), Some(a)) if a > 0.0 && c >= a)
    })
}

fn recovery_time(e: &Evidence, f: &mut Figures) -> Target {
    let name = "After healing, every session back on pusher".to_owned();
    let threshold = "≤ 15 s from the breaker's first close after the heal".to_owned();
    if !e.breaks_pusher {
        return Target {
            id: "recovery_time",
            name,
            threshold,
            measured: "pusher never broke".into(),
            value: None,
            verdict: Verdict::NotApplicable,
        };
    }
    let Some(start) = recovery_start(e) else {
        return Target {
            id: "recovery_time",
            name,
            threshold,
            measured: "the breaker never closed after the heal".into(),
            value: None,
            verdict: Verdict::Fail,
        };
    };
    f.heal_to_close_s = Some(secs(start - e.heal_ms));
    let done = recovered_at(&e.rows, start).map(|r| secs(r.unix_ms.saturating_sub(start)));
    f.recovery_s = done;
    Target {
        id: "recovery_time",
        name,
        threshold,
        measured: match done {
            Some(s) => format!(
                "{s:.1} s (heal → breaker close {:.1} s, unjudged)",
                secs(start - e.heal_ms)
            ),
            None => "not every session came back".into(),
        },
        value: done,
        verdict: verdict(done.is_some_and(|s| s <= 15.0)),
    }
}

/// The drill scrapes hark's `/metrics` on a ticker of this period (seconds).
const SCRAPE_TICK_S: f64 = 1.0;

fn recovery_rate(e: &Evidence, f: &mut Figures) -> Target {
    let limit = 1.1 * e.recovery_rate;
    let name = "Peak reconnect rate during recovery".to_owned();
    let threshold = format!("≤ 1.1 × --recovery-rate = {limit:.0}/s");
    let start = if e.breaks_pusher { recovery_start(e) } else { None };
    let Some(start) = start else {
        return Target {
            id: "recovery_rate",
            name,
            threshold,
            measured: if e.breaks_pusher {
                "no recovery".into()
            } else {
                "pusher never broke".into()
            },
            value: None,
            verdict: if e.breaks_pusher { Verdict::Fail } else { Verdict::NotApplicable },
        };
    };
    let end = recovered_at(&e.rows, start).map_or(u64::MAX, |r| r.unix_ms);
    let mut peak: f64 = 0.0;
    for pair in e.rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.unix_ms <= start || a.unix_ms > end {
            continue;
        }
        if let (Some(ca), Some(cb)) = (a.pusher_connected, b.pusher_connected) {
            // Scrapes come from a 1 s ticker; the gap between their client-side
            // timestamps is 1 s ± the scrape's own latency. A gap shorter than the
            // tick is that jitter, not a shorter sampling interval: 11 links in a
            // gap measured as 0.998 s are 11 per tick, not 11.02/s. A longer gap
            // (a late scrape) does cover more time and divides the count.
            let dt = secs(b.unix_ms - a.unix_ms).max(SCRAPE_TICK_S);
            peak = peak.max((cb - ca) / dt);
        }
    }
    f.peak_reconnect_rate = Some(peak);
    Target {
        id: "recovery_rate",
        name,
        threshold,
        measured: format!("{peak:.1} sessions/s (pusher_sessions_connected, 1 s scrapes)"),
        value: Some(peak),
        verdict: verdict(peak <= limit),
    }
}

fn runtime_lag(e: &Evidence, f: &mut Figures) -> Target {
    let windows = lag_windows(&e.rows, LAG_WINDOW_ROWS);
    let worst = windows.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    f.lag_worst_window = worst;
    f.lag_p99_ms = super::timeline::lag_overall(&e.rows);
    let name = "hark_runtime_lag_seconds p99 throughout".to_owned();
    let threshold = format!("≤ 20 ms in every {LAG_WINDOW_ROWS} s window");
    let Some((at, worst)) = worst else {
        return Target {
            id: "runtime_lag",
            name,
            threshold,
            measured: "no samples".into(),
            value: None,
            verdict: Verdict::Fail,
        };
    };
    Target {
        id: "runtime_lag",
        name,
        threshold,
        measured: format!(
            "worst {worst:.1} ms (window at t={at:.0} s); whole run {:.1} ms",
            f.lag_p99_ms.unwrap_or(f64::NAN)
        ),
        value: Some(worst),
        verdict: verdict(worst <= 20.0),
    }
}

/// The omi app shows "listening" only while the last `service_status` is `ready`:
/// pusher's health must go out as `processing_status`, never as a service status.
fn app_listening(e: &Evidence) -> Target {
    const KNOWN: [&str; 3] = ["initiating", "stt_initiating", "ready"];
    let foreign: Vec<&str> =
        e.service_statuses.keys().map(String::as_str).filter(|s| !KNOWN.contains(s)).collect();
    let count = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut measured = format!(
        "{} clients ended without ready; processing_status degraded {} / recovered {}",
        e.ended_not_ready,
        count(&e.processing_statuses, "degraded"),
        count(&e.processing_statuses, "recovered"),
    );
    if !foreign.is_empty() {
        measured
            .push_str(&format!("; service_status values outside omi's: {}", foreign.join(", ")));
    }
    Target {
        id: "app_listening",
        name: "Apps keep showing \"listening\" (last service_status is ready)".into(),
        threshold:
            "0 clients end without ready; service_status only initiating/stt_initiating/ready"
                .into(),
        measured,
        value: Some(e.ended_not_ready as f64),
        verdict: verdict(e.ended_not_ready == 0 && foreign.is_empty()),
    }
}

fn resources(e: &Evidence) -> Target {
    let rss = e.rss_peak_mib.map_or("?".into(), |m| format!("{m:.0} MiB"));
    let cpu = e.cpu_s.map_or("?".into(), |c| {
        let share = if e.hark_seconds > 0.0 { 100.0 * c / e.hark_seconds } else { 0.0 };
        format!("{c:.1} CPU s ({share:.0}% of one core on average)")
    });
    Target {
        id: "resources",
        name: "hark peak RSS and CPU".into(),
        threshold: "no target yet".into(),
        measured: format!("peak RSS {rss}; {cpu}"),
        value: e.rss_peak_mib,
        verdict: Verdict::Reported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_fakes::prom::Buckets;

    const S: u64 = 1000;

    fn tr(at_s: u64, to: &str) -> Transition {
        Transition { unix_ms: at_s * S, to: to.into() }
    }

    /// One 1 s scrape window a second from 0 to 240 s, with `dials` (second,
    /// count) in the window ending at that second.
    fn windows(dials: &[(u64, u64)]) -> Vec<DialWindow> {
        (1..=240)
            .map(|t| DialWindow {
                from_ms: (t - 1) * S,
                to_ms: t * S,
                dials: dials.iter().filter(|d| d.0 == t).map(|d| d.1).sum(),
            })
            .collect()
    }

    /// Adds `n` dials to the window ending at second `t`.
    fn dial(e: &mut Evidence, t: u64, n: u64) {
        e.dials.iter_mut().find(|w| w.to_ms == t * S).unwrap().dials += n;
    }

    fn row(t: u64, connected: f64, active: f64, lag_slow: f64) -> Row {
        Row {
            t: t as f64,
            unix_ms: t * S,
            pusher_connected: Some(connected),
            sessions_active: Some(active),
            lag: Buckets(vec![(0.01, 10.0 - lag_slow), (0.05, 10.0), (f64::INFINITY, 10.0)]),
            ..Row::default()
        }
    }

    /// A run where everything went right: stall at 30 s, open at 52 s, probes at
    /// 112 and 175, heal at 150, close at 176, 300 sessions back by 182.
    fn good() -> Evidence {
        let mut rows = Vec::new();
        for t in 0..=240 {
            let connected = match t {
                0..=49 => 300.0,
                50..=176 => 0.0,
                177..=182 => (t - 176) as f64 * 50.0,
                _ => 300.0,
            };
            rows.push(row(t, connected, 300.0, 0.0));
        }
        let mut samples = Vec::new();
        for t in 15..240 {
            for i in 0..10 {
                samples.push((t * S + i * 100, 300_000 + i * 1000));
            }
        }
        Evidence {
            breaks_pusher: true,
            fault_ms: 30 * S,
            heal_ms: 150 * S,
            baseline_from_ms: 15 * S,
            during_to_ms: 150 * S,
            end_ms: 240 * S,
            ping_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(3),
            cooldown: Duration::from_secs(60),
            recovery_rate: 50.0,
            transitions: vec![
                tr(52, "open"),
                tr(112, "half_open"),
                tr(115, "open"),
                tr(175, "half_open"),
                tr(176, "closed"),
            ],
            // Sessions' dials before the trip and after the close, the probes at
            // 112 s and 175 s while open.
            dials: windows(&[(10, 1), (51, 20), (52, 5), (113, 1), (176, 1), (177, 50)]),
            rows,
            samples,
            disconnects: vec![],
            created: vec!["a".into(), "b".into()],
            processed: ["a", "b", "c"].into_iter().map(String::from).collect(),
            duplicates: 0,
            never_announced: 0,
            outbox_left: Some(0.0),
            rss_peak_mib: Some(50.0),
            cpu_s: Some(12.0),
            hark_seconds: 240.0,
            service_statuses: [("initiating", 300), ("stt_initiating", 300), ("ready", 300)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            processing_statuses: [("degraded", 300), ("recovered", 300)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ended_not_ready: 0,
        }
    }

    fn find<'a>(targets: &'a [Target], id: &str) -> &'a Target {
        targets.iter().find(|t| t.id == id).unwrap()
    }

    #[test]
    fn a_good_run_passes_everything() {
        let (targets, figures) = judge(&good());
        for t in &targets {
            assert!(matches!(t.verdict, Verdict::Pass | Verdict::Reported), "{t:?}");
        }
        assert_eq!(figures.breaker_open_after_s, Some(22.0));
        assert_eq!(figures.dials_while_open, 2);
        assert_eq!(figures.max_dials_per_cooldown, 1);
        assert_eq!(figures.heal_to_close_s, Some(26.0));
        assert_eq!(figures.recovery_s, Some(6.0));
        assert_eq!(figures.peak_reconnect_rate, Some(50.0));
    }

    #[test]
    fn scrape_jitter_does_not_inflate_the_reconnect_rate() {
        // 55 links in a gap the client measured as 0.99 s: 55 per tick, at the
        // limit; 56 is over it.
        let mut e = good();
        e.rows[178].unix_ms = e.rows[177].unix_ms + 990;
        e.rows[178].pusher_connected = Some(50.0 + 55.0);
        let (targets, figures) = judge(&e);
        assert_eq!(figures.peak_reconnect_rate, Some(55.0));
        assert_eq!(find(&targets, "recovery_rate").verdict, Verdict::Pass);

        e.rows[178].pusher_connected = Some(50.0 + 56.0);
        let (targets, _) = judge(&e);
        assert_eq!(find(&targets, "recovery_rate").verdict, Verdict::Fail);

        // A late scrape: 56 over 1.5 s is 37/s; the peak is then the run's
        // regular 50 per tick (the next gap, 0.5 s, counts as one tick too).
        e.rows[178].unix_ms = e.rows[177].unix_ms + 1_500;
        let (targets, figures) = judge(&e);
        assert_eq!(figures.peak_reconnect_rate, Some(50.0));
        assert_eq!(find(&targets, "recovery_rate").verdict, Verdict::Pass);
    }

    #[test]
    fn each_target_can_fail() {
        let mut e = good();
        e.transitions[0] = tr(56, "open");
        for t in [60, 61, 62] {
            dial(&mut e, t, 1);
        }
        e.disconnects.push((100 * S, "1011".into()));
        for s in e.samples.iter_mut().filter(|s| s.0 >= 30 * S && s.0 < 150 * S) {
            s.1 = 600_000;
        }
        e.created.push("lost".into());
        e.rows[100].lag = Buckets(vec![(0.01, 0.0), (0.05, 10.0), (f64::INFINITY, 10.0)]);
        for r in &mut e.rows[177..] {
            r.pusher_connected = Some(299.0);
        }
        let (targets, _) = judge(&e);
        for id in [
            "breaker_trip",
            "dials_while_open",
            "no_disconnects",
            "latency",
            "conversations",
            "recovery_time",
            "runtime_lag",
        ] {
            assert_eq!(find(&targets, id).verdict, Verdict::Fail, "{id}");
        }
        // Too fast a recovery breaks the rate.
        let mut e = good();
        e.rows[177].pusher_connected = Some(200.0);
        let (targets, _) = judge(&e);
        assert_eq!(find(&targets, "recovery_rate").verdict, Verdict::Fail);
        // A client left without ready, or a pusher status sent as a service status,
        // fails the app target.
        let mut e = good();
        e.ended_not_ready = 1;
        assert_eq!(find(&judge(&e).0, "app_listening").verdict, Verdict::Fail);
        let mut e = good();
        e.service_statuses.insert("degraded".into(), 1);
        assert_eq!(find(&judge(&e).0, "app_listening").verdict, Verdict::Fail);
        // Duplicates alone fail the conversation target.
        let mut e = good();
        e.duplicates = 1;
        assert_eq!(find(&judge(&e).0, "conversations").verdict, Verdict::Fail);
    }

    #[test]
    fn dials_ending_within_a_connect_timeout_of_the_trip_began_before_it() {
        // hark counts a dial when it ends: dials begun before the trip at 52 s end
        // up to 3 s (the connect timeout) later and are not dials while open.
        let mut e = good();
        dial(&mut e, 54, 7);
        dial(&mut e, 55, 7);
        let (targets, figures) = judge(&e);
        assert_eq!(find(&targets, "dials_while_open").verdict, Verdict::Pass);
        assert_eq!(figures.dials_while_open, 2);
        // One second later they can only have begun while open.
        dial(&mut e, 56, 3);
        let (targets, figures) = judge(&e);
        assert_eq!(find(&targets, "dials_while_open").verdict, Verdict::Fail);
        assert_eq!(figures.dials_while_open, 5);
    }

    #[test]
    fn a_breaker_that_never_opens_is_judged_from_the_trip_deadline() {
        let mut e = good();
        e.transitions.clear();
        // One dial a second from 30 s to 150 s.
        e.dials = windows(&(31..=150).map(|t| (t, 1)).collect::<Vec<_>>());
        let (targets, figures) = judge(&e);
        assert_eq!(find(&targets, "breaker_trip").verdict, Verdict::Fail);
        let dials = find(&targets, "dials_while_open");
        assert_eq!(dials.verdict, Verdict::Fail);
        assert_eq!(figures.max_dials_per_cooldown, 60);
        assert!(dials.measured.contains("never opened"), "{}", dials.measured);
        // Closed at the heal: recovery counts from the heal.
        assert_eq!(figures.heal_to_close_s, Some(0.0));
    }

    #[test]
    fn stt_blip_expects_a_closed_breaker() {
        let mut e = good();
        e.breaks_pusher = false;
        e.transitions.clear();
        let (targets, _) = judge(&e);
        assert_eq!(find(&targets, "breaker_trip").verdict, Verdict::Pass);
        assert_eq!(find(&targets, "dials_while_open").verdict, Verdict::NotApplicable);
        assert_eq!(find(&targets, "recovery_time").verdict, Verdict::NotApplicable);
        e.transitions.push(tr(40, "open"));
        assert_eq!(find(&judge(&e).0, "breaker_trip").verdict, Verdict::Fail);
    }

    #[test]
    fn windows_and_intervals() {
        let at = |ends: &[(u64, u64)]| -> Vec<DialWindow> {
            ends.iter().map(|&(to_ms, dials)| DialWindow { from_ms: 0, to_ms, dials }).collect()
        };
        assert_eq!(max_in_window(&at(&[(0, 1), (10, 1), (59_999, 1), (60_000, 1)]), 60_000), 3);
        assert_eq!(max_in_window(&at(&[(1_000, 2), (2_000, 3), (90_000, 4)]), 60_000), 5);
        assert_eq!(max_in_window(&[], 60_000), 0);
        // A window straddling a span's edge is not inside it.
        let straddling = [DialWindow { from_ms: 900, to_ms: 1_900, dials: 7 }];
        assert_eq!(inside(&straddling, 1_000, 5_000).count(), 0);
        assert_eq!(inside(&straddling, 900, 1_900).count(), 1);
        let spans = open_intervals(
            &[tr(5, "open"), tr(10, "closed"), tr(40, "open"), tr(41, "half_open")],
            0,
            100 * S,
        );
        assert_eq!(spans, vec![(5 * S, 10 * S), (40 * S, 100 * S)]);
        // Transitions before the fault (an earlier blip) do not count.
        assert_eq!(open_intervals(&[tr(5, "open"), tr(6, "closed")], 10 * S, 20 * S), vec![]);
    }
}
