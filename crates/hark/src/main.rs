//! `hark`: parse and validate the command line, start the gateway, drain on
//! SIGTERM/SIGINT. Thin on purpose: everything else lives in `hark-gateway`.

mod cli;

use std::process::ExitCode;

use hark_gateway::config::SttConfig;
use hark_gateway::Gateway;
use tracing_subscriber::EnvFilter;

/// `EX_USAGE` from sysexits(3): a bad flag or environment value.
const EXIT_USAGE: u8 = 64;
/// `EX_UNAVAILABLE`-ish: the process could not start (bind, outbox, STT).
const EXIT_START: u8 = 69;

/// jemalloc in production; `--features system-allocator` swaps in glibc's malloc
/// for heap profilers that hook it (heaptrack; see docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One clear line naming the flag, not a page of usage.
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments").trim();
            eprintln!("hark: {} (see hark --help)", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let log_format = cli.log_format;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(invalid) => {
            eprintln!("hark: {invalid}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(log_format);
    if matches!(config.auth, hark_gateway::config::AuthConfig::None) {
        tracing::warn!("authentication is off (--auth none): any client can connect as any uid");
    }
    raise_open_file_limit(config.limits.max_sessions.get());
    match &config.stt {
        SttConfig::Local { decoders, .. } => tracing::info!(
            decoders = decoders.get(),
            "speech to text: embedded local engine (PocketSphinx; pass --stt-url or an API key for Deepgram)"
        ),
        SttConfig::Deepgram { url, model, api_key, .. } => tracing::info!(
            %url, %model, key = api_key.is_some(), "speech to text: Deepgram-compatible provider"
        ),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hark: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: hark_gateway::config::GatewayConfig) -> ExitCode {
    let gateway = match Gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("hark: {error}");
            return ExitCode::from(EXIT_START);
        }
    };
    wait_for_signal().await;
    gateway.drain();
    // A second signal skips the rest of the drain.
    let open = tokio::select! {
        open = gateway.wait() => open,
        () = wait_for_signal() => {
            tracing::warn!("second signal: exiting without waiting for sessions");
            return ExitCode::SUCCESS;
        }
    };
    if open > 0 {
        tracing::warn!(sessions = open, "drain timeout passed with sessions still open");
    }
    tracing::info!("hark stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn init_logging(format: cli::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

/// Raises the soft open-file limit to the hard one. Each session holds three
/// sockets (client, STT, pusher) and a pod at `--max-sessions` also carries
/// not-yet-upgraded connections; the usual soft default of 1,024 would turn into
/// `accept failed: too many open files` long before any of Hark's own limits.
fn raise_open_file_limit(max_sessions: usize) {
    let wanted = (max_sessions as u64).saturating_mul(4).saturating_add(256);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below 4 per session at --max-sessions; raise `ulimit -n` (hard) or lower --max-sessions"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}
