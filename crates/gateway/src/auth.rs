//! Bearer-token (JWT) authentication of clients.
//!
//! [`JwtAuth`] verifies a token (from `Authorization: Bearer <JWT>`, or the
//! `/v4/web/listen` auth message) and returns its [`Principal`]: the uid (`sub`)
//! and the plan claim. `jsonwebtoken` checks signatures and the registered claims;
//! Hark adds one rule of its own: **the key, not the token, picks the algorithm**.
//! HS256 verifies only against the shared secret file, RS256 and ES256 only
//! against the JWKS keys (from a file or a URL), and anything else (`none`
//! included) is refused. So an HS256 token "signed" with a public key's bytes is
//! refused: outright when no secret is configured, and as a bad signature when one
//! is.
//!
//! `exp` is checked here, at the upgrade, and only here: a session that outlives
//! its token is not cut (omi apps hold sessions for hours on one-hour tokens).
//!
//! Errors carry a reason and nothing else: a token (or a piece of one) never
//! reaches an error message or a log line.
//!
//! Keys rotate without a restart: [`JwtAuth::spawn_reloader`] polls a JWKS file,
//! or keeps a JWKS URL's set fresh per its `Cache-Control` and re-fetches it when a
//! token names an unknown `kid` (see `remote`).

mod fetch;
mod jwks;
mod reload;
mod remote;
mod token;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use jwks::JwksError;
pub use token::{MAX_PLAN_BYTES, MAX_SUBJECT_BYTES, MAX_TOKEN_BYTES};

use jwks::KeySet;
use reload::JwksSource;
use remote::RemoteJwks;

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
    /// JWKS URL (`https://`, or `http://` for tests); not together with `jwks_file`.
    pub jwks_url: Option<String>,
    /// How the JWKS URL is fetched and cached.
    pub jwks_fetch: JwksFetchPolicy,
    /// The `aud` a token must carry, if set.
    pub audience: Option<String>,
    /// The `iss` a token must carry, if set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in whole seconds (e.g. 30 s).
    pub leeway: Duration,
    /// The claim holding the user's plan (`--plan-claim`, default `plan`).
    pub plan_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_fetch: JwksFetchPolicy::default(),
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
            plan_claim: "plan".to_owned(),
        }
    }
}

/// Fetching and caching of a JWKS URL. The defaults suit a public identity provider
/// (Google's securetoken keys say `max-age` of several hours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksFetchPolicy {
    /// Floor on the cache lifetime, whatever `Cache-Control` says (`max-age=0`
    /// would otherwise mean a fetch per upgrade). Default 60 s.
    pub min_ttl: Duration,
    /// Ceiling on the cache lifetime. Default 24 h.
    pub max_ttl: Duration,
    /// Lifetime when the response has no `max-age`. Default 1 h.
    pub default_ttl: Duration,
    /// On-demand fetches (a token with an unknown `kid`) at most this often,
    /// process-wide. Default 60 s.
    pub unknown_kid_interval: Duration,
    /// How long the upgrade that saw an unknown `kid` waits for that fetch before
    /// it is refused with 401. Default 2 s.
    pub unknown_kid_wait: Duration,
    /// Bound on connect + TLS + request + body of one fetch. Default 5 s.
    pub timeout: Duration,
    /// Attempts of the first fetch before start-up fails. Default 3.
    pub startup_attempts: u32,
}

impl Default for JwksFetchPolicy {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(3600),
            unknown_kid_interval: Duration::from_secs(60),
            unknown_kid_wait: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            startup_attempts: 3,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user id: the token's `sub` (or the query's `uid` with auth `none`).
    pub uid: String,
    /// The plan claim, when it holds a usable name; `None` means the default plan.
    pub plan: Option<String>,
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
    /// Neither a secret nor a JWKS was given.
    #[error("JWT auth needs --jwt-secret-file, --jwks-file or --jwks-url")]
    NotConfigured,
    /// Both a JWKS file and a JWKS URL were given.
    #[error("--jwks-file and --jwks-url cannot be combined: give one source of JWKS keys")]
    TwoJwksSources,
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
    /// The JWKS URL is not one Hark can fetch.
    #[error("--jwks-url {url:?}: {reason}")]
    JwksUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The first fetch of the JWKS URL failed (after its retries).
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    FetchJwks {
        /// The URL.
        url: String,
        /// The last attempt's error.
        reason: String,
    },
}

