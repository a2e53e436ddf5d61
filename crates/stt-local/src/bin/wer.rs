//! `wer`: how well and how fast the local engine transcribes, on the LibriVox
//! clips of Debian's `pocketsphinx-testdata`, next to Debian's own
//! `pocketsphinx_continuous -infile` on the same files.
//!
//! 1. Word error rate: each clip is streamed through [`LocalEngine`] in 100 ms
//!    messages (as fast as the decoder takes them; no sleeping) and also given
//!    to `pocketsphinx_continuous`; both hypotheses are scored against
//!    `librivox/transcription` (case-insensitive, word-level Levenshtein).
//! 2. Real-time factor: decode time / audio duration for all clips joined into
//!    one stream, alone and as `--streams` concurrent streams. Wall-clock RTF
//!    depends on what else the machine runs; CPU RTF (the process's CPU time
//!    over the audio duration) does not.
//!
//! Prints a table, then the same figures as JSON (also written to `--json PATH`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_stt_local::{wer, LocalEngine, LocalEngineConfig};
use serde_json::json;

const USAGE: &str = "\
usage: wer [--data DIR] [--streams N] [--json PATH] [--no-continuous]

  --data DIR        directory with fileids, transcription and *.wav
                    (default: pocketsphinx-testdata's librivox/)
  --streams N       concurrent streams for the real-time-factor run (default 2)
  --json PATH       also write the JSON report to PATH
  --no-continuous   skip the pocketsphinx_continuous comparison";

struct Args {
    data: PathBuf,
    streams: usize,
    json: Option<PathBuf>,
    continuous: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data: Path::new(env!("HARK_POCKETSPHINX_DATADIR")).join("test/data/librivox"),
        streams: 2,
        json: None,
        continuous: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--data" => args.data = value("--data")?.into(),
            "--json" => args.json = Some(value("--json")?.into()),
            "--streams" => {
                args.streams = value("--streams")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--streams needs a positive number")?
            }
            "--no-continuous" => args.continuous = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// One test clip.
struct Clip {
    id: String,
    path: PathBuf,
    reference: String,
    rate: u32,
    pcm: Vec<u8>,
}

impl Clip {
    fn seconds(&self) -> f64 {
        self.pcm.len() as f64 / 2.0 / f64::from(self.rate)
    }
}

/// Sample rate and PCM16 data of a 16-bit mono WAV file.
fn read_wav(path: &Path) -> Result<(u32, Vec<u8>), String> {
    let bad = |why: String| format!("{}: {why}", path.display());
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if (spec.channels, spec.bits_per_sample, spec.sample_format)
        != (1, 16, hound::SampleFormat::Int)
    {
        return Err(bad("not 16-bit mono PCM".into()));
    }
    let mut pcm = Vec::with_capacity(reader.len() as usize * 2);
    for sample in reader.samples::<i16>() {
        pcm.extend_from_slice(&sample.map_err(|e| bad(e.to_string()))?.to_le_bytes());
    }
    Ok((spec.sample_rate, pcm))
}

fn load_clips(dir: &Path) -> Result<Vec<Clip>, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let transcription = read("transcription")?;
    read("fileids")?
        .lines()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            let reference = transcription
                .lines()
                .find(|line| line.trim_end().ends_with(&format!("({id})")))
                .ok_or(format!("no transcription for {id}"))?;
            let path = dir.join(format!("{id}.wav"));
            let (rate, pcm) = read_wav(&path)?;
            Ok(Clip {
                id: id.to_owned(),
                path,
                reference: wer::words(reference).join(" "),
                rate,
                pcm,
            })
        })
        .collect()
}

/// CPU time used by this process's live threads so far (Linux schedstat, ns).
fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Streams `pcm` through one decoder in 100 ms messages; returns the text and the wall time.
async fn transcribe(
    engine: &LocalEngine,
    rate: u32,
    pcm: Vec<u8>,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut stream = engine.open(rate).map_err(|e| e.to_string())?;
    let chunk = rate as usize / 10 * 2;
    let audio = stream.audio;
    let feeder = tokio::spawn(async move {
        for message in pcm.chunks(chunk) {
            if audio.send(Bytes::copy_from_slice(message)).await.is_err() {
                break;
            }
        }
    });
    let mut texts = Vec::new();
    while let Some(utterance) = stream.utterances.recv().await {
        texts.push(utterance.text);
    }
    let elapsed = started.elapsed();
    feeder.await.map_err(|e| e.to_string())?;
    Ok((texts.join(" "), elapsed))
}

/// `pocketsphinx_continuous -infile`'s hypothesis (its stdout) and wall time.
fn continuous(path: &Path) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let output = Command::new("pocketsphinx_continuous")
        .arg("-infile")
        .arg(path)
        .output()
        .map_err(|e| format!("pocketsphinx_continuous (Debian package `pocketsphinx`): {e}"))?;
    if !output.status.success() {
        return Err(format!("pocketsphinx_continuous failed on {}", path.display()));
    }
    let text =
        String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((text, started.elapsed()))
}

