//! Embedded speech recognition for Hark: a local STT backend built on
//! PocketSphinx from Debian's packages.
//!
//! One [`LocalEngine`] per process owns a fixed pool of decoders, each on its
//! own `std::thread` (decoding never runs on the async runtime's threads). A
//! session claims one decoder with [`LocalEngine::open`] and gets a
//! [`LocalStream`]: a bounded channel for PCM audio in, a channel of finished
//! [`Utterance`]s out. When every decoder is taken, `open` fails at once with
//! [`LocalSttError::Busy`]; it never waits.
//!
//! Utterances are cut by PocketSphinx's own voice-activity detection: the
//! decoder thread ends an utterance when `ps_get_in_speech` falls after having
//! been true (about 0.5 s of silence with the packaged defaults), or after
//! [`MAX_UTTERANCE_SECS`] of continuous speech, and at the end of the stream.
//!
//! Audio at rates other than 16 kHz (the acoustic model's rate) is resampled by
//! linear interpolation, see [`LocalEngine::open`].
//!
//! The C library is behind the cargo feature `pocketsphinx`. Without it the
//! crate builds and tests with no C library present, [`LocalEngine::new`]
//! returns [`LocalSttError::NotBuilt`], and [`LocalEngine::compiled_in`] says
//! `false`.

// Without the C library nothing constructs the decoder pool; it is still
// compiled, and unit-tested with a fake decoder.
#![cfg_attr(not(feature = "pocketsphinx"), allow(dead_code))]

mod pcm;
mod pool;
mod recognizer;
mod session;
#[cfg(feature = "pocketsphinx")]
mod sphinx;
pub mod wer;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use session::MAX_UTTERANCE_SECS;

/// Where the models are and how big the pool is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEngineConfig {
    /// Model directory laid out like Debian's `pocketsphinx-en-us`
    /// (`/usr/share/pocketsphinx/model/en-us`): one subdirectory holding the
    /// acoustic model (the one with `mdef` in it), one `*.lm.bin` / `*.lm` /
    /// `*.lm.DMP` language model (`*-phone.*` models are ignored) and, unless
    /// `dict` is set, one `*.dict` pronunciation dictionary.
    /// `None` = the packaged en-us model.
    pub model_dir: Option<PathBuf>,
    /// Pronunciation dictionary; `None` = the one in the model directory.
    pub dict: Option<PathBuf>,
    /// Number of decoders, and so of concurrent sessions. Each holds its own
    /// copy of the model (about 100 MB with en-us) and decodes at roughly a
    /// third of one core in real time (see the crate README).
    pub decoders: NonZeroUsize,
    /// Capacity, in messages, of each session's audio channel. A full channel
    /// is back-pressure: the decoder is behind. `0` is taken as `1`.
    pub queue_frames: usize,
}

impl Default for LocalEngineConfig {
    fn default() -> Self {
        Self { model_dir: None, dict: None, decoders: NonZeroUsize::MIN, queue_frames: 64 }
    }
}

/// Why the local engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalSttError {
    /// The crate was built without the `pocketsphinx` feature.
    #[error("local STT is not available: hark was built without the `pocketsphinx` feature")]
    NotBuilt,
    /// The model could not be found or loaded.
    #[error("local STT model: {0}")]
    Model(String),
    /// Every decoder is serving a session; try again later.
    #[error("all {0} local decoders are busy")]
    Busy(usize),
    /// A decoder failed, or the stream was asked for something it cannot do
    /// (such as an unsupported sample rate).
    #[error("local STT decoder: {0}")]
    Decoder(String),
}

impl LocalSttError {
    /// Whether the same request can succeed later: only [`Self::Busy`] can.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Busy(_))
    }
}

/// One finished utterance: its words and where it lies in the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    /// The words joined by single spaces (lower case, as in the dictionary).
    pub text: String,
    /// The words with their times, fillers (`<s>`, `<sil>`, `[NOISE]`, …) left out.
    pub words: Vec<Word>,
    /// Start of the first word, in seconds from the start of the stream.
    pub start: f64,
    /// End of the last word, in seconds from the start of the stream.
    pub end: f64,
}

