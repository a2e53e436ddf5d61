//! `fake-stt`: a Deepgram-compatible STT server with deterministic transcription and
//! run-time faults. Prints `{"listen":..,"control":..}` on start and the final stats
//! JSON on SIGINT/SIGTERM; logs go to stderr.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hark_fakes::fake_stt::{self, FakeStt, FakeSttConfig, SttFault};
use hark_loadtest::cli::{self, Addresses};

/// A Deepgram-compatible streaming STT server for load tests.
///
/// Audio is cut into 0.5 s chunks; a chunk with mean |sample| < 300 is silence,
/// any other is the word VOCAB[round((mean - 1000) / 100)], speaker 1 if its first
/// sample is negative. Control port: GET /stats, GET /fault,
/// POST /fault/{none|close-1011|stall|refuse}.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the WebSocket listener (streams at any path, e.g. /v1/listen).
    #[arg(long, env = "FAKE_STT_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the HTTP control port.
    #[arg(long, env = "FAKE_STT_CONTROL", default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Delay between the audio that completes a result and sending it (e.g. 300ms).
    #[arg(long, env = "FAKE_STT_LATENCY", default_value = "0s", value_parser = cli::parse_duration)]
    latency: Duration,
    /// Words buffered before a result is cut (silence and Finalize cut earlier).
    #[arg(long, env = "FAKE_STT_WORDS_PER_RESULT", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    words_per_result: u16,
    /// Require `Authorization: Token <KEY>` on upgrades (401 otherwise).
    #[arg(long, env = "FAKE_STT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Fault at start: none, close-1011, stall or refuse.
    #[arg(long, env = "FAKE_STT_FAULT", default_value = "none")]
    fault: SttFault,
    /// How often to log a progress line with the counters.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    progress_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    let cfg = FakeSttConfig {
        listen: args.listen,
        latency: args.latency,
        words_per_result: usize::from(args.words_per_result),
        api_key: args.api_key,
        ..FakeSttConfig::default()
    };
    let stt = FakeStt::start(cfg).await.context("binding --listen")?;
    stt.set_fault(args.fault);
    let control =
        fake_stt::serve_control(stt.clone(), args.control).await.context("binding --control")?;
    let progress = || {
        let s = stt.stats();
        tracing::info!(
            fault = %s.fault, active = s.active_streams, connections = s.connections,
            audio_bytes = s.audio_bytes, results = s.results_sent, "progress"
        );
    };
    let addresses = Addresses { listen: stt.addr(), control };
    cli::run_fake(addresses, args.progress_interval, progress, || stt.stats()).await?;
    stt.shutdown().await;
    Ok(())
}
