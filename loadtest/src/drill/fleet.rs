//! The `fleet` drill: two hark pods sharing one Postgres (design §6a, "Shared
//! fallback"), one fake-stt and one fake-pusher. Pusher refuses; conversations end
//! on both pods and are acknowledged `via: fallback`; pod A is killed with SIGKILL
//! mid-outage and its outbox directory deleted; pusher comes back and pod B's
//! drainer must deliver everything from Postgres — pod A's records included.
//!
//! Judged: no acknowledged conversation lost (a record that was only in pod A's
//! deleted local outbox counts as lost, and the report says which), none processed
//! twice, the shared outbox drained to 0 pending (asked of Postgres itself), pod B
//! up at the end, and the fallback path really exercised on pod A before the kill.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hark_fakes::fake_pusher::PusherStats;
use hark_fakes::prom::Scrape;
use hark_store::testing::PgServer;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::Http;
use super::judge::{Target, Verdict};
use super::procs::{self, Proc, Procs};
use super::scenario::{Action, Plan};
use super::{lock, DrillConfig, Shared};
use crate::swarm::{unix_ms, SwarmResult};

/// The SQL the drain target is judged on.
pub const PENDING_SQL: &str = "SELECT count(*) FROM hark_outbox WHERE delivered_at IS NULL";

/// One conversation a client was told was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Acked {
    /// Its id.
    pub id: String,
    /// `pusher` or `fallback`.
    pub via: String,
    /// When the client heard of it.
    pub unix_ms: u64,
    /// The pod whose session announced it (`a`, `b`, or `?`).
    pub pod: String,
}

/// Everything the fleet targets are judged on.
#[derive(Clone, Debug, Default)]
pub struct FleetEvidence {
    /// Conversations the clients were told were created.
    pub acked: Vec<Acked>,
    /// Ids fake-pusher processed.
    pub processed: HashSet<String>,
    /// fake-pusher's duplicate 104s.
    pub duplicates: u64,
    /// Talk stretches with transcript never announced although the session lasted.
    pub never_announced: u64,
    /// Stretches cut short by a disconnect (the kill): never acknowledged.
    pub cut_by_disconnect: u64,
    /// When pod A was killed, if it was.
    pub killed_at_ms: Option<u64>,
    /// Files in pod A's outbox directory when it was deleted.
    pub a_outbox_files: usize,
    /// Conversation ids of the records in it.
    pub a_outbox_ids: Vec<String>,
    /// `hark_outbox` rows not delivered, from Postgres, at the end.
    pub pg_pending: Option<u64>,
    /// `hark_parked` rows at the end.
    pub pg_parked: Option<u64>,
    /// Pod B's process still running at the end.
    pub b_running: bool,
    /// Pod B's `/healthz` answered 200 at the end.
    pub b_healthy: bool,
}

/// Headline figures of a fleet run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FleetFigures {
    /// Acknowledged conversations, by pod and via (`a/fallback` → n).
    pub acked_by: BTreeMap<String, u64>,
    /// Acknowledged conversations never processed by pusher.
    pub lost: Vec<String>,
    /// Of those, records that were only in pod A's deleted outbox.
    pub lost_with_a_outbox: Vec<String>,
    /// Pod A's fallback-acknowledged conversations pusher processed (delivered by B).
    pub a_fallback_delivered: u64,
    /// Files deleted with pod A's outbox directory.
    pub a_outbox_files: usize,
    /// Stretches cut by a disconnect (not acknowledged, not counted as lost).
    pub cut_by_disconnect: u64,
}

