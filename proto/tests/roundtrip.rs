//! Property tests: every codec round-trips, and no input makes a decoder panic.

use std::time::Duration;

use bytes::Bytes;
use hark_proto::client::{segments_to_json, ServerMessage, MAX_UID_LEN, SAMPLE_RATES};
use hark_proto::deepgram::{Alternative, Channel, Results, SttMessage, Word};
use hark_proto::{
    Ack, Codec, ConversationRecord, ListenParams, ProcessRequest, ProcessingStatus, PusherFrame,
    Segment, SegmentsPayload, ServerEvent, ServiceStatus, Via,
};
use proptest::collection::vec;
use proptest::num::f64 as f64s;
use proptest::prelude::*;

/// Finite, non-negative seconds: the full range of f64 (subnormals to ~1.8e308) and
/// the realistic one.
fn seconds() -> impl Strategy<Value = f64> {
    prop_oneof![f64s::POSITIVE | f64s::ZERO | f64s::NORMAL | f64s::SUBNORMAL, 0.0..86_400.0f64]
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        any::<String>(),
        any::<String>(),
        any::<u32>(),
        any::<bool>(),
        proptest::option::of(any::<String>()),
        seconds(),
        seconds(),
    )
        .prop_map(|(id, text, speaker_id, is_user, person_id, start, end)| Segment {
            id,
            text,
            speaker: Segment::speaker_label(speaker_id),
            speaker_id,
            is_user,
            person_id,
            start,
            end,
        })
}

fn pusher_frame() -> impl Strategy<Value = PusherFrame> {
    prop_oneof![
        Just(PusherFrame::Heartbeat),
        (seconds(), vec(any::<u8>(), 0..512))
            .prop_map(|(start, pcm)| PusherFrame::Audio { start, pcm: Bytes::from(pcm) }),
        (vec(segment(), 0..6), any::<String>()).prop_map(|(segments, memory_id)| {
            PusherFrame::Segments(SegmentsPayload { segments, memory_id })
        }),
        any::<String>().prop_map(PusherFrame::Conversation),
        (any::<String>(), any::<String>()).prop_map(|(conversation_id, language)| {
            PusherFrame::Process(ProcessRequest { conversation_id, language })
        }),
        (
            any::<String>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<String>())
        )
            .prop_map(|(conversation_id, success, error)| {
                PusherFrame::Ack(Ack { conversation_id, success, error })
            }),
    ]
}

fn server_event() -> impl Strategy<Value = ServerEvent> {
    let status = prop_oneof![
        Just(ServiceStatus::Initiating),
        Just(ServiceStatus::SttInitiating),
        Just(ServiceStatus::Ready),
    ];
    let processing =
        prop_oneof![Just(ProcessingStatus::Degraded), Just(ProcessingStatus::Recovered)];
    let via = prop_oneof![Just(Via::Pusher), Just(Via::Fallback)];
    prop_oneof![
        (status, any::<String>())
            .prop_map(|(status, status_text)| ServerEvent::ServiceStatus { status, status_text }),
        (processing, any::<String>()).prop_map(|(status, status_text)| {
            ServerEvent::ProcessingStatus { status, status_text }
        }),
        any::<u64>().prop_map(|retry_after| ServerEvent::QuotaExceeded { retry_after }),
        (any::<String>(), via).prop_map(|(conversation_id, via)| {
            ServerEvent::ConversationCreated { conversation_id, via }
        }),
    ]
}

fn stt_results() -> impl Strategy<Value = Results> {
    let word = (
        "[a-z']{0,8}",
        seconds(),
        seconds(),
        0.0..=1.0f64,
        proptest::option::of(0u32..8),
        proptest::option::of(any::<String>()),
    )
        .prop_map(|(word, start, end, confidence, speaker, punctuated_word)| Word {
            word,
            start,
            end,
            confidence,
            speaker,
            punctuated_word,
        });
    let alternative = (any::<String>(), 0.0..=1.0f64, vec(word, 0..8))
        .prop_map(|(transcript, confidence, words)| Alternative { transcript, confidence, words });
    (seconds(), seconds(), any::<bool>(), any::<bool>(), vec(alternative, 0..3)).prop_map(
        |(start, duration, is_final, speech_final, alternatives)| Results {
            start,
            duration,
            is_final,
            speech_final,
            channel: Channel { alternatives },
        },
    )
}

