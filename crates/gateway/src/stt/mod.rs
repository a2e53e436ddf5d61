//! The STT side of a session: one link task per session that owns the provider
//! socket, reconnects it with backoff, and reports speaker runs with times on the
//! session's audio clock (seconds from the session's first sample).

pub mod deepgram;
pub mod local;
pub mod queue;

use hark_proto::deepgram::SpeakerRun;
use tokio::sync::mpsc;
use tokio::time::Instant;

use std::sync::Arc;

use hark_resilience::backoff::Backoff;
use hark_resilience::reconnect::{Attempts, ReconnectPolicy};
use tokio_util::task::TaskTracker;

use crate::config::SttConfig;
use crate::connect::Connector;

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
    pub audio: queue::AudioTx,
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
#[derive(Clone)]
pub enum SttBackend {
    /// Deepgram-compatible provider.
    Deepgram {
        /// Listen URL without query.
        url: String,
        /// API key.
        api_key: Option<String>,
        /// Model.
        model: String,
        /// Each link's reconnect budget.
        policy: ReconnectPolicy,
        /// How links dial.
        connector: Arc<dyn Connector>,
    },
    /// The embedded engine's decoder pool.
    Local(hark_stt_local::LocalEngine),
}

impl SttBackend {
    /// Builds the backend from configuration. Loading local decoders takes about a
    /// second each, so it runs on the blocking pool.
    pub async fn from_config(
        config: &SttConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, SttStartError> {
        match config {
            SttConfig::Deepgram { url, api_key, model, reconnect } => {
                let backoff = Backoff::new(reconnect.base, reconnect.max)
                    .map_err(|e| SttStartError::Unavailable(format!("STT backoff: {e}")))?;
                Ok(SttBackend::Deepgram {
                    url: url.clone(),
                    api_key: api_key.clone(),
                    model: model.clone(),
                    policy: ReconnectPolicy::new(Some(reconnect.max_attempts), backoff),
                    connector,
                })
            }
            SttConfig::Local { decoders, model_dir } => {
                if !hark_stt_local::LocalEngine::compiled_in() {
                    return Err(SttStartError::Unavailable(
                        "this hark was built without the local engine: rebuild with \
                         `--features local-stt` (after scripts/setup.sh), or use \
                         --stt-url/--stt-api-key for a Deepgram-compatible provider"
                            .into(),
                    ));
                }
                let config = hark_stt_local::LocalEngineConfig {
                    model_dir: model_dir.clone(),
                    decoders: *decoders,
                    ..hark_stt_local::LocalEngineConfig::default()
                };
                let engine =
                    tokio::task::spawn_blocking(move || hark_stt_local::LocalEngine::new(config))
                        .await
                        .map_err(|e| SttStartError::Unavailable(e.to_string()))?
                        .map_err(|e| SttStartError::Unavailable(e.to_string()))?;
                Ok(SttBackend::Local(engine))
            }
        }
    }

    /// Starts a link for one session, on a task of `tasks`.
    pub fn open(
        &self,
        language: &str,
        sample_rate: u32,
        session_id: Arc<str>,
        tasks: &TaskTracker,
    ) -> Result<SttLink, SttStartError> {
        let (audio_tx, audio_rx) = queue::channel(sample_rate);
        let (events_tx, events_rx) = mpsc::channel(64);
        match self {
            SttBackend::Deepgram { url, api_key, model, policy, connector } => {
                let query = hark_proto::deepgram::listen_query(model, language, sample_rate);
                let setup = deepgram::LinkSetup {
                    connector: connector.clone(),
                    url: format!("{url}?{query}"),
                    api_key: api_key.clone(),
                    attempts: Attempts::new(policy.clone()),
                    sample_rate,
                    session_id,
                };
                tasks.spawn(deepgram::DeepgramLink::new(setup, audio_rx, events_tx).run());
            }
            SttBackend::Local(engine) => {
                let stream = engine.open(sample_rate).map_err(|error| match error {
                    hark_stt_local::LocalSttError::Busy(_) => SttStartError::Busy,
                    other => SttStartError::Unavailable(other.to_string()),
                })?;
                tasks.spawn(local::run(stream, audio_rx, events_tx, session_id));
            }
        }
        Ok(SttLink { audio: audio_tx, events: events_rx })
    }
}