/// Judges the fleet targets.
pub fn judge(e: &FleetEvidence) -> (Vec<Target>, FleetFigures) {
    let mut f = FleetFigures {
        a_outbox_files: e.a_outbox_files,
        cut_by_disconnect: e.cut_by_disconnect,
        ..FleetFigures::default()
    };
    for a in &e.acked {
        *f.acked_by.entry(format!("{}/{}", a.pod, a.via)).or_default() += 1;
    }
    let mut seen = HashSet::new();
    let a_outbox: HashSet<&String> = e.a_outbox_ids.iter().collect();
    for a in &e.acked {
        if !seen.insert(&a.id) {
            continue;
        }
        if e.processed.contains(&a.id) {
            if a.pod == "a" && a.via == "fallback" {
                f.a_fallback_delivered += 1;
            }
        } else {
            f.lost.push(a.id.clone());
            if a_outbox.contains(&a.id) {
                f.lost_with_a_outbox.push(a.id.clone());
            }
        }
    }
    let a_fallback_before_kill = e
        .acked
        .iter()
        .filter(|a| a.pod == "a" && a.via == "fallback")
        .filter(|a| e.killed_at_ms.is_none_or(|k| a.unix_ms <= k))
        .count();
    let unique = seen.len();
    let lost = f.lost.len() as u64 + e.never_announced;
    let targets = vec![
        Target {
            id: "fleet_lost",
            name: "Acknowledged conversations lost".into(),
            threshold: "0 (acknowledged but never processed by pusher, records only in pod A's \
                        deleted outbox included; or a stretch never announced)"
                .into(),
            measured: format!(
                "{} lost of {unique} acknowledged ({} of them only in pod A's deleted outbox), \
                 {} never announced; {} stretches cut by the kill (never acknowledged, not \
                 counted)",
                f.lost.len(),
                f.lost_with_a_outbox.len(),
                e.never_announced,
                e.cut_by_disconnect
            ),
            value: Some(lost as f64),
            verdict: verdict(lost == 0),
        },
        Target {
            id: "fleet_duplicates",
            name: "Conversations processed twice".into(),
            threshold: "0 (fake-pusher's duplicate 104s)".into(),
            measured: e.duplicates.to_string(),
            value: Some(e.duplicates as f64),
            verdict: verdict(e.duplicates == 0),
        },
        Target {
            id: "fleet_a_fallback",
            name: "Pod A's fallback conversations delivered by pod B".into(),
            threshold: "≥ 1 acknowledged via fallback on pod A before the kill (else the kill \
                        tests nothing), each processed"
                .into(),
            measured: format!(
                "{a_fallback_before_kill} acknowledged via fallback on pod A before the kill, \
                 {} of pod A's processed",
                f.a_fallback_delivered
            ),
            value: Some(a_fallback_before_kill as f64),
            verdict: verdict(a_fallback_before_kill >= 1 && e.killed_at_ms.is_some()),
        },
        Target {
            id: "fleet_pg_drained",
            name: "Shared outbox drained (Postgres)".into(),
            threshold: format!("0 pending: `{PENDING_SQL}`"),
            measured: match e.pg_pending {
                Some(n) => format!(
                    "{n} pending; {} parked",
                    e.pg_parked.map_or("?".into(), |p| p.to_string())
                ),
                None => "Postgres did not answer".into(),
            },
            value: e.pg_pending.map(|n| n as f64),
            verdict: verdict(e.pg_pending == Some(0)),
        },
        Target {
            id: "fleet_pod_b_up",
            name: "Pod B stays up".into(),
            threshold: "running and /healthz 200 at the end".into(),
            measured: format!(
                "{}, /healthz {}",
                if e.b_running { "running" } else { "EXITED" },
                if e.b_healthy { "200" } else { "failed" }
            ),
            value: None,
            verdict: verdict(e.b_running && e.b_healthy),
        },
        Target {
            id: "fleet_a_outbox",
            name: "Pod A's local outbox when deleted".into(),
            threshold: "reported: a record only there is lost with it".into(),
            measured: format!(
                "{} files ({} acknowledged conversations among them, {} of those lost)",
                e.a_outbox_files,
                e.acked.iter().filter(|a| a_outbox.contains(&a.id)).count(),
                f.lost_with_a_outbox.len()
            ),
            value: Some(e.a_outbox_files as f64),
            verdict: Verdict::Reported,
        },
    ];
    (targets, f)
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// One second of a fleet run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetRow {
    /// Seconds since the swarm's start.
    pub t: f64,
    /// `hark_sessions_active` per pod (A's is `None` once killed).
    pub sessions: [Option<f64>; 2],
    /// `pusher_circuit_breaker_state` per pod.
    pub breaker: [Option<f64>; 2],
    /// `hark_outbox_records` (local) per pod.
    pub local_outbox: [Option<f64>; 2],
    /// Undelivered `hark_outbox` rows, from Postgres.
    pub pg_pending: Option<u64>,
    /// fake-pusher's conversations processed.
    pub processed: Option<u64>,
    /// Swarm clients connected.
    pub clients: Option<u64>,
}

