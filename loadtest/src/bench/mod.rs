//! `bench`: what relaying costs hark, side by side with nginx tunnelling the very
//! same swarm to fake-stt.
//!
//! For each workload (codec and frame size) and run, the bench starts fake-stt
//! (zero latency, one word per result), then one relay — nginx ([`nginx`]: a plain
//! WebSocket tunnel, the floor of what any relay must pay to move the bytes) or
//! hark (with fake-pusher) — then a swarm of N clients through it. Once every
//! client is connected and a settle time has passed, it reads the relay process's
//! CPU time (`/proc/<pid>/stat`) and RSS (`/proc/<pid>/status`) over a steady
//! window ([`measure`]), and for hark its word latency (the swarm's latency log,
//! words sent in the window) and `hark_runtime_lag_seconds` p99 (its `/metrics`,
//! bucket deltas over the window). Then it stops everything and goes on.

pub mod measure;
pub mod nginx;
mod report;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use hark_fakes::prom::Scrape;
use hark_proto::Codec;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::drill::http::Http;
use crate::drill::procs::{self, Proc, Procs};
use crate::swarm::{unix_ms, Script, SwarmResult};
pub use report::{print_table, BenchReport, Comparison, Measurement, OpusLine};

/// The sample rate every workload streams at (PCM16: 32 000 B/s).
pub const SAMPLE_RATE: u32 = 16_000;
/// PCM16 bytes per second of audio at [`SAMPLE_RATE`].
pub const PCM_BYTES_PER_SECOND: f64 = 32_000.0;
/// The swarm's seed (its default), also used to re-create its Opus packets.
const SEED: u64 = 1;
/// Sessions whose Opus packets are decoded in the tight loop (scaled to N).
const DECODE_SESSIONS: usize = 16;
/// How much hark's Opus CPU may exceed its PCM16 CPU, as a multiple of libopus's
/// own decode time (issue 12's limit).
pub const OPUS_OVERHEAD_LIMIT: f64 = 1.2;

/// A swarm workload: what every client streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// PCM16 in 100 ms frames (hark's own recommendation).
    #[serde(rename = "pcm16-100ms")]
    Pcm16_100ms,
    /// PCM16 in 20 ms frames.
    #[serde(rename = "pcm16-20ms")]
    Pcm16_20ms,
    /// Opus, one 20 ms packet (`opus_fs320`) per frame.
    #[serde(rename = "opus-20ms")]
    Opus20ms,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 3] =
        [Workload::Pcm16_100ms, Workload::Pcm16_20ms, Workload::Opus20ms];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Pcm16_100ms => "pcm16-100ms",
            Workload::Pcm16_20ms => "pcm16-20ms",
            Workload::Opus20ms => "opus-20ms",
        }
    }

    /// The codec clients send.
    pub fn codec(self) -> Codec {
        match self {
            Workload::Pcm16_100ms | Workload::Pcm16_20ms => Codec::Pcm16,
            Workload::Opus20ms => Codec::OpusFs320,
        }
    }

    /// Audio per frame.
    pub fn frame(self) -> Duration {
        match self {
            Workload::Pcm16_100ms => Duration::from_millis(100),
            Workload::Pcm16_20ms | Workload::Opus20ms => Duration::from_millis(20),
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Workload::ALL.into_iter().find(|w| w.name() == text).ok_or_else(|| {
            let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
            format!("unknown workload {text:?} (workloads: {})", names.join(", "))
        })
    }
}

/// The relay under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Relay {
    /// nginx tunnelling WebSocket upgrades to fake-stt.
    Nginx,
    /// hark, to fake-stt and fake-pusher.
    Hark,
}

impl Relay {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Relay::Nginx => "nginx",
            Relay::Hark => "hark",
        }
    }
}

