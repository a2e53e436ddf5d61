//! The app client protocol (app ↔ hark), design §3.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One transcript segment: consecutive words of one speaker.
///
/// Sent to clients as part of a bare JSON array, and to pusher inside 102 frames.
/// `start`/`end` are seconds from the start of the segment's conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Unique id of the segment (a uuid).
    pub id: String,
    /// The words, joined by single spaces.
    pub text: String,
    /// `"SPEAKER_n"`, with `n` = `speaker_id`.
    pub speaker: String,
    /// Diarized speaker number from STT (0 when the engine does not diarize).
    pub speaker_id: u32,
    /// Whether the speaker is the app's user; Hark never knows, so always `false`.
    pub is_user: bool,
    /// Person matched to the speaker; Hark never knows, so always `null`.
    pub person_id: Option<String>,
    /// Seconds from the conversation's start.
    pub start: f64,
    /// Seconds from the conversation's start.
    pub end: f64,
}

impl Segment {
    /// The `speaker` label for a speaker number.
    pub fn speaker_label(speaker_id: u32) -> String {
        format!("SPEAKER_{speaker_id}")
    }
}

/// Status values of `service_status` events: exactly the values the omi app knows.
///
/// The app shows "listening" only while the last `service_status` is `ready`, so
/// nothing about pusher ever goes here (see [`ProcessingStatus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// The session was accepted and is being set up.
    Initiating,
    /// The STT link is being (re)established.
    SttInitiating,
    /// Audio is being transcribed.
    Ready,
}

/// Status values of `processing_status` events: whether finished conversations are
/// being processed live (pusher) or wait on the fallback path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingStatus {
    /// Pusher is unavailable: transcription continues, processing is delayed.
    Degraded,
    /// Pusher is back after a `Degraded`.
    Recovered,
}

/// How a conversation was handed off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Pusher acknowledged the conversation with a 201.
    Pusher,
    /// The fallback path (durable outbox or HTTP sink) accepted it.
    Fallback,
}

impl Via {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Pusher => "pusher",
            Via::Fallback => "fallback",
        }
    }
}

/// A JSON object event from hark to the client (transcripts are bare arrays instead).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Live state of the service for this session.
    ServiceStatus {
        /// The state.
        status: ServiceStatus,
        /// Human-readable detail.
        status_text: String,
    },
    /// Whether conversation processing (pusher) is live or delayed.
    ProcessingStatus {
        /// The state.
        status: ProcessingStatus,
        /// Human-readable detail.
        status_text: String,
    },
    /// The user's audio quota for this window is used up; the session closes 1008
    /// after handing its conversation off.
    QuotaExceeded {
        /// Seconds until the user may stream again (the window's reset, jittered).
        retry_after: u64,
    },
    /// The answer to a `/v4/web/listen` auth message (omi's
    /// `{"type":"auth_response","success":…}`).
    AuthResponse {
        /// Whether the token was accepted (the session starts) or not (a close 1008
        /// follows).
        success: bool,
    },
    /// A conversation has been handed off.
    ConversationCreated {
        /// The conversation's id.
        conversation_id: String,
        /// Which path took it.
        via: Via,
    },
}

impl ServerEvent {
    /// Encodes the event as the text of a WebSocket frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events always serialize")
    }
}

/// Encodes a transcript update: a bare JSON array of segments.
pub fn segments_to_json(segments: &[Segment]) -> String {
    serde_json::to_string(segments).expect("segments always serialize")
}

/// Anything hark sends the client in a text frame, as a client decodes it.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// A transcript update.
    Segments(Vec<Segment>),
    /// A status or conversation event.
    Event(ServerEvent),
}

impl ServerMessage {
    /// Decodes a text frame from hark.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim_start().starts_with('[') {
            serde_json::from_str(text).map(ServerMessage::Segments)
        } else {
            serde_json::from_str(text).map(ServerMessage::Event)
        }
    }
}

/// Audio encodings a client may send (design §3, "Codecs"). Every one is decoded
/// into little-endian signed 16-bit mono PCM at the session's `sample_rate` before
/// anything downstream sees it (`hark-codec` does that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Little-endian signed 16-bit mono PCM, passed through as it is.
    Pcm16,
    /// 8-bit **unsigned** mono PCM (omi's meaning): sample − 128, widened to 16 bit.
    Pcm8,
    /// G.711 µ-law bytes, one per sample.
    Mulaw,
    /// One Opus packet per binary frame; omi devices send 160-sample frames.
    Opus,
    /// One Opus packet per binary frame; 320-sample frames.
    OpusFs320,
    /// LC3 at 16 kHz: 10 ms frames of 30 bytes (omi's LC3 devices).
    Lc3Fs1030,
    /// AAC-LC in ADTS framing.
    Aac,
}

