//! Golden frames: the exact bytes of every pusher frame, client message and Deepgram
//! control message, pinned in `proto/testdata/`.
//!
//! Each case encodes a typed value and compares the bytes with the golden file, then
//! decodes the golden file and compares with the typed value. Run with `HARK_BLESS=1`
//! to (re)write the files instead; review the diff before committing it.

use std::path::PathBuf;

use bytes::Bytes;
use hark_proto::client::{segments_to_json, ServerMessage};
use hark_proto::deepgram::Control;
use hark_proto::{
    Ack, ConversationRecord, ProcessRequest, PusherFrame, Segment, SegmentsPayload, ServerEvent,
};
use hark_proto::{ProcessingStatus, ServiceStatus, Via};

const CONVERSATION_ID: &str = "3f2a6c1e-8d4b-4f6a-9c2e-5b7d1a0e9f42";

fn bless() -> bool {
    std::env::var_os("HARK_BLESS").is_some_and(|v| v == "1")
}

/// Writes `actual` to the golden file when blessing; otherwise asserts the file holds
/// exactly `actual`. Returns the golden bytes.
fn golden(rel: &str, actual: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(rel);
    if bless() {
        std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
            .expect("create testdata directory");
        std::fs::write(&path, actual).expect("write golden file");
        return actual.to_vec();
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run `HARK_BLESS=1 cargo test -p hark-proto` to create it", path.display())
    });
    assert!(
        expected == actual,
        "{rel}: encoding differs from the golden file\n  golden:  {}\n  encoded: {}\n\
         (if the change is intended, rerun with HARK_BLESS=1 and review the diff)",
        hex(&expected),
        hex(actual),
    );
    expected
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// The two segments used by the 102 frame and the client transcript update.
fn two_segments() -> Vec<Segment> {
    vec![
        Segment {
            id: "0d9c1b8e-5f3a-4c1d-9e7b-2a6f4c8d0e11".to_owned(),
            text: "Hey there.".to_owned(),
            speaker: Segment::speaker_label(0),
            speaker_id: 0,
            is_user: false,
            person_id: None,
            start: 0.08,
            end: 0.96,
        },
        Segment {
            id: "7b1e4a2c-3d5f-4e6a-8b9c-0d1e2f3a4b52".to_owned(),
            text: "Hi, Sam.".to_owned(),
            speaker: Segment::speaker_label(1),
            speaker_id: 1,
            is_user: false,
            person_id: None,
            start: 1.2,
            end: 2.4,
        },
    ]
}

fn check_frame(rel: &str, frame: PusherFrame) {
    let bytes = golden(rel, &frame.encode());
    let decoded = PusherFrame::decode(Bytes::from(bytes))
        .unwrap_or_else(|e| panic!("{rel}: golden file does not decode: {e}"));
    assert_eq!(decoded, frame, "{rel}: decoded golden file differs from the typed value");
}

fn check_server_message(rel: &str, json: String, expected: ServerMessage) {
    let bytes = golden(rel, json.as_bytes());
    let text = std::str::from_utf8(&bytes).expect("client goldens are UTF-8");
    let decoded = ServerMessage::parse(text)
        .unwrap_or_else(|e| panic!("{rel}: golden file does not parse: {e}"));
    assert_eq!(decoded, expected, "{rel}: parsed golden file differs from the typed value");
}

fn check_event(rel: &str, event: ServerEvent) {
    check_server_message(rel, event.to_json(), ServerMessage::Event(event));
}

fn check_control(rel: &str, control: Control) {
    // The hand-written constant and the serde encoding must agree.
    let serde_text = serde_json::to_string(&control).expect("controls serialize");
    assert_eq!(control.to_json(), serde_text, "{rel}: to_json disagrees with serde");
    let bytes = golden(rel, control.to_json().as_bytes());
    let decoded: Control = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{rel}: golden file does not parse: {e}"));
    assert_eq!(decoded, control);
}

// ---- pusher frames ----------------------------------------------------------------

#[test]
fn pusher_100_heartbeat() {
    check_frame("pusher/100_heartbeat.bin", PusherFrame::Heartbeat);
}

#[test]
fn pusher_101_audio() {
    // Samples 1, 32767, -32768, -2 as PCM16 LE.
    let pcm = Bytes::from_static(&[0x01, 0x00, 0xff, 0x7f, 0x00, 0x80, 0xfe, 0xff]);
    check_frame("pusher/101_audio.bin", PusherFrame::Audio { start: 12.5, pcm });
}

#[test]
fn pusher_101_audio_matches_encode_audio() {
    let pcm = [0x01, 0x00, 0xff, 0x7f, 0x00, 0x80, 0xfe, 0xff];
    let frame = PusherFrame::Audio { start: 12.5, pcm: Bytes::copy_from_slice(&pcm) };
    assert_eq!(hark_proto::pusher::encode_audio(12.5, &pcm), frame.encode());
}

#[test]
fn pusher_102_segments() {
    let payload =
        SegmentsPayload { segments: two_segments(), memory_id: CONVERSATION_ID.to_owned() };
    check_frame("pusher/102_segments.bin", PusherFrame::Segments(payload));
}

#[test]
fn pusher_103_conversation() {
    check_frame("pusher/103_conversation.bin", PusherFrame::Conversation(CONVERSATION_ID.into()));
}

