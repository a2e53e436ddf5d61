//! The bench's report: every measurement, the hark/nginx ratios per workload and
//! run (and the worst per workload), the Opus decode line, the machine and the
//! command line; as JSON and as a table for people.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::{DecodeCost, Machine};
use super::{BenchConfig, Workload, OPUS_OVERHEAD_LIMIT};

/// One relay's figures for one workload run.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Workload name.
    pub workload: String,
    /// `hark` or `nginx`.
    pub relay: String,
    /// Run number (from 1).
    pub run: usize,
    /// Sessions streaming.
    pub sessions: usize,
    /// Fewest clients connected during the window.
    pub connected_min: u64,
    /// The window's actual length, seconds.
    pub window_s: f64,
    /// The relay's CPU seconds (utime + stime) over the window.
    pub relay_cpu_s: f64,
    /// The relay's CPU over the window, per cent of one core.
    pub cpu_percent: f64,
    /// PCM16 audio streamed in the window: sessions × window × 32 000 B, MB.
    pub audio_mb: f64,
    /// Relay CPU ms per MB of that audio.
    pub cpu_ms_per_audio_mb: f64,
    /// The relay's RSS before any client, KiB.
    pub rss_idle_kib: f64,
    /// The relay's mean RSS over the window, KiB.
    pub rss_steady_kib: f64,
    /// (steady − idle) / sessions, KiB.
    pub kib_per_session: f64,
    /// The swarm's CPU over the window, per cent of one core (the load generator
    /// shares the machine).
    pub swarm_cpu_percent: Option<f64>,
    /// fake-stt's CPU over the window, per cent of one core.
    pub fake_stt_cpu_percent: Option<f64>,
    /// hark: words matched whose audio was sent in the window.
    pub words_in_window: Option<usize>,
    /// hark: word latency p50 over the window, ms.
    pub latency_p50_ms: Option<f64>,
    /// hark: word latency p99 over the window, ms.
    pub latency_p99_ms: Option<f64>,
    /// hark: `hark_runtime_lag_seconds` p99 over the window, ms.
    pub runtime_lag_p99_ms: Option<f64>,
    /// Text messages the clients received over the whole swarm run: hark's
    /// transcript messages, or (nginx) fake-stt's results tunnelled back.
    pub text_messages: u64,
    /// Client disconnects over the whole swarm run.
    pub disconnects: u64,
    /// Failed connects over the whole swarm run.
    pub connect_failures: u64,
    /// The swarm's first errors.
    pub swarm_errors: Vec<String>,
    /// Anything that makes this measurement less than exact.
    pub notes: Vec<String>,
}

/// hark's figures over nginx's for one workload run.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Workload name.
    pub workload: String,
    /// Run number; 0 for the worst over all runs.
    pub run: usize,
    /// hark CPU / nginx CPU (per audio MB; the same as per cent for equal windows).
    pub cpu_ratio: Option<f64>,
    /// hark KiB per session / nginx KiB per session.
    pub memory_ratio: Option<f64>,
}

/// libopus's own decode time beside hark's Opus and PCM16 CPU.
#[derive(Clone, Debug, Serialize)]
pub struct OpusLine {
    /// The decode loop's figures.
    pub decode: DecodeCost,
    /// hark's worst `pcm16-20ms` CPU over the runs, per cent of a core.
    pub hark_pcm16_20ms_cpu_percent: Option<f64>,
    /// hark's worst `opus-20ms` CPU over the runs, per cent of a core.
    pub hark_opus_20ms_cpu_percent: Option<f64>,
    /// The limit: PCM16 figure + 1.2 × libopus's decode time, per cent of a core.
    pub limit_cpu_percent: Option<f64>,
    /// Whether hark's Opus CPU is within the limit.
    pub within_limit: Option<bool>,
}

impl OpusLine {
    /// The line from the decode loop and the hark measurements.
    pub fn new(decode: DecodeCost, measurements: &[Measurement]) -> OpusLine {
        let worst = |workload: Workload| {
            measurements
                .iter()
                .filter(|m| m.relay == "hark" && m.workload == workload.name())
                .map(|m| m.cpu_percent)
                .reduce(f64::max)
        };
        let pcm = worst(Workload::Pcm16_20ms);
        let opus = worst(Workload::Opus20ms);
        let limit = pcm.map(|pcm| pcm + OPUS_OVERHEAD_LIMIT * decode.cpu_percent);
        let within_limit = match (opus, limit) {
            (Some(opus), Some(limit)) => Some(opus <= limit),
            _ => None,
        };
        OpusLine {
            decode,
            hark_pcm16_20ms_cpu_percent: pcm,
            hark_opus_20ms_cpu_percent: opus,
            limit_cpu_percent: limit,
            within_limit,
        }
    }
}

/// Everything a bench measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The exact command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// How it ran.
    pub config: BenchConfig,
    /// Every relay × workload × run.
    pub measurements: Vec<Measurement>,
    /// hark over nginx per workload and run, then the worst per workload (run 0).
    pub comparisons: Vec<Comparison>,
    /// The Opus decode line (when `opus-20ms` ran).
    pub opus_decode: Vec<OpusLine>,
    /// Anything that makes the whole bench less than exact.
    pub notes: Vec<String>,
}

