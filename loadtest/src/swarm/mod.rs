//! `swarm`: N app clients streaming PCM to hark at real-time pace, ramping up at a
//! set rate, measuring what an app would feel.
//!
//! Each client runs on its own task ([`client`]): it streams frames from its
//! [`audio::AudioStream`], reads transcripts and events, and pairs every received
//! word with the chunk of audio that produced it ([`matcher`]), which gives the
//! per-word latency from "audio sent" to "segment received". A server-side close
//! is a disconnect (counted by close code) and the client reconnects after a
//! jittered delay, as an app would. At the end of the run, clients stop audio,
//! wait for their open conversations to be handed off, and close normally.
//!
//! Everything measured lands in one [`Aggregate`]; [`run`] prints a progress line
//! every second and returns a [`SwarmResult`].

pub mod audio;
mod client;
pub mod codec;
pub mod matcher;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hark_proto::Via;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::latency::{Latencies, LatencySummary};
pub use audio::{Script, Source};
pub use codec::CodecMix;

/// How a swarm runs.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// `ws://host:port` of hark (the client path `/v4/listen` is added), or several
    /// separated by commas: client `n` starts on the `n % count`-th (round-robin)
    /// and, when a connect to its URL fails, tries the next one, as a load balancer
    /// would route around a dead pod.
    pub url: String,
    /// Clients.
    pub clients: usize,
    /// New clients per second during the ramp-up.
    pub ramp_rate: f64,
    /// How long clients stream (from the swarm's start) before winding down.
    pub duration: Duration,
    /// Audio per frame.
    pub frame: Duration,
    /// Sample rate of the audio sent.
    pub sample_rate: u32,
    /// The codecs clients stream in, and their shares of the clients.
    pub codecs: CodecMix,
    /// The audio.
    pub source: Source,
    /// `conversation_timeout` query parameter, if set.
    pub conversation_timeout: Option<Duration>,
    /// Extra query parameters (`k=v&…`).
    pub extra_query: Option<String>,
    /// Prefix of the per-client uid (`<prefix>-<n>`).
    pub uid_prefix: String,
    /// Reconnect after a disconnect (after a jittered 1–5 s).
    pub reconnect: bool,
    /// At the end, how long clients wait for open conversations to be handed off
    /// on top of `conversation_timeout`.
    pub settle: Duration,
    /// Seed for the per-client scripts.
    pub seed: u64,
    /// The server is a plain WebSocket tunnel to fake-stt (a reverse proxy used as
    /// a baseline), not hark: its text messages are Deepgram results, counted in
    /// `plain_messages` and otherwise ignored (no latency, no status events).
    pub plain: bool,
}

impl SwarmConfig {
    /// The URLs in `url` (comma-separated, blanks ignored); at least one.
    pub fn urls(&self) -> Vec<String> {
        split_urls(&self.url)
    }
}

/// Splits a comma-separated URL list, trimming each and its trailing `/`.
pub fn split_urls(list: &str) -> Vec<String> {
    let urls: Vec<String> = list
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        vec![list.trim().to_owned()]
    } else {
        urls
    }
}

/// What happened on one of several URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlCounts {
    /// Clients that started on this URL (round-robin).
    pub clients: u64,
    /// Successful upgrades.
    pub sessions_opened: u64,
    /// Failed connects.
    pub connect_failures: u64,
    /// Disconnects of sessions on this URL.
    pub disconnects: u64,
    /// Conversations announced to sessions on this URL, by via.
    pub created: BTreeMap<String, u64>,
}

