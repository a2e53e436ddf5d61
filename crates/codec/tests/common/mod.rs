//! Shared by the codec tests: real speech from Debian's `pocketsphinx-testdata`
//! (scripts/setup.sh installs it) and signal comparisons.
#![allow(dead_code)]

use std::path::Path;

/// Where `pocketsphinx-testdata` puts its audio.
pub const DATA: &str = "/usr/share/pocketsphinx/test/data";

/// "go forward ten meters": 16 kHz s16le mono, 2.8 s.
pub fn goforward() -> Vec<i16> {
    let path = Path::new(DATA).join("goforward.raw");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (install pocketsphinx-testdata: scripts/setup.sh)", path.display())
    });
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The LibriVox clips (16 kHz mono WAV), 3–7 s each.
pub fn librivox() -> Vec<(String, Vec<i16>)> {
    let dir = Path::new(DATA).join("librivox");
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (install pocketsphinx-testdata)", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wav"))
        .map(|path| {
            let mut reader = hound::WavReader::open(&path).expect("a WAV file");
            assert_eq!(reader.spec().sample_rate, 16_000, "{}", path.display());
            assert_eq!(reader.spec().channels, 1, "{}", path.display());
            let samples = reader.samples::<i16>().map(|s| s.expect("a sample")).collect();
            (path.file_name().unwrap().to_string_lossy().into_owned(), samples)
        })
        .collect();
    clips.sort();
    assert_eq!(clips.len(), 5, "the five LibriVox clips");
    clips
}

/// Every clip: goforward first, then LibriVox.
pub fn speech() -> Vec<(String, Vec<i16>)> {
    let mut clips = vec![("goforward.raw".to_owned(), goforward())];
    clips.extend(librivox());
    clips
}

/// Little-endian bytes to samples.
pub fn samples(pcm: &[u8]) -> Vec<i16> {
    assert_eq!(pcm.len() % 2, 0, "PCM16 has an even length");
    pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// Every other sample after a 2-tap average: 16 kHz speech as rough 8 kHz audio.
pub fn halve_rate(pcm: &[i16]) -> Vec<i16> {
    pcm.chunks_exact(2).map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16).collect()
}

/// A mix of tones at `rate` Hz for `seconds`: 300, 700 and 1900 Hz.
pub fn tones(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let v = [300.0, 700.0, 1900.0]
                .iter()
                .map(|f| (2.0 * std::f64::consts::PI * f * t).sin())
                .sum::<f64>();
            (v / 3.0 * 12_000.0) as i16
        })
        .collect()
}

/// How the decoded signal compares with the original once aligned.
#[derive(Clone, Copy, Debug)]
pub struct Similarity {
    /// Samples the decoded signal lags the original by.
    pub delay: usize,
    /// Pearson correlation over the overlap.
    pub correlation: f64,
    /// Signal-to-noise ratio over the overlap, dB.
    pub snr_db: f64,
}

/// Finds the delay (0..max_delay) at which `decoded` best matches `original`
/// (on a quarter-second window of speech), then measures correlation and SNR over the whole
/// overlap at that delay.
pub fn similarity(original: &[i16], decoded: &[i16], max_delay: usize) -> Similarity {
    let window = 4_000.min(original.len() / 2);
    let start = original.len() / 4;
    let mut best = (0, f64::MIN);
    for delay in 0..max_delay {
        let Some(d) = decoded.get(start + delay..start + delay + window) else { break };
        let o = &original[start..start + window];
        let c = correlation(o, d);
        if c > best.1 {
            best = (delay, c);
        }
    }
    let delay = best.0;
    let n = original.len().min(decoded.len().saturating_sub(delay));
    let o = &original[..n];
    let d = &decoded[delay..delay + n];
    Similarity { delay, correlation: correlation(o, d), snr_db: snr_db(o, d) }
}

pub fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
        b.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa == 0.0 || sbb == 0.0 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

pub fn snr_db(original: &[i16], decoded: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0.0, 0.0);
    for (&o, &d) in original.iter().zip(decoded) {
        signal += f64::from(o).powi(2);
        noise += (f64::from(o) - f64::from(d)).powi(2);
    }
    10.0 * (signal / noise.max(1.0)).log10()
}
