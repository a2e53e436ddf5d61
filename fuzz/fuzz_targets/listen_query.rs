//! Fuzzes what hark reads from an unauthenticated client's upgrade request: the
//! query string (`ListenParams::parse`) and the `Authorization` header
//! (`JwtAuth::authenticate`).
//!
//! Checks: neither parser panics, hangs or allocates without bound on any input;
//! accepted parameters uphold the documented limits (sample rate 8000..=48000 Hz
//! and one the codec takes, one channel, conversation timeout 1..=86400 s, language tag 2..=16 bytes, uid
//! 1..=128 bytes without spaces or control characters) and `to_query` renders them
//! to a query that parses back to the same parameters; an accepted token yields a
//! uid within the same limits.
//!
//! The input is given to the verifier twice: as the raw header value, and as the
//! claims of an HS256 token the harness signs with the configured secret, so that
//! mutations reach the claim checks behind the signature (a fuzzer cannot forge
//! an HMAC). For the signed token, an accepted uid must be the token's `sub`.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hark_gateway::auth::{JwtAuth, JwtConfig, MAX_SUBJECT_BYTES};
use hark_proto::client::{MAX_UID_LEN, SAMPLE_RATES};
use hark_proto::ListenParams;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// The HS256 secret the verifier is loaded with (≥ 32 bytes, as `load` requires).
const SECRET: &[u8] = b"hark-fuzz-listen-query-hs256-secret";
/// Claims the verifier is configured to require; the fuzzer finds them through
/// its comparison tracing (and the seeds carry them).
const AUDIENCE: &str = "hark";
const ISSUER: &str = "https://issuer.example";
/// `{"alg":"HS256","typ":"JWT"}`, base64url.
const HS256_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_query(&text);

    let auth = verifier();
    if let Ok(uid) = auth.authenticate(Some(&text)) {
        check_uid(&uid);
    }
    let token = sign(data);
    if let Ok(uid) = auth.authenticate(Some(&format!("Bearer {token}"))) {
        check_uid(&uid);
        let claims: serde_json::Value =
            serde_json::from_slice(data).expect("accepted claims are JSON");
        assert_eq!(claims.get("sub").and_then(|s| s.as_str()), Some(&*uid), "uid is not `sub`");
    }
});

fn check_query(query: &str) {
    let Ok(params) = ListenParams::parse(query) else {
        return;
    };
    assert!(SAMPLE_RATES.contains(&params.sample_rate), "{params:?}");
    assert!(params.codec.allows_sample_rate(params.sample_rate), "{params:?}");
    assert_eq!(params.channels, 1, "{params:?}");
    let timeout = params.conversation_timeout;
    assert!((1..=86_400).contains(&timeout.as_secs()) && timeout.subsec_nanos() == 0);
    assert!((2..=16).contains(&params.language.len()), "{params:?}");
    assert!(params.language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if let Some(uid) = &params.uid {
        assert!((1..=MAX_UID_LEN).contains(&uid.len()), "uid of {} bytes", uid.len());
        assert!(uid.chars().all(|c| !c.is_control() && !c.is_whitespace()), "{uid:?}");
    }

    let rendered = params.to_query();
    assert_eq!(ListenParams::parse(&rendered), Ok(params), "via {rendered:?}");
}

/// A uid from a token obeys the same rules as one from the query.
fn check_uid(uid: &str) {
    assert!((1..=MAX_SUBJECT_BYTES).contains(&uid.len()), "uid of {} bytes", uid.len());
    assert!(uid.chars().all(|c| !c.is_control() && !c.is_whitespace()), "{uid:?}");
}

/// The verifier, loaded once: the HS256 secret plus the RS256/ES256 keys of the
/// gateway's test JWKS, with an audience and an issuer required.
fn verifier() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let secret_file =
            std::env::temp_dir().join(format!("hark-fuzz-secret-{}", std::process::id()));
        std::fs::write(&secret_file, SECRET).expect("write the fuzz secret");
        let jwks_file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/gateway/tests/keys/jwks.json");
        let auth = JwtAuth::load(JwtConfig {
            secret_file: Some(secret_file.clone()),
            jwks_file: Some(jwks_file),
            audience: Some(AUDIENCE.to_owned()),
            issuer: Some(ISSUER.to_owned()),
            leeway: Duration::from_secs(30),
        })
        .expect("load the fuzz verifier");
        let _ = std::fs::remove_file(secret_file);
        auth
    })
}

/// A compact HS256 JWS with `claims` as its payload, signed with [`SECRET`].
fn sign(claims: &[u8]) -> String {
    let signed = format!("{HS256_HEADER}.{}", URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("HMAC takes any key");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}
