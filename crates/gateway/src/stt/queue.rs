//! The session → STT audio queue, bounded by **audio**, not by frames: a device
//! sending 10 ms Opus packets and a client sending 100 ms PCM frames get the same
//! slack (`AUDIO_BUDGET` of audio), and memory per session stays bounded however
//! small the frames are. The session never waits on it: what does not fit is
//! dropped and counted (`try_send`). One relaxed atomic add per frame on each side;
//! no lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Seconds of audio the queue holds before the session drops (a slow or
/// reconnecting STT link): 25 s.
pub const AUDIO_BUDGET: Duration = Duration::from_secs(25);
/// Frames the channel itself can hold: enough for the budget in 5 ms frames.
const MAX_FRAMES: usize = 5_000;

/// The session's end.
#[derive(Debug, Clone)]
pub struct AudioTx {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// The STT link's end.
#[derive(Debug)]
pub struct AudioRx {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// A queue for PCM16 at `sample_rate`.
pub fn channel(sample_rate: u32) -> (AudioTx, AudioRx) {
    let (tx, rx) = mpsc::channel(MAX_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    let budget = (AUDIO_BUDGET.as_secs_f64() * f64::from(sample_rate) * 2.0) as usize;
    (AudioTx { tx, queued: queued.clone(), budget }, AudioRx { rx, queued })
}

impl AudioTx {
    /// Queues `pcm` unless the queue already holds the budget; `false`: dropped.
    pub fn try_send(&self, pcm: Bytes) -> bool {
        let len = pcm.len();
        if self.queued.load(Ordering::Relaxed) + len > self.budget {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(pcm).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl AudioRx {
    /// The next frame; `None` once the session closed its end and all is read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let pcm = self.rx.recv().await?;
        self.queued.fetch_sub(pcm.len(), Ordering::Relaxed);
        Some(pcm)
    }

    /// A frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let pcm = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(pcm.len(), Ordering::Relaxed);
        Some(pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bound_is_audio_whatever_the_frame_size() {
        // 8 kHz: the budget is 25 s × 16,000 bytes/s = 400,000 bytes.
        let (tx, mut rx) = channel(8_000);
        let small = Bytes::from(vec![0u8; 160]); // 10 ms
        let mut sent = 0;
        while tx.try_send(small.clone()) {
            sent += 1;
        }
        assert_eq!(sent, 2_500, "25 s of 10 ms frames");
        assert!(!tx.try_send(small.clone()));
        // Reading makes room again, byte for byte.
        rx.recv().await.unwrap();
        assert!(tx.try_send(small.clone()));
        assert!(!tx.try_send(small));
        let (tx, _rx) = channel(8_000);
        let big = Bytes::from(vec![0u8; 16_000]); // 1 s
        assert_eq!((0..40).filter(|_| tx.try_send(big.clone())).count(), 25);
    }
}
