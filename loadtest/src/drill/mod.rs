//! `drill`: replays an incident end to end and judges how hark took it.
//!
//! The drill starts fake-stt, fake-pusher, hark and a swarm as processes on
//! loopback ([`procs`]), breaks pusher (or STT) on the scenario's schedule
//! ([`scenario`]) through the fakes' control ports, samples everything once a
//! second into a [`timeline`], waits for hark's outbox to drain after the heal,
//! then judges each target ([`judge`]) and writes the [`report`] as JSON, Markdown
//! and an SVG [`chart`]. Every child is killed when the drill ends, however it
//! ends (the [`procs::Procs`] guard).

pub mod chart;
pub mod fleet;
pub mod hark_metrics;
pub mod http;
pub mod judge;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod timeline;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::hark_metrics::HarkMetrics;
use self::http::Http;
use self::judge::{Evidence, Verdict};
use self::procs::{Proc, Procs};
use self::report::Report;
use self::scenario::{Action, Plan, Scenario};
use self::timeline::{Observation, Row, Sampler};
use crate::swarm::{unix_ms, Progress, SwarmResult};
use hark_fakes::fake_pusher::PusherStats;
use hark_fakes::prom::Scrape;

/// How a drill runs.
#[derive(Clone, Debug)]
pub struct DrillConfig {
    /// What happens when.
    pub plan: Plan,
    /// Where the report and logs go.
    pub out: PathBuf,
    /// Where the binaries are (default: beside the drill).
    pub bin_dir: Option<PathBuf>,
    /// Build missing binaries with `$CARGO` when run under cargo.
    pub build: bool,
    /// Extra hark flags (after `--`); they win over the plan's.
    pub hark_args: Vec<String>,
    /// The command line, for the report.
    pub command: String,
}

/// What the child-reading tasks collect.
#[derive(Debug, Default)]
struct Live {
    /// hark's `(client, admin)` listeners, from its start-up line.
    listening: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    progress: Option<Progress>,
    swarm: Option<SwarmResult>,
}

