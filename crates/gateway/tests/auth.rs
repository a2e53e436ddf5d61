//! JWT authentication against real key material (`tests/keys/`, made with openssl):
//! what is accepted, every way a token is refused and the reason it is refused
//! with, algorithm confusion, setup errors, and JWKS rotation.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hark_gateway::auth::{AuthError, AuthSetupError, JwtAuth, JwtConfig, MAX_TOKEN_BYTES};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "an-hs256-test-secret-of-32-bytes-or-more";
const AUDIENCE: &str = "hark";
const ISSUER: &str = "https://id.test.invalid";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).expect("test key file")
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_file("rsa.key.pem")).expect("RSA key")
}

fn rsa_wrong_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_file("rsa_wrong.key.pem")).expect("wrong RSA key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&key_file("ec.key.pem")).expect("EC key")
}

fn hmac_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET.as_bytes())
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// Claims valid for an hour, for uid `user-1`, with the configured aud and iss.
fn claims() -> Value {
    json!({ "sub": "user-1", "exp": now() + 3600, "iat": now(), "aud": AUDIENCE, "iss": ISSUER })
}

/// `claims()` with one claim replaced (or removed, for `Value::Null`).
fn claims_with(name: &str, value: Value) -> Value {
    let mut c = claims();
    match value {
        Value::Null => {
            c.as_object_mut().expect("object").remove(name);
        }
        v => c[name] = v,
    }
    c
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Which keys a test configures.
#[derive(Clone, Copy)]
enum Keys {
    Secret,
    Jwks,
    Both,
}

/// A loaded `JwtAuth` plus the directory its files live in.
struct Setup {
    _dir: tempfile::TempDir,
    auth: JwtAuth,
}

impl Setup {
    async fn new(keys: Keys) -> Setup {
        Setup::with(keys, Some(AUDIENCE), Some(ISSUER)).await
    }

    async fn with(keys: Keys, audience: Option<&str>, issuer: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = matches!(keys, Keys::Secret | Keys::Both).then(|| {
            let path = dir.path().join("secret");
            std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
            path
        });
        let jwks_file =
            matches!(keys, Keys::Jwks | Keys::Both).then(|| keys_dir().join("jwks.json"));
        let config = JwtConfig {
            secret_file,
            jwks_file,
            audience: audience.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
            leeway: Duration::from_secs(30),
            ..JwtConfig::default()
        };
        Setup { _dir: dir, auth: JwtAuth::load(config).await.expect("load") }
    }

    /// Authenticates `Bearer <token>`, and checks that the error never shows the token.
    async fn check(&self, token: &str) -> Result<String, &'static str> {
        let result = self.auth.authenticate(Some(&bearer(token))).await;
        if let Err(err) = &result {
            assert_no_leak(err, token);
        }
        result.map(|p| p.uid).map_err(|e| e.reason())
    }
}

/// Neither the error's Display nor its Debug contains the token or any part of it.
fn assert_no_leak(err: &AuthError, token: &str) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(token), "error shows the token: {shown}");
    for part in token.split('.').filter(|p| p.len() >= 4) {
        assert!(!shown.contains(part), "error shows part of the token: {shown}");
    }
}

// --- accepted ---------------------------------------------------------------

#[tokio::test]
async fn hs256_token_gives_the_subject() {
    let setup = Setup::new(Keys::Secret).await;
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims());
    assert_eq!(setup.check(&token).await, Ok("user-1".into()));
    // A kid on an HS256 token does not matter: the secret is the only HS256 key.
    let token = sign(Algorithm::HS256, &hmac_key(), Some("anything"), &claims());
    assert_eq!(setup.check(&token).await, Ok("user-1".into()));
}

#[tokio::test]
async fn rs256_token_gives_the_subject_with_or_without_kid() {
    let setup = Setup::new(Keys::Jwks).await;
    for kid in [Some("rsa-a"), None] {
        let token = sign(Algorithm::RS256, &rsa_key(), kid, &claims());
        assert_eq!(setup.check(&token).await, Ok("user-1".into()), "kid {kid:?}");
    }
}

