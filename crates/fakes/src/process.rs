//! A real `hark` process for tests: started on loopback `:0` listeners with JSON
//! logs, found by its start-up line, killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Bound on hark's start-up, spawn to its "listening" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The message of the line hark logs once both listeners are bound.
const LISTENING: &str = "hark is listening";

/// Where a started hark listens: `(client listener, admin listener)` from its
/// start-up line (`--log-format json`), or `None` for any other line.
pub fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &value["fields"];
    if fields["message"] != LISTENING {
        return None;
    }
    let addr = |key: &str| fields[key].as_str()?.parse().ok();
    Some((addr("listen")?, addr("admin")?))
}

/// A running `hark` process.
#[derive(Debug)]
pub struct HarkProcess {
    /// The process (killed on drop).
    pub child: Child,
    /// Its client listener.
    pub client: SocketAddr,
    /// Its admin listener (`/metrics`, `/healthz`, `/ready`).
    pub admin: SocketAddr,
    /// Its stderr lines after start-up.
    pub logs: mpsc::UnboundedReceiver<String>,
}

impl HarkProcess {
    /// Starts `binary` with `args` after `--listen 127.0.0.1:0 --admin-listen
    /// 127.0.0.1:0 --log-format json`, and waits (bounded) for it to listen.
    ///
    /// # Panics
    /// If it cannot be started, exits first, or does not listen in time: a test
    /// cannot go on without it.
    pub async fn start(binary: &Path, args: &[String]) -> HarkProcess {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let found = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addrs) = listening(&line) {
                    return Some(addrs);
                }
            }
            None
        })
        .await;
        let (client, admin) = match found {
            Ok(Some(addrs)) => addrs,
            Ok(None) => panic!("hark exited before listening ({})", binary.display()),
            Err(_) => panic!("hark did not listen within {STARTUP_TIMEOUT:?}"),
        };
        let (tx, logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        HarkProcess { child, client, admin, logs }
    }

    /// The OS process id.
    ///
    /// # Panics
    /// Once the process has been waited for.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("hark is running")
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`), through kill(1) so the tests
    /// need no `unsafe`.
    ///
    /// # Panics
    /// If kill(1) fails.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_both_addresses() {
        let line = r#"{"timestamp":"2026-11-23T12:04:34.991433Z","level":"INFO","fields":{"message":"hark is listening","listen":"127.0.0.1:43667","admin":"127.0.0.1:41309"},"target":"hark_gateway"}"#;
        let (client, admin) = listening(line).unwrap();
        assert_eq!(client, "127.0.0.1:43667".parse().unwrap());
        assert_eq!(admin, "127.0.0.1:41309".parse().unwrap());
        assert_eq!(listening(&line.replace("is listening", "is draining")), None);
        assert_eq!(listening("not json"), None);
    }
}