/// A fleet run's report.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// The command.
    pub command: String,
    /// Unix ms of t = 0.
    pub started_unix_ms: u64,
    /// The plan.
    pub plan: Plan,
    /// hark flags after `--`.
    pub hark_extra_args: Vec<String>,
    /// Every judged target met.
    pub passed: bool,
    /// The targets.
    pub targets: Vec<Target>,
    /// Figures.
    pub figures: FleetFigures,
    /// Each pod's name and client URL.
    pub pods: Vec<(String, String)>,
    /// Seconds after t = 0 that pod A was killed.
    pub killed_at_s: Option<f64>,
    /// Pod A's sessions at its last scrape before the kill.
    pub a_sessions_at_kill: Option<f64>,
    /// Conversation ids in pod A's outbox when it was deleted.
    pub a_outbox_ids: Vec<String>,
    /// Per pod: outbox records replayed ok (`hark_outbox_replayed_total{result="ok"}`)
    /// at its last scrape.
    pub replayed_ok: [Option<f64>; 2],
    /// fake-pusher's final counters (subset).
    pub pusher: serde_json::Value,
    /// The swarm's result.
    pub swarm: Option<SwarmResult>,
    /// One row per second.
    pub timeline: Vec<FleetRow>,
    /// Problems met.
    pub notes: Vec<String>,
}

impl FleetReport {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let mut md = String::new();
        let variant = if p.quick { " (quick)" } else { "" };
        let _ = writeln!(md, "# Drill report: `{}`{variant}\n", p.scenario);
        let _ = writeln!(
            md,
            "{}\n",
            if self.passed {
                "**PASS** — every target met"
            } else {
                "**FAIL** — see ❌ below"
            }
        );
        let _ = writeln!(md, "- Scenario: {}", p.description);
        let _ = writeln!(
            md,
            "- Load: {} sessions over two pods (round-robin; a client whose connect fails \
             moves to the other pod), conversations ending after {} s without transcript",
            p.sessions,
            p.conversation_timeout.as_secs()
        );
        let schedule: Vec<String> =
            p.actions.iter().map(|(t, a)| format!("t = {t:.0} s: {a}")).collect();
        let _ = writeln!(md, "- Schedule: {}", schedule.join("; "));
        let _ = writeln!(
            md,
            "- Pods: `HOSTNAME=drill-pod-a` / `drill-pod-b`, one `--outbox-dir` each, one \
             `--database-url` (a throwaway Postgres started by the drill)"
        );
        let mut flags: Vec<String> =
            p.hark_flags.iter().map(|(k, v)| format!("--{k} {v}")).collect();
        flags.extend(self.hark_extra_args.iter().cloned());
        let _ = writeln!(md, "- hark: `{}`", flags.join(" "));
        let _ = writeln!(md, "- Reproduce: `{}`\n", self.command);
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| Target | Threshold | Measured | Result |");
        let _ = writeln!(md, "|---|---|---|---|");
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&t.name),
                cell(&t.threshold),
                cell(&t.measured),
                t.verdict.label()
            );
        }
        let f = &self.figures;
        let _ = writeln!(md, "\n## Figures\n");
        let _ = writeln!(md, "| | |");
        let _ = writeln!(md, "|---|---|");
        let acked: Vec<String> = f.acked_by.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let rows = [
            ("Acknowledged, by pod/via", acked.join(", ")),
            (
                "Pod A killed at",
                self.killed_at_s.map_or("—".into(), |t| {
                    format!(
                        "t = {t:.1} s with {} sessions",
                        self.a_sessions_at_kill.map_or("?".into(), |s| format!("{s:.0}"))
                    )
                }),
            ),
            (
                "Pod A's outbox directory when deleted",
                format!("{} files: {}", f.a_outbox_files, short_list(&self.a_outbox_ids)),
            ),
            ("Pod A's fallback conversations processed", f.a_fallback_delivered.to_string()),
            (
                "Lost (of them only in A's outbox)",
                format!(
                    "{} ({}): {}",
                    f.lost.len(),
                    f.lost_with_a_outbox.len(),
                    short_list(&f.lost)
                ),
            ),
            ("Stretches cut by a disconnect (unacknowledged)", f.cut_by_disconnect.to_string()),
            (
                "Outbox records replayed ok, pod A / pod B",
                format!("{} / {}", opt(self.replayed_ok[0]), opt(self.replayed_ok[1])),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(md, "| {k} | {} |", cell(&v));
        }
        if let Some(s) = &self.swarm {
            for (url, c) in &s.per_url {
                let pod = self.pods.iter().find(|(_, u)| u == url).map_or("?", |(n, _)| n);
                let _ = writeln!(
                    md,
                    "| Swarm on pod {pod} ({url}) | {} clients started, {} sessions opened, {} connect \
                     failures, {} disconnects, created {:?} |",
                    c.clients, c.sessions_opened, c.connect_failures, c.disconnects, c.created
                );
            }
            let _ = writeln!(
                md,
                "| Swarm | {} sessions opened, {} reconnects, disconnects {:?}, connect failures {:?} |",
                s.sessions_opened, s.reconnects, s.disconnects, s.connect_failures
            );
        }
        let _ = writeln!(md, "\n## How it is measured\n");
        for line in METHOD {
            let _ = writeln!(md, "- {line}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }
}

const METHOD: &[&str] = &[
    "Acknowledged = every `conversation_created` a swarm client received (its id, `via` and the \
     pod it came from); lost = acknowledged ids fake-pusher never processed once the drill \
     stopped waiting (pending rows 0 in Postgres and pod B's local outbox empty, or the drain \
     wait over). An id whose record was in pod A's outbox directory when the drill deleted it \
     is listed as lost with it, and counts as lost.",
    "Pod A is killed with SIGKILL: it parks nothing and promotes nothing; the open \
     conversations of its sessions are never acknowledged (the clients count them as stretches \
     cut by a disconnect) and are not counted as lost. Its clients reconnect to pod B.",
    "Before deleting pod A's outbox directory the drill counts every file in it (quarantine \
     included) and reads the conversation id from each record.",
    "Pending = `SELECT count(*) FROM hark_outbox WHERE delivered_at IS NULL`, asked of Postgres \
     with psql every second and at the end.",
    "Duplicates = fake-pusher 104s for an id it had already processed.",
];

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

fn short_list(ids: &[String]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    let mut s = ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 10 {
        let _ = write!(s, ", … ({} more)", ids.len() - 10);
    }
    s
}

/// The conversation ids of the outbox records under `dir` and how many files it
/// holds (every file, quarantined ones included).
pub fn outbox_contents(dir: &Path) -> (usize, Vec<String>) {
    let mut files = 0;
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            if let Some(id) = record_id(&path) {
                ids.push(id);
            }
        }
    }
    ids.sort();
    (files, ids)
}

