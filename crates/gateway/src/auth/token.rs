//! The checks on a bearer token that need no key: the `Authorization` header's
//! shape, the token's three parts, its header, and its claims.
//!
//! Everything here is a pure function of its inputs (the wall clock included), so
//! the unit tests below pin every edge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::AuthError;

/// The longest token accepted; anything longer is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest `sub` accepted as a uid, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 128;

/// A compact JWS split at its dots. Every part is base64url text (checked).
pub(crate) struct Parts<'a> {
    /// `header.payload`: the bytes the signature covers.
    pub(crate) signed: &'a str,
    /// The encoded header.
    pub(crate) header: &'a str,
    /// The encoded payload.
    pub(crate) payload: &'a str,
    /// The encoded signature (empty for `alg: none`).
    pub(crate) signature: &'a str,
}

/// What Hark reads from the token's header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The `alg` exactly as written (so `none` can be refused by name).
    pub(crate) alg: String,
    /// The `kid`, if any.
    pub(crate) kid: Option<String>,
}

/// The claim checks that are configured.
pub(crate) struct Policy<'a> {
    /// The `aud` that must be present, if configured.
    pub(crate) audience: Option<&'a str>,
    /// The `iss` that must be present, if configured.
    pub(crate) issuer: Option<&'a str>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub(crate) leeway: Duration,
}