#[tokio::test]
async fn es256_token_gives_the_subject_with_or_without_kid() {
    let setup = Setup::new(Keys::Jwks).await;
    for kid in [Some("ec-a"), None] {
        let token = sign(Algorithm::ES256, &ec_key(), kid, &claims());
        assert_eq!(setup.check(&token).await, Ok("user-1".into()), "kid {kid:?}");
    }
}

#[tokio::test]
async fn every_algorithm_verifies_when_both_are_configured() {
    let setup = Setup::new(Keys::Both).await;
    let hs = sign(Algorithm::HS256, &hmac_key(), None, &claims());
    let rs = sign(Algorithm::RS256, &rsa_key(), Some("rsa-a"), &claims());
    let es = sign(Algorithm::ES256, &ec_key(), None, &claims());
    for token in [hs, rs, es] {
        assert_eq!(setup.check(&token).await, Ok("user-1".into()));
    }
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let setup = Setup::new(Keys::Secret).await;
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims());
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {token}");
        let uid = setup.auth.authenticate(Some(&header)).await.map(|p| p.uid);
        assert_eq!(uid, Ok("user-1".into()), "{scheme}");
    }
}

#[tokio::test]
async fn audience_and_issuer_are_not_checked_when_not_configured() {
    let setup = Setup::with(Keys::Secret, None, None).await;
    let claims =
        json!({ "sub": "user-1", "exp": now() + 60, "aud": "elsewhere", "iss": "someone" });
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims);
    assert_eq!(setup.check(&token).await, Ok("user-1".into()));
}

// --- refused: time, audience, issuer, subject -------------------------------

#[tokio::test]
async fn expired_token_is_refused_beyond_the_leeway() {
    let setup = Setup::new(Keys::Jwks).await;
    let expired = sign(Algorithm::RS256, &rsa_key(), None, &claims_with("exp", json!(now() - 120)));
    assert_eq!(setup.check(&expired).await, Err("expired"));
    let within_leeway =
        sign(Algorithm::RS256, &rsa_key(), None, &claims_with("exp", json!(now() - 5)));
    assert_eq!(setup.check(&within_leeway).await, Ok("user-1".into()));
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let setup = Setup::new(Keys::Secret).await;
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims_with("exp", Value::Null));
    assert_eq!(setup.check(&token).await, Err("malformed"));
}