impl BenchReport {
    /// Assembles the report, computing the ratios.
    pub fn new(
        command: String,
        machine: Machine,
        config: BenchConfig,
        measurements: Vec<Measurement>,
        opus_decode: Vec<OpusLine>,
        notes: Vec<String>,
    ) -> BenchReport {
        let mut comparisons = Vec::new();
        for workload in &config.workloads {
            let mut per_run = Vec::new();
            for run in 1..=config.runs {
                let find = |relay: &str| {
                    measurements
                        .iter()
                        .find(|m| m.workload == workload.name() && m.relay == relay && m.run == run)
                };
                let (Some(hark), Some(nginx)) = (find("hark"), find("nginx")) else { continue };
                let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
                per_run.push(Comparison {
                    workload: workload.name().to_owned(),
                    run,
                    cpu_ratio: ratio(hark.cpu_ms_per_audio_mb, nginx.cpu_ms_per_audio_mb),
                    memory_ratio: ratio(hark.kib_per_session, nginx.kib_per_session),
                });
            }
            if per_run.len() > 1 {
                let worst = |f: fn(&Comparison) -> Option<f64>| {
                    per_run.iter().filter_map(f).reduce(f64::max)
                };
                let worst = Comparison {
                    workload: workload.name().to_owned(),
                    run: 0,
                    cpu_ratio: worst(|c| c.cpu_ratio),
                    memory_ratio: worst(|c| c.memory_ratio),
                };
                comparisons.extend(per_run);
                comparisons.push(worst);
            } else {
                comparisons.extend(per_run);
            }
        }
        BenchReport { command, machine, config, measurements, comparisons, opus_decode, notes }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The report as a table for people.
pub fn print_table(report: &BenchReport) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "bench: {} ({} CPUs, {}), kernel {}, {}",
        report.command, m.nproc, m.cpu_model, m.kernel, m.date
    );
    let _ = writeln!(
        out,
        "{} sessions, {:.0} s window after {:.0} s settle, {} run(s); audio MB = sessions × window × 32000 B",
        report.config.sessions,
        report.config.window.as_secs_f64(),
        report.config.settle.as_secs_f64(),
        report.config.runs
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12} {:>3} {:<6} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "workload",
        "run",
        "relay",
        "sessions",
        "cpu %",
        "ms/MB",
        "KiB/sess",
        "idle MiB",
        "p50 ms",
        "p99 ms",
        "lag p99",
        "swarm %",
        "discon"
    );
    for x in &report.measurements {
        let _ = writeln!(
            out,
            "{:<12} {:>3} {:<6} {:>8} {:>7.1} {:>9.2} {:>9.1} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>7}",
            x.workload,
            x.run,
            x.relay,
            x.connected_min,
            x.cpu_percent,
            x.cpu_ms_per_audio_mb,
            x.kib_per_session,
            x.rss_idle_kib / 1024.0,
            opt(x.latency_p50_ms, 1),
            opt(x.latency_p99_ms, 1),
            opt(x.runtime_lag_p99_ms, 2),
            opt(x.swarm_cpu_percent, 0),
            x.disconnects,
        );
    }
    if !report.comparisons.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "hark / nginx:");
        for c in &report.comparisons {
            let run = if c.run == 0 { "worst".to_owned() } else { format!("run {}", c.run) };
            let _ = writeln!(
                out,
                "  {:<12} {:<6} cpu {}x   memory/session {}x",
                c.workload,
                run,
                opt(c.cpu_ratio, 2),
                opt(c.memory_ratio, 2)
            );
        }
    }
    for o in &report.opus_decode {
        let d = &o.decode;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "opus-20ms: libopus decode alone: {:.1}% of a core, {:.2} ms/MB ({} sessions × {:.0} s decoded, {} packets, scaled to {})",
            d.cpu_percent, d.cpu_ms_per_audio_mb, d.sessions_decoded, d.seconds_per_session, d.packets, d.scaled_to
        );
        let _ = writeln!(
            out,
            "opus-20ms: hark {}% vs limit {}% (hark pcm16-20ms {}% + {OPUS_OVERHEAD_LIMIT} × decode){}",
            opt(o.hark_opus_20ms_cpu_percent, 1),
            opt(o.limit_cpu_percent, 1),
            opt(o.hark_pcm16_20ms_cpu_percent, 1),
            match (o.within_limit, o.hark_pcm16_20ms_cpu_percent) {
                (Some(true), _) => ": within",
                (Some(false), _) => ": OVER",
                // No limit without a PCM16 20 ms figure from the same invocation.
                (None, None) => ": not checked (add --workload pcm16-20ms to this run)",
                (None, Some(_)) => "",
            }
        );
    }
    let notes: Vec<String> = report
        .notes
        .iter()
        .cloned()
        .chain(report.measurements.iter().flat_map(|m| {
            m.notes.iter().map(move |n| format!("{} {} run {}: {n}", m.workload, m.relay, m.run))
        }))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    out
}
