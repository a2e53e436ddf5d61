//! 101 frames, built on the session's side of the link.
//!
//! The session appends each buffer of PCM16 here as it relays it, and only a
//! finished 101 (about 100 ms) crosses the channel to the pusher link's task: at
//! 20 ms device frames that is one wake-up of the link per five client frames, not
//! one per frame, and the link itself never copies audio.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hark_proto::pusher;

/// Audio a 101 frame carries before it is sent.
pub const AUDIO_FRAME: Duration = Duration::from_millis(100);
/// A buffer starting this far from where the previous one ended is a gap.
const AUDIO_GAP: f64 = 0.25;

/// Turns a session's audio into 101 frames of about [`AUDIO_FRAME`]: consecutive
/// buffers are appended to one frame (one allocation and one WebSocket frame per
/// 100 ms instead of per client frame; omi's own listen flushes 101 every second).
/// A gap in the audio, a conversation change (103), a hand-off (104) or the
/// session's end ends the frame early, so every 101 starts at its first sample's
/// true time.
#[derive(Debug)]
pub struct AudioEncoder {
    /// The 101 being built: header, then PCM.
    frame: BytesMut,
    /// Unix seconds of the frame's first sample.
    start: Option<f64>,
    /// Where the frame's audio ends, in Unix seconds.
    end: f64,
    /// PCM bytes at which the frame is sent.
    flush_at: usize,
    /// Bytes per second of the PCM.
    bytes_per_second: f64,
}

impl AudioEncoder {
    /// An encoder for PCM16 at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        let bytes_per_second = f64::from(sample_rate) * 2.0;
        Self {
            frame: BytesMut::new(),
            start: None,
            end: 0.0,
            flush_at: (AUDIO_FRAME.as_secs_f64() * bytes_per_second) as usize,
            bytes_per_second,
        }
    }

    /// Adds one buffer of PCM16 that starts at `start` (Unix seconds); pushes each
    /// finished 101 onto `out` (at most two: the one a gap ended, and this one).
    pub fn push(&mut self, start: f64, pcm: &[u8], out: &mut Vec<Bytes>) {
        if self.start.is_some() && (start - self.end).abs() > AUDIO_GAP {
            self.flush(out);
        }
        if self.start.is_none() {
            // Sized for the usual case, buffers that add up to exactly 100 ms (5 of
            // 20 ms, 1 of 100 ms); odd sizes grow it once. The allocation leaves
            // with the frame, so nothing here is kept between 101s.
            self.frame.reserve(pusher::AUDIO_HEADER_LEN + self.flush_at.max(pcm.len()));
            self.frame.extend_from_slice(&pusher::AUDIO.to_le_bytes());
            self.frame.extend_from_slice(&start.to_le_bytes());
            self.start = Some(start);
            self.end = start;
        }
        self.frame.extend_from_slice(pcm);
        self.end += pcm.len() as f64 / self.bytes_per_second;
        if self.frame.len() - pusher::AUDIO_HEADER_LEN >= self.flush_at {
            self.flush(out);
        }
    }

    /// Ends the frame being built, if any, as one 101 on `out`.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) {
        if self.start.take().is_some() {
            out.push(self.frame.split().freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame: &[u8]) -> (u32, f64) {
        let code = u32::from_le_bytes(frame[..4].try_into().unwrap());
        let start = f64::from_le_bytes(frame[4..12].try_into().unwrap());
        (code, start)
    }

    #[test]
    fn five_20ms_buffers_make_one_101_at_the_first_samples_time() {
        let mut encoder = AudioEncoder::new(16_000);
        let mut out = Vec::new();
        for i in 0..5 {
            encoder.push(100.0 + 0.02 * f64::from(i), &[1u8; 640], &mut out);
            assert_eq!(out.len(), usize::from(i == 4), "sent only once full");
        }
        assert_eq!(out[0].len(), pusher::AUDIO_HEADER_LEN + 3_200);
        assert_eq!(header(&out[0]), (pusher::AUDIO, 100.0));
    }

    #[test]
    fn a_gap_ends_the_frame_and_the_next_starts_at_its_own_time() {
        let mut encoder = AudioEncoder::new(16_000);
        let mut out = Vec::new();
        encoder.push(100.0, &[1u8; 640], &mut out);
        encoder.push(101.0, &[2u8; 640], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(header(&out[0]).1, 100.0);
        assert_eq!(&out[0][pusher::AUDIO_HEADER_LEN..], &[1u8; 640][..]);
        encoder.flush(&mut out);
        assert_eq!(header(&out[1]).1, 101.0);
        encoder.flush(&mut out);
        assert_eq!(out.len(), 2, "flushing nothing sends nothing");
    }

    #[test]
    fn odd_buffer_sizes_still_make_frames_of_at_least_100ms() {
        let mut encoder = AudioEncoder::new(16_000);
        let mut out = Vec::new();
        let mut start = 0.0;
        for _ in 0..9 {
            encoder.push(start, &[3u8; 1_200], &mut out);
            start += 1_200.0 / 32_000.0;
        }
        // 3 × 1,200 B = 3,600 B ≥ 3,200 B per frame.
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|f| f.len() == pusher::AUDIO_HEADER_LEN + 3_600));
    }
}
