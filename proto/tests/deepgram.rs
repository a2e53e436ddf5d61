//! Deepgram messages of real-world shape (`proto/testdata/deepgram/`): parsing, the
//! fields Hark reads, and speaker grouping. These fixtures are hand-written inputs in
//! the shape Deepgram's live API sends (extra fields included); they are not blessed.

use hark_proto::deepgram::{
    listen_query, Control, Metadata, Results, SpeakerRun, SpeechStarted, SttError, SttMessage,
    UtteranceEnd, MAX_TIME_SECONDS,
};
use hark_proto::pusher::{PusherFrame, SegmentsPayload};
use hark_proto::Segment;

fn fixture(name: &str) -> String {
    let path = format!("{}/testdata/deepgram/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str) -> SttMessage {
    SttMessage::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn results(name: &str) -> Results {
    match parse(name) {
        SttMessage::Results(r) => r,
        other => panic!("{name}: expected Results, got {other:?}"),
    }
}

fn run(speaker: u32, text: &str, start: f64, end: f64) -> SpeakerRun {
    SpeakerRun { speaker, text: text.to_owned(), start, end }
}

#[test]
fn multi_speaker_words_group_into_runs() {
    let r = results("results_multi_speaker.json");
    assert!(r.is_final);
    assert!(r.speech_final);
    assert_eq!(r.start, 4.96);
    assert_eq!(r.duration, 3.12);
    let best = &r.channel.alternatives[0];
    assert_eq!(best.transcript, "Hey there. Hi, Sam. Great.");
    assert_eq!(best.words.len(), 5);
    assert_eq!(best.words[2].speaker, Some(1));
    assert_eq!(best.words[2].punctuated_word.as_deref(), Some("Hi,"));

    // Speakers 0,0,1,1,0 → three runs; punctuated forms; first start, last end.
    assert_eq!(
        r.speaker_runs(),
        vec![
            run(0, "Hey there.", 5.04, 5.7599998),
            run(1, "Hi, Sam.", 6.08, 6.7999997),
            run(0, "Great.", 7.3599997, 7.8399997),
        ]
    );
}

#[test]
fn empty_transcript_gives_no_runs() {
    let r = results("results_empty.json");
    assert!(r.is_final);
    assert!(!r.speech_final);
    assert_eq!(r.channel.alternatives[0].transcript, "");
    assert!(r.speaker_runs().is_empty());
}

#[test]
fn missing_punctuated_word_uses_plain_word() {
    let r = results("results_no_punctuation.json");
    assert!(r.channel.alternatives[0].words.iter().all(|w| w.punctuated_word.is_none()));
    assert_eq!(r.channel.alternatives[0].words[0].display(), "turn");
    assert_eq!(r.speaker_runs(), vec![run(0, "turn the lights off", 0.32, 1.52)]);
}

#[test]
fn no_alternatives_gives_no_runs() {
    let r = results("results_no_alternatives.json");
    assert!(r.channel.alternatives.is_empty());
    assert!(r.speaker_runs().is_empty());
}

#[test]
fn words_without_speaker_are_speaker_zero() {
    // diarize=false: no `speaker` on words.
    let text = r#"{"type":"Results","start":0,"duration":1,"is_final":true,"speech_final":true,
        "channel":{"alternatives":[{"transcript":"hello world","confidence":0.9,"words":[
          {"word":"hello","start":0.1,"end":0.4,"confidence":0.9,"punctuated_word":"Hello"},
          {"word":"world","start":0.4,"end":0.8,"confidence":0.9,"punctuated_word":"world."}]}]}}"#;
    let SttMessage::Results(r) = SttMessage::parse(text).expect("parses") else {
        panic!("expected Results")
    };
    assert_eq!(r.speaker_runs(), vec![run(0, "Hello world.", 0.1, 0.8)]);
}

#[test]
fn blank_words_are_skipped_and_do_not_split_runs() {
    let text = r#"{"type":"Results","channel":{"alternatives":[{"words":[
          {"word":"a","start":1.0,"end":1.2,"speaker":2},
          {"word":" ","start":1.2,"end":1.3,"speaker":3},
          {"word":"b","start":1.3,"end":1.5,"speaker":2,"punctuated_word":"  b. "}]}]}}"#;
    let SttMessage::Results(r) = SttMessage::parse(text).expect("parses") else {
        panic!("expected Results")
    };
    assert_eq!(r.speaker_runs(), vec![run(2, "a b.", 1.0, 1.5)]);
}