/// One recognised word.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// The dictionary word, without an alternate-pronunciation suffix like `(2)`.
    pub word: String,
    /// Seconds from the start of the stream.
    pub start: f64,
    /// Seconds from the start of the stream.
    pub end: f64,
}

/// One session's claim on a decoder.
pub struct LocalStream {
    /// PCM16 little-endian mono at the sample rate given to
    /// [`LocalEngine::open`], in messages of any length. Dropping it ends the
    /// stream: the decoder flushes the last utterance and sends it, returns to
    /// the pool, then closes `utterances`. Sending fails once the decoder has
    /// given up on the stream (`utterances` was dropped, or it failed).
    pub audio: mpsc::Sender<Bytes>,
    /// Finished utterances in stream order. Closed after the last one, and
    /// only once the decoder is back in the pool.
    pub utterances: mpsc::Receiver<Utterance>,
}

impl std::fmt::Debug for LocalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStream")
            .field("audio_closed", &self.audio.is_closed())
            .finish_non_exhaustive()
    }
}

/// The process's pool of local decoders. Cheap to clone; the decoder threads
/// stop (after finishing their current stream) when the last clone is dropped.
#[derive(Clone)]
pub struct LocalEngine {
    pool: Arc<pool::Pool>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("capacity", &self.capacity())
            .field("busy", &self.busy())
            .finish()
    }
}

impl LocalEngine {
    /// Whether this build has the PocketSphinx engine (the `pocketsphinx` feature).
    pub fn compiled_in() -> bool {
        cfg!(feature = "pocketsphinx")
    }

    /// Checks the model files, then starts `config.decoders` threads that each
    /// load a decoder, in parallel, and returns once all are loaded. Loading
    /// costs about 0.6 s of CPU per decoder with the packaged en-us model, so
    /// call this at startup (or from `spawn_blocking`), not per session.
    pub fn new(config: LocalEngineConfig) -> Result<Self, LocalSttError> {
        #[cfg(feature = "pocketsphinx")]
        {
            let paths = sphinx::ModelPaths::resolve(&config)?;
            let factory: pool::Factory = Arc::new(move || {
                sphinx::Decoder::load(&paths)
                    .map(|decoder| Box::new(decoder) as Box<dyn recognizer::Recognizer>)
            });
            Self::with_factory(&config, factory)
        }
        #[cfg(not(feature = "pocketsphinx"))]
        {
            let _ = config;
            Err(LocalSttError::NotBuilt)
        }
    }

    /// Builds the pool over any recognizer (tests use a fake one).
    #[cfg(any(test, feature = "pocketsphinx"))]
    fn with_factory(
        config: &LocalEngineConfig,
        factory: pool::Factory,
    ) -> Result<Self, LocalSttError> {
        let pool = pool::Pool::start(config.decoders, config.queue_frames.max(1), factory)?;
        Ok(Self { pool: Arc::new(pool) })
    }

    /// Number of decoders in the pool.
    pub fn capacity(&self) -> usize {
        self.pool.capacity()
    }

    /// Number of decoders serving a session now.
    pub fn busy(&self) -> usize {
        self.pool.busy()
    }

    /// Claims a decoder for one session whose audio is PCM16 LE mono at
    /// `sample_rate` Hz. Returns `Err(Busy)` at once when all decoders are
    /// taken (it never waits).
    ///
    /// The acoustic model is 16 kHz. Other rates from 8 kHz to 48 kHz are
    /// resampled by linear interpolation: fine for 8 kHz telephone audio
    /// (nothing above 4 kHz is invented, the model just sees an empty upper
    /// band), but above 16 kHz there is no anti-alias filter, so prefer to
    /// send 16 kHz. Other rates are refused with [`LocalSttError::Decoder`].
    pub fn open(&self, sample_rate: u32) -> Result<LocalStream, LocalSttError> {
        self.pool.open(sample_rate)
    }
}

#[cfg(test)]
mod tests;