#[tokio::test]
async fn not_yet_valid_token_is_refused_beyond_the_leeway() {
    let setup = Setup::new(Keys::Jwks).await;
    let early = sign(Algorithm::ES256, &ec_key(), None, &claims_with("nbf", json!(now() + 600)));
    assert_eq!(setup.check(&early).await, Err("not_yet_valid"));
    let within_leeway =
        sign(Algorithm::ES256, &ec_key(), None, &claims_with("nbf", json!(now() + 5)));
    assert_eq!(setup.check(&within_leeway).await, Ok("user-1".into()));
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused() {
    let setup = Setup::new(Keys::Secret).await;
    for aud in [json!("other"), json!(["other", "another"]), Value::Null] {
        let token = sign(Algorithm::HS256, &hmac_key(), None, &claims_with("aud", aud.clone()));
        assert_eq!(setup.check(&token).await, Err("bad_audience"), "aud {aud}");
    }
    let listed =
        sign(Algorithm::HS256, &hmac_key(), None, &claims_with("aud", json!(["other", AUDIENCE])));
    assert_eq!(setup.check(&listed).await, Ok("user-1".into()));
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_refused() {
    let setup = Setup::new(Keys::Jwks).await;
    for iss in [json!("https://evil.test.invalid"), Value::Null] {
        let token = sign(Algorithm::RS256, &rsa_key(), None, &claims_with("iss", iss.clone()));
        assert_eq!(setup.check(&token).await, Err("bad_issuer"), "iss {iss}");
    }
}

#[tokio::test]
async fn token_without_a_usable_subject_is_refused() {
    let setup = Setup::new(Keys::Secret).await;
    let too_long = "u".repeat(129);
    for sub in
        [Value::Null, json!(""), json!("two words"), json!("tab\there"), json!(7), json!(too_long)]
    {
        let token = sign(Algorithm::HS256, &hmac_key(), None, &claims_with("sub", sub.clone()));
        assert_eq!(setup.check(&token).await, Err("no_subject"), "sub {sub}");
    }
    let longest = "u".repeat(128);
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims_with("sub", json!(longest)));
    assert_eq!(setup.check(&token).await, Ok(longest));
}

// --- refused: keys and signatures -------------------------------------------

#[tokio::test]
async fn token_signed_by_another_rsa_key_is_refused() {
    let setup = Setup::new(Keys::Jwks).await;
    // Claims the trusted key's kid, or none: the signature does not verify.
    for kid in [Some("rsa-a"), None] {
        let token = sign(Algorithm::RS256, &rsa_wrong_key(), kid, &claims());
        assert_eq!(setup.check(&token).await, Err("bad_signature"), "kid {kid:?}");
    }
    // Names its own key, which is not in the JWKS.
    let token = sign(Algorithm::RS256, &rsa_wrong_key(), Some("rsa-wrong"), &claims());
    assert_eq!(setup.check(&token).await, Err("unknown_key"));
}

#[tokio::test]
async fn keys_published_without_kid_verify_tokens_with_any_kid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let mut key_a = jwk("jwks.json", "rsa-a");
    key_a.as_object_mut().expect("object").remove("kid");
    write_jwks(&path, &[key_a]);
    let auth = JwtAuth::load(config(None, Some(path))).await.expect("load");
    let check = |token: String| {
        let auth = auth.clone();
        async move {
            auth.authenticate(Some(&bearer(&token))).await.map(|p| p.uid).map_err(|e| e.reason())
        }
    };
    for kid in [Some("issuer-key-7"), None] {
        let good = sign(Algorithm::RS256, &rsa_key(), kid, &claims());
        assert_eq!(check(good).await, Ok("user-1".into()), "kid {kid:?}");
        let wrong = sign(Algorithm::RS256, &rsa_wrong_key(), kid, &claims());
        assert_eq!(check(wrong).await, Err("bad_signature"), "kid {kid:?}");
    }
    // No EC key at all.
    let es = sign(Algorithm::ES256, &ec_key(), None, &claims());
    assert_eq!(check(es).await, Err("unknown_key"));
}

#[tokio::test]
async fn tampered_claims_are_a_bad_signature() {
    let setup = Setup::new(Keys::Both).await;
    for token in [
        sign(Algorithm::HS256, &hmac_key(), None, &claims()),
        sign(Algorithm::RS256, &rsa_key(), None, &claims()),
        sign(Algorithm::ES256, &ec_key(), None, &claims()),
    ] {
        let parts: Vec<&str> = token.split('.').collect();
        let forged =
            format!("{}.{}.{}", parts[0], b64(&claims_with("sub", json!("admin"))), parts[2]);
        assert_eq!(setup.check(&forged).await, Err("bad_signature"));
    }
}

#[tokio::test]
async fn kid_of_a_key_for_another_algorithm_is_refused() {
    let setup = Setup::new(Keys::Jwks).await;
    let es_claiming_rsa_key = sign(Algorithm::ES256, &ec_key(), Some("rsa-a"), &claims());
    assert_eq!(setup.check(&es_claiming_rsa_key).await, Err("algorithm"));
    let rs_claiming_ec_key = sign(Algorithm::RS256, &rsa_key(), Some("ec-a"), &claims());
    assert_eq!(setup.check(&rs_claiming_ec_key).await, Err("algorithm"));
}

#[tokio::test]
async fn alg_none_is_refused() {
    for keys in [Keys::Secret, Keys::Jwks, Keys::Both] {
        let setup = Setup::new(keys).await;
        for alg in ["none", "None", "NONE", "nOnE"] {
            for header in
                [json!({ "alg": alg, "typ": "JWT" }), json!({ "alg": alg, "kid": "rsa-a" })]
            {
                let unsigned = format!("{}.{}.", b64(&header), b64(&claims()));
                assert_eq!(setup.check(&unsigned).await, Err("algorithm"), "{header}");
                let with_junk = format!("{unsigned}c2lnbmF0dXJl");
                assert_eq!(setup.check(&with_junk).await, Err("algorithm"), "{header}");
            }
        }
    }
}

