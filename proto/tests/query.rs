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
    assert_eq!(parse("codec=pcm8").expect("valid").codec, Codec::Pcm8);
    assert_eq!(parse("codec=pcm16").expect("valid").codec, Codec::Pcm16);
    let err = parse("codec=mp3").expect_err("mp3 is refused");
    assert_eq!(err, QueryError::Codec("mp3".to_owned()));
    let reason = err.to_string();
    assert!(reason.contains("pcm8") && reason.contains("pcm16"), "{reason}");
    assert!(reason.contains("mp3"), "{reason}");
    assert!(!reason.contains('\n'), "the 400 reason is one line: {reason:?}");
    // Values are case-sensitive.
    assert_eq!(parse("codec=PCM16"), Err(QueryError::Codec("PCM16".to_owned())));
    assert_eq!(parse("codec="), Err(QueryError::Codec(String::new())));
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
