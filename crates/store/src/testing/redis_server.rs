//! A throwaway `redis-server`: no persistence, its own temp dir and port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, missing, reaper};

const PREFIX: &str = "hark-redis-";

/// A running `redis-server` on `127.0.0.1:<port>`. Killed and deleted on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// Holds the pid file and the log.
    dir: TempDir,
    /// The binary.
    bin: PathBuf,
    /// The port, kept across restarts.
    port: u16,
    /// The server process while it runs.
    child: Option<Child>,
}

/// Calls per command from `INFO commandstats` (`evalsha`, `script|load`, …).
pub type CommandStats = BTreeMap<String, u64>;

impl RedisServer {
    /// Starts a server.
    ///
    /// # Panics
    /// When `redis-server` is not installed (run `scripts/setup.sh`) or will not start.
    pub fn start() -> Self {
        reap();
        let bin = find_bin();
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().expect("temp dir");
        reaper::stamp_owner(dir.path());
        let mut server = Self { dir, bin, port: 0, child: None };
        for attempt in 0..5 {
            server.port = free_port();
            if server.try_start() {
                return server;
            }
            eprintln!(
                "redis-server did not start on port {} (attempt {attempt}); retrying",
                server.port
            );
        }
        panic!("redis-server would not start; log:\n{}", server.log());
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (an abrupt outage; nothing is persisted, so it comes back empty).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: no scripts, no keys).
    ///
    /// # Panics
    /// When it will not start.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start(),
            "redis-server would not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Runs one command and returns the reply as text (bulk, status or integer).
    ///
    /// # Panics
    /// On an error reply or a broken connection.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        let line = line.trim_end();
        match line.split_at(1) {
            ("+" | ":", rest) => rest.to_owned(),
            ("-", error) => panic!("redis {args:?}: {error}"),
            ("$", len) => {
                let Ok(len) = len.parse::<usize>() else { return String::new() };
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).expect("bulk reply");
                body.truncate(len);
                String::from_utf8_lossy(&body).into_owned()
            }
            _ => panic!("redis {args:?}: unexpected reply {line:?}"),
        }
    }

    /// Calls per command since the server started or [`reset_stats`](Self::reset_stats),
    /// not counting the `INFO` that reads them.
    pub fn command_stats(&self) -> CommandStats {
        let info = self.command(&["INFO", "commandstats"]);
        let mut stats = CommandStats::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
            let Some((name, fields)) = rest.split_once(':') else { continue };
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|calls| calls.parse::<u64>().ok())
                .unwrap_or(0);
            stats.insert(name.to_owned(), calls);
        }
        // The INFO that produced this report is counted in it.
        if let Some(info) = stats.get_mut("info") {
            *info = info.saturating_sub(1);
        }
        stats.retain(|_, calls| *calls > 0);
        stats
    }

    /// Zeroes the command statistics (`CONFIG RESETSTAT`).
    pub fn reset_stats(&self) {
        self.command(&["CONFIG", "RESETSTAT"]);
    }

    fn try_start(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let pidfile = self.dir.path().join("redis.pid").display().to_string();
        let logfile = self.dir.path().join("redis.log").display().to_string();
        let child = Command::new(&self.bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--dir",
                &dir,
                "--pidfile",
                &pidfile,
                "--logfile",
                &logfile,
                "--daemonize",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => panic!("{}: {e}", self.bin.display()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                // Most often the port was taken meanwhile; say what it said.
                let mut out = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut out);
                }
                eprintln!("redis-server on port {port} exited ({status}): {out}{}", self.log());
                return false;
            }
            if self.answers_ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_bin() -> PathBuf {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("redis-server"))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| missing("redis-server"))
}

/// Kills and deletes servers whose test process died.
fn reap() {
    for dir in reaper::stale(PREFIX) {
        reaper::kill_pid_file(&dir.join("redis.pid"), "redis-server");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