/// Live counters shared by every client.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// Clients with an open socket now.
    pub connected: u64,
    /// Most clients connected at once.
    pub connected_peak: u64,
    /// Upgrades that succeeded.
    pub sessions_opened: u64,
    /// Connects after a disconnect.
    pub reconnects: u64,
    /// Failed connects by kind (`http_503`, `error`, …).
    pub connect_failures: BTreeMap<String, u64>,
    /// Binary audio frames sent (device frames: one per Opus packet, say).
    pub frames_sent: u64,
    /// PCM16 bytes of the audio sent (before encoding).
    pub audio_bytes: u64,
    /// Bytes of the binary audio frames sent (after encoding).
    pub wire_bytes: u64,
    /// Keep-alives sent.
    pub keepalives: u64,
    /// Words whose audio was sent (as fake-stt will hear them).
    pub words_sent: u64,
    /// Received words matched to sent audio.
    pub words_matched: u64,
    /// Sent words skipped or expired (never transcribed).
    pub words_lost: u64,
    /// Received words that matched nothing.
    pub words_unmatched: u64,
    /// Segment messages received.
    pub segment_messages: u64,
    /// Text messages received from a plain tunnel (`SwarmConfig::plain`).
    pub plain_messages: u64,
    /// Latency of every matched word.
    pub latency: Latencies,
    /// Latency of words matched since the last progress tick.
    pub window: Latencies,
    /// `(sent unix ms, latency µs)` not yet written to the latency log.
    pub samples: Vec<(u64, u64)>,
    /// Server-side closes and socket errors, by close code (`none`: no close frame).
    pub disconnects: BTreeMap<String, u64>,
    /// `(unix ms, code)` of every disconnect.
    pub disconnect_times: Vec<(u64, String)>,
    /// `service_status` events by status.
    pub statuses: BTreeMap<String, u64>,
    /// `processing_status` events by status.
    pub processing: BTreeMap<String, u64>,
    /// Clients that ended with a last `service_status` other than `ready` (the omi
    /// app would show "connecting" instead of "listening").
    pub ended_not_ready: u64,
    /// Clients whose latest processing status is `degraded`.
    pub degraded_now: u64,
    /// Conversations created, by `via`.
    pub created: BTreeMap<String, u64>,
    /// Every created conversation: `(id, via, unix ms, index of the URL)`.
    pub created_ids: Vec<(String, String, u64, usize)>,
    /// Per URL (index into [`SwarmConfig::urls`]).
    pub per_url: BTreeMap<usize, UrlCounts>,
    /// Talk stretches for which the client received transcript.
    pub blocks_with_transcript: u64,
    /// Of those, stretches whose conversation was never announced although the
    /// session stayed open to the end.
    pub blocks_without_created: u64,
    /// Of those, stretches cut short by a disconnect (announcement impossible).
    pub blocks_cut_by_disconnect: u64,
    /// Clients that ended degraded (no `recovered` after their last `degraded`).
    pub ended_degraded: u64,
    /// The first few errors, for the report.
    pub errors: Vec<String>,
}

impl Aggregate {
    /// Records an error message (the first 20 are kept).
    pub fn error(&mut self, message: String) {
        if self.errors.len() < 20 {
            self.errors.push(message);
        }
    }
}

/// Shared by the clients and the progress task.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: SwarmConfig,
    /// Counters.
    pub agg: Mutex<Aggregate>,
    /// Cancelled when clients should wind down (duration over or interrupted).
    pub wind_down: CancellationToken,
    /// Cancelled to stop at once (second interrupt or wind-down overrun).
    pub abort: CancellationToken,
}

impl Shared {
    /// Locks the counters (never held across an `.await`).
    pub fn agg(&self) -> std::sync::MutexGuard<'_, Aggregate> {
        self.agg.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One progress sample (also printed as a JSON line with `--progress-json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Always `"progress"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the swarm started.
    pub t: f64,
    /// Unix milliseconds now.
    pub unix_ms: u64,
    /// Clients connected.
    pub connected: u64,
    /// Audio frames sent so far.
    pub frames: u64,
    /// Words matched so far.
    pub words: u64,
    /// p50 of word latency over the last interval (ms).
    pub latency_p50_ms: Option<f64>,
    /// p99 of word latency over the last interval (ms).
    pub latency_p99_ms: Option<f64>,
    /// Disconnects so far.
    pub disconnects: u64,
    /// Conversations created via pusher so far.
    pub created_pusher: u64,
    /// Conversations created via the fallback path so far.
    pub created_fallback: u64,
    /// Clients whose latest status is `degraded`.
    pub degraded: u64,
}

/// The swarm's machine-readable result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmResult {
    /// Always `"result"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Clients configured.
    pub clients: usize,
    /// Unix ms the swarm started (t = 0).
    pub started_unix_ms: u64,
    /// Seconds from start to the end of the wind-down.
    pub elapsed_s: f64,
    /// Streaming time per client, seconds.
    pub duration_s: f64,
    /// Sample rate.
    pub sample_rate: u32,
    /// Frame length, ms.
    pub frame_ms: f64,
    /// `generated` or `wav`.
    pub source: String,
    /// Most clients connected at once.
    pub connected_peak: u64,
    /// Successful upgrades.
    pub sessions_opened: u64,
    /// Reconnects after disconnects.
    pub reconnects: u64,
    /// Failed connects by kind.
    pub connect_failures: BTreeMap<String, u64>,
    /// Binary audio frames sent.
    pub frames_sent: u64,
    /// Seconds of audio sent, all clients.
    pub audio_seconds: f64,
    /// Bytes of encoded audio sent, all clients.
    pub wire_bytes: u64,
    /// Clients per codec.
    pub codecs: BTreeMap<String, u64>,
    /// Keep-alives sent.
    pub keepalives: u64,
    /// Word accounting.
    pub words: WordCounts,
    /// Word latency, audio sent → segment received.
    pub latency: LatencySummary,
    /// Disconnects by close code.
    pub disconnects: BTreeMap<String, u64>,
    /// `(unix ms, code)` per disconnect.
    pub disconnect_times: Vec<(u64, String)>,
    /// `service_status` events by status.
    pub statuses: BTreeMap<String, u64>,
    /// `processing_status` events by status.
    #[serde(default)]
    pub processing: BTreeMap<String, u64>,
    /// Clients that ended with a last `service_status` other than `ready`.
    #[serde(default)]
    pub ended_not_ready: u64,
    /// Clients that ended degraded.
    pub ended_degraded: u64,
    /// Conversation accounting.
    pub conversations: ConversationCounts,
    /// First errors seen.
    pub errors: Vec<String>,
    /// Per URL, when `--url` named several (keyed by URL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_url: BTreeMap<String, UrlCounts>,
}