/// Opus decodes only at these rates (libopus refuses any other).
pub const OPUS_SAMPLE_RATES: &[u32] = &[8_000, 12_000, 16_000, 24_000, 48_000];
/// `lc3_fs1030` is 16 kHz only.
pub const LC3_FS1030_SAMPLE_RATES: &[u32] = &[16_000];
/// The ADTS sampling frequencies inside [`SAMPLE_RATES`]: an ADTS header cannot
/// name any other, and Hark does not resample.
pub const AAC_SAMPLE_RATES: &[u32] =
    &[8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

impl Codec {
    /// Every codec, in the order the 400 reason lists them.
    pub const ALL: [Codec; 7] = [
        Codec::Pcm16,
        Codec::Pcm8,
        Codec::Mulaw,
        Codec::Opus,
        Codec::OpusFs320,
        Codec::Lc3Fs1030,
        Codec::Aac,
    ];

    /// The query value (also the `codec` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcm16 => "pcm16",
            Codec::Pcm8 => "pcm8",
            Codec::Mulaw => "mulaw",
            Codec::Opus => "opus",
            Codec::OpusFs320 => "opus_fs320",
            Codec::Lc3Fs1030 => "lc3_fs1030",
            Codec::Aac => "aac",
        }
    }

    /// The codec a query value names (case-sensitive, as omi compares it).
    pub fn from_query(value: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|codec| codec.as_str() == value)
    }

    /// The sample rates this codec can be decoded at, when it restricts them
    /// (`None`: any rate in [`SAMPLE_RATES`]).
    pub fn sample_rates(self) -> Option<&'static [u32]> {
        match self {
            Codec::Pcm16 | Codec::Pcm8 | Codec::Mulaw => None,
            Codec::Opus | Codec::OpusFs320 => Some(OPUS_SAMPLE_RATES),
            Codec::Lc3Fs1030 => Some(LC3_FS1030_SAMPLE_RATES),
            Codec::Aac => Some(AAC_SAMPLE_RATES),
        }
    }

    /// Whether a session of this codec can run at `sample_rate` (already inside
    /// [`SAMPLE_RATES`]).
    pub fn allows_sample_rate(self, sample_rate: u32) -> bool {
        self.sample_rates().is_none_or(|rates| rates.contains(&sample_rate))
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The supported codecs as the 400 reason lists them.
const SUPPORTED_CODECS: &str = "pcm16, pcm8, mulaw, opus, opus_fs320, lc3_fs1030, aac";

/// Why an upgrade query was refused; the `Display` text is the one-line reason sent
/// with the HTTP 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter's value could not be parsed or is out of range.
    #[error("invalid {param}: {reason}")]
    Invalid {
        /// The query parameter.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `codec` names an encoding Hark does not take.
    #[error("unsupported codec {0:?}: supported codecs are {SUPPORTED_CODECS}")]
    Codec(String),
    /// `codec=lc3`: LC3 without a frame duration cannot be decoded (omi refuses it
    /// too); `lc3_fs1030` is the variant devices send.
    #[error(
        "unsupported codec \"lc3\": lc3 needs a frame duration; use lc3_fs1030 \
         (10 ms frames of 30 bytes at 16000 Hz)"
    )]
    BareLc3,
    /// The codec cannot be decoded at the requested sample rate.
    #[error("invalid sample_rate: codec {codec} takes {} Hz, not {sample_rate}", list_rates(.allowed))]
    CodecSampleRate {
        /// The session's codec.
        codec: Codec,
        /// The requested (or default) sample rate.
        sample_rate: u32,
        /// The rates the codec takes.
        allowed: &'static [u32],
    },
    /// `uid` is required when auth mode is `none`.
    #[error("missing uid: the uid query parameter is required when authentication is off")]
    MissingUid,
}

/// `8000, 12000 or 16000`.
fn list_rates(rates: &[u32]) -> String {
    match rates {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(u32::to_string).collect();
            format!("{} or {last}", init.join(", "))
        }
    }
}

/// The validated query of a `/v4/listen` upgrade.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenParams {
    /// Language passed to STT (`en`).
    pub language: String,
    /// Sample rate of the client's audio in Hz (8000), and of the PCM16 it decodes to.
    pub sample_rate: u32,
    /// Encoding of the client's audio (`pcm8`).
    pub codec: Codec,
    /// Channel count; only 1 is accepted.
    pub channels: u8,
    /// Silence (no new transcript) after which a conversation ends (120 s;
    /// `conversation_timeout=-1` gives [`NEVER_SPLIT_CAP`]).
    pub conversation_timeout: Duration,
    /// The user id from the query, if any (used only with auth mode `none`).
    pub uid: Option<String>,
}

/// What `conversation_timeout=-1` ("never split by silence") means: a conversation
/// still ends after this long without new transcript, as omi caps it.
pub const NEVER_SPLIT_CAP: Duration = Duration::from_secs(4 * 60 * 60);

/// Smallest and largest sample rates Hark accepts.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=48_000;
/// Longest `uid` accepted from a query, in bytes of UTF-8.
pub const MAX_UID_LEN: usize = 128;