type Shared = Arc<Mutex<Live>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Live> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the drill; the report is written to `config.out` and returned. `interrupt`
/// stops it early (children are killed, no report).
pub async fn run(config: DrillConfig, interrupt: CancellationToken) -> anyhow::Result<Report> {
    let plan = &config.plan;
    anyhow::ensure!(
        plan.scenario != Scenario::Fleet,
        "the fleet scenario runs through drill::fleet::run"
    );
    let bin_dir = procs::locate(config.bin_dir.as_deref(), config.build).await?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let out = config.out.canonicalize()?;
    let outbox = out.join("outbox");
    if outbox.exists() {
        std::fs::remove_dir_all(&outbox)
            .with_context(|| format!("clearing {}", outbox.display()))?;
    }
    let mut procs = Procs::default();
    let http = Http::default();
    let shared: Shared = Arc::default();
    let mut notes = Vec::new();

    // The fakes.
    let stt_args = vec![
        "--words-per-result".into(),
        "1".into(),
        "--latency".into(),
        format!("{}ms", plan.stt_latency.as_millis()),
    ];
    let (stt, stt_addr) =
        procs::spawn_fake(&bin_dir, "fake-stt", &stt_args, &out.join("fake-stt.log")).await?;
    procs.add(stt);
    let (pusher, pusher_addr) =
        procs::spawn_fake(&bin_dir, "fake-pusher", &[], &out.join("fake-pusher.log")).await?;
    procs.add(pusher);
    let pusher_control = format!("http://{}", pusher_addr.control);
    let stt_control = format!("http://{}", stt_addr.control);

    // hark.
    let hark_started = Instant::now();
    let mut hark = spawn_hark(
        &bin_dir,
        plan,
        &config.hark_args,
        &stt_addr.listen.to_string(),
        &pusher_addr.listen.to_string(),
        &outbox,
    )?;
    let hark_pid = hark.pid().context("hark has no pid")?;
    let stderr = procs::take_stderr(&mut hark)?;
    procs.add(hark);
    tokio::spawn(read_hark_log(stderr, out.join("hark.log"), shared.clone()));
    let (listen, admin) = wait_listening(&shared, &mut procs, &interrupt, &out).await?;
    let metrics_url = format!("http://{admin}/metrics");
    // The baseline for the first scrape interval: hark before any session.
    let mut hark_metrics = HarkMetrics::default();
    if let Ok(text) = http.get(&metrics_url).await {
        hark_metrics.observe(unix_ms(), &Scrape::parse(&text));
    }

    // The swarm; t = 0.
    eprintln!(
        "drill: {} sessions against hark at {listen}; logs and report in {}",
        plan.sessions,
        out.display()
    );
    let t0_ms = unix_ms();
    let t0 = Instant::now();
    let mut swarm = spawn_swarm(&bin_dir, plan, &format!("ws://{listen}"), &out)?;
    let swarm_out = procs::take_stdout(&mut swarm)?;
    procs.add(swarm);
    tokio::spawn(read_swarm(swarm_out, shared.clone()));
    let schedule = tokio::spawn(run_schedule(
        plan.actions.clone(),
        t0,
        http.clone(),
        pusher_control.clone(),
        stt_control.clone(),
    ));

    // Sample every second until the swarm is done, then until the outbox drains.
    let mut sampler = Sampler::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut ticker = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let swarm_limit =
        plan.run_for + plan.conversation_timeout + plan.settle + Duration::from_secs(30);
    let mut swarm_done_at: Option<Instant> = None;
    let mut scrape_failures = 0u32;
    loop {
        tokio::select! {
            () = interrupt.cancelled() => {
                procs.shutdown().await;
                anyhow::bail!("interrupted");
            }
            _ = ticker.tick() => {}
        }
        let obs = observe(&http, &metrics_url, &pusher_control, hark_pid, &shared, t0).await;
        match &obs.scrape {
            Some(scrape) => hark_metrics.observe(obs.unix_ms, scrape),
            None => scrape_failures += 1,
        }
        let row = sampler.row(obs);
        let swarm_running = swarm_done_at.is_none();
        progress_line(&row, plan, swarm_running);
        rows.push(row);
        if swarm_running {
            let exited =
                procs.get_mut("swarm").is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_))));
            if exited || lock(&shared).swarm.is_some() {
                swarm_done_at = Some(Instant::now());
            } else if t0.elapsed() > swarm_limit {
                notes.push("the swarm overran its time limit and was stopped".into());
                swarm_done_at = Some(Instant::now());
            }
            continue;
        }
        let last = rows.last().expect("a row was just pushed");
        let drained = last.outbox_records == Some(0.0) && last.breaker_state == Some(0.0);
        let waited = swarm_done_at.map_or(Duration::ZERO, |at| at.elapsed());
        if drained || waited >= plan.drain_wait {
            if !drained {
                notes.push(format!(
                    "hark's outbox had not drained {}s after the run (records left: {:?})",
                    plan.drain_wait.as_secs(),
                    last.outbox_records
                ));
            }
            break;
        }
    }
    if scrape_failures > 0 {
        notes.push(format!("{scrape_failures} scrapes of hark's /metrics failed"));
    }
    if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(1), schedule).await {
        notes.push(format!("fault schedule: {err}"));
    }

    // Final evidence from the fakes and /proc, then stop everything.
    let (rss_peak, _, cpu_s) = procs::proc_usage(hark_pid);
    let hark_seconds = hark_started.elapsed().as_secs_f64();
    let stats: PusherStats =
        serde_json::from_str(&http.get(&format!("{pusher_control}/stats")).await?)?;
    let processed: Vec<String> =
        serde_json::from_str(&http.get(&format!("{pusher_control}/processed")).await?)?;
    procs.shutdown().await;
    notes.append(&mut hark_metrics.notes);

    let live = std::mem::take(&mut *lock(&shared));
    let swarm = live.swarm;
    if swarm.is_none() {
        notes.push("the swarm printed no result (see swarm.log)".into());
    }
    let samples = read_latency_log(&out.join("latency.csv"));
    let created = read_created(&out.join("conversations.csv"));
    timeline::fill_client_p99(&mut rows, &samples);

    let at = |d: Duration| t0_ms + d.as_millis() as u64;
    let ramp_end =
        Duration::from_secs_f64(plan.sessions as f64 / plan.ramp_rate) + Duration::from_secs(1);
    let during_to = if plan.scenario == Scenario::SttBlip {
        plan.heal_at + Duration::from_secs(10)
    } else {
        plan.heal_at
    };
    let evidence = Evidence {
        breaks_pusher: plan.scenario.breaks_pusher(),
        fault_ms: at(plan.fault_at),
        heal_ms: at(plan.heal_at),
        baseline_from_ms: at(ramp_end.min(plan.fault_at)),
        during_to_ms: at(during_to),
        end_ms: at(plan.run_for),
        ping_timeout: plan
            .hark_duration("pusher-ping-timeout", &config.hark_args)
            .unwrap_or(Duration::from_secs(20)),
        connect_timeout: plan
            .hark_duration("pusher-connect-timeout", &config.hark_args)
            .unwrap_or(Duration::from_secs(3)),
        cooldown: plan
            .hark_duration("breaker-cooldown", &config.hark_args)
            .unwrap_or(Duration::from_secs(60)),
        recovery_rate: plan
            .hark_flag("recovery-rate", &config.hark_args)
            .and_then(|v| v.parse().ok())
            .unwrap_or(50.0),
        transitions: hark_metrics.transitions.clone(),
        dials: hark_metrics.dials.clone(),
        rows: rows.clone(),
        samples,
        disconnects: swarm.as_ref().map(|s| s.disconnect_times.clone()).unwrap_or_default(),
        created: created.clone(),
        processed: processed.into_iter().collect::<HashSet<_>>(),
        duplicates: stats.duplicates,
        never_announced: swarm.as_ref().map_or(0, |s| s.conversations.never_announced),
        outbox_left: rows.last().and_then(|r| r.outbox_records),
        rss_peak_mib: rss_peak,
        cpu_s,
        hark_seconds,
        service_statuses: swarm.as_ref().map(|s| s.statuses.clone()).unwrap_or_default(),
        processing_statuses: swarm.as_ref().map(|s| s.processing.clone()).unwrap_or_default(),
        ended_not_ready: swarm.as_ref().map_or(0, |s| s.ended_not_ready),
    };
    let (mut targets, figures) = judge::judge(&evidence);
    if swarm.is_none() {
        let needs_swarm = ["no_disconnects", "conversations", "app_listening"];
        for t in targets.iter_mut().filter(|t| needs_swarm.contains(&t.id)) {
            t.verdict = Verdict::Fail;
            t.measured = format!("{} (no swarm result)", t.measured);
        }
    }
    let passed = Report::all_pass(&targets);
    let report = Report {
        command: config.command.clone(),
        started_unix_ms: t0_ms,
        plan: plan.clone(),
        hark_extra_args: config.hark_args.clone(),
        passed,
        breaker: Report::breaker_rows(&hark_metrics.transitions, t0_ms),
        dials_per_session: figures.dials_during_fault as f64 / plan.sessions.max(1) as f64,
        targets,
        figures,
        pusher: serde_json::json!({
            "tcp_accepts": stats.tcp_accepts,
            "handshakes": stats.handshakes,
            "rejected_http": stats.rejected_http,
            "conversations_processed": stats.conversations_processed,
            "duplicates": stats.duplicates,
            "acks_sent": stats.acks_sent,
            "decode_errors": stats.decode_errors,
        }),
        swarm,
        timeline: rows,
        notes,
    };
    write_report(&report, &evidence, &out)?;
    Ok(report)
}

