//! Pusher frame decoding edge cases and errors (the golden files cover the happy path).

use bytes::Bytes;
use hark_proto::pusher::{peek_code, ACK, AUDIO, AUDIO_HEADER_LEN, HEARTBEAT, PROCESS, SEGMENTS};
use hark_proto::{Ack, FrameError, ProcessRequest, PusherFrame};

fn frame(code: u32, payload: &[u8]) -> Bytes {
    let mut buf = code.to_le_bytes().to_vec();
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

fn audio(start: f64, pcm: &[u8]) -> Bytes {
    frame(AUDIO, &[&start.to_le_bytes()[..], pcm].concat())
}

#[test]
fn short_frames() {
    for len in 0..4 {
        let err = PusherFrame::decode(Bytes::from(vec![0x64; len])).expect_err("too short");
        assert!(matches!(err, FrameError::Short { len: l, need: 4 } if l == len), "{err}");
    }
    // 101 needs the code and the 8-byte start time.
    let err = PusherFrame::decode(frame(AUDIO, &[0; 7])).expect_err("too short");
    assert!(matches!(err, FrameError::Short { len: 11, need: 12 }), "{err}");
}

#[test]
fn audio_with_no_pcm_is_valid() {
    let decoded = PusherFrame::decode(audio(0.0, &[])).expect("valid");
    assert_eq!(decoded, PusherFrame::Audio { start: 0.0, pcm: Bytes::new() });
}

#[test]
fn audio_payload_is_a_zero_copy_slice() {
    let buf = audio(3.0, &[1, 2, 3, 4]);
    let PusherFrame::Audio { pcm, .. } = PusherFrame::decode(buf.clone()).expect("valid") else {
        panic!("expected audio")
    };
    assert_eq!(pcm.as_ptr(), buf[AUDIO_HEADER_LEN..].as_ptr());
}

#[test]
fn audio_start_must_be_finite_and_non_negative() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -f64::MIN_POSITIVE] {
        let err = PusherFrame::decode(audio(bad, &[0, 0])).expect_err("bad start");
        assert!(matches!(err, FrameError::BadStart(_)), "{bad}: {err}");
    }
    // -0.0 is zero.
    assert!(PusherFrame::decode(audio(-0.0, &[0, 0])).is_ok());
}

#[test]
fn odd_pcm_length_is_passed_through() {
    // The codec does not judge audio; an odd byte count is the sender's problem.
    let decoded = PusherFrame::decode(audio(1.0, &[1, 2, 3])).expect("valid");
    assert_eq!(decoded, PusherFrame::Audio { start: 1.0, pcm: Bytes::from_static(&[1, 2, 3]) });
}

#[test]
fn unknown_codes() {
    for code in [0, 99, 105, 200, 202, u32::MAX] {
        let err = PusherFrame::decode(frame(code, b"{}")).expect_err("unknown");
        assert!(matches!(err, FrameError::UnknownCode(c) if c == code), "{err}");
    }
    // The code is little-endian: 100 big-endian is not a heartbeat.
    let err = PusherFrame::decode(Bytes::from_static(&[0, 0, 0, 100])).expect_err("big-endian");
    assert!(matches!(err, FrameError::UnknownCode(0x6400_0000)), "{err}");
}

#[test]
fn heartbeat_ignores_trailing_bytes() {
    assert_eq!(
        PusherFrame::decode(frame(HEARTBEAT, b"xyz")).expect("valid"),
        PusherFrame::Heartbeat
    );
}

#[test]
fn bad_json_payloads() {
    for code in [SEGMENTS, PROCESS, ACK] {
        for payload in [&b""[..], b"{", b"[]", b"{\"segments\":1}", b"\xff"] {
            let err = PusherFrame::decode(frame(code, payload)).expect_err("bad JSON");
            assert!(matches!(err, FrameError::Json { code: c, .. } if c == code), "{err}");
            assert!(err.to_string().contains(&code.to_string()), "{err}");
        }
    }
}

#[test]
fn conversation_id_must_be_utf8() {
    let err = PusherFrame::decode(frame(103, b"\xff\xfe")).expect_err("not UTF-8");
    assert!(matches!(err, FrameError::Utf8), "{err}");
    let decoded = PusherFrame::decode(frame(103, "conv-é".as_bytes())).expect("valid");
    assert_eq!(decoded, PusherFrame::Conversation("conv-é".to_owned()));
}

#[test]
fn json_payloads_tolerate_unknown_fields() {
    let decoded =
        PusherFrame::decode(frame(PROCESS, br#"{"conversation_id":"c1","language":"en","x":1}"#))
            .expect("valid");
    let expected = ProcessRequest { conversation_id: "c1".to_owned(), language: "en".to_owned() };
    assert_eq!(decoded, PusherFrame::Process(expected));

    let decoded =
        PusherFrame::decode(frame(ACK, br#"{"conversation_id":"c1","success":true,"took_ms":12}"#))
            .expect("valid");
    assert_eq!(decoded, PusherFrame::Ack(Ack::ok("c1")));
}

#[test]
fn process_requires_both_fields() {
    for payload in [&br#"{"conversation_id":"c1"}"#[..], br#"{"language":"en"}"#] {
        assert!(PusherFrame::decode(frame(PROCESS, payload)).is_err());
    }
    assert!(PusherFrame::decode(frame(ACK, br#"{"success":true}"#)).is_err());
}

#[test]
fn ack_success_rules() {
    let ack = |json: &str| -> Ack {
        match PusherFrame::decode(frame(ACK, json.as_bytes())).expect("valid") {
            PusherFrame::Ack(a) => a,
            other => panic!("expected ack, got {other:?}"),
        }
    };
    assert!(ack(r#"{"conversation_id":"c","success":true}"#).is_success());
    assert!(!ack(r#"{"conversation_id":"c","error":"boom"}"#).is_success());
    assert!(!ack(r#"{"conversation_id":"c","success":false}"#).is_success());
    assert!(!ack(r#"{"conversation_id":"c","success":true,"error":"boom"}"#).is_success());
    // `"error": null` is no error.
    assert!(ack(r#"{"conversation_id":"c","success":true,"error":null}"#).is_success());
    // Neither field: treated as success (see README, "201").
    assert!(ack(r#"{"conversation_id":"c"}"#).is_success());
}

#[test]
fn codes_and_peek() {
    let frames = [
        (PusherFrame::Heartbeat, 100),
        (PusherFrame::Audio { start: 0.0, pcm: Bytes::new() }, 101),
        (PusherFrame::Conversation("c".to_owned()), 103),
        (
            PusherFrame::Process(ProcessRequest {
                conversation_id: "c".to_owned(),
                language: "en".to_owned(),
            }),
            104,
        ),
        (PusherFrame::Ack(Ack::ok("c")), 201),
    ];
    for (f, code) in frames {
        assert_eq!(f.code(), code);
        assert_eq!(peek_code(&f.encode()), Some(code));
    }
    assert_eq!(peek_code(&[1, 0, 0]), None);
    assert_eq!(peek_code(&[0xc9, 0, 0, 0]), Some(201));
}