impl Default for ListenParams {
    fn default() -> Self {
        Self {
            language: "en".to_owned(),
            sample_rate: 8_000,
            codec: Codec::Pcm8,
            channels: 1,
            conversation_timeout: Duration::from_secs(120),
            uid: None,
        }
    }
}

impl ListenParams {
    /// Parses and validates an upgrade query string (without the leading `?`).
    ///
    /// Unknown parameters are ignored so newer apps can talk to older relays.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut params = ListenParams::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "language" => {
                    let ok = (2..=16).contains(&value.len())
                        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                    if !ok {
                        return Err(invalid(
                            "language",
                            "expected a language tag like en or pt-BR",
                        ));
                    }
                    params.language = value.into_owned();
                }
                "sample_rate" => {
                    let rate: u32 = value.parse().map_err(|_| {
                        invalid("sample_rate", format!("{value:?} is not a number"))
                    })?;
                    if !SAMPLE_RATES.contains(&rate) {
                        return Err(invalid(
                            "sample_rate",
                            format!(
                                "{rate} is outside {}..={}",
                                SAMPLE_RATES.start(),
                                SAMPLE_RATES.end()
                            ),
                        ));
                    }
                    params.sample_rate = rate;
                }
                "codec" => {
                    params.codec = match Codec::from_query(&value) {
                        Some(codec) => codec,
                        None if value == "lc3" => return Err(QueryError::BareLc3),
                        None => return Err(QueryError::Codec(value.into_owned())),
                    }
                }
                "channels" => match value.parse::<u8>() {
                    Ok(1) => params.channels = 1,
                    _ => {
                        return Err(invalid(
                            "channels",
                            format!("{value:?}: only 1 channel is supported"),
                        ))
                    }
                },
                // omi's "never split" setting: no split by silence, capped at 4 h.
                "conversation_timeout" if value == "-1" => {
                    params.conversation_timeout = NEVER_SPLIT_CAP;
                }
                "conversation_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        invalid(
                            "conversation_timeout",
                            format!("{value:?} is not a whole number of seconds"),
                        )
                    })?;
                    if !(1..=86_400).contains(&secs) {
                        return Err(invalid(
                            "conversation_timeout",
                            "must be between 1 and 86400 seconds, or -1 for no split",
                        ));
                    }
                    params.conversation_timeout = Duration::from_secs(secs);
                }
                "uid" => {
                    let ok = !value.is_empty()
                        && value.len() <= MAX_UID_LEN
                        && value.chars().all(|c| !c.is_control() && !c.is_whitespace());
                    if !ok {
                        return Err(invalid(
                            "uid",
                            format!("must be 1..={MAX_UID_LEN} bytes without spaces or control characters"),
                        ));
                    }
                    params.uid = Some(value.into_owned());
                }
                _ => {}
            }
        }
        // After the whole query: `codec` may come before or after `sample_rate`.
        if let Some(allowed) = params.codec.sample_rates() {
            if !allowed.contains(&params.sample_rate) {
                return Err(QueryError::CodecSampleRate {
                    codec: params.codec,
                    sample_rate: params.sample_rate,
                    allowed,
                });
            }
        }
        Ok(params)
    }

    /// The `conversation_timeout` value as a client sends it (`-1` for no split).
    fn timeout_query_value(&self) -> String {
        if self.conversation_timeout == NEVER_SPLIT_CAP {
            "-1".to_owned()
        } else {
            self.conversation_timeout.as_secs().to_string()
        }
    }

    /// Renders the query string a client would send for these parameters.
    pub fn to_query(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        out.append_pair("language", &self.language)
            .append_pair("sample_rate", &self.sample_rate.to_string())
            .append_pair("codec", self.codec.as_str())
            .append_pair("channels", &self.channels.to_string())
            .append_pair("conversation_timeout", &self.timeout_query_value());
        if let Some(uid) = &self.uid {
            out.append_pair("uid", uid);
        }
        out.finish()
    }
}

fn invalid(param: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid { param, reason: reason.into() }
}

/// Frames of at most this many bytes are keep-alives, not audio.
pub const KEEPALIVE_MAX_BYTES: usize = 2;

/// Client message types omi's apps send, which Hark accepts and ignores (they drive
/// features outside a relay's job: photos, speaker naming, suggestions).
pub const KNOWN_CLIENT_TYPES: &[&str] =
    &["image_chunk", "speaker_assigned", "suggested_transcript", "skip_question"];

/// The bounded label for a client text frame: its `type` when it is one of
/// [`KNOWN_CLIENT_TYPES`], `other` for any other typed JSON object, `invalid` for
/// text that is not one. A client cannot mint label values.
pub fn client_text_label(text: &str) -> &'static str {
    match client_text_type(text) {
        Some(kind) => KNOWN_CLIENT_TYPES.iter().find(|k| **k == kind).copied().unwrap_or("other"),
        None => "invalid",
    }
}

/// The `type` of a client text frame, if it has one. Hark ignores all client text
/// frames today; this lets it log what it ignored.
pub fn client_text_type(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Typed>(text).ok().map(|t| t.kind)
}