/// Query strings built from the real parameter names with plausible, hostile and
/// percent-encoded values, so parsing gets past the first key.
fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("language".to_owned()),
        Just("sample_rate".to_owned()),
        Just("codec".to_owned()),
        Just("channels".to_owned()),
        Just("conversation_timeout".to_owned()),
        Just("uid".to_owned()),
        "[a-z_]{0,12}",
    ];
    let value = prop_oneof![
        "[0-9]{0,7}",
        "[a-zA-Z0-9-]{0,18}",
        Just("pcm8".to_owned()),
        Just("pcm16".to_owned()),
        Just("mulaw".to_owned()),
        Just("opus".to_owned()),
        Just("opus_fs320".to_owned()),
        Just("lc3_fs1030".to_owned()),
        Just("lc3".to_owned()),
        Just("aac".to_owned()),
        Just("16000".to_owned()),
        Just("44100".to_owned()),
        "(%[0-9A-Fa-f]{2}|[a-z+=&;#]){0,10}",
        any::<String>(),
    ];
    vec((key, value), 0..8).prop_map(|pairs| {
        pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    })
}

fn valid_params() -> impl Strategy<Value = ListenParams> {
    // A codec, then a rate it takes.
    let codec_and_rate = proptest::sample::select(Codec::ALL.to_vec()).prop_flat_map(|codec| {
        let rate = match codec.sample_rates() {
            Some(rates) => proptest::sample::select(rates).boxed(),
            None => SAMPLE_RATES.boxed(),
        };
        (Just(codec), rate)
    });
    (
        "[a-zA-Z0-9-]{2,16}",
        codec_and_rate,
        1u64..=86_400,
        proptest::option::of("[^\\s\\p{Cc}]{1,32}".prop_filter("fits", |u| u.len() <= MAX_UID_LEN)),
    )
        .prop_map(|(language, (codec, sample_rate), secs, uid)| ListenParams {
            language,
            sample_rate,
            codec,
            channels: 1,
            conversation_timeout: Duration::from_secs(secs),
            uid,
        })
}

