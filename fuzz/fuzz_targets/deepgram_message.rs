//! Fuzzes the Deepgram message parser (`SttMessage::parse`), which reads every text
//! frame the STT provider sends, and `Results::speaker_runs`, which turns a result
//! into the runs a session forwards to clients, pusher and the outbox.
//!
//! Checks: parsing arbitrary text never panics, hangs or allocates without bound;
//! speaker runs are well formed (non-empty text, a new run only on a speaker
//! change, no displayable word lost, times within `0..=MAX_TIME_SECONDS` and
//! `start <= end`); whatever a provider sends, the segments the
//! gateway makes of it (`Conversation::add_runs`) still survive a 102 frame and an
//! outbox record; and a parsed message survives the fake provider's encoder
//! (`to_json` → `parse`).

#![no_main]

use hark_gateway::outbox::format;
use hark_gateway::session::Conversation;
use hark_proto::deepgram::{SttMessage, MAX_TIME_SECONDS};
use hark_proto::{PusherFrame, SegmentsPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(message) = SttMessage::parse(&text) else {
        return;
    };

    if let SttMessage::Results(results) = &message {
        let runs = results.speaker_runs();
        let words = results.channel.alternatives.first().map_or(&[][..], |a| &a.words[..]);
        let shown = words.iter().filter(|w| !w.display().trim().is_empty()).count();
        let pieces: usize = runs.iter().map(|r| r.text.split(' ').count()).sum();
        // A display form may hold inner spaces, so runs can split into more
        // pieces than there are words; never into fewer.
        assert!(pieces >= shown, "{shown} words shown but runs hold {pieces} pieces");
        for pair in runs.windows(2) {
            assert_ne!(pair[0].speaker, pair[1].speaker, "adjacent runs of one speaker");
        }
        for run in &runs {
            assert!(!run.text.is_empty(), "empty run");
            assert!(
                (0.0..=MAX_TIME_SECONDS).contains(&run.start)
                    && (run.start..=MAX_TIME_SECONDS).contains(&run.end),
                "run times out of range: {run:?}"
            );
        }

        // What the session does with them: segments go to pusher in a 102 frame
        // and, when the conversation ends, into a record for the outbox.
        let mut conversation = Conversation::new(0.0);
        let segments = conversation.add_runs(&runs);
        let frame =
            PusherFrame::Segments(SegmentsPayload { segments, memory_id: conversation.id.clone() });
        if let Err(e) = PusherFrame::decode(frame.encode()) {
            panic!("segments from {results:?} do not survive a 102 frame: {e}");
        }
        let record = conversation.into_record("uid", "en", 16_000, "session");
        if let Err(e) = format::decode(&format::encode(&record)) {
            panic!("segments from {results:?} do not survive the outbox: {e}");
        }
    }

    let json = message.to_json();
    let again = SttMessage::parse(&json)
        .unwrap_or_else(|e| panic!("to_json of {message:?} does not parse: {e}: {json}"));
    assert_eq!(again, message, "message changed across to_json → parse");
});
