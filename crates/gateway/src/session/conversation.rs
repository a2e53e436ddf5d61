//! A session's current conversation: its id, its segments (bounded), and the
//! record it becomes when it ends.

use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use hark_proto::deepgram::SpeakerRun;
use hark_proto::{ConversationRecord, Segment};
use hark_store::ParkedConversation;

/// The conversation a session is building.
#[derive(Debug)]
pub struct Conversation {
    /// Its id (a uuid), sent to pusher as 103 and used as the idempotency key.
    pub id: String,
    /// Where it starts on the session's audio clock (seconds).
    start_audio: f64,
    /// Wall-clock start, ms since the epoch.
    started_at_ms: u64,
    /// Wall-clock time of the last transcript, ms since the epoch.
    last_transcript_ms: u64,
    /// Every segment so far (≤ the session's `max_conversation_segments`).
    segments: Vec<Segment>,
}

impl Conversation {
    /// Starts a conversation at `start_audio` seconds into the session's audio.
    pub fn new(start_audio: f64) -> Self {
        let now = now_ms();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            start_audio,
            started_at_ms: now,
            last_transcript_ms: now,
            segments: Vec::new(),
        }
    }

    /// Continues a parked conversation in a session whose audio clock starts now:
    /// same id and segments, and new segment times continue from the
    /// conversation's start (the time away counts, as on a wall clock). Returns it
    /// with how long it stays open without a new transcript.
    pub fn resumed(parked: ParkedConversation) -> (Self, Duration) {
        let now = now_ms();
        let remaining = parked.remaining(now);
        let away = now.saturating_sub(parked.started_at_ms) as f64 / 1000.0;
        let conversation = Self {
            id: parked.conversation_id,
            start_audio: -away,
            started_at_ms: parked.started_at_ms,
            last_transcript_ms: parked.last_transcript_at_ms,
            segments: parked.segments,
        };
        (conversation, remaining)
    }

    /// The conversation as parked by a session that ends before it does.
    pub fn into_parked(
        self,
        uid: &str,
        language: &str,
        sample_rate: u32,
        session_id: &str,
        conversation_timeout: Duration,
    ) -> ParkedConversation {
        ParkedConversation {
            conversation_id: self.id,
            uid: uid.to_owned(),
            session_id: session_id.to_owned(),
            language: language.to_owned(),
            sample_rate,
            segments: self.segments,
            started_at_ms: self.started_at_ms,
            last_transcript_at_ms: self.last_transcript_ms,
            conversation_timeout,
        }
    }

    /// Whether any transcript arrived.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Segments so far.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Turns speaker runs (times on the session's audio clock) into segments with
    /// times relative to this conversation's start, keeps them, and returns them.
    pub fn add_runs(&mut self, runs: &[SpeakerRun]) -> Vec<Segment> {
        let new: Vec<Segment> = runs
            .iter()
            .map(|run| Segment {
                id: uuid::Uuid::new_v4().to_string(),
                text: run.text.clone(),
                speaker: Segment::speaker_label(run.speaker),
                speaker_id: run.speaker,
                is_user: false,
                person_id: None,
                start: round_ms((run.start - self.start_audio).max(0.0)),
                end: round_ms((run.end - self.start_audio).max(0.0)),
            })
            .collect();
        if !new.is_empty() {
            self.last_transcript_ms = now_ms();
        }
        self.segments.extend(new.iter().cloned());
        new
    }

    /// The full record for pusher or the fallback path.
    pub fn into_record(
        self,
        uid: &str,
        language: &str,
        sample_rate: u32,
        session_id: &str,
    ) -> ConversationRecord {
        ConversationRecord {
            version: ConversationRecord::VERSION,
            conversation_id: self.id,
            uid: uid.to_owned(),
            language: language.to_owned(),
            sample_rate,
            session_id: session_id.to_owned(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: now_ms(),
            segments: self.segments,
        }
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(speaker: u32, text: &str, start: f64, end: f64) -> SpeakerRun {
        SpeakerRun { speaker, text: text.into(), start, end }
    }

    #[test]
    fn times_are_relative_to_the_conversation_start() {
        let mut c = Conversation::new(10.0);
        let segs = c.add_runs(&[run(1, "hello there", 12.5, 13.25)]);
        assert_eq!(segs[0].start, 2.5);
        assert_eq!(segs[0].end, 3.25);
        assert_eq!(segs[0].speaker, "SPEAKER_1");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_resumed_conversation_keeps_its_id_and_its_times_continue() {
        let mut c = Conversation::new(0.0);
        c.add_runs(&[run(0, "before", 0.5, 1.0)]);
        let id = c.id.clone();
        let mut parked = c.into_parked("u", "en", 16_000, "s1", Duration::from_secs(120));
        // Parked 30 s after it started.
        parked.started_at_ms -= 30_000;
        parked.last_transcript_at_ms -= 29_000;
        let (mut resumed, remaining) = Conversation::resumed(parked);
        assert_eq!(resumed.id, id);
        assert_eq!(resumed.len(), 1);
        assert!(remaining <= Duration::from_secs(91) && remaining >= Duration::from_secs(89));
        // A word 2 s into the new session is about 32 s into the conversation.
        let new = resumed.add_runs(&[run(0, "after", 2.0, 2.5)]);
        assert!((new[0].start - 32.0).abs() < 0.05, "{}", new[0].start);
    }

    #[test]
    fn the_record_keeps_every_segment() {
        let mut c = Conversation::new(0.0);
        c.add_runs(&[run(0, "a", 0.0, 1.0), run(1, "b", 1.0, 2.0)]);
        let id = c.id.clone();
        let r = c.into_record("u", "en", 8000, "s");
        assert_eq!(r.conversation_id, id);
        assert_eq!(r.segments.len(), 2);
        assert!(r.finished_at_ms >= r.started_at_ms);
    }
}