/// The invariants `ListenParams::parse` promises for every value it returns.
fn assert_invariants(p: &ListenParams) -> Result<(), TestCaseError> {
    prop_assert!((2..=16).contains(&p.language.len()), "language {:?}", p.language);
    prop_assert!(p.language.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    prop_assert!(SAMPLE_RATES.contains(&p.sample_rate), "sample_rate {}", p.sample_rate);
    prop_assert!(p.codec.allows_sample_rate(p.sample_rate), "{} at {}", p.codec, p.sample_rate);
    prop_assert_eq!(p.channels, 1);
    prop_assert_eq!(p.conversation_timeout.subsec_nanos(), 0);
    prop_assert!((1..=86_400).contains(&p.conversation_timeout.as_secs()));
    if let Some(uid) = &p.uid {
        prop_assert!(!uid.is_empty() && uid.len() <= MAX_UID_LEN, "uid {uid:?}");
        prop_assert!(uid.chars().all(|c| !c.is_control() && !c.is_whitespace()), "uid {uid:?}");
    }
    Ok(())
}

/// Valid Deepgram fixtures, to be mangled into near-valid input.
const STT_FIXTURES: [&str; 4] = [
    include_str!("../testdata/deepgram/results_multi_speaker.json"),
    include_str!("../testdata/deepgram/metadata.json"),
    include_str!("../testdata/deepgram/utterance_end.json"),
    include_str!("../testdata/deepgram/error.json"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pusher_frames_round_trip(frame in pusher_frame()) {
        let decoded = PusherFrame::decode(frame.encode()).expect("an encoded frame decodes");
        prop_assert_eq!(decoded, frame);
    }

    #[test]
    fn pusher_decode_never_panics(bytes in vec(any::<u8>(), 0..96)) {
        let _ = PusherFrame::decode(Bytes::from(bytes));
    }

    #[test]
    fn pusher_decode_never_panics_behind_valid_codes(
        code in prop_oneof![100u32..=104, Just(201u32), any::<u32>()],
        payload in vec(any::<u8>(), 0..96),
    ) {
        let mut buf = code.to_le_bytes().to_vec();
        buf.extend_from_slice(&payload);
        if let Ok(frame) = PusherFrame::decode(Bytes::from(buf)) {
            prop_assert_eq!(frame.code(), code);
        }
    }

    #[test]
    fn stt_parse_never_panics(text in any::<String>()) {
        let _ = SttMessage::parse(&text);
    }

    #[test]
    fn stt_parse_never_panics_on_mangled_fixtures(
        which in 0..STT_FIXTURES.len(),
        cut in any::<prop::sample::Index>(),
        junk in "[\\[\\]{}\":,0-9a-zA-Z .eE+-]{0,8}",
    ) {
        let fixture = STT_FIXTURES[which];
        let mut at = cut.index(fixture.len() + 1);
        while !fixture.is_char_boundary(at) {
            at -= 1;
        }
        let mangled = format!("{}{junk}{}", &fixture[..at], &fixture[at..]);
        let _ = SttMessage::parse(&mangled);
        let _ = SttMessage::parse(&fixture[..at]);
    }

    #[test]
    fn stt_results_round_trip(results in stt_results()) {
        let msg = SttMessage::Results(results);
        prop_assert_eq!(SttMessage::parse(&msg.to_json()).expect("re-parses"), msg);
    }

    #[test]
    fn listen_parse_never_panics(query in any::<String>()) {
        if let Ok(p) = ListenParams::parse(&query) {
            assert_invariants(&p)?;
        }
    }

    #[test]
    fn listen_parse_upholds_invariants(query in query_string()) {
        if let Ok(p) = ListenParams::parse(&query) {
            assert_invariants(&p)?;
            // Whatever parses renders back to the same parameters.
            prop_assert_eq!(ListenParams::parse(&p.to_query()), Ok(p));
        }
    }

    #[test]
    fn listen_params_round_trip(p in valid_params()) {
        prop_assert_eq!(ListenParams::parse(&p.to_query()), Ok(p));
    }

    #[test]
    fn server_events_round_trip(event in server_event()) {
        let parsed = ServerMessage::parse(&event.to_json()).expect("an encoded event parses");
        prop_assert_eq!(parsed, ServerMessage::Event(event));
    }

    #[test]
    fn segment_arrays_round_trip(segments in vec(segment(), 0..8)) {
        let parsed = ServerMessage::parse(&segments_to_json(&segments)).expect("segments parse");
        prop_assert_eq!(parsed, ServerMessage::Segments(segments));
    }

    #[test]
    fn conversation_records_round_trip(
        ids in (any::<String>(), any::<String>(), any::<String>(), any::<String>()),
        numbers in (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        segments in vec(segment(), 0..6),
    ) {
        let (conversation_id, uid, language, session_id) = ids;
        let (version, sample_rate, started_at_ms, finished_at_ms) = numbers;
        let record = ConversationRecord {
            version, conversation_id, uid, language, sample_rate, session_id,
            started_at_ms, finished_at_ms, segments,
        };
        let json = serde_json::to_string(&record).expect("records serialize");
        prop_assert_eq!(serde_json::from_str::<ConversationRecord>(&json).expect("parses"), record);
    }

    #[test]
    fn server_message_parse_never_panics(text in any::<String>()) {
        let _ = ServerMessage::parse(&text);
    }
}