#[tokio::test]
async fn algorithms_other_than_hs256_rs256_es256_are_refused() {
    let setup = Setup::new(Keys::Both).await;
    let hs512 = sign(Algorithm::HS512, &hmac_key(), None, &claims());
    let rs512 = sign(Algorithm::RS512, &rsa_key(), Some("rsa-a"), &claims());
    let ps256 = sign(Algorithm::PS256, &rsa_key(), Some("rsa-a"), &claims());
    let es384 = format!("{}.{}.c2ln", b64(&json!({ "alg": "ES384" })), b64(&claims()));
    let lower = format!("{}.{}.c2ln", b64(&json!({ "alg": "hs256" })), b64(&claims()));
    for token in [hs512, rs512, ps256, es384, lower] {
        assert_eq!(setup.check(&token).await, Err("algorithm"));
    }
}

#[tokio::test]
async fn each_algorithm_needs_its_own_kind_of_key() {
    let jwks_only = Setup::new(Keys::Jwks).await;
    let hs = sign(Algorithm::HS256, &hmac_key(), None, &claims());
    assert_eq!(jwks_only.check(&hs).await, Err("algorithm"));
    let secret_only = Setup::new(Keys::Secret).await;
    let rs = sign(Algorithm::RS256, &rsa_key(), None, &claims());
    let es = sign(Algorithm::ES256, &ec_key(), None, &claims());
    assert_eq!(secret_only.check(&rs).await, Err("algorithm"));
    assert_eq!(secret_only.check(&es).await, Err("algorithm"));
}

/// The classic confusion attack: an HS256 token whose HMAC key is the server's RSA
/// public key, which an attacker can read from the JWKS.
#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let spki_pem = key_file("rsa.pub.pem");
    let spki_der = key_file("rsa.pub.der");
    let pem_text = String::from_utf8(spki_pem.clone()).expect("PEM is text");
    let pem_one_line: String = pem_text.lines().collect();
    let public_key_forms: [&[u8]; 4] =
        [&spki_pem, pem_text.trim_end().as_bytes(), pem_one_line.as_bytes(), &spki_der];
    for form in public_key_forms {
        let key = EncodingKey::from_secret(form);
        for kid in [None, Some("rsa-a")] {
            let token = sign(Algorithm::HS256, &key, kid, &claims());
            // Only a JWKS: HS256 is not an algorithm Hark accepts at all.
            assert_eq!(Setup::new(Keys::Jwks).await.check(&token).await, Err("algorithm"));
            // Both: HS256 verifies against the secret file and nothing else.
            assert_eq!(Setup::new(Keys::Both).await.check(&token).await, Err("bad_signature"));
        }
    }
}

// --- refused: the header and the token's shape ------------------------------

#[tokio::test]
async fn no_header_is_missing() {
    let setup = Setup::new(Keys::Both).await;
    assert_eq!(setup.auth.authenticate(None).await.map_err(|e| e.reason()), Err("missing"));
    assert_eq!(setup.auth.authenticate(Some("")).await.map_err(|e| e.reason()), Err("missing"));
}

#[tokio::test]
async fn other_schemes_and_garbage_are_malformed() {
    let setup = Setup::new(Keys::Both).await;
    let token = sign(Algorithm::HS256, &hmac_key(), None, &claims());
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("user:pass"));
    let cases = [
        basic,
        token.clone(), // no scheme at all
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Token {token}"),
        "Bearer garbage".to_owned(),
        "Bearer a.b".to_owned(),
        "Bearer a.b.c.d".to_owned(),
        "Bearer !!!.???.###".to_owned(),
        format!("Bearer {}.{}.c2ln", b64(&json!(["alg", "HS256"])), b64(&claims())),
        format!(
            "Bearer {}.{}.c2ln",
            b64(&json!({ "alg": "HS256", "crit": ["x"] })),
            b64(&claims())
        ),
        "Bearer \u{1F512}.\u{1F512}.\u{1F512}".to_owned(),
    ];
    for header in &cases {
        let result = setup.auth.authenticate(Some(header)).await.map(|p| p.uid);
        assert_eq!(result.map_err(|e| e.reason()), Err("malformed"), "{header:?}");
    }
}

