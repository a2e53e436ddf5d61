//! The fake pusher's counters and optional per-frame recording.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hark_proto::pusher::{peek_code, PusherFrame};
use hark_proto::Segment;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Seconds of per-second history kept.
const SERIES_SECONDS: u64 = 3600;
/// Frames kept by the recorder; later frames are counted in `frames_not_recorded`.
const MAX_RECORDED: usize = 200_000;
/// Accept instants kept for [`Recorder::accept_times`] (an hour of 300 dials/s).
const MAX_ACCEPT_TIMES: usize = 1_080_000;

/// Counters of the fake pusher.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PusherStats {
    /// The mode in force (its name).
    pub mode: String,
    /// TCP connections accepted.
    pub tcp_accepts: u64,
    /// TCP connections open now (links, handshakes in progress and held sockets).
    pub tcp_active: u64,
    /// Upgrade requests seen.
    pub handshakes: u64,
    /// Upgrades completed.
    pub handshakes_ok: u64,
    /// Upgrades answered with an HTTP error (429, 503, 400, 404).
    pub rejected_http: u64,
    /// WebSocket links open now.
    pub connections_active: u64,
    /// `(unix second, TCP accepts in it)` for the last hour, seconds without any left out.
    pub accepts_per_second: Vec<(u64, u64)>,
    /// `(unix second, upgrade requests in it)` for the last hour.
    pub handshakes_per_second: Vec<(u64, u64)>,
    /// Frames received, by code (undecodable frames with a code included).
    pub frames_by_code: BTreeMap<u32, u64>,
    /// Bytes received (whole frames), by code.
    pub bytes_by_code: BTreeMap<u32, u64>,
    /// Distinct conversations processed (first 104 of each id).
    pub conversations_processed: u64,
    /// 104s for conversations already processed.
    pub duplicates: u64,
    /// 201s sent.
    pub acks_sent: u64,
    /// Frames that did not decode (including text frames).
    pub decode_errors: u64,
    /// Distinct uids with a link open now.
    pub uids_connected: u64,
    /// Frames not recorded because the recorder was full.
    pub frames_not_recorded: u64,
}

/// One decoded frame, as recorded with `record: true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedFrame {
    /// The link it arrived on (1-based, in handshake order).
    pub conn: u64,
    /// The link's uid.
    pub uid: String,
    /// The frame code.
    pub code: u32,
    /// The conversation id of a 103 or 104.
    pub conversation: Option<String>,
    /// The start time of a 101 (Unix epoch seconds of its first sample).
    pub audio_start: Option<f64>,
    /// Unix epoch seconds at which the fake received the frame.
    #[serde(default)]
    pub received_unix: f64,
    /// PCM bytes of a 101.
    pub audio_bytes: usize,
    /// Segments of a 102.
    pub segments: Vec<Segment>,
    /// `memory_id` of a 102.
    pub memory_id: Option<String>,
}

/// Counts per unix second, oldest first.
#[derive(Debug, Default)]
struct Series(VecDeque<(u64, u64)>);