fn hark_env_name(flag: &str) -> String {
    format!("HARK_{}", flag.replace('-', "_").to_uppercase())
}

fn spawn_hark(
    bin_dir: &Path,
    plan: &Plan,
    extra: &[String],
    stt: &str,
    pusher: &str,
    outbox: &Path,
) -> anyhow::Result<Proc> {
    let child =
        hark_command(bin_dir, plan, extra, stt, pusher, outbox).spawn().context("starting hark")?;
    Ok(Proc { name: "hark", child })
}

/// hark's command line for a drill (flags from the plan as `HARK_*` variables,
/// `extra` last so it wins), stderr piped.
fn hark_command(
    bin_dir: &Path,
    plan: &Plan,
    extra: &[String],
    stt: &str,
    pusher: &str,
    outbox: &Path,
) -> tokio::process::Command {
    let mut cmd = procs::command(bin_dir, "hark");
    for (flag, value) in &plan.hark_flags {
        cmd.env(hark_env_name(flag), value);
    }
    cmd.env("RUST_LOG", "info")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--stt", "deepgram"])
        .arg("--stt-url")
        .arg(format!("ws://{stt}/v1/listen"))
        .args(["--stt-api-key", "drill", "--log-format", "json"])
        .arg("--pusher-url")
        .arg(format!("ws://{pusher}"))
        .arg("--outbox-dir")
        .arg(outbox)
        .arg("--max-sessions")
        .arg((plan.sessions * 2).max(1000).to_string())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The swarm against `urls` (`ws://host:port`, several comma-separated).
fn spawn_swarm(bin_dir: &Path, plan: &Plan, urls: &str, out: &Path) -> anyhow::Result<Proc> {
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let child = procs::command(bin_dir, "swarm")
        .arg("--url")
        .arg(urls)
        .args(["--clients", &plan.sessions.to_string()])
        .args(["--ramp-rate", &plan.ramp_rate.to_string()])
        .args(["--duration", &secs(plan.run_for)])
        .args(["--frame", &secs(plan.frame)])
        .args(["--sample-rate", "8000"])
        .args(["--talk", &secs(plan.talk)])
        .args(["--pause", &secs(plan.pause)])
        .args(["--conversation-timeout", &secs(plan.conversation_timeout)])
        .args(["--settle", &secs(plan.settle)])
        .args(["--uid-prefix", "drill"])
        .arg("--progress-json")
        .arg("--latency-log")
        .arg(out.join("latency.csv"))
        .arg("--conversation-ids")
        .arg(out.join("conversations.csv"))
        .arg("--result")
        .arg(out.join("swarm-result.json"))
        .stdout(Stdio::piped())
        .stderr(procs::log_file(&out.join("swarm.log"))?)
        .spawn()
        .context("starting swarm")?;
    Ok(Proc { name: "swarm", child })
}

/// Copies hark's stderr to `path` (for people: the drill reads hark's metrics, not
/// its log), noting where it listens from its start-up line.
async fn read_hark_log(stderr: tokio::process::ChildStderr, path: PathBuf, shared: Shared) {
    let mut file = match tokio::fs::File::create(&path).await {
        Ok(file) => Some(tokio::io::BufWriter::new(file)),
        Err(err) => {
            eprintln!("drill: cannot write {}: {err}", path.display());
            None
        }
    };
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addrs) = hark_fakes::process::listening(&line) {
            lock(&shared).listening = Some(addrs);
        }
        if let Some(file) = &mut file {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
    }
    if let Some(mut file) = file {
        let _ = file.flush().await;
    }
}

