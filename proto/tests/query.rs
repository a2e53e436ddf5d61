//! `/v4/listen` upgrade query parsing: defaults, each parameter's validation, and the
//! one-line reasons sent with HTTP 400.

use std::time::Duration;

use hark_proto::client::MAX_UID_LEN;
use hark_proto::{Codec, ListenParams, QueryError};

fn parse(query: &str) -> Result<ListenParams, QueryError> {
    ListenParams::parse(query)
}

/// Asserts `query` is refused because of `param`, and returns the 400 reason.
fn refused(query: &str, param: &str) -> String {
    match parse(query) {
        Err(QueryError::Invalid { param: p, reason }) => {
            assert_eq!(p, param, "{query:?} refused for the wrong parameter: {reason}");
            QueryError::Invalid { param: p, reason }.to_string()
        }
        other => panic!("{query:?}: expected Invalid {{ param: {param} }}, got {other:?}"),
    }
}

#[test]
fn empty_query_gives_defaults() {
    let p = parse("").expect("empty query is valid");
    assert_eq!(p, ListenParams::default());
    assert_eq!(p.language, "en");
    assert_eq!(p.sample_rate, 8_000);
    assert_eq!(p.codec, Codec::Pcm8);
    assert_eq!(p.channels, 1);
    assert_eq!(p.conversation_timeout, Duration::from_secs(120));
    assert_eq!(p.uid, None);
}

#[test]
fn all_parameters() {
    let p = parse(
        "language=pt-BR&sample_rate=16000&codec=pcm16&channels=1&conversation_timeout=300&uid=u-42",
    )
    .expect("valid");
    assert_eq!(
        p,
        ListenParams {
            language: "pt-BR".to_owned(),
            sample_rate: 16_000,
            codec: Codec::Pcm16,
            channels: 1,
            conversation_timeout: Duration::from_secs(300),
            uid: Some("u-42".to_owned()),
        }
    );
}

#[test]
fn language() {
    assert_eq!(parse("language=es").expect("valid").language, "es");
    assert_eq!(parse("language=zh-Hant-TW").expect("valid").language, "zh-Hant-TW");
    assert_eq!(parse("language=multi").expect("valid").language, "multi");
    refused("language=", "language");
    refused("language=e", "language");
    refused("language=en_US", "language");
    refused("language=en%20US", "language");
    refused(&format!("language={}", "a".repeat(17)), "language");
}

#[test]
fn codec() {
    for (name, codec, rate) in [
        ("pcm16", Codec::Pcm16, 16_000),
        ("pcm8", Codec::Pcm8, 8_000),
        ("mulaw", Codec::Mulaw, 8_000),
        ("opus", Codec::Opus, 16_000),
        ("opus_fs320", Codec::OpusFs320, 16_000),
        ("lc3_fs1030", Codec::Lc3Fs1030, 16_000),
        ("aac", Codec::Aac, 16_000),
    ] {
        let p = parse(&format!("codec={name}&sample_rate={rate}")).expect(name);
        assert_eq!(p.codec, codec);
        assert_eq!(codec.as_str(), name);
        assert_eq!(Codec::from_query(name), Some(codec));
    }
    assert_eq!(Codec::ALL.len(), 7);
    let err = parse("codec=mp3").expect_err("mp3 is refused");
    assert_eq!(err, QueryError::Codec("mp3".to_owned()));
    let reason = err.to_string();
    assert_eq!(
        reason,
        "unsupported codec \"mp3\": supported codecs are \
         pcm16, pcm8, mulaw, opus, opus_fs320, lc3_fs1030, aac"
    );
    for codec in Codec::ALL {
        assert!(reason.contains(codec.as_str()), "{reason} lacks {codec}");
    }
    assert!(!reason.contains('\n'), "the 400 reason is one line: {reason:?}");
    // Values are case-sensitive.
    assert_eq!(parse("codec=PCM16"), Err(QueryError::Codec("PCM16".to_owned())));
    assert_eq!(parse("codec=Opus"), Err(QueryError::Codec("Opus".to_owned())));
    assert_eq!(parse("codec="), Err(QueryError::Codec(String::new())));
}

