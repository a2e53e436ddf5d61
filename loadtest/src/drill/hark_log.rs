//! Reads hark's JSON log (stderr) as it runs: where it listens, and the instants
//! of breaker transitions and failed pusher dials, to the millisecond.

use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use serde::Serialize;

/// A breaker transition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transition {
    /// Unix ms.
    pub unix_ms: u64,
    /// `open`, `half_open` or `closed`.
    pub to: String,
    /// hark's reason.
    pub reason: String,
}

/// What the log told so far.
#[derive(Clone, Debug, Default)]
pub struct HarkEvents {
    /// `(client listener, admin listener)` once hark listens.
    pub listening: Option<(SocketAddr, SocketAddr)>,
    /// Breaker transitions in order.
    pub transitions: Vec<Transition>,
    /// Unix ms of dials (sessions' and the prober's) that failed because nothing
    /// listened: they never reach pusher, so its counters cannot see them.
    pub refused_dials: Vec<u64>,
    /// Failed dials of any kind.
    pub failed_dials: u64,
}

impl HarkEvents {
    /// Folds one log line in; lines that are not hark's JSON are ignored.
    pub fn observe(&mut self, line: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { return };
        let fields = &value["fields"];
        let Some(message) = fields["message"].as_str() else { return };
        let text = |key: &str| fields[key].as_str().unwrap_or_default().to_owned();
        let at = value["timestamp"].as_str().and_then(unix_ms_of);
        match message {
            "hark is listening" => {
                let listen = text("listen").parse().ok();
                let admin = text("admin").parse().ok();
                if let (Some(listen), Some(admin)) = (listen, admin) {
                    self.listening = Some((listen, admin));
                }
            }
            "pusher circuit breaker opened" | "pusher circuit breaker changed state" => {
                if let Some(unix_ms) = at {
                    self.transitions.push(Transition {
                        unix_ms,
                        to: text("to"),
                        reason: text("reason"),
                    });
                }
            }
            "pusher dial failed" | "breaker probe failed" => {
                self.failed_dials += 1;
                if text("error").contains("refused") {
                    if let Some(unix_ms) = at {
                        self.refused_dials.push(unix_ms);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `2026-01-02T03:04:05.123456Z` → unix ms.
pub fn unix_ms_of(timestamp: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339_weak(timestamp.trim_end_matches('Z')).ok()?;
    u64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_transitions_and_dials() {
        let mut e = HarkEvents::default();
        e.observe(r#"{"timestamp":"2026-11-23T12:04:34.991433Z","level":"INFO","fields":{"message":"hark is listening","listen":"127.0.0.1:43667","admin":"127.0.0.1:41309"},"target":"hark_gateway"}"#);
        e.observe(r#"{"timestamp":"1970-01-01T00:00:01.500Z","level":"WARN","fields":{"message":"pusher circuit breaker opened","from":"closed","to":"open","reason":"20 connect failures within 30s"}}"#);
        e.observe(r#"{"timestamp":"1970-01-01T00:00:02Z","level":"DEBUG","fields":{"message":"pusher dial failed","session":"s","error":"pusher refused the connection"}}"#);
        e.observe(r#"{"timestamp":"1970-01-01T00:00:03Z","level":"DEBUG","fields":{"message":"pusher dial failed","error":"pusher did not complete the handshake within 3s"}}"#);
        e.observe("not json");
        assert_eq!(e.listening.unwrap().0, "127.0.0.1:43667".parse().unwrap());
        assert_eq!(e.transitions[0].unix_ms, 1500);
        assert_eq!(e.transitions[0].to, "open");
        assert_eq!(e.refused_dials, vec![2000]);
        assert_eq!(e.failed_dials, 2);
    }
}
