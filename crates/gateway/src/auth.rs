//! Bearer-token (JWT) authentication of client upgrades.
//!
//! [`JwtAuth`] verifies `Authorization: Bearer <JWT>` and returns the uid (`sub`).
//! The algorithm is chosen by the key, never by the token: HS256 verifies only
//! against the shared secret file, RS256 and ES256 only against the keys of the JWKS
//! file, and anything else (`none` included) is refused. So an HS256 token "signed"
//! with a public key's bytes is refused: outright when no secret is configured,
//! and as a bad signature when one is.
//!
//! Errors carry a reason and nothing else: a token (or a piece of one) never
//! reaches an error message or a log line.
//!
//! The JWKS file can be rotated while Hark runs: [`JwtAuth::spawn_reloader`] polls
//! it and swaps the key set in when a valid new version appears. Write the new file
//! next to the old one and rename it into place, so the poll never sees half a file.

mod jwks;
mod reload;
mod token;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey};
use tokio_util::sync::CancellationToken;

pub use jwks::JwksError;
pub use token::{MAX_SUBJECT_BYTES, MAX_TOKEN_BYTES};

use jwks::KeySet;
use reload::JwksSource;
use token::Policy;

/// The shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as
/// long as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

/// How tokens are verified.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// HS256 shared secret: the file's contents, trailing newline trimmed.
    pub secret_file: Option<PathBuf>,
    /// JWKS document with RS256 and/or ES256 public keys (with or without `kid`).
    pub jwks_file: Option<PathBuf>,
    /// The `aud` a token must carry, if set.
    pub audience: Option<String>,
    /// The `iss` a token must carry, if set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (e.g. 30 s).
    pub leeway: Duration,
}

/// Why a token was refused. Deliberately carries no data: see [`AuthError::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (or an empty one).
    #[error("no bearer token")]
    Missing,
    /// Not `Bearer <JWT>`, too long, or not a well-formed JWT (bad base64 or JSON,
    /// missing or non-numeric `exp`, an unsupported `crit` header).
    #[error("malformed bearer token")]
    Malformed,
    /// `exp` is past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// `aud` does not name the configured audience.
    #[error("token audience not accepted")]
    BadAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    BadIssuer,
    /// No configured key matches the token's `kid` (or its algorithm).
    #[error("token signing key unknown")]
    UnknownKey,
    /// The token's `alg` is not one Hark accepts with the configured keys.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// `sub` is missing, empty, too long or holds whitespace or control characters.
    #[error("token has no usable subject")]
    NoSubject,
}

impl AuthError {
    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadAudience => "bad_audience",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Algorithm => "algorithm",
            AuthError::NoSubject => "no_subject",
        }
    }
}

/// Why JWT authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Neither a secret nor a JWKS file was given.
    #[error("JWT auth needs --jwt-secret-file or --jwks-file")]
    NotConfigured,
    /// The secret file could not be read.
    #[error("cannot read the JWT secret file {}: {source}", path.display())]
    ReadSecret {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The secret is too short for HS256.
    #[error(
        "the JWT secret in {} is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
        path.display()
    )]
    WeakSecret {
        /// The file.
        path: PathBuf,
        /// The secret's length after trimming.
        len: usize,
    },
    /// The JWKS file could not be read.
    #[error("cannot read the JWKS file {}: {source}", path.display())]
    ReadJwks {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JWKS file is not a usable key set.
    #[error("invalid JWKS file {}: {source}", path.display())]
    InvalidJwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: JwksError,
    },
}

/// Verifies bearer tokens. Cheap to clone; `authenticate` does no I/O and holds a
/// lock only to clone an `Arc`.
#[derive(Clone)]
pub struct JwtAuth {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HS256 key, when a secret file is configured.
    secret: Option<DecodingKey>,
    /// The JWKS keys, when a JWKS file is configured.
    jwks: Option<JwksSource>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("secret", &self.inner.secret.as_ref().map(|_| "[redacted]"))
            .field("jwks_file", &self.inner.jwks.as_ref().map(JwksSource::path))
            .field("audience", &self.inner.audience)
            .field("issuer", &self.inner.issuer)
            .field("leeway", &self.inner.leeway)
            .finish()
    }
}

impl JwtAuth {
    /// Reads the secret and/or JWKS file and checks them.
    pub fn load(config: JwtConfig) -> Result<Self, AuthSetupError> {
        if config.secret_file.is_none() && config.jwks_file.is_none() {
            return Err(AuthSetupError::NotConfigured);
        }
        // Name the backend rather than leave it to feature unification: were another
        // crate to turn on jsonwebtoken's `aws_lc_rs` too, the automatic choice would
        // panic at the first verification. An `Err` means one is already installed.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let secret = config.secret_file.as_deref().map(load_secret).transpose()?;
        let jwks = config.jwks_file.map(JwksSource::load).transpose()?;
        Ok(JwtAuth {
            inner: Arc::new(Inner {
                secret,
                jwks,
                audience: config.audience,
                issuer: config.issuer,
                leeway: config.leeway,
            }),
        })
    }

