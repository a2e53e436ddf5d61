//! `drill`: replays an incident end to end against a real hark and judges it.
//! Progress on stderr every second; the report (Markdown) on stdout and in --out;
//! exits 1 when any target is missed.

use std::path::PathBuf;

use clap::Parser;
use hark_loadtest::cli;
use hark_loadtest::drill::scenario::{Plan, Scenario};
use hark_loadtest::drill::{self, DrillConfig};
use tokio_util::sync::CancellationToken;

/// Replays an incident end to end: starts fake-stt, fake-pusher, hark and a swarm as
/// processes on loopback, breaks pusher (or STT) on a schedule, heals it, and judges
/// how hark took it.
///
/// Scenarios (full / --quick timings; t = 0 is the swarm's start):
///
///   incident   (default) pusher stalls: pings, frames and new handshakes go
///              unanswered. 300 sessions; stall at 30 s for 120 s; run to 240 s.
///              Quick: 50 sessions; stall at 8 s for 20 s; run to 45 s. Healed by
///              a restart (stalled links dropped unread; see --resume-stalled).
///   refuse     pusher's port closes (open links drop), same timings.
///   blackhole  open links drop; new connections accepted, never answered.
///   http-429   open links drop; upgrades get 429 + Retry-After 90 s (quick 12 s).
///   flapping   refuse/up every 10 s (quick 2.5 s) over the fault window.
///   stt-blip   fake-stt closes every stream with 1011 for 5 s (quick 3 s).
///   fleet      two hark pods (HOSTNAME drill-pod-a/-b, an outbox dir each) share
///              one Postgres the drill starts (no Postgres: exit 2); the swarm
///              spreads over both. Pusher refuses at 30 s (quick 8 s); pod A is
///              killed with SIGKILL at 90 s (quick 16 s) and its outbox dir deleted
///              (its files counted first); pusher is back at 150 s (quick 28 s).
///              Targets: no acknowledged conversation lost (one only in A's deleted
///              outbox counts as lost), no duplicate, hark_outbox 0 pending in
///              Postgres, pod B up, fallback used on A before the kill.
///
/// Quick runs scale hark's timings (ping 2 s / timeout 4 s, connect timeout 1 s,
/// cooldown 10 s, probe interval 10 s, recovery rate 20/s) and every target with
/// them. Targets: breaker opens within ping-timeout + 5 s of the fault; while open,
/// at most 2 dials reach pusher per cooldown window (2/min by default); no client
/// disconnects; client word-latency p99 during the fault <= 1.5x the p99 before;
/// no conversation lost or processed twice; after the heal every session back on
/// pusher within 15 s of the breaker's close at <= 1.1x --recovery-rate; runtime
/// lag p99 <= 20 ms in every 10 s window; peak RSS and CPU reported.
///
/// Writes drill-report.json, drill-report.md, drill-timeline.svg and every process's
/// log to --out. Flags after `--` go to hark verbatim and win over the drill's, e.g.
/// `drill -- --breaker-failure-threshold 1000000 --reconnect-max 1s` (a
/// configuration that must fail). Progress goes to stderr every second, the
/// Markdown report to stdout. Exit status: 0 every target met, 1 a target missed,
/// 2 the drill itself failed (a process would not start, …).
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Scenario: incident, refuse, blackhole, http-429, flapping, stt-blip, fleet, or all
    /// (each in turn, into <out>/<scenario>).
    #[arg(long, short, default_value = "incident")]
    scenario: String,
    /// The short variant (under a minute, 50 sessions, scaled timings) for CI.
    #[arg(long)]
    quick: bool,
    /// incident: heal the stall by resuming the stalled links (pusher then reads
    /// their backlog, 104s hark already gave up on included) instead of restarting
    /// pusher. Shows the redeliveries at-least-once makes (counted as duplicates).
    #[arg(long)]
    resume_stalled: bool,
    /// Sessions (swarm clients), instead of the scenario's 300 (quick: 50).
    #[arg(long)]
    sessions: Option<usize>,
    /// Clients started per second [default: 25].
    #[arg(long)]
    ramp_rate: Option<f64>,
    /// fake-stt's delay from a word's audio to its result, like a hosted STT
    /// [default: 300ms].
    #[arg(long, value_parser = cli::parse_duration)]
    stt_latency: Option<std::time::Duration>,
    /// Directory for the report and logs [default: ./drill-out/<scenario>[-quick]].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory holding hark, fake-stt, fake-pusher and swarm [default: the
    /// drill's own directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not build the binaries (by default, under `cargo run` they are built with
    /// `cargo build -p hark -p hark-loadtest --bins` first, a no-op when fresh).
    #[arg(long)]
    no_build: bool,
    /// Flags for hark, after `--`.
    #[arg(last = true)]
    hark_args: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(err) => {
            eprintln!("drill: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![args.scenario.parse().map_err(anyhow::Error::msg)?]
    };
    let interrupt = CancellationToken::new();
    let signals = interrupt.clone();
    tokio::spawn(async move {
        if cli::shutdown_signal().await.is_ok() {
            eprintln!("drill: interrupted; stopping every process");
            signals.cancel();
        }
    });
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut all_passed = true;
    for scenario in scenarios {
        let mut plan = Plan::new(scenario, args.quick);
        if args.resume_stalled {
            plan.resume_stalled();
        }
        if let Some(n) = args.sessions {
            plan.sessions = n.max(1);
        }
        if let Some(rate) = args.ramp_rate {
            plan.ramp_rate = rate.max(0.1);
        }
        if let Some(latency) = args.stt_latency {
            plan.stt_latency = latency;
        }
        let leaf = format!("{scenario}{}", if args.quick { "-quick" } else { "" });
        let out = match (&args.out, args.scenario == "all") {
            (Some(dir), true) => dir.join(&leaf),
            (Some(dir), false) => dir.clone(),
            (None, _) => PathBuf::from("drill-out").join(&leaf),
        };
        eprintln!(
            "drill: scenario {scenario}{}: {}",
            if args.quick { " (quick)" } else { "" },
            plan.description
        );
        let config = DrillConfig {
            plan,
            out: out.clone(),
            bin_dir: args.bin_dir.clone(),
            build: !args.no_build,
            hark_args: args.hark_args.clone(),
            command: command.clone(),
        };
        let (markdown, passed) = if scenario == Scenario::Fleet {
            let report = drill::fleet::run(config, interrupt.clone()).await?;
            (report.markdown(), report.passed)
        } else {
            let report = drill::run(config, interrupt.clone()).await?;
            (report.markdown(), report.passed)
        };
        println!("{markdown}");
        eprintln!(
            "drill: {scenario}: {} — report in {}",
            if passed { "PASS" } else { "FAIL" },
            out.join("drill-report.md").display()
        );
        all_passed &= passed;
    }
    Ok(all_passed)
}
