//! The fake pusher's fault modes and their string/JSON forms.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Ack delay of `slow-ack` when none is given.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_secs(2);

/// How the fake pusher behaves; switch with [`FakePusher::set_mode`](super::FakePusher::set_mode).
///
/// What a mode does to links that are already open when it is entered:
/// `refuse` drops them without a close frame (the process is "gone");
/// `close-1011` closes them with 1011; `stall` stops reading them until the mode
/// changes (then they resume); every other mode leaves them working.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PusherMode {
    /// Normal service.
    #[default]
    Up,
    /// The port is closed: connects get ECONNREFUSED. Leaving re-binds the same port.
    Refuse,
    /// TCP is accepted, the handshake is never answered (sockets held up to 10 min,
    /// or until the mode changes).
    Blackhole,
    /// Open links stop reading (no pongs, no acks); new connections are held like
    /// `blackhole`.
    Stall,
    /// Handshakes complete, then the link is closed with 1011 at once.
    Close1011,
    /// Upgrades are answered 429, with `Retry-After` sent verbatim when given.
    Http429 {
        /// The `Retry-After` header value, verbatim (seconds or an HTTP-date).
        retry_after: Option<String>,
    },
    /// Upgrades are answered 503, with `Retry-After` sent verbatim when given.
    Http503 {
        /// The `Retry-After` header value, verbatim (seconds or an HTTP-date).
        retry_after: Option<String>,
    },
    /// Like `up`, but every 201 is sent `delay` after its 104 arrived.
    SlowAck {
        /// Delay before each ack.
        delay: Duration,
    },
}

/// Why a mode could not be built from its parts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// The name is not one of the modes.
    #[error(
        "unknown mode {0:?}; expected up, refuse, blackhole, stall, close-1011, \
         http-429, http-503 or slow-ack"
    )]
    Unknown(String),
    /// A field was given that the mode does not use.
    #[error("{field} does not apply to mode {mode}")]
    Irrelevant {
        /// The field.
        field: &'static str,
        /// The mode.
        mode: &'static str,
    },
    /// `retry_after` cannot be sent as a header value.
    #[error("retry_after {0:?} is not a valid header value")]
    BadRetryAfter(String),
    /// `delay` is not a human-readable duration.
    #[error("delay {0:?} is not a duration (e.g. 250ms, 2s)")]
    BadDelay(String),
}

/// The JSON form of a mode, used by the control port:
/// `{"mode":"http-429","retry_after":"5"}`, `{"mode":"slow-ack","delay":"2s"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeSpec {
    /// The mode's name.
    pub mode: String,
    /// `Retry-After` value for `http-429`/`http-503`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Ack delay for `slow-ack` (humantime, e.g. `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