impl Series {
    fn bump(&mut self, now: u64) {
        match self.0.back_mut() {
            Some((second, count)) if *second == now => *count += 1,
            _ => self.0.push_back((now, 1)),
        }
        while self.0.front().is_some_and(|(s, _)| s + SERIES_SECONDS <= now)
            || self.0.len() > SERIES_SECONDS as usize
        {
            self.0.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Plain counters (the series and derived fields are filled in by `snapshot`).
    counters: PusherStats,
    accepts: Series,
    /// Unix milliseconds of TCP accepts, oldest first, at most the last hour.
    accept_times: VecDeque<u64>,
    handshakes: Series,
    processed: HashSet<String>,
    processed_order: Vec<String>,
    /// Open links per uid.
    uids: HashMap<String, u64>,
    frames: Vec<RecordedFrame>,
}

/// Counters behind a mutex that is never held across an `.await`, plus the watch
/// that `wait_*` subscribe to.
#[derive(Debug)]
pub(crate) struct Recorder {
    state: Mutex<State>,
    record: bool,
    /// Bumped after every change to the counters.
    changes: watch::Sender<u64>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

fn unix_now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub(crate) fn new(record: bool) -> Self {
        Self { state: Mutex::default(), record, changes: watch::Sender::new(0) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        out
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn tcp_accepted(&self) {
        self.with(|s| {
            s.counters.tcp_accepts += 1;
            s.counters.tcp_active += 1;
            s.accepts.bump(unix_now());
            let now_ms = unix_now_ms();
            s.accept_times.push_back(now_ms);
            while s.accept_times.front().is_some_and(|&t| t + SERIES_SECONDS * 1000 <= now_ms)
                || s.accept_times.len() > MAX_ACCEPT_TIMES
            {
                s.accept_times.pop_front();
            }
        });
    }

    pub(crate) fn tcp_closed(&self) {
        self.with(|s| s.counters.tcp_active -= 1);
    }

    pub(crate) fn handshake(&self) {
        self.with(|s| {
            s.counters.handshakes += 1;
            s.handshakes.bump(unix_now());
        });
    }

    pub(crate) fn rejected(&self) {
        self.with(|s| s.counters.rejected_http += 1);
    }

    pub(crate) fn link_opened(&self, uid: &str) {
        self.with(|s| {
            s.counters.handshakes_ok += 1;
            s.counters.connections_active += 1;
            *s.uids.entry(uid.to_owned()).or_default() += 1;
        });
    }

    pub(crate) fn link_closed(&self, uid: &str) {
        self.with(|s| {
            s.counters.connections_active -= 1;
            if let Some(n) = s.uids.get_mut(uid) {
                *n -= 1;
                if *n == 0 {
                    s.uids.remove(uid);
                }
            }
        });
    }

    /// Counts, decodes and (if enabled) records a binary frame.
    pub(crate) fn frame(&self, conn: u64, uid: &str, bytes: Bytes) -> Option<PusherFrame> {
        let len = bytes.len() as u64;
        let code = peek_code(&bytes);
        let decoded = PusherFrame::decode(bytes);
        self.with(|s| {
            if let Some(code) = code {
                *s.counters.frames_by_code.entry(code).or_default() += 1;
                *s.counters.bytes_by_code.entry(code).or_default() += len;
            }
            match &decoded {
                Err(_) => s.counters.decode_errors += 1,
                Ok(frame) if self.record => {
                    if s.frames.len() < MAX_RECORDED {
                        s.frames.push(recorded(conn, uid, frame));
                    } else {
                        s.counters.frames_not_recorded += 1;
                    }
                }
                Ok(_) => {}
            }
        });
        decoded.ok()
    }

    /// A text frame (pusher speaks binary only).
    pub(crate) fn text_frame(&self) {
        self.with(|s| s.counters.decode_errors += 1);
    }

    /// Marks `id` processed; `false` (and a counted duplicate) if it already was.
    pub(crate) fn process(&self, id: &str) -> bool {
        self.with(|s| {
            if s.processed.insert(id.to_owned()) {
                s.processed_order.push(id.to_owned());
                true
            } else {
                s.counters.duplicates += 1;
                false
            }
        })
    }

    pub(crate) fn ack_sent(&self) {
        self.with(|s| s.counters.acks_sent += 1);
    }

    pub(crate) fn snapshot(&self) -> PusherStats {
        self.read(|s| PusherStats {
            accepts_per_second: s.accepts.0.iter().copied().collect(),
            handshakes_per_second: s.handshakes.0.iter().copied().collect(),
            conversations_processed: s.processed.len() as u64,
            uids_connected: s.uids.len() as u64,
            ..s.counters.clone()
        })
    }

    pub(crate) fn frames(&self) -> Vec<RecordedFrame> {
        self.read(|s| s.frames.clone())
    }

    /// Unix milliseconds of the TCP accepts at or after `since_ms` (last hour kept).
    pub(crate) fn accept_times(&self, since_ms: u64) -> Vec<u64> {
        self.read(|s| s.accept_times.iter().copied().filter(|&t| t >= since_ms).collect())
    }

    pub(crate) fn processed_ids(&self) -> Vec<String> {
        self.read(|s| s.processed_order.clone())
    }

    pub(crate) fn changes_watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn recorded(conn: u64, uid: &str, frame: &PusherFrame) -> RecordedFrame {
    let mut r = RecordedFrame {
        conn,
        uid: uid.to_owned(),
        code: frame.code(),
        conversation: None,
        audio_start: None,
        received_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        audio_bytes: 0,
        segments: Vec::new(),
        memory_id: None,
    };
    match frame {
        PusherFrame::Audio { start, pcm } => {
            r.audio_start = Some(*start);
            r.audio_bytes = pcm.len();
        }
        PusherFrame::Segments(p) => {
            r.segments.clone_from(&p.segments);
            r.memory_id = Some(p.memory_id.clone());
        }
        PusherFrame::Conversation(id) => r.conversation = Some(id.clone()),
        PusherFrame::Process(p) => r.conversation = Some(p.conversation_id.clone()),
        PusherFrame::Heartbeat | PusherFrame::Ack(_) => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keeps_the_last_hour() {
        let mut series = Series::default();
        series.bump(10);
        series.bump(10);
        series.bump(11);
        assert_eq!(series.0, [(10, 2), (11, 1)]);
        series.bump(10 + SERIES_SECONDS);
        assert_eq!(series.0, [(11, 1), (10 + SERIES_SECONDS, 1)]);
    }

    #[test]
    fn duplicates_are_counted_not_reprocessed() {
        let r = Recorder::new(false);
        assert!(r.process("a"));
        assert!(!r.process("a"));
        assert!(r.process("b"));
        let stats = r.snapshot();
        assert_eq!((stats.conversations_processed, stats.duplicates), (2, 1));
        assert_eq!(r.processed_ids(), ["a", "b"]);
    }
}
