//! A WAV file as Hark's clients send audio: 16-bit little-endian PCM, one channel.
//! `hound` reads the file; the first channel of a multi-channel file is kept.

use std::path::{Path, PathBuf};

/// Why a WAV file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Not readable as WAV.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What `hound` said.
        source: hound::Error,
    },
    /// WAV, but not 16-bit integer PCM.
    #[error("{path}: need 16-bit integer PCM, found {bits} bits {format:?}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Its bits per sample.
        bits: u16,
        /// Its sample format.
        format: hound::SampleFormat,
    },
    /// No samples at all.
    #[error("{path} holds no samples")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The audio of a WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels in the file (only the first is in `pcm`).
    pub channels: u16,
    /// The first channel as 16-bit little-endian PCM.
    pub pcm: Vec<u8>,
}

impl Wav {
    /// Seconds of audio.
    pub fn seconds(&self) -> f64 {
        self.pcm.len() as f64 / 2.0 / f64::from(self.sample_rate.max(1))
    }
}

/// Reads `path`: 16-bit integer PCM; the first channel is kept.
pub fn read_pcm16(path: &Path) -> Result<Wav, WavError> {
    let read = |source| WavError::Read { path: path.to_owned(), source };
    let mut reader = hound::WavReader::open(path).map_err(read)?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(WavError::Format {
            path: path.to_owned(),
            bits: spec.bits_per_sample,
            format: spec.sample_format,
        });
    }
    let channels = usize::from(spec.channels.max(1));
    let mut pcm = Vec::with_capacity(reader.len() as usize / channels * 2);
    for sample in reader.samples::<i16>().step_by(channels) {
        pcm.extend_from_slice(&sample.map_err(read)?.to_le_bytes());
    }
    if pcm.is_empty() {
        return Err(WavError::Empty { path: path.to_owned() });
    }
    Ok(Wav { sample_rate: spec.sample_rate, channels: spec.channels, pcm })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, channels: u16, bits: u16, samples: &[i32]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: 8000,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn keeps_the_first_channel_as_little_endian_pcm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        write(&path, 2, 16, &[1, -1, 300, -1, -2, -1]);
        let wav = read_pcm16(&path).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (8000, 2));
        assert_eq!(wav.pcm, [1, 0, 44, 1, 254, 255]);
        assert!((wav.seconds() - 3.0 / 8000.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_other_formats_empty_files_and_non_wav() {
        let dir = tempfile::tempdir().unwrap();
        let eight = dir.path().join("8bit.wav");
        write(&eight, 1, 8, &[1, 2]);
        assert!(matches!(read_pcm16(&eight), Err(WavError::Format { bits: 8, .. })));
        let empty = dir.path().join("empty.wav");
        write(&empty, 1, 16, &[]);
        assert!(matches!(read_pcm16(&empty), Err(WavError::Empty { .. })));
        let text = dir.path().join("text.wav");
        std::fs::write(&text, "not a wav").unwrap();
        let err = read_pcm16(&text).unwrap_err();
        assert!(matches!(err, WavError::Read { .. }) && err.to_string().contains("text.wav"));
    }
}