/// How the words fared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WordCounts {
    /// Words whose audio was sent.
    pub sent: u64,
    /// Received and matched.
    pub matched: u64,
    /// Never transcribed (skipped or expired).
    pub lost: u64,
    /// Received, matching nothing sent.
    pub unmatched: u64,
    /// Segment messages received.
    pub segment_messages: u64,
    /// Text messages received from a plain tunnel (`--plain`), not parsed.
    #[serde(default)]
    pub plain_messages: u64,
}

/// How the conversations fared, from the clients' side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationCounts {
    /// Created, by via.
    pub created: BTreeMap<String, u64>,
    /// All created.
    pub total: u64,
    /// Talk stretches that produced transcript.
    pub with_transcript: u64,
    /// Of those, never announced although the session lasted.
    pub never_announced: u64,
    /// Of those, cut short by a disconnect.
    pub cut_by_disconnect: u64,
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// Where the swarm writes besides stdout/stderr.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Print each progress sample as a JSON line on stdout.
    pub progress_json: bool,
    /// Append `sent_unix_ms,latency_us` per matched word.
    pub latency_log: Option<PathBuf>,
    /// Write `id,via,unix_ms,url` per created conversation at the end.
    pub conversation_ids: Option<PathBuf>,
}

/// Runs the swarm until every client wound down (or `abort`). `interrupt` starts
/// the wind-down early.
pub async fn run(
    config: SwarmConfig,
    outputs: Outputs,
    interrupt: CancellationToken,
) -> anyhow::Result<SwarmResult> {
    config.codecs.check(config.sample_rate)?;
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let shared = Arc::new(Shared {
        config: config.clone(),
        agg: Mutex::new(Aggregate::default()),
        wind_down: CancellationToken::new(),
        abort: CancellationToken::new(),
    });
    let mut latency_log = match &outputs.latency_log {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.clients {
        let at = started + Duration::from_secs_f64(index as f64 / config.ramp_rate.max(0.001));
        tasks.spawn(client::run(shared.clone(), index, at));
    }
    // The wind-down lasts at most this long before clients are aborted.
    let wind_down_limit = config.conversation_timeout.unwrap_or(Duration::ZERO)
        + config.settle
        + Duration::from_secs(10);
    let end = started + config.duration;
    let mut progress =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut abort_at: Option<Instant> = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                match joined {
                    None => break,
                    Some(Err(err)) if err.is_panic() => shared.agg().error(format!("client panicked: {err}")),
                    Some(_) => {}
                }
            }
            () = tokio::time::sleep_until(end), if !shared.wind_down.is_cancelled() => {
                shared.wind_down.cancel();
                abort_at = Some(Instant::now() + wind_down_limit);
            }
            () = interrupt.cancelled(), if !shared.wind_down.is_cancelled() => {
                eprintln!("swarm: interrupted; winding down (interrupt again to stop at once)");
                shared.wind_down.cancel();
                abort_at = Some(Instant::now() + wind_down_limit);
            }
            () = tokio::time::sleep_until(abort_at.unwrap_or(end)), if abort_at.is_some() && !shared.abort.is_cancelled() => {
                shared.agg().error("wind-down overran its limit; clients aborted".into());
                shared.abort.cancel();
            }
            _ = progress.tick() => {
                let sample = take_progress(&shared, started, &mut latency_log);
                report_progress(&sample, config.clients, outputs.progress_json);
            }
        }
    }
    let sample = take_progress(&shared, started, &mut latency_log);
    report_progress(&sample, config.clients, outputs.progress_json);
    if let Some(mut log) = latency_log {
        log.flush()?;
    }
    let agg = std::mem::take(&mut *shared.agg());
    if let Some(path) = &outputs.conversation_ids {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let urls = config.urls();
        for (id, via, at, url) in &agg.created_ids {
            let url = urls.get(*url).map_or("", String::as_str);
            writeln!(out, "{id},{via},{at},{url}")?;
        }
        out.flush()?;
    }
    Ok(result(&config, agg, started_unix_ms, started.elapsed()))
}

