//! The Deepgram-compatible STT streaming protocol (hark ↔ STT), design §5.
//!
//! Hark sends binary audio frames and the JSON control messages of
//! [`Control`]; the provider answers with [`SttMessage`]s. Unknown message types
//! parse as [`SttMessage::Unknown`] so a provider that adds messages does not break
//! sessions.

use serde::{Deserialize, Serialize};

/// A message from the STT provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SttMessage {
    /// Transcription results for a span of audio.
    Results(Results),
    /// Stream metadata, sent once at the end.
    Metadata(Metadata),
    /// End of an utterance (with `utterance_end_ms`).
    UtteranceEnd(UtteranceEnd),
    /// Voice activity started (with `vad_events`).
    SpeechStarted(SpeechStarted),
    /// The provider reports an error.
    Error(SttError),
    /// Any other type: ignored.
    #[serde(other)]
    Unknown,
}

impl SttMessage {
    /// Parses one text frame from the provider.
    ///
    /// Reads the `type` first (skipping every other field without building
    /// anything), then the message's own struct straight from the text: an
    /// internally tagged enum would buffer the whole message into an intermediate
    /// tree first, and a `Results` is most of the bytes an STT link carries.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let Kind { kind } = serde_json::from_str(text)?;
        Ok(match &*kind {
            "Results" => SttMessage::Results(serde_json::from_str(text)?),
            "Metadata" => SttMessage::Metadata(serde_json::from_str(text)?),
            "UtteranceEnd" => SttMessage::UtteranceEnd(serde_json::from_str(text)?),
            "SpeechStarted" => SttMessage::SpeechStarted(serde_json::from_str(text)?),
            "Error" => SttMessage::Error(serde_json::from_str(text)?),
            _ => SttMessage::Unknown,
        })
    }

    /// Encodes the message (used by the fake provider).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("STT messages always serialize")
    }
}

/// A `Results` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Seconds from the stream start to the start of this span.
    #[serde(default)]
    pub start: f64,
    /// Length of the span in seconds.
    #[serde(default)]
    pub duration: f64,
    /// Final for this span (never revised).
    #[serde(default)]
    pub is_final: bool,
    /// The speaker paused (endpointing).
    #[serde(default)]
    pub speech_final: bool,
    /// The transcription.
    pub channel: Channel,
}

/// The `channel` of a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Alternatives, best first.
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
}

/// One transcription alternative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// The whole transcript of the span.
    #[serde(default)]
    pub transcript: String,
    /// Confidence 0..1.
    #[serde(default)]
    pub confidence: f64,
    /// Words with times and speakers.
    #[serde(default)]
    pub words: Vec<Word>,
}

/// A recognised word.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word, lower case.
    pub word: String,
    /// Seconds from the stream start.
    pub start: f64,
    /// Seconds from the stream start.
    pub end: f64,
    /// Confidence 0..1.
    #[serde(default)]
    pub confidence: f64,
    /// Diarized speaker (with `diarize=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<u32>,
    /// The word with punctuation and casing (with `punctuate`/`smart_format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punctuated_word: Option<String>,
}

impl Word {
    /// The text to show: the punctuated form when there is one.
    pub fn display(&self) -> &str {
        self.punctuated_word.as_deref().unwrap_or(&self.word)
    }
}

/// A `Metadata` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Provider's id for the stream.
    #[serde(default)]
    pub request_id: String,
    /// Seconds of audio processed.
    #[serde(default)]
    pub duration: f64,
}

/// An `UtteranceEnd` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UtteranceEnd {
    /// End of the last word, seconds from stream start.
    #[serde(default)]
    pub last_word_end: f64,
}

/// A `SpeechStarted` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeechStarted {
    /// Seconds from stream start.
    #[serde(default)]
    pub timestamp: f64,
}

/// An `Error` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SttError {
    /// Short description.
    #[serde(default)]
    pub description: String,
    /// Detail.
    #[serde(default)]
    pub message: String,
    /// Error variant, if any.
    #[serde(default)]
    pub variant: String,
}

/// Control messages hark sends to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Control {
    /// Keeps an idle stream open (sent after 5 s without audio).
    KeepAlive,
    /// Flushes and ends the stream; the provider sends the remaining results and closes.
    CloseStream,
    /// Flushes pending audio into results without ending the stream.
    Finalize,
}

impl Control {
    /// The JSON text of the control message.
    pub fn to_json(self) -> &'static str {
        match self {
            Control::KeepAlive => r#"{"type":"KeepAlive"}"#,
            Control::CloseStream => r#"{"type":"CloseStream"}"#,
            Control::Finalize => r#"{"type":"Finalize"}"#,
        }
    }
}

/// Latest word time Hark takes from a provider, in seconds from the stream start
/// (about 31 years: far beyond any session).
///
/// [`Results::speaker_runs`] clamps word times into `0.0..=MAX_TIME_SECONDS`. A
/// provider may send any JSON number; one near `f64::MAX` made the gateway's
/// millisecond rounding overflow to infinity, which JSON writes as `null`, so the
/// segments of that conversation could no longer be decoded by pusher (102) or
/// read back from the outbox. Found by the `deepgram_message` fuzz target.
pub const MAX_TIME_SECONDS: f64 = 1e9;

/// Consecutive words of one speaker, joined.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerRun {
    /// Speaker number (0 when the provider did not diarize).
    pub speaker: u32,
    /// Display forms of the words, space-joined.
    pub text: String,
    /// Start of the first word, seconds from stream start.
    pub start: f64,
    /// End of the last word, seconds from stream start.
    pub end: f64,
}

impl Results {
    /// Groups the best alternative's words into runs of one speaker. Empty
    /// transcripts give no runs. Word times are clamped into
    /// `0.0..=`[`MAX_TIME_SECONDS`], and a word never ends before it starts.
    pub fn speaker_runs(&self) -> Vec<SpeakerRun> {
        let Some(best) = self.channel.alternatives.first() else { return Vec::new() };
        let mut runs: Vec<SpeakerRun> = Vec::new();
        for word in &best.words {
            let text = word.display().trim();
            if text.is_empty() {
                continue;
            }
            let speaker = word.speaker.unwrap_or(0);
            let start = clamp_time(word.start);
            let end = clamp_time(word.end).max(start);
            match runs.last_mut() {
                Some(run) if run.speaker == speaker => {
                    run.text.push(' ');
                    run.text.push_str(text);
                    run.end = run.end.max(end);
                }
                _ => runs.push(SpeakerRun { speaker, text: text.to_owned(), start, end }),
            }
        }
        runs
    }
}

/// A provider's time in seconds, made safe to do arithmetic on (NaN cannot come
/// from JSON, but `Results` is a public struct).
fn clamp_time(seconds: f64) -> f64 {
    if seconds.is_nan() {
        0.0
    } else {
        seconds.clamp(0.0, MAX_TIME_SECONDS)
    }
}

/// Query parameters of a Deepgram listen request (design §5).
pub fn listen_query(model: &str, language: &str, sample_rate: u32) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("model", model)
        .append_pair("language", language)
        .append_pair("encoding", "linear16")
        .append_pair("sample_rate", &sample_rate.to_string())
        .append_pair("channels", "1")
        .append_pair("punctuate", "true")
        .append_pair("smart_format", "true")
        .append_pair("diarize", "true")
        .append_pair("endpointing", "300")
        .append_pair("interim_results", "false")
        .finish()
}
