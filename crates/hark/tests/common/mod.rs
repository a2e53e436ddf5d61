//! Runs the real `hark` binary as a child process on loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running `hark` process.
pub struct Hark {
    pub child: Child,
    pub client: SocketAddr,
    pub admin: SocketAddr,
    /// stderr lines after start-up.
    pub logs: mpsc::UnboundedReceiver<String>,
}

impl Hark {
    /// Starts `hark` with `args` (plus loopback `:0` listeners) and waits for its
    /// "listening" line.
    pub async fn start(args: &[String]) -> Hark {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hark"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("hark starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (client, admin) = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["fields"]["message"] == "hark is listening" {
                        let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                        return (addr("listen"), addr("admin"));
                    }
                }
            }
            panic!("hark exited before listening");
        })
        .await
        .expect("hark listens within 20 s");
        let (tx, logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        Hark { child, client, admin, logs }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGKILL`).
    pub fn signal(&self, signal: i32) {
        // kill(1) rather than libc::kill keeps the tests free of `unsafe`.
        let name = match signal {
            libc::SIGKILL => "KILL",
            libc::SIGTERM => "TERM",
            libc::SIGINT => "INT",
            _ => panic!("unsupported signal"),
        };
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// Arguments for a `hark` wired to a fake STT (and optionally a fake pusher), with
/// its outbox in `outbox`, followed by `extra`.
pub fn fake_upstream_args(
    stt_url: &str,
    pusher_url: Option<&str>,
    outbox: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec!["--stt", "deepgram", "--stt-url", stt_url, "--stt-api-key", "k"];
    if let Some(url) = pusher_url {
        args.extend(["--pusher-url", url]);
    }
    args.extend(["--outbox-dir", outbox.to_str().expect("UTF-8 temp path")]);
    args.extend(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// A minimal HTTP/1.0 GET: (status, body, raw headers).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Open file descriptors of a process (sockets included), from `/proc`.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}
