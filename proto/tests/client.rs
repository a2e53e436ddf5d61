//! Client messages beyond the golden files: how a client decodes what hark sends, and
//! what hark makes of client text frames.

use hark_proto::client::{client_text_type, segments_to_json, ServerMessage, KEEPALIVE_MAX_BYTES};
use hark_proto::{Segment, ServerEvent, ServiceStatus, Via};

#[test]
fn speaker_labels() {
    assert_eq!(Segment::speaker_label(0), "SPEAKER_0");
    assert_eq!(Segment::speaker_label(12), "SPEAKER_12");
}

#[test]
fn via_labels() {
    assert_eq!(Via::Pusher.as_str(), "pusher");
    assert_eq!(Via::Fallback.as_str(), "fallback");
}

#[test]
fn empty_transcript_update_is_an_empty_array() {
    assert_eq!(segments_to_json(&[]), "[]");
    assert_eq!(ServerMessage::parse("[]").expect("valid"), ServerMessage::Segments(vec![]));
    assert_eq!(ServerMessage::parse(" \n[]").expect("valid"), ServerMessage::Segments(vec![]));
}

#[test]
fn segment_person_id_may_be_absent_or_set() {
    let text = r#"[{"id":"s","text":"hi","speaker":"SPEAKER_3","speaker_id":3,"is_user":true,"start":1,"end":2}]"#;
    let ServerMessage::Segments(segs) = ServerMessage::parse(text).expect("valid") else {
        panic!("expected segments")
    };
    assert_eq!(segs[0].person_id, None);
    assert_eq!((segs[0].start, segs[0].end), (1.0, 2.0));
    let text = text.replace("\"start\"", "\"person_id\":\"p1\",\"start\"");
    let ServerMessage::Segments(segs) = ServerMessage::parse(&text).expect("valid") else {
        panic!("expected segments")
    };
    assert_eq!(segs[0].person_id.as_deref(), Some("p1"));
}

#[test]
fn events_tolerate_unknown_fields() {
    let text = r#"{"type":"service_status","status":"ready","status_text":"ok","since":5}"#;
    assert_eq!(
        ServerMessage::parse(text).expect("valid"),
        ServerMessage::Event(ServerEvent::ServiceStatus {
            status: ServiceStatus::Ready,
            status_text: "ok".to_owned()
        })
    );
}

#[test]
fn unknown_events_and_statuses_are_errors() {
    for text in [
        r#"{"type":"something_new"}"#,
        r#"{"type":"service_status","status":"paused","status_text":""}"#,
        r#"{"type":"conversation_created","conversation_id":"c","via":"carrier_pigeon"}"#,
        r#"{"status":"ready"}"#,
        "",
        "null",
    ] {
        assert!(ServerMessage::parse(text).is_err(), "{text:?}");
    }
}

#[test]
fn client_text_frame_types() {
    assert_eq!(client_text_type(r#"{"type":"ping","x":1}"#).as_deref(), Some("ping"));
    assert_eq!(
        client_text_type(r#"{"type":"speaker_assigned"}"#).as_deref(),
        Some("speaker_assigned")
    );
    assert_eq!(client_text_type(r#"{"kind":"ping"}"#), None);
    assert_eq!(client_text_type("hello"), None);
    assert_eq!(client_text_type(r#"{"type":7}"#), None);
}

#[test]
fn keepalive_threshold() {
    assert_eq!(KEEPALIVE_MAX_BYTES, 2);
}

#[test]
fn segment_times_survive_json_bit_exactly() {
    // Sums like offset + word time have 17 significant digits; without serde_json's
    // float_roundtrip feature these came back one ULP off.
    let mut segment = Segment {
        id: "s".to_owned(),
        text: "hi".to_owned(),
        speaker: Segment::speaker_label(0),
        speaker_id: 0,
        is_user: false,
        person_id: None,
        start: 47.259356000000004,
        end: 47.259356 + 0.1,
    };
    for start in [47.259356000000004, 0.1 + 0.2, 1.0 / 3.0, 86_399.999_999_999_99, 5e-324] {
        segment.start = start;
        let parsed = ServerMessage::parse(&segments_to_json(std::slice::from_ref(&segment)));
        assert_eq!(parsed.expect("valid"), ServerMessage::Segments(vec![segment.clone()]));
    }
}