/// Verifies bearer tokens. Cheap to clone; verifying does no I/O and holds a lock
/// only to clone an `Arc`, except that a token naming an unknown `kid` of a JWKS URL
/// waits (bounded) for a re-fetch.
#[derive(Clone)]
pub struct JwtAuth {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HS256 key, when a secret file is configured.
    secret: Option<DecodingKey>,
    /// The JWKS keys, when a JWKS file or URL is configured.
    jwks: Option<Keys>,
    /// Claim checks per algorithm, built once.
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    /// The claim holding the plan.
    plan_claim: String,
    /// The configuration, for `Debug`.
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

/// Where the JWKS keys come from.
enum Keys {
    File(JwksSource),
    Url(Box<RemoteJwks>),
}

impl Keys {
    fn keys(&self) -> Arc<KeySet> {
        match self {
            Keys::File(source) => source.keys(),
            Keys::Url(source) => source.keys(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Keys::File(source) => format!("file {}", source.path().display()),
            Keys::Url(source) => format!("url {}", source.url()),
        }
    }
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("secret", &self.inner.secret.as_ref().map(|_| "[redacted]"))
            .field("jwks", &self.inner.jwks.as_ref().map(Keys::describe))
            .field("audience", &self.inner.audience)
            .field("issuer", &self.inner.issuer)
            .field("leeway", &self.inner.leeway)
            .field("plan_claim", &self.inner.plan_claim)
            .finish()
    }
}

impl JwtAuth {
    /// Reads the secret and the JWKS file, or fetches the JWKS URL, and checks them.
    /// A JWKS URL that cannot be fetched fails here (after `startup_attempts`), so a
    /// wrong URL is a clear error at start rather than every token refused later.
    pub async fn load(config: JwtConfig) -> Result<Self, AuthSetupError> {
        if config.jwks_file.is_some() && config.jwks_url.is_some() {
            return Err(AuthSetupError::TwoJwksSources);
        }
        if config.secret_file.is_none() && config.jwks_file.is_none() && config.jwks_url.is_none() {
            return Err(AuthSetupError::NotConfigured);
        }
        // Name the backend rather than leave it to feature unification: were another
        // crate to turn on jsonwebtoken's `aws_lc_rs` too, the automatic choice would
        // panic at the first verification. An `Err` means one is already installed.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let secret = config.secret_file.as_deref().map(load_secret).transpose()?;
        let jwks = match (config.jwks_file, config.jwks_url) {
            (Some(path), _) => Some(Keys::File(JwksSource::load(path)?)),
            (None, Some(url)) => {
                let policy = config.jwks_fetch;
                let fetcher =
                    fetch::HttpFetcher::new(&url, policy.timeout, jwks::MAX_JWKS_BYTES)
                        .map_err(|reason| AuthSetupError::JwksUrl { url: url.clone(), reason })?;
                let source = RemoteJwks::start(url.clone(), Box::new(fetcher), policy)
                    .await
                    .map_err(|e| AuthSetupError::FetchJwks { url, reason: e.to_string() })?;
                Some(Keys::Url(Box::new(source)))
            }
            (None, None) => None,
        };
        let (audience, issuer) = (config.audience.as_deref(), config.issuer.as_deref());
        let validation = |alg| token::validation(alg, audience, issuer, config.leeway);
        Ok(JwtAuth {
            inner: Arc::new(Inner {
                secret,
                jwks,
                hs256: validation(Algorithm::HS256),
                rs256: validation(Algorithm::RS256),
                es256: validation(Algorithm::ES256),
                plan_claim: config.plan_claim,
                audience: config.audience,
                issuer: config.issuer,
                leeway: config.leeway,
            }),
        })
    }

    /// Verifies the raw `Authorization` header value, if any.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.verify_or_refresh(token::bearer(authorization)?).await
    }