/// The token from an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    // Bound the work before looking at the value at all.
    if value.len() > MAX_TOKEN_BYTES + 64 {
        return Err(AuthError::Malformed);
    }
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, token) = value.split_once([' ', '\t']).ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Splits a compact JWS into its parts.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, AuthError> {
    let (signed, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(AuthError::Malformed)?;
    let base64url =
        |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if header.is_empty()
        || payload.is_empty()
        || !base64url(header)
        || !base64url(payload)
        || !base64url(signature)
    {
        return Err(AuthError::Malformed);
    }
    Ok(Parts { signed, header, payload, signature })
}

/// Decodes the header. Unknown members are ignored, except `crit`: a token that
/// needs an extension Hark does not implement must be refused (RFC 7515 §4.1.11).
pub(crate) fn header(encoded: &str) -> Result<Header, AuthError> {
    let header = json_object(encoded)?;
    if header.contains_key("crit") {
        return Err(AuthError::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(AuthError::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    Ok(Header { alg, kid })
}

/// Checks the claims of a token whose signature has been verified, and returns its
/// uid (`sub`).
///
/// The wall clock is a parameter because `exp` and `nbf` are wall-clock times: the
/// monotonic tokio clock cannot be compared with them.
pub(crate) fn validate(
    encoded: &str,
    policy: &Policy<'_>,
    now: SystemTime,
) -> Result<String, AuthError> {
    let claims = json_object(encoded)?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let leeway = policy.leeway.as_secs_f64();

    // `exp` is required: a token without one would be valid forever.
    let exp = numeric_date(claims.get("exp"))?.ok_or(AuthError::Malformed)?;
    if now >= exp + leeway {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = numeric_date(claims.get("nbf"))? {
        if now + leeway < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    if let Some(issuer) = policy.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(AuthError::BadIssuer);
        }
    }
    if let Some(audience) = policy.audience {
        // RFC 7519 §4.1.3: a single string or an array of strings.
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !ok {
            return Err(AuthError::BadAudience);
        }
    }
    subject(claims.get("sub"))
}

/// `sub` as a uid: a non-empty string of at most [`MAX_SUBJECT_BYTES`] bytes with no
/// whitespace or control characters (it ends up in logs, metrics and file names).
fn subject(sub: Option<&Value>) -> Result<String, AuthError> {
    let Some(Value::String(sub)) = sub else {
        return Err(AuthError::NoSubject);
    };
    if sub.is_empty()
        || sub.len() > MAX_SUBJECT_BYTES
        || sub.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(AuthError::NoSubject);
    }
    Ok(sub.clone())
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional.
fn numeric_date(value: Option<&Value>) -> Result<Option<f64>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(AuthError::Malformed),
        Some(_) => Err(AuthError::Malformed),
    }
}

/// A base64url-encoded JSON object (not an array or a scalar).
fn json_object(encoded: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(v: Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const OPEN: Policy<'static> =
        Policy { audience: None, issuer: None, leeway: Duration::from_secs(30) };

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("  ")), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer(Some("bEaReR   a.b.c ")), Ok("a.b.c"));
        assert_eq!(bearer(Some("Bearer")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("Bearer ")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("Basic dXNlcjpwYXNz")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("a.b.c")), Err(AuthError::Malformed));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer(Some(&long)), Err(AuthError::Malformed));
    }

    #[test]
    fn three_base64url_parts() {
        let parts = split("aGk.eyJ9.c2ln").expect("valid");
        assert_eq!(
            (parts.signed, parts.header, parts.payload, parts.signature),
            ("aGk.eyJ9", "aGk", "eyJ9", "c2ln")
        );
        assert!(split("aGk.eyJ9.").is_ok(), "an empty signature is a shape alg:none uses");
        for bad in ["", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b+.c", "a.b.c=", "a b.c.d"] {
            assert_eq!(split(bad).err(), Some(AuthError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn header_fields() {
        let h = header(&b64(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}))).expect("valid");
        assert_eq!(h, Header { alg: "RS256".into(), kid: Some("k1".into()) });
        let h = header(&b64(json!({"alg": "none"}))).expect("valid");
        assert_eq!(h, Header { alg: "none".into(), kid: None });
        for bad in [
            json!({}),
            json!({"alg": 1}),
            json!({"alg": "HS256", "kid": 7}),
            json!(["alg"]),
            json!({"alg": "HS256", "crit": ["exp"]}),
        ] {
            assert_eq!(header(&b64(bad.clone())), Err(AuthError::Malformed), "{bad}");
        }
        assert_eq!(header("!!"), Err(AuthError::Malformed));
    }

    #[test]
    fn exp_and_nbf_with_leeway() {
        let claims = |v: Value| b64(v);
        let token = claims(json!({"sub": "u", "exp": 1000}));
        assert_eq!(validate(&token, &OPEN, at(900)), Ok("u".into()));
        assert_eq!(validate(&token, &OPEN, at(1029)), Ok("u".into()), "inside the leeway");
        assert_eq!(validate(&token, &OPEN, at(1030)), Err(AuthError::Expired));
        let fractional = claims(json!({"sub": "u", "exp": 1000.5}));
        assert_eq!(validate(&fractional, &OPEN, at(1030)), Ok("u".into()));

        let token = claims(json!({"sub": "u", "exp": 2000, "nbf": 1000}));
        assert_eq!(validate(&token, &OPEN, at(969)), Err(AuthError::NotYetValid));
        assert_eq!(validate(&token, &OPEN, at(970)), Ok("u".into()), "inside the leeway");

        for bad in [
            json!({"sub": "u"}),
            json!({"sub": "u", "exp": "2000"}),
            json!({"sub": "u", "exp": 2000, "nbf": null}),
        ] {
            assert_eq!(
                validate(&claims(bad.clone()), &OPEN, at(0)),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(validate(&b64(json!([1, 2])), &OPEN, at(0)), Err(AuthError::Malformed));
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let policy = Policy { audience: Some("hark"), issuer: Some("https://id.example"), ..OPEN };
        let ok = |v: Value| validate(&b64(v), &policy, at(0));
        let base = json!({"sub": "u", "exp": 100, "iss": "https://id.example", "aud": "hark"});
        assert_eq!(ok(base.clone()), Ok("u".into()));
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v;
            }
            c
        };
        assert_eq!(ok(with("aud", json!(["other", "hark"]))), Ok("u".into()));
        assert_eq!(ok(with("aud", json!("other"))), Err(AuthError::BadAudience));
        assert_eq!(ok(with("aud", json!(["other"]))), Err(AuthError::BadAudience));
        assert_eq!(ok(with("aud", Value::Null)), Err(AuthError::BadAudience));
        assert_eq!(ok(with("iss", json!("https://evil.example"))), Err(AuthError::BadIssuer));
        assert_eq!(ok(with("iss", json!(["https://id.example"]))), Err(AuthError::BadIssuer));
        assert_eq!(ok(with("iss", Value::Null)), Err(AuthError::BadIssuer));
        // Not configured: not checked.
        let open = validate(&b64(with("aud", json!("other"))), &OPEN, at(0));
        assert_eq!(open, Ok("u".into()));
    }

    #[test]
    fn subject_rules() {
        let sub = |v: Value| validate(&b64(json!({"exp": 100, "sub": v})), &OPEN, at(0));
        assert_eq!(sub(json!("user-42")), Ok("user-42".into()));
        assert_eq!(sub(json!("ü".repeat(64))), Ok("ü".repeat(64)), "128 bytes");
        assert_eq!(sub(json!("x".repeat(MAX_SUBJECT_BYTES + 1))), Err(AuthError::NoSubject));
        for bad in [
            json!(""),
            json!("a b"),
            json!("a\nb"),
            json!("a\u{7f}"),
            json!("a\u{a0}b"),
            json!(42),
            Value::Null,
        ] {
            assert_eq!(sub(bad.clone()), Err(AuthError::NoSubject), "{bad}");
        }
        assert_eq!(validate(&b64(json!({"exp": 100})), &OPEN, at(0)), Err(AuthError::NoSubject));
    }
}
