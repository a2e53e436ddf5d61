//! A throwaway Postgres cluster: `initdb` + `pg_ctl` in a temp dir, as the
//! `postgres` user when the tests run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::{free_port, is_root, missing, reaper};

const PREFIX: &str = "hark-pg-";

/// A running Postgres cluster on `127.0.0.1:<port>`, user `postgres`, trust auth,
/// no fsync. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    /// Holds `data/`, the socket and the log.
    dir: TempDir,
    /// `initdb`, `pg_ctl`, `psql`.
    bin: PathBuf,
    /// Run the binaries through `runuser -u postgres --`.
    as_postgres: bool,
    /// The port, kept across restarts.
    port: u16,
    /// Whether the server is up.
    running: bool,
}

impl PgServer {
    /// Creates and starts a cluster.
    ///
    /// # Panics
    /// When Postgres is not installed (run `scripts/setup.sh`) or will not start.
    pub fn start() -> Self {
        reap();
        let bin = find_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().expect("temp dir");
        reaper::stamp_owner(dir.path());
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let mut server = Self { dir, bin, as_postgres, port: 0, running: false };
        let data = server.data().display().to_string();
        let out = server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // A free port can be taken between our probe and the server's bind: retry.
        for attempt in 0..5 {
            server.port = free_port();
            if server.try_start() {
                return server;
            }
            eprintln!(
                "postgres did not start on port {} (attempt {attempt}); retrying",
                server.port
            );
        }
        panic!("postgres would not start; log:\n{}", server.log());
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres?sslmode=disable`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let sql = format!("CREATE DATABASE \"{name}\"");
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres", "-c", &sql])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", psql.display()));
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        self.url_for(name)
    }

    /// Runs SQL with `psql` and returns its unaligned output (tests peek at tables).
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let out = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"]);
            assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
            self.running = false;
        }
    }

    /// Starts it again on the same port, data intact.
    ///
    /// # Panics
    /// When it will not start (the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start(),
            "postgres would not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    fn try_start(&mut self) -> bool {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        let socket = self.dir.path().display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {socket} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB \
             -c max_connections=40",
            self.port
        );
        let out = self
            .run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options, "start"]);
        self.running = out.status.success();
        self.running
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        run(&self.bin, self.as_postgres, program, args)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "10", "stop"]);
        }
    }
}

fn run(bin: &Path, as_postgres: bool, program: &str, args: &[&str]) -> Output {
    let path = bin.join(program);
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&path);
        command
    } else {
        Command::new(&path)
    };
    command.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or the directory of `initdb` on PATH.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .unwrap_or_else(|| missing("Postgres (initdb and pg_ctl under /usr/lib/postgresql/*/bin)"))
}

fn chown_to_postgres(dir: &Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| missing("the postgres user (created by the postgresql package)"))
    };
    std::os::unix::fs::chown(dir, Some(id("-u")), Some(id("-g")))
        .expect("chown the temp dir to postgres");
}

/// Stops and deletes clusters whose test process died.
fn reap() {
    for dir in reaper::stale(PREFIX) {
        let data = dir.join("data");
        if data.join("postmaster.pid").is_file() {
            reaper::kill_pid_file(&data.join("postmaster.pid"), "postgres");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