#[test]
fn bare_lc3_is_refused_as_omi_does() {
    let err = parse("codec=lc3&sample_rate=16000").expect_err("bare lc3 has no frame duration");
    assert_eq!(err, QueryError::BareLc3);
    let reason = err.to_string();
    assert!(reason.contains("lc3_fs1030") && reason.contains("frame duration"), "{reason}");
    assert!(!reason.contains('\n'));
}

/// The rule is checked once the whole query is read, whichever comes first.
#[test]
fn codec_sample_rate_rules_in_either_order() {
    for query in ["codec=opus&sample_rate=44100", "sample_rate=44100&codec=opus"] {
        let err = parse(query).expect_err(query);
        assert_eq!(
            err,
            QueryError::CodecSampleRate {
                codec: Codec::Opus,
                sample_rate: 44_100,
                allowed: hark_proto::client::OPUS_SAMPLE_RATES,
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid sample_rate: codec opus takes 8000, 12000, 16000, 24000 or 48000 Hz, not 44100"
        );
    }
    for rate in [8_000, 12_000, 16_000, 24_000, 48_000] {
        for codec in ["opus", "opus_fs320"] {
            assert!(parse(&format!("sample_rate={rate}&codec={codec}")).is_ok(), "{codec} {rate}");
        }
    }
    for rate in [11_025, 22_050, 32_000, 44_100, 10_000] {
        assert!(parse(&format!("codec=opus_fs320&sample_rate={rate}")).is_err(), "{rate}");
    }
    // lc3_fs1030 is 16 kHz only, including the default rate of 8000.
    let reason = parse("codec=lc3_fs1030").expect_err("8000 by default").to_string();
    assert_eq!(reason, "invalid sample_rate: codec lc3_fs1030 takes 16000 Hz, not 8000");
    assert!(parse("sample_rate=24000&codec=lc3_fs1030").is_err());
    assert!(parse("codec=lc3_fs1030&sample_rate=16000").is_ok());
    // AAC: the rates an ADTS header can name.
    for rate in [8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000] {
        assert!(parse(&format!("codec=aac&sample_rate={rate}")).is_ok(), "aac {rate}");
    }
    assert!(parse("codec=aac&sample_rate=10000").is_err());
    // PCM and µ-law take any rate in range.
    for codec in ["pcm16", "pcm8", "mulaw"] {
        for rate in [8_000, 10_000, 44_100, 48_000] {
            assert!(parse(&format!("codec={codec}&sample_rate={rate}")).is_ok(), "{codec} {rate}");
        }
    }
    // A later codec value changes the rule that applies.
    assert!(parse("codec=opus&sample_rate=44100&codec=pcm16").is_ok());
    assert!(parse("codec=pcm16&sample_rate=44100&codec=opus").is_err());
}

#[test]
fn sample_rate() {
    assert_eq!(parse("sample_rate=8000").expect("valid").sample_rate, 8_000);
    assert_eq!(parse("sample_rate=16000").expect("valid").sample_rate, 16_000);
    assert_eq!(parse("sample_rate=48000").expect("valid").sample_rate, 48_000);
    let reason = refused("sample_rate=abc", "sample_rate");
    assert!(reason.contains("abc"), "{reason}");
    let reason = refused("sample_rate=100", "sample_rate");
    assert!(reason.contains("100") && reason.contains("8000..=48000"), "{reason}");
    refused("sample_rate=7999", "sample_rate");
    refused("sample_rate=48001", "sample_rate");
    refused("sample_rate=-8000", "sample_rate");
    refused("sample_rate=16000.0", "sample_rate");
    refused("sample_rate=", "sample_rate");
    refused("sample_rate=99999999999", "sample_rate");
}

#[test]
fn channels() {
    assert_eq!(parse("channels=1").expect("valid").channels, 1);
    let reason = refused("channels=2", "channels");
    assert!(reason.contains("only 1 channel"), "{reason}");
    refused("channels=0", "channels");
    refused("channels=stereo", "channels");
    refused("channels=", "channels");
}

#[test]
fn conversation_timeout() {
    let p = parse("conversation_timeout=1").expect("valid");
    assert_eq!(p.conversation_timeout, Duration::from_secs(1));
    let p = parse("conversation_timeout=86400").expect("valid");
    assert_eq!(p.conversation_timeout, Duration::from_secs(86_400));
    refused("conversation_timeout=0", "conversation_timeout");
    let reason = refused("conversation_timeout=abc", "conversation_timeout");
    assert!(reason.contains("abc"), "{reason}");
    refused("conversation_timeout=86401", "conversation_timeout");
    refused("conversation_timeout=1.5", "conversation_timeout");
    refused("conversation_timeout=-2", "conversation_timeout");
    // omi's "never split": no silence split, capped at 4 h; it renders back as -1.
    let p = parse("conversation_timeout=-1").expect("valid");
    assert_eq!(p.conversation_timeout, hark_proto::client::NEVER_SPLIT_CAP);
    assert_eq!(p.conversation_timeout, Duration::from_secs(4 * 3600));
    assert!(p.to_query().contains("conversation_timeout=-1"), "{}", p.to_query());
    refused("conversation_timeout=2m", "conversation_timeout");
}

#[test]
fn uid() {
    assert_eq!(parse("uid=abc123").expect("valid").uid.as_deref(), Some("abc123"));
    // Percent-encoding is decoded.
    assert_eq!(
        parse("uid=user%40example.com").expect("valid").uid.as_deref(),
        Some("user@example.com")
    );
    assert_eq!(parse("uid=%C3%A9l%C3%A8ve").expect("valid").uid.as_deref(), Some("élève"));
    // Spaces, whether `+` or `%20`, and control characters are refused.
    refused("uid=a+b", "uid");
    refused("uid=a%20b", "uid");
    refused("uid=a%09b", "uid");
    refused("uid=a%00b", "uid");
    refused("uid=", "uid");
    // The limit is in bytes of UTF-8.
    let longest = "a".repeat(MAX_UID_LEN);
    assert_eq!(parse(&format!("uid={longest}")).expect("valid").uid, Some(longest));
    refused(&format!("uid={}", "a".repeat(MAX_UID_LEN + 1)), "uid");
    refused(&format!("uid={}", "%C3%A9".repeat(MAX_UID_LEN / 2 + 1)), "uid");
}

#[test]
fn unknown_parameters_are_ignored() {
    // Names are case-sensitive: `Language` is not `language`.
    let p = parse("foo=bar&token=xyz&sample_rate=16000&Language=fr&=&&x").expect("valid");
    assert_eq!(p, ListenParams { sample_rate: 16_000, ..ListenParams::default() });
    // A known name without `=` has the empty value, which is then validated.
    refused("language", "language");
}

#[test]
fn later_values_override_earlier_ones() {
    assert_eq!(parse("sample_rate=16000&sample_rate=8000").expect("valid").sample_rate, 8_000);
    // ...but an invalid one anywhere refuses the query.
    refused("sample_rate=abc&sample_rate=8000", "sample_rate");
}

#[test]
fn reasons_are_single_lines_naming_the_parameter() {
    for (query, param) in [
        ("language=?", "language"),
        ("sample_rate=abc", "sample_rate"),
        ("channels=2", "channels"),
        ("conversation_timeout=0", "conversation_timeout"),
        ("uid=a%0Ab", "uid"),
    ] {
        let reason = refused(query, param);
        assert!(reason.starts_with(&format!("invalid {param}: ")), "{reason}");
        assert!(!reason.contains(['\n', '\r']), "{reason:?}");
    }
    assert!(!QueryError::MissingUid.to_string().contains('\n'));
    assert!(QueryError::MissingUid.to_string().contains("uid"));
}

#[test]
fn to_query_round_trips() {
    let cases = [
        ListenParams::default(),
        ListenParams {
            language: "pt-BR".to_owned(),
            sample_rate: 44_100,
            codec: Codec::Pcm16,
            channels: 1,
            conversation_timeout: Duration::from_secs(86_400),
            uid: Some("user@example.com/ü&=?#".to_owned()),
        },
    ];
    for p in cases {
        let query = p.to_query();
        assert_eq!(parse(&query).as_ref(), Ok(&p), "{query}");
    }
    assert_eq!(
        ListenParams::default().to_query(),
        "language=en&sample_rate=8000&codec=pcm8&channels=1&conversation_timeout=120"
    );
}