    /// Verifies a bare token (the `/v4/web/listen` auth message).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_or_refresh(token::bare(token)?).await
    }

    /// Verifies against the keys in force; when a JWKS URL's set lacks the token's
    /// key, waits (bounded) for a re-fetch and tries once more.
    async fn verify_or_refresh(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) => match &self.inner.jwks {
                Some(Keys::Url(source)) if source.refresh_for_unknown_kid().await => {
                    self.verify(token)
                }
                _ => Err(AuthError::UnknownKey),
            },
            outcome => outcome,
        }
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = token::header(token)?;
        let inner = &*self.inner;
        let claims = match header.alg.as_str() {
            "HS256" => {
                let secret = inner.secret.as_ref().ok_or(AuthError::Algorithm)?;
                token::decode(token, secret, &inner.hs256)?
            }
            "RS256" | "ES256" => {
                let (alg, validation) = match header.alg.as_str() {
                    "RS256" => (Algorithm::RS256, &inner.rs256),
                    _ => (Algorithm::ES256, &inner.es256),
                };
                let keys = inner.jwks.as_ref().ok_or(AuthError::Algorithm)?.keys();
                verify_with_jwks(token, &keys, alg, header.kid.as_deref(), validation)?
            }
            _ => return Err(AuthError::Algorithm),
        };
        token::principal(&claims, &inner.plan_claim)
    }

    /// Spawns the task that keeps the JWKS current: polls a JWKS file every `every`
    /// (a new version that does not parse is logged once and ignored: the previous
    /// keys stay in force), or refreshes a JWKS URL per its cache lifetime and on
    /// unknown `kid`s. Ends on `shutdown`; ends at once without a JWKS. An `every`
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
            match &inner.jwks {
                Some(Keys::File(source)) => source.reload_loop(every, shutdown).await,
                Some(Keys::Url(source)) => source.refresh_loop(shutdown).await,
                None => {}
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
    token: &str,
    keys: &KeySet,
    alg: Algorithm,
    kid: Option<&str>,
    validation: &Validation,
) -> Result<Map<String, Value>, AuthError> {
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
    // Every candidate is tried, so a bad signature is the last word; anything else
    // (claims are only read once a signature verified) ends the search.
    let mut outcome = Err(AuthError::BadSignature);
    for key in candidates {
        outcome = token::decode(token, &key.key, validation);
        if !matches!(outcome, Err(AuthError::BadSignature)) {
            break;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    async fn hs256_auth(plan_claim: &str) -> (tempfile::TempDir, JwtAuth) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, [SECRET, b"\r\n"].concat()).expect("write");
        let config = JwtConfig {
            secret_file: Some(path),
            plan_claim: plan_claim.to_owned(),
            ..JwtConfig::default()
        };
        (dir, JwtAuth::load(config).await.expect("load"))
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
    }

    #[tokio::test]
    async fn secret_is_trimmed_and_the_plan_comes_from_the_configured_claim() {
        let (_dir, auth) = hs256_auth("tier").await;
        let claims = json!({"sub": "u1", "exp": now() + 60, "tier": "pro", "plan": "free"});
        let principal = auth.authenticate(Some(&format!("Bearer {}", sign(claims)))).await;
        assert_eq!(principal, Ok(Principal { uid: "u1".into(), plan: Some("pro".into()) }));
        let bare = auth.authenticate_token(&sign(json!({"sub": "u2", "exp": now() + 60}))).await;
        assert_eq!(bare, Ok(Principal { uid: "u2".into(), plan: None }));
        let expired = sign(json!({"sub": "u1", "exp": now() - 31}));
        assert_eq!(auth.authenticate_token(&expired).await, Err(AuthError::Expired));
    }

    #[tokio::test]
    async fn tampered_payload_is_a_bad_signature() {
        let (_dir, auth) = hs256_auth("plan").await;
        let token = sign(json!({"sub": "u1", "exp": 4_000_000_000u64}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": 4_000_000_000u64}).to_string());
        parts[1] = &forged;
        let forged = format!("Bearer {}", parts.join("."));
        assert_eq!(auth.authenticate(Some(&forged)).await, Err(AuthError::BadSignature));
    }

    #[tokio::test]
    async fn short_secrets_and_two_jwks_sources_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").expect("write");
        let config = JwtConfig { secret_file: Some(path), ..JwtConfig::default() };
        let err = JwtAuth::load(config).await.expect_err("too short");
        assert!(matches!(err, AuthSetupError::WeakSecret { len: 5, .. }), "{err}");
        assert!(!err.to_string().contains("short\n"));
        let both = JwtConfig {
            jwks_file: Some(dir.path().join("jwks.json")),
            jwks_url: Some("https://idp.test/jwks".into()),
            ..JwtConfig::default()
        };
        let err = JwtAuth::load(both).await.expect_err("two sources");
        assert!(matches!(err, AuthSetupError::TwoJwksSources), "{err}");
        let bad_url =
            JwtConfig { jwks_url: Some("ftp://idp.test/jwks".into()), ..JwtConfig::default() };
        let err = JwtAuth::load(bad_url).await.expect_err("bad url");
        assert!(err.to_string().contains("https://"), "{err}");
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