impl PusherMode {
    /// The mode's name, as the CLI and control port spell it.
    pub fn name(&self) -> &'static str {
        match self {
            PusherMode::Up => "up",
            PusherMode::Refuse => "refuse",
            PusherMode::Blackhole => "blackhole",
            PusherMode::Stall => "stall",
            PusherMode::Close1011 => "close-1011",
            PusherMode::Http429 { .. } => "http-429",
            PusherMode::Http503 { .. } => "http-503",
            PusherMode::SlowAck { .. } => "slow-ack",
        }
    }

    /// Builds a mode from its name and the fields that apply to it. A field given to
    /// a mode that does not use it is an error, so a typo cannot pass silently.
    pub fn from_parts(
        name: &str,
        retry_after: Option<String>,
        delay: Option<Duration>,
    ) -> Result<Self, ModeError> {
        let mode = match name {
            "up" => PusherMode::Up,
            "refuse" => PusherMode::Refuse,
            "blackhole" => PusherMode::Blackhole,
            "stall" => PusherMode::Stall,
            "close-1011" => PusherMode::Close1011,
            "http-429" | "http-503" => {
                let mode = if name == "http-429" { "http-429" } else { "http-503" };
                if delay.is_some() {
                    return Err(ModeError::Irrelevant { field: "delay", mode });
                }
                if let Some(value) = &retry_after {
                    if HeaderValue::from_str(value).is_err() {
                        return Err(ModeError::BadRetryAfter(value.clone()));
                    }
                }
                return Ok(if mode == "http-429" {
                    PusherMode::Http429 { retry_after }
                } else {
                    PusherMode::Http503 { retry_after }
                });
            }
            "slow-ack" => PusherMode::SlowAck { delay: delay.unwrap_or(DEFAULT_ACK_DELAY) },
            other => return Err(ModeError::Unknown(other.to_owned())),
        };
        if retry_after.is_some() {
            return Err(ModeError::Irrelevant { field: "retry_after", mode: mode.name() });
        }
        if delay.is_some() && !matches!(mode, PusherMode::SlowAck { .. }) {
            return Err(ModeError::Irrelevant { field: "delay", mode: mode.name() });
        }
        Ok(mode)
    }

    /// The JSON form.
    pub fn spec(&self) -> ModeSpec {
        let (retry_after, delay) = match self {
            PusherMode::Http429 { retry_after } | PusherMode::Http503 { retry_after } => {
                (retry_after.clone(), None)
            }
            PusherMode::SlowAck { delay } => (None, Some(humantime::format_duration(*delay))),
            _ => (None, None),
        };
        ModeSpec { mode: self.name().to_owned(), retry_after, delay: delay.map(|d| d.to_string()) }
    }

    /// Whether new TCP connections are held without an answer in this mode.
    pub(crate) fn holds_new_connections(&self) -> bool {
        matches!(self, PusherMode::Blackhole | PusherMode::Stall)
    }
}

impl TryFrom<ModeSpec> for PusherMode {
    type Error = ModeError;

    fn try_from(spec: ModeSpec) -> Result<Self, ModeError> {
        let delay = match spec.delay {
            Some(text) => {
                Some(humantime::parse_duration(&text).map_err(|_| ModeError::BadDelay(text))?)
            }
            None => None,
        };
        PusherMode::from_parts(&spec.mode, spec.retry_after, delay)
    }
}

/// Parses a bare name; `http-429`/`http-503` get no `Retry-After`, `slow-ack` gets
/// [`DEFAULT_ACK_DELAY`].
impl FromStr for PusherMode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<Self, ModeError> {
        PusherMode::from_parts(s, None, None)
    }
}

impl fmt::Display for PusherMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            PusherMode::Http429 { retry_after: Some(v) }
            | PusherMode::Http503 { retry_after: Some(v) } => write!(f, " (Retry-After: {v})"),
            PusherMode::SlowAck { delay } => write!(f, " ({})", humantime::format_duration(*delay)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        let modes = [
            PusherMode::Up,
            PusherMode::Refuse,
            PusherMode::Blackhole,
            PusherMode::Stall,
            PusherMode::Close1011,
            PusherMode::Http429 { retry_after: Some("5".into()) },
            PusherMode::Http503 { retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()) },
            PusherMode::Http503 { retry_after: None },
            PusherMode::SlowAck { delay: Duration::from_millis(1500) },
        ];
        for mode in modes {
            assert_eq!(PusherMode::try_from(mode.spec()), Ok(mode.clone()), "{mode}");
            assert_eq!(mode.name().parse::<PusherMode>().unwrap().name(), mode.name());
        }
    }

    #[test]
    fn rejects_unknown_and_misplaced_fields() {
        assert!(matches!("down".parse::<PusherMode>(), Err(ModeError::Unknown(_))));
        let bad = |mode: &str, retry: Option<&str>, delay: Option<&str>| {
            let spec = ModeSpec {
                mode: mode.into(),
                retry_after: retry.map(Into::into),
                delay: delay.map(Into::into),
            };
            PusherMode::try_from(spec).unwrap_err()
        };
        assert!(matches!(bad("up", Some("5"), None), ModeError::Irrelevant { .. }));
        assert!(matches!(bad("http-429", None, Some("1s")), ModeError::Irrelevant { .. }));
        assert!(matches!(bad("slow-ack", None, Some("soon")), ModeError::BadDelay(_)));
        assert!(matches!(bad("http-503", Some("5\n"), None), ModeError::BadRetryAfter(_)));
    }
}
