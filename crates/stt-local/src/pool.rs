//! The fixed pool of decoder threads: claiming a decoder for a session,
//! handing it the session's channels, and taking it back when the stream ends.
//!
//! Each decoder lives on its own `std::thread` with a one-slot job queue. The
//! indices of idle decoders sit in a short mutex-guarded list; `open` pops one
//! or answers `Busy` at once. Nothing here waits on a decoder.

use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError};
use std::thread;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pcm::Resampler;
use crate::recognizer::Recognizer;
use crate::session::{self, Outcome};
use crate::{LocalStream, LocalSttError, Utterance};

/// Builds one decoder; called once on each decoder thread.
pub(crate) type Factory = Arc<dyn Fn() -> Result<Box<dyn Recognizer>, String> + Send + Sync>;

/// Finished utterances a session may leave unread before its decoder waits.
const UTTERANCE_QUEUE: usize = 32;

/// Stack for decoder threads: PocketSphinx was written for a main thread's
/// 8 MiB; give it room rather than find out.
const DECODER_STACK: usize = 8 << 20;

/// One session handed to a decoder thread.
struct Job {
    sample_rate: u32,
    audio: mpsc::Receiver<Bytes>,
    utterances: mpsc::Sender<Utterance>,
}

/// What the decoder threads share with the pool.
struct Shared {
    /// Indices of decoders waiting for a session.
    idle: Mutex<Vec<usize>>,
    /// Decoders serving a session (kept beside `idle` for a lock-free read).
    busy: AtomicUsize,
}

impl Shared {
    fn claim(&self) -> Option<usize> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let index = idle.pop()?;
        self.busy.fetch_add(1, Ordering::Relaxed);
        Some(index)
    }

    fn release(&self, index: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push(index);
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The decoder threads and the way to reach them.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    /// One job queue per decoder thread, by index. Dropping them stops the threads.
    jobs: Vec<std_mpsc::SyncSender<Job>>,
    /// Capacity of each session's audio channel.
    queue_frames: usize,
}

impl Pool {
    /// Spawns `decoders` threads, each building its decoder with `factory`,
    /// all in parallel, and waits until every one is ready.
    pub(crate) fn start(
        decoders: NonZeroUsize,
        queue_frames: usize,
        factory: Factory,
    ) -> Result<Self, LocalSttError> {
        let capacity = decoders.get();
        let shared = Arc::new(Shared {
            idle: Mutex::new(Vec::with_capacity(capacity)),
            busy: AtomicUsize::new(0),
        });
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let mut jobs = Vec::with_capacity(capacity);
        for index in 0..capacity {
            let (job_tx, job_rx) = std_mpsc::sync_channel(1);
            let (factory, shared, ready) = (factory.clone(), shared.clone(), ready_tx.clone());
            thread::Builder::new()
                .name(format!("hark-stt-local-{index}"))
                .stack_size(DECODER_STACK)
                .spawn(move || decoder_thread(index, &*factory, job_rx, &shared, ready))
                .map_err(|e| LocalSttError::Decoder(format!("spawning decoder thread: {e}")))?;
            jobs.push(job_tx);
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..capacity {
            let report = ready_rx
                .recv()
                .unwrap_or_else(|_| Err("a decoder thread died while loading".to_owned()));
            if let Err(error) = report {
                failure.get_or_insert(error);
            }
        }
        if let Some(error) = failure {
            // Dropping `jobs` stops the threads that did load.
            return Err(LocalSttError::Model(error));
        }
        // Popped from the end: decoder 0 serves first.
        *shared.idle.lock().unwrap_or_else(PoisonError::into_inner) = (0..capacity).rev().collect();
        Ok(Self { shared, jobs, queue_frames })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.jobs.len()
    }

    pub(crate) fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::Relaxed)
    }

    pub(crate) fn open(&self, sample_rate: u32) -> Result<LocalStream, LocalSttError> {
        // Refuse a bad rate before taking a decoder for it.
        Resampler::new(sample_rate).map_err(LocalSttError::Decoder)?;
        let index = self.shared.claim().ok_or(LocalSttError::Busy(self.capacity()))?;
        let (audio_tx, audio_rx) = mpsc::channel(self.queue_frames);
        let (utterances_tx, utterances_rx) = mpsc::channel(UTTERANCE_QUEUE);
        let job = Job { sample_rate, audio: audio_rx, utterances: utterances_tx };
        // An idle decoder's queue is empty, so this fails only if its thread
        // is gone; then the decoder stays claimed (counted busy) for good.
        self.jobs[index].try_send(job).map_err(|_| {
            tracing::error!(decoder = index, "local STT decoder thread has stopped");
            LocalSttError::Decoder(format!("decoder {index} has stopped"))
        })?;
        Ok(LocalStream { audio: audio_tx, utterances: utterances_rx })
    }
}

/// Body of decoder thread `index`: load, report, then serve jobs until the
/// pool is dropped.
fn decoder_thread(
    index: usize,
    factory: &(dyn Fn() -> Result<Box<dyn Recognizer>, String> + Send + Sync),
    jobs: std_mpsc::Receiver<Job>,
    shared: &Shared,
    ready: std_mpsc::Sender<Result<(), String>>,
) {
    let mut recognizer = match factory() {
        Ok(recognizer) => recognizer,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    while let Ok(Job { sample_rate, audio, utterances }) = jobs.recv() {
        let result = catch_unwind(AssertUnwindSafe(|| {
            session::run(recognizer.as_mut(), sample_rate, audio, &utterances)
        }));
        match result {
            Ok(Ok(Outcome::Finished)) => tracing::debug!(decoder = index, "local STT stream ended"),
            Ok(Ok(Outcome::ConsumerGone)) => {
                tracing::debug!(decoder = index, "local STT stream abandoned by its reader")
            }
            Ok(Err(error)) => tracing::warn!(decoder = index, %error, "local STT stream failed"),
            // The next stream's `begin_stream` resets the decoder.
            Err(_) => tracing::error!(decoder = index, "local STT stream panicked"),
        }
        // Back in the pool before `utterances` closes, so a reader that saw the
        // end can open again at once.
        shared.release(index);
        drop(utterances);
    }
}