async fn read_swarm(stdout: tokio::process::ChildStdout, shared: Shared) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        match value["type"].as_str() {
            Some("progress") => {
                if let Ok(p) = serde_json::from_value(value) {
                    lock(&shared).progress = Some(p);
                }
            }
            Some("result") => {
                if let Ok(r) = serde_json::from_value(value) {
                    lock(&shared).swarm = Some(r);
                }
            }
            _ => {}
        }
    }
}

async fn wait_listening(
    shared: &Shared,
    procs: &mut Procs,
    interrupt: &CancellationToken,
    out: &Path,
) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(addrs) = lock(shared).listening {
            return Ok(addrs);
        }
        let exited = procs.get_mut("hark").and_then(|p| p.child.try_wait().ok().flatten());
        if let Some(status) = exited {
            anyhow::bail!(
                "hark exited at start ({status}); see {}",
                out.join("hark.log").display()
            );
        }
        if Instant::now() > deadline || interrupt.is_cancelled() {
            anyhow::bail!(
                "hark did not start listening within 20 s; see {}",
                out.join("hark.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_schedule(
    actions: Vec<(f64, Action)>,
    t0: Instant,
    http: Http,
    pusher: String,
    stt: String,
) -> anyhow::Result<()> {
    for (at, action) in actions {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(at)).await;
        eprintln!("drill t={at:>5.1}s: {action}");
        let result = match &action {
            Action::PusherMode { spec } => http.post(&format!("{pusher}/mode"), Some(spec)).await,
            Action::DropLinks => http.post(&format!("{pusher}/drop-links"), None).await,
            Action::SttFault { name } => http.post(&format!("{stt}/fault/{name}"), None).await,
            Action::KillPod { .. } => Err(anyhow::anyhow!("only the fleet drill has pods")),
        };
        result.with_context(|| format!("t={at}s: {action}"))?;
    }
    Ok(())
}

async fn observe(
    http: &Http,
    metrics_url: &str,
    pusher_control: &str,
    hark_pid: u32,
    shared: &Shared,
    t0: Instant,
) -> Observation {
    let stats_url = format!("{pusher_control}/stats");
    let (metrics, stats) = tokio::join!(http.get(metrics_url), http.get(&stats_url));
    let unix = unix_ms();
    let accepts = stats
        .ok()
        .and_then(|text| serde_json::from_str::<PusherStats>(&text).ok())
        .map(|s| s.tcp_accepts);
    let (_, rss, cpu) = procs::proc_usage(hark_pid);
    let progress = lock(shared).progress.clone();
    Observation {
        unix_ms: unix,
        t: t0.elapsed().as_secs_f64(),
        scrape: metrics.ok().map(|text| Scrape::parse(&text)),
        accepts,
        clients_connected: progress.as_ref().map(|p| p.connected),
        client_p99_ms: progress.and_then(|p| p.latency_p99_ms),
        rss_mib: rss,
        cpu_s: cpu,
    }
}

fn progress_line(row: &Row, plan: &Plan, swarm_running: bool) {
    let phase = if !swarm_running {
        "draining"
    } else if row.t < plan.fault_at.as_secs_f64() {
        "before"
    } else if row.t < plan.heal_at.as_secs_f64() {
        "FAULT"
    } else {
        "healed"
    };
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"));
    let breaker = match row.breaker_state.map(|s| s.round() as i64) {
        Some(0) => "closed",
        Some(1) => "OPEN",
        Some(2) => "half-open",
        _ => "?",
    };
    eprintln!(
        "drill t={:>5.1}s {phase:<8} pusher-connected={}/{} breaker={breaker} dials/s pusher={} hark={} \
         latency-p99={} lag-p99={} outbox={} clients={}",
        row.t,
        num(row.pusher_connected),
        num(row.sessions_active),
        num(row.pusher_accepts_per_s),
        num(row.hark_dials_per_s),
        ms(row.latency_p99_ms),
        ms(row.lag_p99_ms),
        num(row.outbox_records),
        row.clients_connected.map_or("-".into(), |c| c.to_string()),
    );
}

fn read_latency_log(path: &Path) -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let (a, b) = line.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

fn read_created(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|l| l.split(',').next())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn write_report(report: &Report, evidence: &Evidence, out: &Path) -> anyhow::Result<()> {
    std::fs::write(out.join("drill-report.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(out.join("drill-report.md"), report.markdown())?;
    let before_p99 = timeline::latencies_between(
        &evidence.samples,
        evidence.baseline_from_ms,
        evidence.fault_ms,
    )
    .quantile_ms(0.99);
    let plan = &report.plan;
    let spec = chart::ChartSpec {
        title: format!(
            "hark drill: {}{} — {} sessions; fault {:.0}–{:.0} s; {}",
            plan.scenario,
            if plan.quick { " (quick)" } else { "" },
            plan.sessions,
            plan.fault_at.as_secs_f64(),
            plan.heal_at.as_secs_f64(),
            if report.passed { "PASS" } else { "FAIL" }
        ),
        fault: (plan.fault_at.as_secs_f64(), plan.heal_at.as_secs_f64()),
        latency_limit_ms: before_p99.map(|p| p * 1.5),
        lag_limit_ms: 20.0,
        lag_windows: timeline::lag_windows(&evidence.rows, judge::LAG_WINDOW_ROWS),
        breaker: report
            .breaker
            .iter()
            .map(|(t, to)| {
                let state = match to.as_str() {
                    "open" => 1.0,
                    "half_open" => 2.0,
                    _ => 0.0,
                };
                (*t, state)
            })
            .collect(),
    };
    std::fs::write(out.join("drill-timeline.svg"), chart::render(&report.timeline, &spec)?)?;
    Ok(())
}
