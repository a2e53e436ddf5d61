//! What the fake binaries share: logging to stderr, the JSON lines they print on
//! stdout for a parent process, signals, and argument parsers.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Writes `value` as one JSON line on stdout and flushes, so a parent reading the
/// pipe sees it at once.
pub fn print_json_line(value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&line)?;
    stdout.flush()
}

/// The first line a fake prints: where it listens and where its control port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Addresses {
    /// The service port (WebSocket).
    pub listen: SocketAddr,
    /// The HTTP control port.
    pub control: SocketAddr,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

/// Parses a human-readable duration (`0s`, `250ms`, `2m`) for clap.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{text:?}: {err}"))
}

/// An interval for progress logs that skips missed ticks and does not fire at once.
pub fn progress_interval(every: Duration) -> tokio::time::Interval {
    let every = every.max(Duration::from_millis(100));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval
}

/// What a fake binary does once its servers are up: prints its addresses, calls
/// `progress` every `every` until SIGINT/SIGTERM, then prints `final_stats()`.
pub async fn run_fake<T: Serialize>(
    addresses: Addresses,
    every: Duration,
    mut progress: impl FnMut(),
    final_stats: impl FnOnce() -> T,
) -> anyhow::Result<()> {
    use anyhow::Context;
    print_json_line(&addresses)?;
    let mut ticks = progress_interval(every);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            result = &mut signal => {
                result.context("waiting for signals")?;
                break;
            }
            _ = ticks.tick() => progress(),
        }
    }
    print_json_line(&final_stats())?;
    Ok(())
}
