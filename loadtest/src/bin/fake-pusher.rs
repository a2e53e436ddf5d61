//! `fake-pusher`: a pusher (hark design §4) with fault modes switchable at run time.
//! Prints `{"listen":..,"control":..}` on start and the final stats JSON on
//! SIGINT/SIGTERM; logs go to stderr.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hark_fakes::fake_pusher::{self, FakePusher, FakePusherConfig, PusherMode};
use hark_loadtest::cli::{self, Addresses};

/// A pusher for load tests: acks every 104 with a 201 and counts connection
/// attempts per second, frames by code, conversations processed and duplicates.
///
/// Control port: GET /stats, GET /mode, POST /mode with
/// {"mode":"http-429","retry_after":"5"} or {"mode":"slow-ack","delay":"2s"},
/// GET /processed (conversation ids in order), GET /frames (with --record).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the WebSocket listener (/v1/trigger/listen?uid=&sample_rate=).
    #[arg(long, env = "FAKE_PUSHER_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the HTTP control port.
    #[arg(long, env = "FAKE_PUSHER_CONTROL", default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Mode at start: up, refuse, blackhole, stall, close-1011, http-429, http-503,
    /// slow-ack.
    #[arg(long, env = "FAKE_PUSHER_MODE", default_value = "up")]
    mode: String,
    /// Retry-After value (sent verbatim) for --mode http-429/http-503; none if unset.
    #[arg(long, env = "FAKE_PUSHER_RETRY_AFTER")]
    retry_after: Option<String>,
    /// Ack delay for --mode slow-ack.
    #[arg(long, env = "FAKE_PUSHER_ACK_DELAY", default_value = "2s", value_parser = cli::parse_duration)]
    ack_delay: Duration,
    /// Keep every decoded frame in memory (served at GET /frames; for tests and short runs).
    #[arg(long, env = "FAKE_PUSHER_RECORD")]
    record: bool,
    /// How often to log a progress line with the counters.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    progress_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    let delay = (args.mode == "slow-ack").then_some(args.ack_delay);
    let mode = PusherMode::from_parts(&args.mode, args.retry_after, delay).context("--mode")?;
    let cfg = FakePusherConfig { listen: args.listen, mode, record: args.record };
    let pusher = FakePusher::start(cfg).await.context("binding --listen")?;
    let control = fake_pusher::serve_control(pusher.clone(), args.control)
        .await
        .context("binding --control")?;
    let mut last_accepts = 0;
    let progress = || {
        let s = pusher.stats();
        tracing::info!(
            mode = %s.mode, links = s.connections_active, uids = s.uids_connected,
            new_accepts = s.tcp_accepts - last_accepts, processed = s.conversations_processed,
            duplicates = s.duplicates, decode_errors = s.decode_errors, "progress"
        );
        last_accepts = s.tcp_accepts;
    };
    let addresses = Addresses { listen: pusher.addr(), control };
    cli::run_fake(addresses, args.progress_interval, progress, || pusher.stats()).await?;
    pusher.shutdown().await;
    Ok(())
}