/// How a bench runs.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// Swarm clients (sessions) per run.
    pub sessions: usize,
    /// The measured steady window.
    #[serde(serialize_with = "seconds")]
    pub window: Duration,
    /// Wait after every client connected, before the window.
    #[serde(serialize_with = "seconds")]
    pub settle: Duration,
    /// Runs of each workload.
    pub runs: usize,
    /// Relays, in the order they run within a workload.
    pub relays: Vec<Relay>,
    /// Workloads, in order.
    pub workloads: Vec<Workload>,
    /// Swarm clients started per second.
    pub ramp_rate: f64,
    /// Extra hark flags (last, so they win).
    pub hark_args: Vec<String>,
    /// Where hark, fake-stt, fake-pusher and swarm are (default: beside the bench).
    #[serde(skip)]
    pub bin_dir: Option<PathBuf>,
    /// Build the binaries first when run under cargo.
    #[serde(skip)]
    pub build: bool,
    /// The nginx binary (default: found on PATH or /usr/sbin).
    #[serde(skip)]
    pub nginx: Option<PathBuf>,
    /// Keep each run's temp dir (configs, logs) under this directory.
    #[serde(skip)]
    pub keep: Option<PathBuf>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Runs every workload × run × relay and returns the report (`command` is only
/// recorded).
pub async fn run(config: BenchConfig, command: String) -> anyhow::Result<BenchReport> {
    let nofile = measure::raise_nofile()?;
    let needed = config.sessions as u64 * 2 + 256;
    let mut notes = Vec::new();
    if nofile < needed {
        notes.push(format!(
            "RLIMIT_NOFILE is {nofile} (hard limit), below the {needed} descriptors {} sessions \
             need in one process",
            config.sessions
        ));
    }
    let machine = measure::Machine::read(nofile);
    let nginx = if config.relays.contains(&Relay::Nginx) {
        Some(nginx::find(config.nginx.as_deref())?)
    } else {
        None
    };
    let bin_dir = procs::locate(config.bin_dir.as_deref(), config.build).await?;
    eprintln!(
        "bench: {} sessions, window {:?}, settle {:?}, {} run(s) of {}; relays {}; nofile {nofile}",
        config.sessions,
        config.window,
        config.settle,
        config.runs,
        config.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(", "),
        config.relays.iter().map(|r| r.name()).collect::<Vec<_>>().join(", "),
    );
    let mut measurements = Vec::new();
    let mut opus = Vec::new();
    for run in 1..=config.runs {
        for &workload in &config.workloads {
            for &relay in &config.relays {
                eprintln!(
                    "bench: run {run}/{}: {} through {}",
                    config.runs,
                    workload.name(),
                    relay.name()
                );
                let m =
                    measure_one(&config, &bin_dir, nginx.as_deref(), nofile, workload, relay, run)
                        .await
                        .with_context(|| {
                            format!("{} through {} (run {run})", workload.name(), relay.name())
                        })?;
                eprintln!(
                    "bench: {} {}: cpu {:.1}% of a core, {:.1} ms/audio MB, {:.1} KiB/session",
                    workload.name(),
                    relay.name(),
                    m.cpu_percent,
                    m.cpu_ms_per_audio_mb,
                    m.kib_per_session
                );
                measurements.push(m);
            }
        }
    }
    if config.workloads.contains(&Workload::Opus20ms) {
        let workload = Workload::Opus20ms;
        let decode = DECODE_SESSIONS.min(config.sessions);
        eprintln!("bench: libopus decode loop: {decode} sessions × {:?}", config.window);
        let window = config.window;
        let sessions = config.sessions;
        let cost = tokio::task::spawn_blocking(move || {
            measure::decode_cost(workload, SAMPLE_RATE, &script(), SEED, window, decode, sessions)
        })
        .await??;
        opus.push(OpusLine::new(cost, &measurements));
    }
    Ok(BenchReport::new(command, machine, config, measurements, opus, notes))
}

/// The swarm's script: one long stretch of talk (utterances and short gaps, audio
/// all the time), so every client streams throughout the window.
fn script() -> Script {
    Script {
        words_per_utterance: 4,
        talk: Duration::from_secs(10 * 3600),
        pause: Duration::from_secs(1),
    }
}

/// What the swarm's stdout reader collects.
#[derive(Debug, Default)]
struct Live {
    connected: u64,
    result: Option<SwarmResult>,
}

type Shared = Arc<Mutex<Live>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Live> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// hark's listeners, from its start-up log line.
type Listening = Arc<Mutex<Option<(std::net::SocketAddr, std::net::SocketAddr)>>>;

async fn measure_one(
    config: &BenchConfig,
    bin_dir: &Path,
    nginx_bin: Option<&Path>,
    nofile: u64,
    workload: Workload,
    relay: Relay,
    run: usize,
) -> anyhow::Result<Measurement> {
    let tmp = tempfile::Builder::new().prefix("hark-bench-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let mut procs = Procs::default();
    let http = Http::default();

    let stt_args: Vec<String> =
        ["--words-per-result", "1", "--latency", "0ms"].into_iter().map(str::to_owned).collect();
    let (stt, stt_addr) =
        procs::spawn_fake(bin_dir, "fake-stt", &stt_args, &dir.join("fake-stt.log")).await?;
    let stt_pid = stt.pid().context("fake-stt has no pid")?;
    procs.add(stt);

    let mut metrics_url = None;
    let (relay_pid, listen) = match relay {
        Relay::Nginx => {
            let listen = nginx::free_port()?;
            let nginx_bin = nginx_bin.context("nginx was not looked up")?;
            let proc =
                nginx::start(nginx_bin, &dir, listen, stt_addr.listen, config.sessions, nofile)
                    .await?;
            let pid = proc.pid().context("nginx has no pid")?;
            procs.add(proc);
            (pid, listen)
        }
        Relay::Hark => {
            let (pusher, pusher_addr) =
                procs::spawn_fake(bin_dir, "fake-pusher", &[], &dir.join("fake-pusher.log"))
                    .await?;
            procs.add(pusher);
            let mut hark = procs::command(bin_dir, "hark")
                .env("RUST_LOG", "info")
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--stt",
                    "deepgram",
                ])
                .arg("--stt-url")
                .arg(format!("ws://{}/v1/listen", stt_addr.listen))
                .args(["--stt-api-key", "bench", "--log-format", "json"])
                .arg("--pusher-url")
                .arg(format!("ws://{}", pusher_addr.listen))
                .arg("--outbox-dir")
                .arg(dir.join("outbox"))
                .arg("--max-sessions")
                .arg((config.sessions * 2).max(1000).to_string())
                .args(&config.hark_args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting hark")?;
            let stderr = hark.stderr.take().context("stderr is piped")?;
            let pid = hark.id().context("hark has no pid")?;
            procs.add(Proc { name: "hark", child: hark });
            let listening: Listening = Arc::default();
            tokio::spawn(copy_hark_log(stderr, dir.join("hark.log"), listening.clone()));
            let deadline = Instant::now() + Duration::from_secs(20);
            let (listen, admin) = loop {
                if let Some(addrs) = *listening.lock().unwrap_or_else(PoisonError::into_inner) {
                    break addrs;
                }
                if let Some(hark) = procs.get_mut("hark") {
                    if let Some(status) = hark.child.try_wait()? {
                        anyhow::bail!(
                            "hark exited at start ({status}); see its log:\n{}",
                            tail(&dir.join("hark.log"))
                        );
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "hark did not report listening within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            metrics_url = Some(format!("http://{admin}/metrics"));
            (pid, listen)
        }
    };

    // Idle: the relay up, no client yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = measure::rss_kib(relay_pid).context("reading the relay's RSS")?;

    // The swarm, until stopped.
    let latency_log = dir.join("latency.csv");
    let mut swarm = procs::command(bin_dir, "swarm");
    swarm
        .arg("--url")
        .arg(format!("ws://{listen}"))
        .args(["--clients", &config.sessions.to_string()])
        .args(["--ramp-rate", &config.ramp_rate.to_string()])
        .args(["--duration", "10h"])
        .args(["--frame", &format!("{}ms", workload.frame().as_millis())])
        .args(["--sample-rate", &SAMPLE_RATE.to_string()])
        .args(["--codec", workload.codec().as_str()])
        .args(["--talk", "10h", "--pause", "1s"])
        .args(["--conversation-timeout", "1s", "--settle", "1s"])
        .args(["--uid-prefix", "bench", "--seed", &SEED.to_string()])
        .arg("--progress-json")
        .arg("--latency-log")
        .arg(&latency_log)
        .stdout(Stdio::piped())
        .stderr(procs::log_file(&dir.join("swarm.log"))?);
    if relay == Relay::Nginx {
        swarm.arg("--plain");
    }
    let mut swarm = swarm.spawn().context("starting swarm")?;
    let swarm_pid = swarm.id().context("swarm has no pid")?;
    let stdout = swarm.stdout.take().context("stdout is piped")?;
    procs.add(Proc { name: "swarm", child: swarm });
    let shared: Shared = Arc::default();
    tokio::spawn(read_swarm(stdout, shared.clone()));

    // Every client connected, then the settle time.
    let ramp = Duration::from_secs_f64(config.sessions as f64 / config.ramp_rate);
    let deadline = Instant::now() + ramp + Duration::from_secs(30);
    let mut last_note = Instant::now();
    loop {
        let connected = lock(&shared).connected;
        if connected >= config.sessions as u64 {
            break;
        }
        check_alive(&mut procs, &dir)?;
        if Instant::now() >= deadline {
            anyhow::bail!(
                "only {connected} of {} clients connected within {:?} (see {})",
                config.sessions,
                ramp + Duration::from_secs(30),
                dir.join("swarm.log").display()
            );
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            eprintln!("bench: {connected}/{} connected", config.sessions);
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("bench: all {} connected; settling {:?}", config.sessions, config.settle);
    tokio::time::sleep(config.settle).await;

    // The window.
    let scrape = |http: Http, url: Option<String>| async move {
        match url {
            Some(url) => http.get(&url).await.ok().map(|text| Scrape::parse(&text)),
            None => None,
        }
    };
    let metrics_before = scrape(http.clone(), metrics_url.clone()).await;
    let from_ms = unix_ms();
    let started = Instant::now();
    let cpu_before = measure::cpu_seconds(relay_pid).context("reading the relay's CPU time")?;
    let load_before = (measure::cpu_seconds(swarm_pid), measure::cpu_seconds(stt_pid));
    let mut rss_samples = Vec::new();
    let mut connected_min = u64::MAX;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = started + config.window;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(end) => break,
        }
        check_alive(&mut procs, &dir)?;
        connected_min = connected_min.min(lock(&shared).connected);
        if let Some(rss) = measure::rss_kib(relay_pid) {
            rss_samples.push(rss);
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed > 0 && elapsed % 5 == 0 {
            eprintln!("bench: window {elapsed}/{}s", config.window.as_secs());
        }
    }
    let cpu_after = measure::cpu_seconds(relay_pid).context("reading the relay's CPU time")?;
    let window_s = started.elapsed().as_secs_f64();
    let to_ms = unix_ms();
    let load_after = (measure::cpu_seconds(swarm_pid), measure::cpu_seconds(stt_pid));
    connected_min = connected_min.min(lock(&shared).connected);
    if let Some(rss) = measure::rss_kib(relay_pid) {
        rss_samples.push(rss);
    }
    let metrics_after = scrape(http.clone(), metrics_url.clone()).await;

    // Stop the swarm (it winds down and prints its result), then everything.
    let _ =
        tokio::process::Command::new("kill").args(["-INT", &swarm_pid.to_string()]).status().await;
    let wait = Instant::now() + Duration::from_secs(30);
    while lock(&shared).result.is_none() && Instant::now() < wait {
        if procs.get_mut("swarm").is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_)))) {
            // Its stdout may still hold the result line.
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    procs.shutdown().await;
    let swarm_result = lock(&shared).result.take();

    let cpu_s = (cpu_after - cpu_before).max(0.0);
    let audio_mb = config.sessions as f64 * window_s * PCM_BYTES_PER_SECOND / 1e6;
    let rss_steady = rss_samples.iter().sum::<f64>() / rss_samples.len().max(1) as f64;
    let percent = |before: Option<f64>, after: Option<f64>| {
        Some((after? - before?).max(0.0) / window_s * 100.0)
    };
    let (words, latency) = if relay == Relay::Hark {
        let (words, qs) = measure::window_latency(&latency_log, from_ms, to_ms, &[0.5, 0.99]);
        (Some(words), qs)
    } else {
        (None, vec![None, None])
    };
    let runtime_lag_p99_ms = match (&metrics_before, &metrics_after) {
        (Some(before), Some(after)) => after
            .histogram(crate::drill::timeline::RUNTIME_LAG)
            .since(&before.histogram(crate::drill::timeline::RUNTIME_LAG))
            .quantile(0.99)
            .map(|s| s * 1000.0),
        _ => None,
    };
    let mut notes = Vec::new();
    if relay == Relay::Hark && (metrics_before.is_none() || metrics_after.is_none()) {
        notes.push("a scrape of hark's /metrics failed; no runtime lag".to_owned());
    }
    if swarm_result.is_none() {
        notes.push("the swarm printed no result".to_owned());
    }
    if connected_min < config.sessions as u64 {
        notes.push(format!(
            "only {connected_min} clients were connected at some point in the window"
        ));
    }
    if let Some(keep) = &config.keep {
        let kept = keep.join(format!("{}-{}-run{run}", workload.name(), relay.name()));
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::create_dir_all(keep)?;
        let path = tmp.keep();
        // A rename fails across file systems; the notes say where it stayed then.
        if std::fs::rename(&path, &kept).is_err() {
            notes.push(format!("run files left in {}", path.display()));
        }
    }
    Ok(Measurement {
        workload: workload.name().to_owned(),
        relay: relay.name().to_owned(),
        run,
        sessions: config.sessions,
        connected_min: if connected_min == u64::MAX { 0 } else { connected_min },
        window_s,
        relay_cpu_s: cpu_s,
        cpu_percent: cpu_s / window_s * 100.0,
        audio_mb,
        cpu_ms_per_audio_mb: if audio_mb > 0.0 { cpu_s * 1000.0 / audio_mb } else { 0.0 },
        rss_idle_kib: rss_idle,
        rss_steady_kib: rss_steady,
        kib_per_session: (rss_steady - rss_idle) / config.sessions.max(1) as f64,
        swarm_cpu_percent: percent(load_before.0, load_after.0),
        fake_stt_cpu_percent: percent(load_before.1, load_after.1),
        words_in_window: words,
        latency_p50_ms: latency[0],
        latency_p99_ms: latency[1],
        runtime_lag_p99_ms,
        text_messages: swarm_result
            .as_ref()
            .map_or(0, |r| r.words.segment_messages + r.words.plain_messages),
        disconnects: swarm_result.as_ref().map_or(0, |r| r.disconnects.values().sum()),
        connect_failures: swarm_result.as_ref().map_or(0, |r| r.connect_failures.values().sum()),
        swarm_errors: swarm_result.map(|r| r.errors).unwrap_or_default(),
        notes,
    })
}

/// Fails when a child died mid-run.
fn check_alive(procs: &mut Procs, dir: &Path) -> anyhow::Result<()> {
    for name in ["fake-stt", "fake-pusher", "nginx", "hark", "swarm"] {
        if let Some(proc) = procs.get_mut(name) {
            if let Ok(Some(status)) = proc.child.try_wait() {
                anyhow::bail!("{name} exited mid-run ({status}); logs in {}", dir.display());
            }
        }
    }
    Ok(())
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

async fn read_swarm(stdout: tokio::process::ChildStdout, shared: Shared) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        match value["type"].as_str() {
            Some("progress") => lock(&shared).connected = value["connected"].as_u64().unwrap_or(0),
            Some("result") => {
                if let Ok(result) = serde_json::from_value::<SwarmResult>(value) {
                    lock(&shared).result = Some(result);
                }
            }
            _ => {}
        }
    }
}

/// Copies hark's stderr to `path`, noting its listeners from the start-up line.
async fn copy_hark_log(stderr: tokio::process::ChildStderr, path: PathBuf, listening: Listening) {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(&path).await.ok().map(tokio::io::BufWriter::new);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addrs) = hark_fakes::process::listening(&line) {
            *listening.lock().unwrap_or_else(PoisonError::into_inner) = Some(addrs);
        }
        if let Some(file) = &mut file {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
            let _ = file.flush().await;
        }
    }
}