#[tokio::test]
async fn signed_payload_that_is_not_a_claims_object_is_malformed() {
    // The payload is read only once the signature verifies, so these are signed.
    let setup = Setup::new(Keys::Secret).await;
    let header = b64(&json!({ "alg": "HS256" }));
    for payload in
        [URL_SAFE_NO_PAD.encode("not json"), b64(&json!([claims()])), b64(&json!("user-1"))]
    {
        let signed = format!("{header}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &hmac_key(), Algorithm::HS256)
                .expect("sign");
        assert_eq!(
            setup.check(&format!("{signed}.{signature}")).await,
            Err("malformed"),
            "{payload}"
        );
    }
    // Unsigned, the same payload is just a bad signature.
    let unsigned = format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode("not json"));
    assert_eq!(setup.check(&unsigned).await, Err("bad_signature"));
}

#[tokio::test]
async fn oversize_token_is_malformed() {
    let setup = Setup::new(Keys::Secret).await;
    // A validly signed token, padded past the limit with a long claim.
    let big = claims_with("pad", json!("x".repeat(MAX_TOKEN_BYTES)));
    let token = sign(Algorithm::HS256, &hmac_key(), None, &big);
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert_eq!(setup.check(&token).await, Err("malformed"));
    let huge = format!("Bearer {}", "A".repeat(1024 * 1024));
    let huge = setup.auth.authenticate(Some(&huge)).await;
    assert_eq!(huge.map_err(|e| e.reason()), Err("malformed"));
}

#[tokio::test]
async fn no_error_shows_the_token() {
    // Every refusal above goes through `Setup::check`, which asserts this; here the
    // errors are also shown through `Display`, `Debug` and the reason together.
    let setup = Setup::new(Keys::Both).await;
    let tokens = [
        sign(Algorithm::RS256, &rsa_key(), None, &claims_with("exp", json!(now() - 3600))),
        sign(Algorithm::RS256, &rsa_wrong_key(), Some("rsa-a"), &claims()),
        sign(Algorithm::HS256, &EncodingKey::from_secret(b"guess"), None, &claims()),
        sign(Algorithm::ES256, &ec_key(), None, &claims_with("sub", Value::Null)),
        format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&claims())),
        "garbage-token-that-is-not-a-jwt".to_owned(),
    ];
    for token in &tokens {
        let err = setup.auth.authenticate(Some(&bearer(token))).await.expect_err("refused");
        let shown = format!("{err} / {err:?} / {}", err.reason());
        assert!(!shown.contains(token.as_str()), "{shown}");
        assert_no_leak(&err, token);
    }
}

// --- setup ------------------------------------------------------------------

fn config(secret_file: Option<PathBuf>, jwks_file: Option<PathBuf>) -> JwtConfig {
    JwtConfig { secret_file, jwks_file, leeway: Duration::from_secs(30), ..JwtConfig::default() }
}

#[tokio::test]
async fn setup_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{ not json").expect("write");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": []}"#).expect("write");
    let short = dir.path().join("short-secret");
    std::fs::write(&short, "hunter2\n").expect("write");

    let load = |c| async { JwtAuth::load(c).await.expect_err("refused") };
    assert!(matches!(load(config(None, None)).await, AuthSetupError::NotConfigured));
    let no_secret = load(config(Some(missing.clone()), None)).await;
    assert!(matches!(no_secret, AuthSetupError::ReadSecret { .. }));
    assert!(matches!(load(config(None, Some(missing))).await, AuthSetupError::ReadJwks { .. }));
    assert!(matches!(load(config(None, Some(corrupt))).await, AuthSetupError::InvalidJwks { .. }));
    assert!(matches!(load(config(None, Some(empty))).await, AuthSetupError::InvalidJwks { .. }));
    let weak = load(config(Some(short), None)).await;
    assert!(matches!(weak, AuthSetupError::WeakSecret { len: 7, .. }));
    assert!(!format!("{weak} {weak:?}").contains("hunter2"), "the secret is never shown");
}

