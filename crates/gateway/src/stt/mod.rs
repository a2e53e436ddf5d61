//! The STT side of a session: one link task per session that owns the provider
//! socket, reconnects it with backoff, and reports speaker runs with times on the
//! session's audio clock (seconds from the session's first sample).

pub mod deepgram;

use bytes::Bytes;
use hark_proto::deepgram::SpeakerRun;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::SttConfig;

/// Audio frames queued to the STT link before the session starts dropping (and
/// counting) them; ~25 s of 100 ms frames.
pub const AUDIO_QUEUE: usize = 256;

/// What the STT link tells its session.
#[derive(Debug)]
pub enum SttEvent {
    /// The provider socket is up (`reconnect`: it was up before and came back).
    Connected {
        /// Whether this replaces a lost link.
        reconnect: bool,
    },
    /// The provider socket was lost; the link is reconnecting.
    Lost(String),
    /// Recognised speech; times are on the session's audio clock.
    Runs {
        /// Consecutive words of one speaker each.
        runs: Vec<SpeakerRun>,
        /// When the result arrived (for `hark_transcript_latency_seconds`).
        received: Instant,
    },
    /// The link gave up after its retry budget.
    Failed(String),
    /// The stream ended after the session closed its audio channel; all results sent.
    Finished,
}

/// A running STT link: send audio, receive events. Dropping `audio` ends the stream
/// (the link flushes the provider and sends the last results before `Finished`).
#[derive(Debug)]
pub struct SttLink {
    /// PCM16 LE mono at the session's sample rate.
    pub audio: mpsc::Sender<Bytes>,
    /// Events for the session.
    pub events: mpsc::Receiver<SttEvent>,
}

/// Why a session could not get an STT link.
#[derive(Debug, thiserror::Error)]
pub enum SttStartError {
    /// Every local decoder is in use.
    #[error("all speech decoders are busy")]
    Busy,
    /// The backend is not usable.
    #[error("speech recognition unavailable: {0}")]
    Unavailable(String),
}

/// The process's STT backend.
#[derive(Clone, Debug)]
pub enum SttBackend {
    /// Deepgram-compatible provider.
    Deepgram {
        /// Listen URL without query.
        url: String,
        /// API key.
        api_key: Option<String>,
        /// Model.
        model: String,
    },
}

impl SttBackend {
    /// Builds the backend from configuration.
    pub fn from_config(config: &SttConfig) -> Result<Self, SttStartError> {
        match config {
            SttConfig::Deepgram { url, api_key, model } => Ok(SttBackend::Deepgram {
                url: url.clone(),
                api_key: api_key.clone(),
                model: model.clone(),
            }),
            SttConfig::Local { .. } => {
                Err(SttStartError::Unavailable("this build has no local speech engine".into()))
            }
        }
    }

    /// Starts a link for one session.
    pub fn open(
        &self,
        language: &str,
        sample_rate: u32,
        session_id: std::sync::Arc<str>,
    ) -> Result<SttLink, SttStartError> {
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(64);
        match self {
            SttBackend::Deepgram { url, api_key, model } => {
                let query = hark_proto::deepgram::listen_query(model, language, sample_rate);
                let link = deepgram::DeepgramLink::new(
                    format!("{url}?{query}"),
                    api_key.clone(),
                    sample_rate,
                    session_id,
                    audio_rx,
                    events_tx,
                );
                tokio::spawn(link.run());
            }
        }
        Ok(SttLink { audio: audio_tx, events: events_rx })
    }
}
