//! `swarm`: N app clients streaming audio (PCM16 or a device codec) to hark at
//! real-time pace. Prints a
//! progress line every second on stderr and the JSON result on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hark_loadtest::cli;
use hark_loadtest::swarm::{self, CodecMix, Outputs, Script, Source, SwarmConfig};
use tokio_util::sync::CancellationToken;

/// N app clients streaming audio to hark's /v4/listen at real-time pace.
///
/// Each client gets its own uid (<uid-prefix>-<n>) and streams a generated script
/// (fake-stt's vocabulary: utterances of --words-per-utterance words, 0.5-1 s gaps,
/// and a --pause of keep-alives after about --talk seconds, so conversations end)
/// or a WAV file on a loop. Clients start at --ramp-rate per second, stream for
/// --duration, then stop audio, wait up to --conversation-timeout + --settle for
/// their open conversations to be announced, and close with 1000.
///
/// Latency is measured per word: the client runs fake-stt's recogniser over the
/// audio it sends (with a lossy codec, over what hark will decode from its frames), so it knows when the last byte of the chunk that becomes word k
/// left; latency = arrival of the segment holding word k - that instant. This needs
/// hark to talk to fake-stt (any audio, WAV included); against a real STT provider
/// words do not match and only arrival counts are reported (words.unmatched).
///
/// Measured besides: disconnects by close code (any close hark initiates, or a
/// socket that dies; clients then reconnect after 1-5 s unless --no-reconnect),
/// status events, conversations created by via, and talk stretches whose
/// conversation was never announced. Output: a progress line per second on stderr
/// (and as JSON lines on stdout with --progress-json), then the result as one JSON
/// line on stdout (and in --result FILE).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// hark's client address, ws://HOST:PORT (the path /v4/listen is added); or
    /// several, comma-separated: clients are assigned round-robin, and one whose
    /// connect fails tries the next URL (as a load balancer routes around a dead
    /// pod). The result then counts sessions and conversations per URL.
    #[arg(long, env = "SWARM_URL", default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Number of clients.
    #[arg(long, short = 'n', env = "SWARM_CLIENTS", default_value_t = 100)]
    clients: usize,
    /// New clients per second during the ramp-up.
    #[arg(long, env = "SWARM_RAMP_RATE", default_value_t = 20.0)]
    ramp_rate: f64,
    /// How long each client streams, counted from the swarm's start.
    #[arg(long, env = "SWARM_DURATION", default_value = "60s", value_parser = cli::parse_duration)]
    duration: Duration,
    /// Audio per frame (e.g. 20ms, 100ms, 500ms); frames go out at real-time pace.
    #[arg(long, env = "SWARM_FRAME", default_value = "100ms", value_parser = cli::parse_duration)]
    frame: Duration,
    /// Sample rate of the generated signal (a WAV file brings its own).
    #[arg(long, env = "SWARM_SAMPLE_RATE", default_value_t = 8000)]
    sample_rate: u32,
    /// Codec(s) to stream in: one name (pcm16, pcm8, mulaw, opus, opus_fs320,
    /// lc3_fs1030), or a device mix with shares of the clients, e.g.
    /// opus=60,lc3_fs1030=30,pcm16=10. Each client encodes its audio in device-sized
    /// frames (Opus packets of 10 or 20 ms, LC3 frames of 10 ms, PCM one frame per
    /// --frame) and sends every frame a tick completes at that tick. aac is not
    /// streamed (its encoder works on whole clips).
    #[arg(long, env = "SWARM_CODEC", default_value = "pcm16")]
    codec: CodecMix,
    /// Stream this WAV file (16-bit PCM; first channel) on a loop instead of the
    /// generated signal.
    #[arg(long, env = "SWARM_WAV")]
    wav: Option<PathBuf>,
    /// Generated signal: words per utterance.
    #[arg(long, default_value_t = 4)]
    words_per_utterance: usize,
    /// Generated signal: mean talking time between pauses (each stretch 0.5-1.5x).
    #[arg(long, default_value = "20s", value_parser = cli::parse_duration)]
    talk: Duration,
    /// Generated signal: pause between stretches (keep-alives only). Longer than
    /// --conversation-timeout, so every stretch is one conversation.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    pause: Duration,
    /// conversation_timeout query parameter (whole seconds; 0 leaves it unset, i.e.
    /// hark's default of 120 s).
    #[arg(long, default_value = "8s", value_parser = cli::parse_duration)]
    conversation_timeout: Duration,
    /// Extra query parameters appended to the upgrade URL (k=v&k2=v2).
    #[arg(long)]
    query: Option<String>,
    /// Prefix of each client's uid.
    #[arg(long, default_value = "swarm")]
    uid_prefix: String,
    /// Do not reconnect after a disconnect.
    #[arg(long)]
    no_reconnect: bool,
    /// At the end, time to wait for open conversations beyond --conversation-timeout.
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    settle: Duration,
    /// Seed for the per-client scripts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server is a plain WebSocket tunnel to fake-stt (e.g. nginx as a
    /// baseline for `bench`), not hark: its text messages (Deepgram results) are
    /// counted as words.plain_messages and not parsed, so no latency is measured
    /// and no status events are expected.
    #[arg(long)]
    plain: bool,
    /// Also print each progress sample as a JSON line on stdout.
    #[arg(long)]
    progress_json: bool,
    /// Write the result JSON (pretty) to this file too.
    #[arg(long)]
    result: Option<PathBuf>,
    /// Write "sent_unix_ms,latency_us" per matched word to this file.
    #[arg(long)]
    latency_log: Option<PathBuf>,
    /// Write "conversation_id,via,unix_ms" per created conversation to this file.
    #[arg(long)]
    conversation_ids: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.ramp_rate.is_nan() || args.ramp_rate <= 0.0 || args.frame.is_zero()
    {
        anyhow::bail!("--clients, --ramp-rate and --frame must be positive");
    }
    let (source, sample_rate) = match &args.wav {
        Some(path) => Source::wav(path)?,
        None => (
            Source::Generated(Script {
                words_per_utterance: args.words_per_utterance,
                talk: args.talk,
                pause: args.pause,
            }),
            args.sample_rate,
        ),
    };
    let config = SwarmConfig {
        url: args.url,
        clients: args.clients,
        ramp_rate: args.ramp_rate,
        duration: args.duration,
        frame: args.frame,
        sample_rate,
        codecs: args.codec,
        source,
        conversation_timeout: (!args.conversation_timeout.is_zero())
            .then_some(args.conversation_timeout),
        extra_query: args.query,
        uid_prefix: args.uid_prefix,
        reconnect: !args.no_reconnect,
        settle: args.settle,
        seed: args.seed,
        plain: args.plain,
    };
    let outputs = Outputs {
        progress_json: args.progress_json,
        latency_log: args.latency_log,
        conversation_ids: args.conversation_ids,
    };
    let interrupt = CancellationToken::new();
    let signals = interrupt.clone();
    tokio::spawn(async move {
        if cli::shutdown_signal().await.is_ok() {
            signals.cancel();
        }
        if cli::shutdown_signal().await.is_ok() {
            eprintln!("swarm: interrupted twice; exiting");
            std::process::exit(130);
        }
    });
    let result = swarm::run(config, outputs, interrupt).await?;
    if let Some(path) = &args.result {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    cli::print_json_line(&result)?;
    Ok(())
}
