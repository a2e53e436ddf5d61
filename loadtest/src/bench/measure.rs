//! What the bench reads from the machine: a process's CPU time and RSS from
//! `/proc`, the descriptor limit, the machine itself, latency percentiles from a
//! swarm's latency log, and libopus's own decode time for a swarm's packets.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::swarm::audio::{AudioStream, Frame};
use crate::swarm::codec::Link;
use crate::swarm::{Script, Source};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU seconds (utime + stime, from `/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command; utime and stime are the 14th
    // and 15th fields overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A process's resident set (`VmRSS`, KiB).
pub fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// This thread's CPU seconds.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The open-files limit `(soft, hard)` of this process.
pub fn nofile() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| match v? {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    };
    Some((parse(values.next())?, parse(values.next())?))
}

/// Raises this process's open-files soft limit to its hard limit (children inherit
/// it), through prlimit(1) so the crate needs no `unsafe`. Returns the limit now
/// in force.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = nofile().context("reading /proc/self/limits")?;
    if soft < hard {
        let limit = if hard == u64::MAX { "unlimited".to_owned() } else { hard.to_string() };
        let status = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .context("running prlimit(1) to raise RLIMIT_NOFILE")?;
        anyhow::ensure!(status.success(), "prlimit --nofile={limit}:{limit} failed ({status})");
    }
    Ok(nofile().context("reading /proc/self/limits")?.0)
}

/// The machine a bench ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs available to the process.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// When the bench started (UTC, RFC 3339).
    pub date: String,
    /// The open-files limit the relays ran with.
    pub nofile: u64,
}

impl Machine {
    /// Reads the machine (with the descriptor limit in force).
    pub fn read(nofile: u64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            nofile,
        }
    }
}

/// The `q` quantiles (ms, nearest rank) of the latencies in a swarm's latency log
/// (`sent_unix_ms,latency_us` lines) for words whose audio was sent in
/// `[from_ms, to_ms)`, and how many words that is.
pub fn window_latency(
    log: &Path,
    from_ms: u64,
    to_ms: u64,
    qs: &[f64],
) -> (usize, Vec<Option<f64>>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut micros: Vec<u64> = text
        .lines()
        .filter_map(|line| {
            let (sent, latency) = line.split_once(',')?;
            let sent: u64 = sent.trim().parse().ok()?;
            (from_ms..to_ms).contains(&sent).then(|| latency.trim().parse().ok()).flatten()
        })
        .collect();
    micros.sort_unstable();
    let quantile = |q: f64| {
        if micros.is_empty() {
            return None;
        }
        let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
        Some(micros[rank - 1] as f64 / 1000.0)
    };
    (micros.len(), qs.iter().map(|&q| quantile(q)).collect())
}

/// libopus's own decode time for a swarm's packets.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeCost {
    /// Sessions whose packets were decoded (each a fresh decoder, as in hark).
    pub sessions_decoded: usize,
    /// Sessions the figures are scaled to (the bench's sessions).
    pub scaled_to: usize,
    /// Packets decoded (unscaled).
    pub packets: u64,
    /// Audio per session, seconds (the window).
    pub seconds_per_session: f64,
    /// Thread CPU seconds for the decoded sessions (unscaled).
    pub cpu_s: f64,
    /// Wall seconds for the decoded sessions (unscaled).
    pub wall_s: f64,
    /// Decoding `scaled_to` sessions over the window: per cent of one core.
    pub cpu_percent: f64,
    /// CPU ms per MB of decoded PCM16.
    pub cpu_ms_per_audio_mb: f64,
}

/// Encodes `window` of each of `decode` sessions' audio exactly as the swarm's
/// clients do (same script, seeds, and the workload's frame and codec), then decodes every session's
/// packets in a tight loop with a fresh `hark-codec` decoder, and scales the time
/// to `sessions` sessions.
pub fn decode_cost(
    workload: super::Workload,
    sample_rate: u32,
    script: &Script,
    seed: u64,
    window: Duration,
    decode: usize,
    sessions: usize,
) -> anyhow::Result<DecodeCost> {
    let (codec, frame) = (workload.codec(), workload.frame());
    let ticks = (window.as_secs_f64() / frame.as_secs_f64()).round() as usize;
    let mut packets: Vec<Vec<bytes::Bytes>> = Vec::new();
    for index in 0..decode {
        // The swarm's per-client seed (swarm::client).
        let client_seed = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut audio =
            AudioStream::new(Source::Generated(script.clone()), sample_rate, frame, client_seed);
        let mut link = Link::new(codec, sample_rate)?;
        let mut session = Vec::new();
        for _ in 0..ticks {
            if let Frame::Audio(pcm) = audio.next_frame() {
                session.extend(link.encode(&pcm)?.frames);
            }
        }
        packets.push(session);
    }
    let cpu_before = thread_cpu_seconds().unwrap_or(0.0);
    let wall = Instant::now();
    let mut decoded_bytes = 0u64;
    for session in &packets {
        let mut decoder = hark_codec::decoder(codec, sample_rate)?;
        for packet in session {
            let pcm = decoder
                .decode(packet.clone())
                .map_err(|e| anyhow::anyhow!("{codec} packet does not decode: {e}"))?;
            decoded_bytes += pcm.len() as u64;
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = (thread_cpu_seconds().unwrap_or(0.0) - cpu_before).max(0.0);
    // Tick-granular CPU time is too coarse for a short loop; wall time of a single
    // busy thread is the same figure, finer.
    let busy_s = if cpu_s > 0.05 { cpu_s } else { wall_s };
    let scale = sessions as f64 / decode.max(1) as f64;
    let audio_mb = decoded_bytes as f64 / 1e6;
    Ok(DecodeCost {
        sessions_decoded: decode,
        scaled_to: sessions,
        packets: packets.iter().map(|s| s.len() as u64).sum(),
        seconds_per_session: window.as_secs_f64(),
        cpu_s,
        wall_s,
        cpu_percent: busy_s * scale / window.as_secs_f64() * 100.0,
        cpu_ms_per_audio_mb: if audio_mb > 0.0 { busy_s * 1000.0 / audio_mb } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_kib(pid).unwrap() > 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
    }

    #[test]
    fn window_quantiles_take_only_words_sent_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("latency.csv");
        let mut text = String::from("999,1000000\n");
        for i in 1..=100u64 {
            text.push_str(&format!("{},{}\n", 1000 + i, i * 1000));
        }
        text.push_str("2000,5000000\n");
        std::fs::write(&log, text).unwrap();
        let (words, qs) = window_latency(&log, 1000, 2000, &[0.5, 0.99]);
        assert_eq!(words, 100);
        assert_eq!(qs, [Some(50.0), Some(99.0)]);
        assert_eq!(window_latency(&log, 5000, 6000, &[0.5]), (0, vec![None]));
    }

    #[test]
    fn opus_decode_cost_is_measured_and_scaled() {
        let script = Script {
            words_per_utterance: 4,
            talk: Duration::from_secs(3600),
            pause: Duration::from_secs(1),
        };
        let cost = decode_cost(
            super::super::Workload::Opus20ms,
            16000,
            &script,
            1,
            Duration::from_secs(2),
            2,
            10,
        )
        .unwrap();
        assert_eq!(cost.packets, 200, "2 sessions × 2 s of 20 ms packets");
        assert!(cost.cpu_percent > 0.0 && cost.cpu_ms_per_audio_mb > 0.0);
    }
}