fn take_progress(
    shared: &Shared,
    started: Instant,
    log: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> Progress {
    let mut agg = shared.agg();
    let samples = std::mem::take(&mut agg.samples);
    if let Some(log) = log {
        for (sent, micros) in samples {
            // A failed log write loses samples, not the run.
            let _ = writeln!(log, "{sent},{micros}");
        }
    }
    let sample = Progress {
        kind: "progress".into(),
        t: started.elapsed().as_secs_f64(),
        unix_ms: unix_ms(),
        connected: agg.connected,
        frames: agg.frames_sent,
        words: agg.words_matched,
        latency_p50_ms: agg.window.quantile_ms(0.5),
        latency_p99_ms: agg.window.quantile_ms(0.99),
        disconnects: agg.disconnects.values().sum(),
        created_pusher: agg.created.get(Via::Pusher.as_str()).copied().unwrap_or(0),
        created_fallback: agg.created.get(Via::Fallback.as_str()).copied().unwrap_or(0),
        degraded: agg.degraded_now,
    };
    agg.window.clear();
    sample
}

fn report_progress(p: &Progress, clients: usize, json: bool) {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}ms"));
    eprintln!(
        "swarm t={:>5.1}s connected={}/{} frames={} words={} latency p50={} p99={} \
         disconnects={} created pusher/fallback={}/{} degraded={}",
        p.t,
        p.connected,
        clients,
        p.frames,
        p.words,
        ms(p.latency_p50_ms),
        ms(p.latency_p99_ms),
        p.disconnects,
        p.created_pusher,
        p.created_fallback,
        p.degraded
    );
    if json {
        let _ = crate::cli::print_json_line(p);
    }
}

fn result(
    config: &SwarmConfig,
    agg: Aggregate,
    started_unix_ms: u64,
    elapsed: Duration,
) -> SwarmResult {
    let total = agg.created.values().sum();
    let urls = config.urls();
    let per_url = if urls.len() > 1 {
        agg.per_url
            .iter()
            .map(|(i, c)| (urls.get(*i).cloned().unwrap_or_else(|| i.to_string()), c.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    SwarmResult {
        kind: "result".into(),
        clients: config.clients,
        started_unix_ms,
        elapsed_s: elapsed.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        sample_rate: config.sample_rate,
        frame_ms: config.frame.as_secs_f64() * 1000.0,
        source: match config.source {
            Source::Generated(_) => "generated".into(),
            Source::Wav { .. } => "wav".into(),
        },
        connected_peak: agg.connected_peak,
        sessions_opened: agg.sessions_opened,
        reconnects: agg.reconnects,
        connect_failures: agg.connect_failures,
        frames_sent: agg.frames_sent,
        audio_seconds: agg.audio_bytes as f64 / 2.0 / f64::from(config.sample_rate.max(1)),
        wire_bytes: agg.wire_bytes,
        codecs: (0..config.clients).fold(BTreeMap::new(), |mut codecs, index| {
            let codec = config.codecs.for_client(index, config.clients);
            *codecs.entry(codec.as_str().to_owned()).or_default() += 1;
            codecs
        }),
        keepalives: agg.keepalives,
        words: WordCounts {
            sent: agg.words_sent,
            matched: agg.words_matched,
            lost: agg.words_lost,
            unmatched: agg.words_unmatched,
            segment_messages: agg.segment_messages,
            plain_messages: agg.plain_messages,
        },
        latency: agg.latency.summary(),
        disconnects: agg.disconnects,
        disconnect_times: agg.disconnect_times,
        statuses: agg.statuses,
        processing: agg.processing,
        ended_not_ready: agg.ended_not_ready,
        ended_degraded: agg.ended_degraded,
        conversations: ConversationCounts {
            created: agg.created,
            total,
            with_transcript: agg.blocks_with_transcript,
            never_announced: agg.blocks_without_created,
            cut_by_disconnect: agg.blocks_cut_by_disconnect,
        },
        errors: agg.errors,
        per_url,
    }
}

#[cfg(test)]
mod tests {
    use super::split_urls;

    #[test]
    fn urls_split_on_commas() {
        assert_eq!(split_urls("ws://a:1"), vec!["ws://a:1"]);
        assert_eq!(split_urls(" ws://a:1/ , ws://b:2,,"), vec!["ws://a:1", "ws://b:2"]);
        assert_eq!(split_urls(""), vec![""]);
    }
}
