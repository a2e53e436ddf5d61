//! The processes a drill runs: finding (or building) the binaries, spawning them
//! with their output captured, and making sure every one is killed when the drill
//! ends, however it ends.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::cli::Addresses;

/// The binaries a drill needs.
pub const BINARIES: [&str; 4] = ["hark", "fake-stt", "fake-pusher", "swarm"];

/// Variables cargo sets for the program it runs (prefixes), as opposed to its own
/// configuration (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, …).
const RUNTIME_VARS: [&str; 10] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_MAKEFLAGS",
    "OUT_DIR",
];

/// Bound on a child's first line (its addresses).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the binaries are: `dir` if given (used as it is), else the drill's own
/// directory. Under cargo (`CARGO` is set) and with `build`, they are built first
/// with the drill's own profile — a no-op when fresh — so the drill never runs a
/// stale binary; otherwise they must already be there.
pub async fn locate(dir: Option<&Path>, build: bool) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("finding the drill's own path")?;
            let own = exe.parent().context("the drill's path has no directory")?.to_path_buf();
            if let Some(cargo) = std::env::var_os("CARGO").filter(|_| build) {
                let release = own.file_name().is_some_and(|n| n == "release");
                eprintln!("drill: building {} with cargo first", BINARIES.join(", "));
                cargo_build(&cargo, &["hark", "hark-loadtest"], release).await?;
            }
            own
        }
    };
    if let Some(missing) = BINARIES.iter().find(|b| !dir.join(b).is_file()) {
        anyhow::bail!(
            "{missing} not found in {}; build the binaries with `cargo build --release -p hark \
             -p hark-loadtest --bins`, or point --bin-dir at them",
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs `cargo build --locked --bins` for `packages` (with `--release` if asked)
/// and returns each binary cargo reports, by name. Cargo's own freshness check
/// decides what is rebuilt, so a caller never runs a stale binary.
pub async fn cargo_build(
    cargo: &OsStr,
    packages: &[&str],
    release: bool,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--bins", "--message-format=json-render-diagnostics"]);
    // What cargo set for the running package (`cargo run`, `cargo test`) is not
    // configuration: build scripts that track `CARGO_PKG_NAME` and the like would
    // see it "change" and rebuild their crates each time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if RUNTIME_VARS.iter().any(|prefix| name.starts_with(prefix)) {
            cmd.env_remove(&*name);
        }
    }
    for package in packages {
        cmd.args(["-p", package]);
    }
    if release {
        cmd.arg("--release");
    }
    let out = cmd.stderr(Stdio::inherit()).output().await.context("running cargo build")?;
    if !out.status.success() {
        anyhow::bail!("cargo build -p {} failed ({})", packages.join(" -p "), out.status);
    }
    let mut binaries = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let (Some(name), Some(exe)) =
            (message["target"]["name"].as_str(), message["executable"].as_str())
        {
            binaries.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(binaries)
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Its name, for messages.
    pub name: &'static str,
    /// The process.
    pub child: Child,
}

impl Proc {
    /// The OS process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Every child of the drill. Dropping it kills them all (SIGKILL), which also
/// happens on an error, a panic, or Ctrl-C (the drill returns, the guard drops).
#[derive(Debug, Default)]
pub struct Procs(Vec<Proc>);

impl Procs {
    /// Takes ownership of a child.
    pub fn add(&mut self, proc: Proc) {
        self.0.push(proc);
    }

    /// The child named `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Proc> {
        self.0.iter_mut().find(|p| p.name == name)
    }

    /// Kills every child and waits (bounded) for each to be reaped.
    pub async fn shutdown(&mut self) {
        for proc in &mut self.0 {
            let _ = proc.child.start_kill();
        }
        for proc in &mut self.0 {
            let _ = tokio::time::timeout(Duration::from_secs(5), proc.child.wait()).await;
        }
        self.0.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for proc in &mut self.0 {
            // `kill_on_drop` does the same; this makes the intent explicit.
            let _ = proc.child.start_kill();
        }
    }
}

/// A command that is killed when its handle drops, with stdin closed.
pub fn command(bin_dir: &Path, name: &str) -> Command {
    let mut cmd = Command::new(bin_dir.join(name));
    cmd.kill_on_drop(true).stdin(Stdio::null());
    cmd
}

/// Opens `path` for a child's stderr.
pub fn log_file(path: &Path) -> anyhow::Result<Stdio> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(Stdio::from(file))
}

/// Spawns a fake (`fake-stt`/`fake-pusher`) and reads its addresses line.
pub async fn spawn_fake(
    bin_dir: &Path,
    name: &'static str,
    args: &[String],
    log: &Path,
) -> anyhow::Result<(Proc, Addresses)> {
    let mut child = command(bin_dir, name)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file(log)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("{name} printed no addresses within {STARTUP_TIMEOUT:?}"))??
        .with_context(|| {
            format!("{name} exited before printing its addresses (see {})", log.display())
        })?;
    let addresses: Addresses =
        serde_json::from_str(&line).with_context(|| format!("{name} printed {line:?}"))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Proc { name, child }, addresses))
}

/// Takes a child's stdout.
pub fn take_stdout(proc: &mut Proc) -> anyhow::Result<ChildStdout> {
    proc.child.stdout.take().context("stdout is piped")
}

/// Takes a child's stderr.
pub fn take_stderr(proc: &mut Proc) -> anyhow::Result<ChildStderr> {
    proc.child.stderr.take().context("stderr is piped")
}

/// hark's resident-set high-water mark (MiB), current RSS (MiB) and CPU seconds
/// (user + system), from `/proc`. `None` where it cannot be read.
pub fn proc_usage(pid: u32) -> (Option<f64>, Option<f64>, Option<f64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let field = |name: &str| {
        status.as_deref().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        })
    };
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
        // Fields after the parenthesised command name; utime and stime are the
        // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    });
    (field("VmHWM:"), field("VmRSS:"), cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let (hwm, rss, cpu) = proc_usage(std::process::id());
        assert!(hwm.unwrap() > 0.0 && rss.unwrap() > 0.0);
        assert!(cpu.unwrap() >= 0.0);
        assert_eq!(proc_usage(u32::MAX), (None, None, None));
    }
}