#[test]
fn pusher_104_process() {
    let request =
        ProcessRequest { conversation_id: CONVERSATION_ID.to_owned(), language: "en".to_owned() };
    check_frame("pusher/104_process.bin", PusherFrame::Process(request));
}

#[test]
fn pusher_201_ack_success() {
    check_frame("pusher/201_ack_success.bin", PusherFrame::Ack(Ack::ok(CONVERSATION_ID)));
}

#[test]
fn pusher_201_ack_error() {
    let ack = Ack {
        conversation_id: CONVERSATION_ID.to_owned(),
        success: None,
        error: Some("storage unavailable".to_owned()),
    };
    check_frame("pusher/201_ack_error.bin", PusherFrame::Ack(ack));
}

// ---- client messages ----------------------------------------------------------------

#[test]
fn client_segments() {
    let segments = two_segments();
    check_server_message(
        "client/segments.json",
        segments_to_json(&segments),
        ServerMessage::Segments(segments),
    );
}

#[test]
fn client_service_status() {
    let cases = [
        (ServiceStatus::Initiating, "initiating", "Starting session"),
        (ServiceStatus::SttInitiating, "stt_initiating", "Connecting to transcription"),
        (ServiceStatus::Ready, "ready", "Listening"),
    ];
    for (status, name, text) in cases {
        let event = ServerEvent::ServiceStatus { status, status_text: text.to_owned() };
        check_event(&format!("client/service_status_{name}.json"), event);
    }
}

#[test]
fn client_processing_status() {
    let cases = [
        (
            ProcessingStatus::Degraded,
            "degraded",
            "Transcription continues; conversation processing is delayed",
        ),
        (ProcessingStatus::Recovered, "recovered", "Conversation processing is back"),
    ];
    for (status, name, text) in cases {
        let event = ServerEvent::ProcessingStatus { status, status_text: text.to_owned() };
        check_event(&format!("client/processing_status_{name}.json"), event);
    }
}

#[test]
fn client_quota_exceeded() {
    check_event("client/quota_exceeded.json", ServerEvent::QuotaExceeded { retry_after: 3600 });
}

#[test]
fn pusher_health_is_not_a_service_status() {
    // The omi app shows "listening" only while the last service_status is `ready`.
    for text in [
        r#"{"type":"service_status","status":"degraded","status_text":""}"#,
        r#"{"type":"service_status","status":"recovered","status_text":""}"#,
    ] {
        assert!(ServerMessage::parse(text).is_err(), "{text}");
    }
}

#[test]
fn client_conversation_created() {
    for via in [Via::Pusher, Via::Fallback] {
        let event =
            ServerEvent::ConversationCreated { conversation_id: CONVERSATION_ID.to_owned(), via };
        check_event(&format!("client/conversation_created_{}.json", via.as_str()), event);
    }
}

#[test]
fn client_auth_response() {
    // omi's exact JSON for the /v4/web/listen auth answer.
    for success in [true, false] {
        check_event(
            &format!("client/auth_response_{success}.json"),
            ServerEvent::AuthResponse { success },
        );
    }
}

// ---- Deepgram control messages -------------------------------------------------------

#[test]
fn deepgram_controls() {
    check_control("deepgram/control_keep_alive.json", Control::KeepAlive);
    check_control("deepgram/control_close_stream.json", Control::CloseStream);
    check_control("deepgram/control_finalize.json", Control::Finalize);
}

// ---- fallback record -------------------------------------------------------------------

#[test]
fn fallback_conversation_record_v1() {
    // Durable: records written by one release are replayed by the next, so this shape
    // changes only with `version`.
    let record = ConversationRecord {
        version: ConversationRecord::VERSION,
        conversation_id: CONVERSATION_ID.to_owned(),
        uid: "user-42".to_owned(),
        language: "en".to_owned(),
        sample_rate: 16_000,
        session_id: "5c0b7e9a-1f2d-4e3c-8a6b-9d0e1f2a3b4c".to_owned(),
        started_at_ms: 1_742_000_000_000,
        finished_at_ms: 1_742_000_125_500,
        segments: two_segments(),
    };
    let json = serde_json::to_vec(&record).expect("records serialize");
    let bytes = golden("record/conversation_record_v1.json", &json);
    let decoded: ConversationRecord = serde_json::from_slice(&bytes).expect("golden record parses");
    assert_eq!(decoded, record);
}

// ---- the README's hex dumps --------------------------------------------------------------

/// One line of `xxd -g1` output.
fn xxd_line(offset: usize, chunk: &[u8]) -> String {
    let hex = chunk.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    let ascii: String =
        chunk.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
    format!("{offset:08x}: {hex:<47}  {ascii}")
}

#[test]
fn readme_hex_dumps_match_golden_files() {
    if bless() {
        return; // the files are being rewritten; update the README, then rerun
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("read README.md");
    for name in [
        "100_heartbeat.bin",
        "101_audio.bin",
        "102_segments.bin",
        "103_conversation.bin",
        "104_process.bin",
        "201_ack_success.bin",
        "201_ack_error.bin",
    ] {
        let bytes = std::fs::read(dir.join("testdata/pusher").join(name)).expect("golden file");
        let lines: Vec<String> =
            bytes.chunks(16).enumerate().map(|(i, c)| xxd_line(i * 16, c)).collect();
        let (first, last) = (lines.first().expect("non-empty"), lines.last().expect("non-empty"));
        for line in [first, last] {
            assert!(readme.contains(line.as_str()), "README.md lacks this line of {name}:\n{line}");
        }
    }
}