/// The conversation id in an outbox record file (`HARKOBX1`, length, CRC, JSON).
fn record_id(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let json = bytes.get(16..).filter(|_| bytes.starts_with(b"HARKOBX"))?;
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value["conversation_id"].as_str().map(str::to_owned)
}

/// A Postgres the drill owns; any failure is an error (the drill fails, never skips).
struct Pg(Option<PgServer>);

fn panic_message(err: &(dyn std::any::Any + Send)) -> String {
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl Pg {
    async fn start() -> anyhow::Result<Pg> {
        let server = tokio::task::spawn_blocking(|| {
            std::panic::catch_unwind(PgServer::start).map_err(|e| panic_message(&*e))
        })
        .await
        .context("starting Postgres")?
        .map_err(|msg| {
            anyhow::anyhow!(
                "the fleet drill needs Postgres and it would not start: {msg} (install it \
                 with scripts/setup.sh)"
            )
        })?;
        Ok(Pg(Some(server)))
    }

    fn url(&self) -> String {
        self.0.as_ref().map(PgServer::url).unwrap_or_default()
    }

    /// One number from `sql` (psql on a blocking thread).
    async fn count(&self, sql: &'static str) -> anyhow::Result<u64> {
        let Some(server) = &self.0 else { anyhow::bail!("Postgres is stopped") };
        let port = server.port();
        // psql through PgServer: its own binary and user.
        let out = tokio::task::spawn_blocking(move || psql(port, sql)).await??;
        out.trim().parse().with_context(|| format!("{sql}: {out:?}"))
    }

    async fn stop(mut self) {
        if let Some(server) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }
}

/// Runs `sql` with the newest installed psql against 127.0.0.1:`port`.
fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    let bin = psql_path().context("psql not found under /usr/lib/postgresql/*/bin")?;
    let out = std::process::Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-At", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        anyhow::bail!("{sql}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn psql_path() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin/psql");
            p.is_file().then_some((v, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).or_else(|| {
        let p = PathBuf::from("/usr/bin/psql");
        p.is_file().then_some(p)
    })
}

/// One pod.
struct Pod {
    /// `a` or `b`.
    name: &'static str,
    /// Its process's name in [`Procs`].
    proc: &'static str,
    outbox: PathBuf,
    shared: Shared,
    admin: Option<std::net::SocketAddr>,
    listen: Option<std::net::SocketAddr>,
    pid: Option<u32>,
    killed: bool,
}

/// Runs the fleet drill.
pub async fn run(config: DrillConfig, interrupt: CancellationToken) -> anyhow::Result<FleetReport> {
    let plan = &config.plan;
    let bin_dir = procs::locate(config.bin_dir.as_deref(), config.build).await?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let out = config.out.canonicalize()?;
    let mut notes = Vec::new();

    eprintln!("drill: starting Postgres");
    let pg = Pg::start().await?;
    let result = run_with(&config, &bin_dir, &out, &pg, interrupt, &mut notes).await;
    pg.stop().await;
    let mut report = result?;
    report.notes.splice(0..0, notes);
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(out.join("drill-report.json"), json)?;
    std::fs::write(out.join("drill-report.md"), report.markdown())?;
    let _ = plan;
    Ok(report)
}

async fn run_with(
    config: &DrillConfig,
    bin_dir: &Path,
    out: &Path,
    pg: &Pg,
    interrupt: CancellationToken,
    notes: &mut Vec<String>,
) -> anyhow::Result<FleetReport> {
    let plan = &config.plan;
    let mut procs = Procs::default();
    let http = Http::default();

    let stt_args = vec![
        "--words-per-result".into(),
        "1".into(),
        "--latency".into(),
        format!("{}ms", plan.stt_latency.as_millis()),
    ];
    let (stt, stt_addr) =
        procs::spawn_fake(bin_dir, "fake-stt", &stt_args, &out.join("fake-stt.log")).await?;
    procs.add(stt);
    let (pusher, pusher_addr) =
        procs::spawn_fake(bin_dir, "fake-pusher", &[], &out.join("fake-pusher.log")).await?;
    procs.add(pusher);
    let pusher_control = format!("http://{}", pusher_addr.control);

    // The pods, one after the other (each runs the migrations under a lock anyway).
    let mut pods = [("a", "hark-a"), ("b", "hark-b")].map(|(name, proc)| Pod {
        name,
        proc,
        outbox: out.join(format!("outbox-{name}")),
        shared: Arc::default(),
        admin: None,
        listen: None,
        pid: None,
        killed: false,
    });
    let mut extra = vec!["--database-url".to_owned(), pg.url()];
    extra.extend(config.hark_args.iter().cloned());
    for pod in &mut pods {
        if pod.outbox.exists() {
            std::fs::remove_dir_all(&pod.outbox)
                .with_context(|| format!("clearing {}", pod.outbox.display()))?;
        }
        let mut cmd = super::hark_command(
            bin_dir,
            plan,
            &extra,
            &stt_addr.listen.to_string(),
            &pusher_addr.listen.to_string(),
            &pod.outbox,
        );
        cmd.env("HOSTNAME", format!("drill-pod-{}", pod.name));
        let mut child = cmd.spawn().with_context(|| format!("starting hark pod {}", pod.name))?;
        pod.pid = child.id();
        let stderr = child.stderr.take().context("stderr is piped")?;
        procs.add(Proc { name: pod.proc, child });
        let log = out.join(format!("hark-{}.log", pod.name));
        tokio::spawn(super::read_hark_log(stderr, log.clone(), pod.shared.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (listen, admin) = loop {
            if let Some(addrs) = lock(&pod.shared).listening {
                break addrs;
            }
            let exited = procs.get_mut(pod.proc).and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                anyhow::bail!(
                    "hark pod {} exited at start ({status}); see {}",
                    pod.name,
                    log.display()
                );
            }
            if Instant::now() > deadline || interrupt.is_cancelled() {
                anyhow::bail!(
                    "hark pod {} did not start listening within 30 s; see {}",
                    pod.name,
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        pod.listen = Some(listen);
        pod.admin = Some(admin);
    }
    let urls: Vec<String> =
        pods.iter().map(|p| format!("ws://{}", p.listen.expect("listening"))).collect();
    let names: Vec<&'static str> = pods.iter().map(|p| p.name).collect();
    let pod_of_url =
        |url: &str| urls.iter().position(|u| u == url).map_or("?", |i| names[i]).to_owned();

    eprintln!(
        "drill: {} sessions over pods {}; Postgres at {}; logs and report in {}",
        plan.sessions,
        urls.join(" and "),
        pg.url(),
        out.display()
    );
    let t0_ms = unix_ms();
    let t0 = Instant::now();
    let swarm_shared: Shared = Arc::default();
    let mut swarm = super::spawn_swarm(bin_dir, plan, &urls.join(","), out)?;
    let swarm_out = procs::take_stdout(&mut swarm)?;
    procs.add(swarm);
    tokio::spawn(super::read_swarm(swarm_out, swarm_shared.clone()));

    let mut actions = plan.actions.clone().into_iter().peekable();
    let mut rows: Vec<FleetRow> = Vec::new();
    let mut ticker = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let swarm_limit =
        plan.run_for + plan.conversation_timeout + plan.settle + Duration::from_secs(30);
    let mut swarm_done_at: Option<Instant> = None;
    let mut killed_at_ms = None;
    let mut a_sessions_at_kill = None;
    let mut a_outbox = (0, Vec::new());
    let mut last_scrape: [Option<Scrape>; 2] = [None, None];
    loop {
        let next_at = actions.peek().map(|(at, _)| t0 + Duration::from_secs_f64(*at));
        tokio::select! {
            () = interrupt.cancelled() => anyhow::bail!("interrupted"),
            () = tokio::time::sleep_until(next_at.unwrap_or(t0)), if next_at.is_some() => {
                let (at, action) = actions.next().expect("peeked");
                eprintln!("drill t={at:>5.1}s: {action}");
                match &action {
                    Action::PusherMode { spec } => {
                        if let Err(err) = http.post(&format!("{pusher_control}/mode"), Some(spec)).await {
                            notes.push(format!("t={at}s: {action}: {err:#}"));
                        }
                    }
                    Action::DropLinks => {
                        if let Err(err) = http.post(&format!("{pusher_control}/drop-links"), None).await {
                            notes.push(format!("t={at}s: {action}: {err:#}"));
                        }
                    }
                    Action::SttFault { .. } => notes.push(format!("t={at}s: {action}: not in the fleet drill")),
                    Action::KillPod { pod } => {
                        let Some(pod) = pods.iter_mut().find(|p| p.name == pod) else {
                            anyhow::bail!("no pod {pod}");
                        };
                        let i = if pod.name == "a" { 0 } else { 1 };
                        a_sessions_at_kill =
                            last_scrape[i].as_ref().map(|s| s.get("hark_sessions_active", &[]));
                        let proc = procs.get_mut(pod.proc).context("pod process")?;
                        // start_kill is SIGKILL on Unix.
                        proc.child.start_kill().context("killing the pod")?;
                        let _ = tokio::time::timeout(Duration::from_secs(5), proc.child.wait()).await;
                        pod.killed = true;
                        killed_at_ms = Some(unix_ms());
                        a_outbox = outbox_contents(&pod.outbox);
                        eprintln!(
                            "drill: pod {} killed; its outbox held {} files ({} records); deleting it",
                            pod.name,
                            a_outbox.0,
                            a_outbox.1.len()
                        );
                        if pod.outbox.exists() {
                            std::fs::remove_dir_all(&pod.outbox)
                                .with_context(|| format!("deleting {}", pod.outbox.display()))?;
                        }
                    }
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        // One row: both pods' metrics, Postgres, pusher.
        let mut row = FleetRow { t: t0.elapsed().as_secs_f64(), ..FleetRow::default() };
        for (i, pod) in pods.iter().enumerate() {
            if pod.killed {
                continue;
            }
            let url = format!("http://{}/metrics", pod.admin.expect("admin"));
            if let Ok(text) = http.get(&url).await {
                let scrape = Scrape::parse(&text);
                row.sessions[i] = scrape.value("hark_sessions_active", &[]);
                row.breaker[i] = scrape.value("pusher_circuit_breaker_state", &[]);
                row.local_outbox[i] = scrape.value("hark_outbox_records", &[]);
                last_scrape[i] = Some(scrape);
            }
        }
        row.pg_pending = pg.count(PENDING_SQL).await.ok();
        row.processed = http
            .get(&format!("{pusher_control}/stats"))
            .await
            .ok()
            .and_then(|t| serde_json::from_str::<PusherStats>(&t).ok())
            .map(|s| s.conversations_processed);
        row.clients = lock(&swarm_shared).progress.as_ref().map(|p| p.connected);
        progress_line(&row, plan);
        rows.push(row.clone());

        let swarm_running =
            procs.get_mut("swarm").is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
        if swarm_running {
            if t0.elapsed() > swarm_limit {
                notes.push("the swarm overran its time limit and was stopped".into());
                if let Some(p) = procs.get_mut("swarm") {
                    let _ = p.child.start_kill();
                }
            }
            continue;
        }
        let done_at = *swarm_done_at.get_or_insert_with(Instant::now);
        if actions.peek().is_some() {
            continue;
        }
        let drained = row.pg_pending == Some(0) && row.local_outbox[1] == Some(0.0);
        if drained || done_at.elapsed() >= plan.drain_wait {
            if !drained {
                notes.push(format!(
                    "the outboxes had not drained {}s after the run (Postgres pending {:?}, pod \
                     B local {:?})",
                    plan.drain_wait.as_secs(),
                    row.pg_pending,
                    row.local_outbox[1]
                ));
            }
            break;
        }
    }

    // Final evidence, then stop everything.
    let stats: PusherStats =
        serde_json::from_str(&http.get(&format!("{pusher_control}/stats")).await?)?;
    let processed: Vec<String> =
        serde_json::from_str(&http.get(&format!("{pusher_control}/processed")).await?)?;
    let b = &pods[1];
    let b_running = procs.get_mut(b.proc).is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
    let b_healthy = http.get(&format!("http://{}/healthz", b.admin.expect("admin"))).await.is_ok();
    let pg_pending = match pg.count(PENDING_SQL).await {
        Ok(n) => Some(n),
        Err(err) => {
            notes.push(format!("Postgres: {err:#}"));
            None
        }
    };
    let pg_parked = pg.count("SELECT count(*) FROM hark_parked").await.ok();
    procs.shutdown().await;

    let swarm = std::mem::take(&mut *lock(&swarm_shared)).swarm;
    if swarm.is_none() {
        notes.push("the swarm printed no result (see swarm.log)".into());
    }
    let acked = read_acked(&out.join("conversations.csv"), &pod_of_url);
    let evidence = FleetEvidence {
        acked,
        processed: processed.into_iter().collect(),
        duplicates: stats.duplicates,
        never_announced: swarm.as_ref().map_or(0, |s| s.conversations.never_announced),
        cut_by_disconnect: swarm.as_ref().map_or(0, |s| s.conversations.cut_by_disconnect),
        killed_at_ms,
        a_outbox_files: a_outbox.0,
        a_outbox_ids: a_outbox.1.clone(),
        pg_pending,
        pg_parked,
        b_running,
        b_healthy,
    };
    let (mut targets, figures) = judge(&evidence);
    if swarm.is_none() {
        for t in targets.iter_mut().filter(|t| t.id == "fleet_lost") {
            t.verdict = Verdict::Fail;
            t.measured = format!("{} (no swarm result)", t.measured);
        }
    }
    let replayed = |i: usize| {
        last_scrape[i].as_ref().map(|s| s.get("hark_outbox_replayed_total", &[("result", "ok")]))
    };
    Ok(FleetReport {
        command: config.command.clone(),
        started_unix_ms: t0_ms,
        plan: plan.clone(),
        hark_extra_args: config.hark_args.clone(),
        passed: super::report::Report::all_pass(&targets),
        targets,
        figures,
        pods: names.iter().zip(&urls).map(|(n, u)| ((*n).to_owned(), u.clone())).collect(),
        killed_at_s: killed_at_ms.map(|k| k.saturating_sub(t0_ms) as f64 / 1000.0),
        a_sessions_at_kill,
        a_outbox_ids: a_outbox.1,
        replayed_ok: [replayed(0), replayed(1)],
        pusher: serde_json::json!({
            "tcp_accepts": stats.tcp_accepts,
            "handshakes": stats.handshakes,
            "conversations_processed": stats.conversations_processed,
            "duplicates": stats.duplicates,
            "acks_sent": stats.acks_sent,
            "decode_errors": stats.decode_errors,
        }),
        swarm,
        timeline: rows,
        notes: Vec::new(),
    })
}

fn progress_line(row: &FleetRow, plan: &Plan) {
    let phase = if row.t < plan.fault_at.as_secs_f64() {
        "before"
    } else if row.t < plan.heal_at.as_secs_f64() {
        "FAULT"
    } else {
        "healed"
    };
    let n = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    eprintln!(
        "drill t={:>5.1}s {phase:<6} sessions A/B={}/{} breaker A/B={}/{} local outbox A/B={}/{} \
         pg pending={} processed={} clients={}",
        row.t,
        n(row.sessions[0]),
        n(row.sessions[1]),
        n(row.breaker[0]),
        n(row.breaker[1]),
        n(row.local_outbox[0]),
        n(row.local_outbox[1]),
        row.pg_pending.map_or("-".into(), |v| v.to_string()),
        row.processed.map_or("-".into(), |v| v.to_string()),
        row.clients.map_or("-".into(), |v| v.to_string()),
    );
}

/// `id,via,unix_ms,url` lines from the swarm.
fn read_acked(path: &Path, pod_of_url: &dyn Fn(&str) -> String) -> Vec<Acked> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ',');
            let id = parts.next()?.to_owned();
            let via = parts.next()?.to_owned();
            let unix_ms = parts.next()?.parse().ok()?;
            let pod = pod_of_url(parts.next().unwrap_or(""));
            (!id.is_empty()).then_some(Acked { id, via, unix_ms, pod })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(id: &str, via: &str, at: u64, pod: &str) -> Acked {
        Acked { id: id.into(), via: via.into(), unix_ms: at, pod: pod.into() }
    }

    fn good() -> FleetEvidence {
        FleetEvidence {
            acked: vec![
                acked("a1", "pusher", 1_000, "a"),
                acked("a2", "fallback", 9_000, "a"),
                acked("b1", "fallback", 10_000, "b"),
                acked("b2", "pusher", 40_000, "b"),
            ],
            processed: ["a1", "a2", "b1", "b2"].into_iter().map(String::from).collect(),
            duplicates: 0,
            never_announced: 0,
            cut_by_disconnect: 7,
            killed_at_ms: Some(16_000),
            a_outbox_files: 0,
            a_outbox_ids: vec![],
            pg_pending: Some(0),
            pg_parked: Some(0),
            b_running: true,
            b_healthy: true,
        }
    }

    fn verdict_of(targets: &[Target], id: &str) -> Verdict {
        targets.iter().find(|t| t.id == id).unwrap().verdict
    }

    #[test]
    fn a_good_fleet_run_passes() {
        let (targets, f) = judge(&good());
        assert!(targets.iter().all(|t| t.verdict != Verdict::Fail), "{targets:?}");
        assert_eq!(f.a_fallback_delivered, 1);
        assert_eq!(f.acked_by["a/fallback"], 1);
        assert_eq!(f.cut_by_disconnect, 7);
        assert!(f.lost.is_empty());
    }

    #[test]
    fn a_record_only_in_the_deleted_outbox_is_lost_and_named() {
        let mut e = good();
        e.processed.remove("a2");
        e.a_outbox_files = 2;
        e.a_outbox_ids = vec!["a2".into(), "unacked".into()];
        let (targets, f) = judge(&e);
        assert_eq!(verdict_of(&targets, "fleet_lost"), Verdict::Fail);
        assert_eq!(f.lost, vec!["a2".to_owned()]);
        assert_eq!(f.lost_with_a_outbox, vec!["a2".to_owned()]);
        let report = targets.iter().find(|t| t.id == "fleet_a_outbox").unwrap();
        assert!(report.measured.contains("2 files"), "{}", report.measured);
        assert!(report.measured.contains("1 of those lost"), "{}", report.measured);
    }

    #[test]
    fn each_fleet_target_can_fail() {
        let mut e = good();
        e.duplicates = 1;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_duplicates"), Verdict::Fail);
        let mut e = good();
        e.pg_pending = Some(3);
        assert_eq!(verdict_of(&judge(&e).0, "fleet_pg_drained"), Verdict::Fail);
        e.pg_pending = None;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_pg_drained"), Verdict::Fail);
        let mut e = good();
        e.b_running = false;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_pod_b_up"), Verdict::Fail);
        let mut e = good();
        e.b_healthy = false;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_pod_b_up"), Verdict::Fail);
        // No fallback on pod A before the kill: the kill tested nothing.
        let mut e = good();
        e.acked[1].unix_ms = 20_000;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_a_fallback"), Verdict::Fail);
        let mut e = good();
        e.killed_at_ms = None;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_a_fallback"), Verdict::Fail);
        // A stretch never announced although its session lasted is a loss.
        let mut e = good();
        e.never_announced = 1;
        assert_eq!(verdict_of(&judge(&e).0, "fleet_lost"), Verdict::Fail);
    }

    #[test]
    fn a_repeated_announcement_counts_once() {
        let mut e = good();
        e.acked.push(acked("b1", "fallback", 11_000, "b"));
        e.processed.remove("b1");
        let (_, f) = judge(&e);
        assert_eq!(f.lost, vec!["b1".to_owned()]);
    }

    #[test]
    fn reads_ids_from_outbox_files() {
        let dir = tempfile::tempdir().unwrap();
        let json = br#"{"conversation_id":"c-1","uid":"u"}"#;
        let mut bytes = b"HARKOBX1".to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(json);
        std::fs::write(dir.path().join("0001-c-1.rec"), &bytes).unwrap();
        std::fs::create_dir(dir.path().join("quarantine")).unwrap();
        std::fs::write(dir.path().join("quarantine/junk.rec"), b"junk").unwrap();
        let (files, ids) = outbox_contents(dir.path());
        assert_eq!(files, 2);
        assert_eq!(ids, vec!["c-1".to_owned()]);
        assert_eq!(outbox_contents(&dir.path().join("missing")), (0, vec![]));
    }
}