/// Decodes `pcm` as `streams` concurrent streams (each on its own decoder
/// thread); reports wall RTF per stream and CPU RTF per stream.
async fn rtf(
    engine: &LocalEngine,
    streams: usize,
    rate: u32,
    pcm: &[u8],
) -> Result<serde_json::Value, String> {
    let seconds = pcm.len() as f64 / 2.0 / f64::from(rate);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (engine, pcm) = (engine.clone(), pcm.to_vec());
            tokio::spawn(async move { transcribe(&engine, rate, pcm).await })
        })
        .collect();
    let mut per_stream = Vec::with_capacity(streams);
    for task in tasks {
        let (_, took) = task.await.map_err(|e| e.to_string())??;
        per_stream.push(took.as_secs_f64() / seconds);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    Ok(json!({
        "streams": streams,
        "audio_seconds_per_stream": seconds,
        "wall_seconds": wall,
        "rtf_wall_per_stream": per_stream,
        "rtf_cpu_per_stream": cpu / seconds / streams as f64,
    }))
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let clips = load_clips(&args.data)?;
    let load_started = Instant::now();
    let engine = LocalEngine::new(LocalEngineConfig {
        decoders: std::num::NonZeroUsize::new(args.streams).unwrap_or(std::num::NonZeroUsize::MIN),
        ..LocalEngineConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    println!("{:<44} {:>5} {:>9} {:>9} {:>8}", "file", "words", "WER ours", "WER ps_c", "RTF ours");
    let (mut total_ref, mut edits_ours, mut edits_cont) = (0usize, 0usize, 0usize);
    let (mut audio_total, mut decode_total) = (0.0, 0.0);
    let mut rows = Vec::new();
    for clip in &clips {
        let reference = wer::words(&clip.reference);
        let (ours, took) = transcribe(&engine, clip.rate, clip.pcm.clone()).await?;
        let ours_edits = wer::edit_distance(&reference, &wer::words(&ours));
        let cont = if args.continuous {
            let path = clip.path.clone();
            Some(
                tokio::task::spawn_blocking(move || continuous(&path))
                    .await
                    .map_err(|e| e.to_string())??,
            )
        } else {
            None
        };
        let cont_edits =
            cont.as_ref().map(|(text, _)| wer::edit_distance(&reference, &wer::words(text)));
        total_ref += reference.len();
        edits_ours += ours_edits;
        edits_cont += cont_edits.unwrap_or(0);
        audio_total += clip.seconds();
        decode_total += took.as_secs_f64();
        let rate = |edits: usize| edits as f64 / reference.len() as f64;
        println!(
            "{:<44} {:>5} {:>8.1}% {:>9} {:>8.2}",
            clip.id,
            reference.len(),
            100.0 * rate(ours_edits),
            cont_edits.map_or("-".to_owned(), |e| format!("{:.1}%", 100.0 * rate(e))),
            took.as_secs_f64() / clip.seconds(),
        );
        rows.push(json!({
            "file": clip.id,
            "audio_seconds": clip.seconds(),
            "ref_words": reference.len(),
            "reference": clip.reference,
            "ours": { "hyp": ours, "edits": ours_edits, "wer": rate(ours_edits), "decode_seconds": took.as_secs_f64() },
            "pocketsphinx_continuous": cont.as_ref().map(|(text, d)| json!({
                "hyp": text, "edits": cont_edits, "wer": cont_edits.map(rate), "wall_seconds_incl_model_load": d.as_secs_f64(),
            })),
        }));
    }
    let total = |edits: usize| edits as f64 / total_ref as f64;
    println!(
        "{:<44} {:>5} {:>8.1}% {:>9} {:>8.2}",
        "TOTAL",
        total_ref,
        100.0 * total(edits_ours),
        if args.continuous { format!("{:.1}%", 100.0 * total(edits_cont)) } else { "-".into() },
        decode_total / audio_total,
    );

    // Real-time factor on all clips joined into one long stream.
    let rate = clips.first().map_or(16_000, |c| c.rate);
    let joined: Vec<u8> =
        clips.iter().filter(|c| c.rate == rate).flat_map(|c| c.pcm.iter().copied()).collect();
    let mut rtf_runs = vec![rtf(&engine, 1, rate, &joined).await?];
    if args.streams > 1 {
        rtf_runs.push(rtf(&engine, args.streams, rate, &joined).await?);
    }
    println!();
    println!("engine load: {load_seconds:.2} s for {} decoder(s)", args.streams);
    for run in &rtf_runs {
        println!(
            "RTF, {} concurrent stream(s) of {:.1} s: wall per stream {}, CPU per stream {:.3}",
            run["streams"],
            run["audio_seconds_per_stream"].as_f64().unwrap_or(0.0),
            run["rtf_wall_per_stream"]
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|v| format!("{:.3}", v.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(" / "))
                .unwrap_or_default(),
            run["rtf_cpu_per_stream"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(json!({
        "data": args.data,
        "files": rows,
        "total": {
            "ref_words": total_ref,
            "ours": { "edits": edits_ours, "wer": total(edits_ours), "rtf_wall": decode_total / audio_total },
            "pocketsphinx_continuous": args.continuous.then(|| json!({ "edits": edits_cont, "wer": total(edits_cont) })),
        },
        "engine_load_seconds": load_seconds,
        "rtf": rtf_runs,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("wer: {error}");
            return ExitCode::from(64);
        }
    };
    let json_path = args.json.clone();
    match run(args).await {
        Ok(report) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("\n{text}");
            if let Some(path) = json_path {
                if let Err(error) = std::fs::write(&path, text + "\n") {
                    eprintln!("wer: {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wer: {error}");
            ExitCode::FAILURE
        }
    }
}