#[tokio::test]
async fn jwks_with_a_private_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let mut jwks: Value = serde_json::from_slice(&key_file("jwks.json")).expect("jwks");
    jwks["keys"][0]["d"] = json!("c2VjcmV0");
    std::fs::write(&path, jwks.to_string()).expect("write");
    let err = JwtAuth::load(config(None, Some(path))).await.expect_err("refused");
    assert!(err.to_string().contains("private"), "{err}");
}

#[test]
fn jwt_auth_is_shareable_across_tasks() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<JwtAuth>();
}

// --- JWKS rotation ----------------------------------------------------------

/// One JWK from the committed files, by kid.
fn jwk(file: &str, kid: &str) -> Value {
    let jwks: Value = serde_json::from_slice(&key_file(file)).expect("jwks");
    jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).expect("kid").clone()
}

fn write_jwks(path: &Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).expect("write jwks");
}

/// Paused time: `sleep` advances through the reloader's ticks, and each tick's file
/// I/O (on the blocking pool) finishes before time moves on.
#[tokio::test(start_paused = true)]
async fn jwks_reload_swaps_keys_and_keeps_them_on_a_bad_file() {
    const EVERY: Duration = Duration::from_millis(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let key_a = jwk("jwks.json", "rsa-a");
    let key_b = jwk("jwks_wrong.json", "rsa-wrong");
    write_jwks(&path, std::slice::from_ref(&key_a));
    let auth = JwtAuth::load(config(None, Some(path.clone()))).await.expect("load");
    let shutdown = CancellationToken::new();
    let reloader = auth.spawn_reloader(EVERY, shutdown.clone());

    let check = |token: &str| {
        let (auth, header) = (auth.clone(), bearer(token));
        async move { auth.authenticate(Some(&header)).await.map(|p| p.uid).map_err(|e| e.reason()) }
    };
    let token_a = sign(Algorithm::RS256, &rsa_key(), Some("rsa-a"), &claims());
    let token_b = sign(Algorithm::RS256, &rsa_wrong_key(), Some("rsa-wrong"), &claims());
    let token_b_no_kid = sign(Algorithm::RS256, &rsa_wrong_key(), None, &claims());
    assert_eq!(check(&token_a).await, Ok("user-1".into()));
    assert_eq!(check(&token_b).await, Err("unknown_key"));
    assert_eq!(check(&token_b_no_kid).await, Err("bad_signature"));

    // Rotate to key B.
    write_jwks(&path, std::slice::from_ref(&key_b));
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(check(&token_b).await, Ok("user-1".into()));
    assert_eq!(check(&token_b_no_kid).await, Ok("user-1".into()));
    assert_eq!(check(&token_a).await, Err("unknown_key"));

    // A corrupt rewrite, then a JWKS with no usable key: key B stays in force.
    std::fs::write(&path, "{\"keys\": [ truncated").expect("write");
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(check(&token_b).await, Ok("user-1".into()));
    std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).expect("write");
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(check(&token_b).await, Ok("user-1".into()));

    // The file vanishing also keeps the keys.
    std::fs::remove_file(&path).expect("remove");
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(check(&token_b).await, Ok("user-1".into()));

    // A good file again (both keys) is picked up.
    write_jwks(&path, &[key_a, key_b]);
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(check(&token_a).await, Ok("user-1".into()));
    assert_eq!(check(&token_b).await, Ok("user-1".into()));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), reloader)
        .await
        .expect("the reloader ends on shutdown")
        .expect("the reloader did not panic");
}

#[tokio::test(start_paused = true)]
async fn reloader_without_a_jwks_file_ends_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, SECRET).expect("write");
    let auth = JwtAuth::load(config(Some(path), None)).await.expect("load");
    let reloader = auth.spawn_reloader(Duration::from_millis(50), CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(1), reloader).await.expect("ended").expect("no panic");
}
