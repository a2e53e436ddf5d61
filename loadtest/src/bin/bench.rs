//! `bench`: hark's relay cost beside nginx's for the same swarm. Progress on
//! stderr; the table on stdout; the JSON report with --json.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hark_loadtest::bench::{self, BenchConfig, Relay, Workload};
use hark_loadtest::cli;

/// What relaying costs hark, side by side with nginx tunnelling the same swarm.
///
/// For each workload and run: starts fake-stt (no latency, one word per result),
/// then nginx (a generated config tunnelling WebSocket upgrades to fake-stt) or
/// hark (to fake-stt and fake-pusher), then a swarm of --sessions clients through
/// it at --ramp-rate. Once every client is connected and --settle has passed, it
/// measures the relay process alone over --window: CPU (utime + stime from
/// /proc/<pid>/stat) as per cent of one core and as ms per MB of audio (sessions ×
/// window × 32000 B of 16 kHz PCM16), memory per session ((mean RSS in the window
/// − RSS before any client) / sessions), and for hark the word latency p50/p99 of
/// words sent in the window and hark_runtime_lag_seconds p99 (its /metrics).
///
/// Workloads: pcm16-100ms, pcm16-20ms (PCM16 in 100/20 ms frames), opus-20ms (one
/// 20 ms Opus packet per frame, opus_fs320); for opus-20ms also libopus's own
/// decode time for the same packets in a tight loop (16 sessions decoded, scaled
/// to --sessions), to compare hark's Opus CPU with its PCM16 figure + 1.2 × that.
///
/// The binaries (hark, fake-stt, fake-pusher, swarm) are looked up beside the
/// bench (--bin-dir to change); under cargo they are built first (--no-build to
/// skip). nginx is looked up on PATH and in /usr/sbin (--nginx).
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Sessions (swarm clients) per run.
    #[arg(long, short = 'n', default_value_t = 500)]
    sessions: usize,
    /// The measured steady window (30s, 10 = 10 s).
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    window: Duration,
    /// Wait after every client connected, before the window.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    settle: Duration,
    /// Runs of each workload (every run is reported, and the worst ratio).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Workload, repeatable: pcm16-100ms, pcm16-20ms, opus-20ms [default: all three].
    #[arg(long = "workload")]
    workloads: Vec<Workload>,
    /// Relay(s): both (nginx then hark, per workload), or one alone (scale mode).
    #[arg(long, default_value = "both")]
    relay: RelayChoice,
    /// Swarm clients started per second (hark's --upgrade-rate-per-ip is 100).
    #[arg(long, default_value_t = 50.0)]
    ramp_rate: f64,
    /// A flag for hark, repeatable (--hark-arg=--client-queue --hark-arg=256).
    #[arg(long = "hark-arg", allow_hyphen_values = true)]
    hark_args: Vec<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each run's files (nginx config and logs, every process's log) here.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Directory holding hark, fake-stt, fake-pusher and swarm [default: the
    /// bench's own directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not build the binaries (by default, under `cargo run` they are built with
    /// `cargo build -p hark -p hark-loadtest --bins` first, a no-op when fresh).
    #[arg(long)]
    no_build: bool,
    /// The nginx binary [default: nginx on PATH, else /usr/sbin/nginx].
    #[arg(long)]
    nginx: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RelayChoice {
    Both,
    Hark,
    Nginx,
}

/// `30s`, `500ms`, or a bare number of seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(format!("{text:?}: must be a non-negative number of seconds")),
        Err(_) => cli::parse_duration(text),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.sessions > 0, "--sessions must be positive");
    anyhow::ensure!(args.runs > 0, "--runs must be positive");
    anyhow::ensure!(!args.window.is_zero(), "--window must be positive");
    anyhow::ensure!(args.ramp_rate > 0.0, "--ramp-rate must be positive");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut workloads = args.workloads;
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    workloads.dedup();
    let relays = match args.relay {
        RelayChoice::Both => vec![Relay::Nginx, Relay::Hark],
        RelayChoice::Hark => vec![Relay::Hark],
        RelayChoice::Nginx => vec![Relay::Nginx],
    };
    let config = BenchConfig {
        sessions: args.sessions,
        window: args.window,
        settle: args.settle,
        runs: args.runs,
        relays,
        workloads,
        ramp_rate: args.ramp_rate,
        hark_args: args.hark_args,
        bin_dir: args.bin_dir,
        build: !args.no_build,
        nginx: args.nginx,
        keep: args.keep,
    };
    // Ctrl-C drops the bench, which kills every child (kill_on_drop).
    let report = tokio::select! {
        report = bench::run(config, command) => report?,
        result = cli::shutdown_signal() => {
            result?;
            anyhow::bail!("interrupted");
        }
    };
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: JSON report in {}", path.display());
    }
    print!("{}", bench::print_table(&report));
    Ok(())
}