/// Regression (fuzz target `deepgram_message`): a word time near `f64::MAX` became
/// infinite once the gateway turned it into milliseconds, JSON wrote it as `null`,
/// and the conversation's 102 frames and outbox record no longer decoded.
#[test]
fn absurd_word_times_are_clamped() {
    let text = r#"{"type":"Results","channel":{"alternatives":[{"words":[
          {"word":"huge","start":1e306,"end":1.7976931348623157e308},
          {"word":"negative","start":-5,"end":-1,"speaker":1},
          {"word":"backwards","start":3.0,"end":2.0,"speaker":2}]}]}}"#;
    let SttMessage::Results(r) = SttMessage::parse(text).expect("parses") else {
        panic!("expected Results")
    };
    let runs = r.speaker_runs();
    assert_eq!(
        runs,
        vec![
            run(0, "huge", MAX_TIME_SECONDS, MAX_TIME_SECONDS),
            run(1, "negative", 0.0, 0.0),
            run(2, "backwards", 3.0, 3.0),
        ]
    );
    // What the gateway does with them (conversation.rs: seconds → rounded ms).
    let segments: Vec<Segment> = runs
        .iter()
        .map(|run| Segment {
            id: "s".into(),
            text: run.text.clone(),
            speaker: Segment::speaker_label(run.speaker),
            speaker_id: run.speaker,
            is_user: false,
            person_id: None,
            start: (run.start * 1000.0).round() / 1000.0,
            end: (run.end * 1000.0).round() / 1000.0,
        })
        .collect();
    let frame = PusherFrame::Segments(SegmentsPayload { segments, memory_id: "c".into() });
    assert_eq!(PusherFrame::decode(frame.encode()).expect("decodes"), frame);
}

#[test]
fn only_the_best_alternative_is_used() {
    let text = r#"{"type":"Results","channel":{"alternatives":[
          {"transcript":"one","words":[{"word":"one","start":0.0,"end":0.5}]},
          {"transcript":"won","words":[{"word":"won","start":0.0,"end":0.5}]}]}}"#;
    let SttMessage::Results(r) = SttMessage::parse(text).expect("parses") else {
        panic!("expected Results")
    };
    assert_eq!(r.speaker_runs(), vec![run(0, "one", 0.0, 0.5)]);
}

#[test]
fn unknown_type_parses_as_unknown() {
    assert_eq!(parse("unknown_type.json"), SttMessage::Unknown);
    assert_eq!(
        SttMessage::parse(r#"{"type":"SomethingNew"}"#).expect("parses"),
        SttMessage::Unknown
    );
}

#[test]
fn metadata() {
    let expected =
        Metadata { request_id: "5a1e9f0c-2b7d-4c3a-8e6f-1d0b9a8c7e65".to_owned(), duration: 25.68 };
    assert_eq!(parse("metadata.json"), SttMessage::Metadata(expected));
}

#[test]
fn utterance_end() {
    let expected = UtteranceEnd { last_word_end: 7.8399997 };
    assert_eq!(parse("utterance_end.json"), SttMessage::UtteranceEnd(expected));
}

#[test]
fn speech_started() {
    let expected = SpeechStarted { timestamp: 4.96 };
    assert_eq!(parse("speech_started.json"), SttMessage::SpeechStarted(expected));
}

#[test]
fn error() {
    let SttMessage::Error(SttError { description, message, variant }) = parse("error.json") else {
        panic!("expected Error")
    };
    assert!(description.starts_with("Failed to decode audio"));
    assert_eq!(message, "unable to decode audio as linear16 at 16000 Hz");
    assert_eq!(variant, "DATA-0000");
}

#[test]
fn fixtures_survive_reencoding() {
    // What Hark keeps of each message re-encodes (as the fake provider does) to the same value.
    for name in [
        "results_multi_speaker.json",
        "results_empty.json",
        "results_no_punctuation.json",
        "results_no_alternatives.json",
        "unknown_type.json",
        "metadata.json",
        "utterance_end.json",
        "speech_started.json",
        "error.json",
    ] {
        let msg = parse(name);
        assert_eq!(SttMessage::parse(&msg.to_json()).expect("re-parses"), msg, "{name}");
    }
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    for text in [
        "",
        "not json",
        "{}",                                    // no type
        r#"{"type":5}"#,                         // type not a string
        r#"{"type":"Results"}"#,                 // Results without channel
        r#"{"type":"Results","channel":"x"}"#,   // channel of the wrong shape
        r#"{"type":"Metadata","duration":"x"}"#, // field of the wrong type
    ] {
        assert!(SttMessage::parse(text).is_err(), "{text:?} should not parse");
    }
}

#[test]
fn control_messages_are_what_hark_sends() {
    assert_eq!(Control::KeepAlive.to_json(), r#"{"type":"KeepAlive"}"#);
    assert_eq!(Control::CloseStream.to_json(), r#"{"type":"CloseStream"}"#);
    assert_eq!(Control::Finalize.to_json(), r#"{"type":"Finalize"}"#);
}

#[test]
fn listen_query_has_every_design_parameter() {
    assert_eq!(
        listen_query("nova-3", "pt-BR", 16_000),
        "model=nova-3&language=pt-BR&encoding=linear16&sample_rate=16000&channels=1\
         &punctuate=true&smart_format=true&diarize=true&endpointing=300&interim_results=false"
    );
}