    /// Verifies the raw `Authorization` header value, if any, and returns the uid
    /// (`sub`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        self.authenticate_at(authorization, SystemTime::now())
    }

    fn authenticate_at(
        &self,
        authorization: Option<&str>,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let token = token::bearer(authorization)?;
        let parts = token::split(token)?;
        let header = token::header(parts.header)?;
        let inner = &*self.inner;
        match header.alg.as_str() {
            "HS256" => {
                let secret = inner.secret.as_ref().ok_or(AuthError::Algorithm)?;
                verify(&parts, secret, Algorithm::HS256)?;
            }
            "RS256" | "ES256" => {
                let alg = if header.alg == "RS256" { Algorithm::RS256 } else { Algorithm::ES256 };
                let source = inner.jwks.as_ref().ok_or(AuthError::Algorithm)?;
                let keys = source.keys();
                verify_with_jwks(&parts, &keys, alg, header.kid.as_deref())?;
            }
            _ => return Err(AuthError::Algorithm),
        }
        let policy = Policy {
            audience: inner.audience.as_deref(),
            issuer: inner.issuer.as_deref(),
            leeway: inner.leeway,
        };
        token::validate(parts.payload, &policy, now)
    }

    /// Spawns a task that polls the JWKS file every `every` and swaps in its keys
    /// when it changes (its modification time or length). A new version that does
    /// not parse is logged once and ignored: the previous keys stay in force. Ends
    /// on `shutdown`; ends at once when no JWKS file is configured. An `every`
    /// under 10 ms is taken as 10 ms.
    pub fn spawn_reloader(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        // `interval` panics on zero, and a busier poll than this buys nothing.
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            if let Some(source) = &inner.jwks {
                source.reload_loop(every, shutdown).await;
            }
        })
    }
}

fn load_secret(path: &Path) -> Result<DecodingKey, AuthSetupError> {
    let mut secret = std::fs::read(path)
        .map_err(|source| AuthSetupError::ReadSecret { path: path.to_owned(), source })?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthSetupError::WeakSecret { path: path.to_owned(), len: secret.len() });
    }
    Ok(DecodingKey::from_secret(&secret))
}

/// Picks the JWKS key(s) for the token and verifies with them. With a `kid`: the
/// key of that `kid`, or, when no key has it, the keys of the token's algorithm
/// that were published without a `kid`. Without a `kid`: every key of the token's
/// algorithm.
fn verify_with_jwks(
    parts: &token::Parts<'_>,
    keys: &KeySet,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<(), AuthError> {
    let candidates: Vec<_> = match kid {
        Some(kid) => match keys.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            // The key named by the token is for another algorithm: confusion attempt.
            Some(key) if key.alg != alg => return Err(AuthError::Algorithm),
            Some(key) => vec![key],
            // An unknown kid may still match a key published without one.
            None => keys.keys.iter().filter(|k| k.kid.is_none() && k.alg == alg).collect(),
        },
        None => keys.keys.iter().filter(|k| k.alg == alg).collect(),
    };
    if candidates.is_empty() {
        return Err(AuthError::UnknownKey);
    }
    // Every candidate is tried, so a bad signature is the last word; a malformed
    // signature is malformed whatever the key.
    let mut outcome = Err(AuthError::BadSignature);
    for key in candidates {
        outcome = verify(parts, &key.key, alg);
        if outcome != Err(AuthError::BadSignature) {
            break;
        }
    }
    outcome
}

/// Verifies the signature with one key.
fn verify(parts: &token::Parts<'_>, key: &DecodingKey, alg: Algorithm) -> Result<(), AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    match jsonwebtoken::crypto::verify(parts.signature, parts.signed.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AuthError::BadSignature),
        Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => Err(AuthError::Malformed),
        // The backend refused the key for this algorithm. Keys are checked at load so
        // this should not happen; refusing the token is the safe answer.
        Err(_) => Err(AuthError::BadSignature),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hs256_auth() -> (tempfile::TempDir, JwtAuth) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, [SECRET, b"\r\n"].concat()).expect("write");
        let config = JwtConfig {
            secret_file: Some(path),
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
        };
        (dir, JwtAuth::load(config).expect("load"))
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    #[test]
    fn secret_is_trimmed_and_time_is_a_parameter() {
        let (_dir, auth) = hs256_auth();
        let token = format!("Bearer {}", sign(json!({"sub": "u1", "exp": 1_000})));
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(auth.authenticate_at(Some(&token), at(500)), Ok("u1".into()));
        assert_eq!(auth.authenticate_at(Some(&token), at(1_030)), Err(AuthError::Expired));
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let (_dir, auth) = hs256_auth();
        let token = sign(json!({"sub": "u1", "exp": 4_000_000_000u64}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": 4_000_000_000u64}).to_string());
        parts[1] = &forged;
        let forged = format!("Bearer {}", parts.join("."));
        assert_eq!(auth.authenticate(Some(&forged)), Err(AuthError::BadSignature));
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").expect("write");
        let config = JwtConfig {
            secret_file: Some(path),
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::ZERO,
        };
        let err = JwtAuth::load(config).expect_err("too short");
        assert!(matches!(err, AuthSetupError::WeakSecret { len: 5, .. }), "{err}");
        assert!(!err.to_string().contains("short\n"));
    }

    #[test]
    fn reasons_are_distinct() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::BadSignature,
            AuthError::BadAudience,
            AuthError::BadIssuer,
            AuthError::UnknownKey,
            AuthError::Algorithm,
            AuthError::NoSubject,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(AuthError::reason).collect();
        assert_eq!(reasons.len(), all.len());
    }
}
