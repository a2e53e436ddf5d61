//! Hark's own rules around a bearer token, and the call into `jsonwebtoken` for
//! everything else.
//!
//! Hark checks the token's shape and reads its header itself, because the header
//! decides which key (and so which algorithm) applies and `jsonwebtoken` cannot
//! parse an `alg` it does not know (`none` among them), nor does it refuse `crit`.
//! Signature, `exp`, `nbf`, `aud` and `iss` are `jsonwebtoken::decode` with a
//! [`Validation`]; `sub` and the plan claim are then read from the verified claims.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Principal};

/// The longest token accepted; anything longer is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest `sub` accepted as a uid, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 128;

/// The longest plan name taken from the plan claim; a longer one counts as absent.
pub const MAX_PLAN_BYTES: usize = 64;

/// What Hark reads from the token's header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The `alg` exactly as written (so `none` can be refused by name).
    pub(crate) alg: String,
    /// The `kid`, if any.
    pub(crate) kid: Option<String>,
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
    bare(token.trim_start_matches([' ', '\t']))
}

/// A token given on its own (the `/v4/web/listen` auth message): bounded, non-empty.
pub(crate) fn bare(token: &str) -> Result<&str, AuthError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Decodes the header of a compact JWS (three base64url parts). Unknown members
/// are ignored, except `crit`: a token that needs an extension Hark does not
/// implement must be refused (RFC 7515 §4.1.11).
pub(crate) fn header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
    // A map, not a struct: serde would read a struct from a JSON array too.
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
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

/// The claim checks for tokens of `alg`: `exp` required, `nbf` honoured, `aud` and
/// `iss` required and checked when configured.
pub(crate) fn validation(
    alg: Algorithm,
    audience: Option<&str>,
    issuer: Option<&str>,
    leeway: Duration,
) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway.as_secs();
    validation.validate_nbf = true;
    // jsonwebtoken refuses any `aud` when none is configured; Hark ignores it then.
    validation.validate_aud = audience.is_some();
    let mut required = vec!["exp"];
    if let Some(audience) = audience {
        validation.set_audience(&[audience]);
        required.push("aud");
    }
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Verifies the signature with `key` and the claims with `validation`, and returns
/// the claims.
pub(crate) fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, AuthError> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| reason(e.kind()))
}

/// Hark's reason for a `jsonwebtoken` error.
fn reason(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::BadAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::BadIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        // The backend refused the key for this algorithm. Keys are checked at load,
        // so this should not happen; refusing the token is the safe answer.
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => AuthError::BadSignature,
        // Bad base64 or JSON, a missing or non-numeric `exp`, a claims part that is
        // not an object.
        _ => AuthError::Malformed,
    }
}

/// The principal of verified claims: the uid from `sub`, the plan from
/// `plan_claim`.
pub(crate) fn principal(
    claims: &Map<String, Value>,
    plan_claim: &str,
) -> Result<Principal, AuthError> {
    Ok(Principal { uid: subject(claims.get("sub"))?, plan: plan(claims.get(plan_claim)) })
}

/// `sub` as a uid: a non-empty string of at most [`MAX_SUBJECT_BYTES`] bytes with no
/// whitespace or control characters (it ends up in logs, metrics and file names).
fn subject(sub: Option<&Value>) -> Result<String, AuthError> {
    match sub {
        Some(Value::String(sub)) if usable_name(sub, MAX_SUBJECT_BYTES) => Ok(sub.clone()),
        _ => Err(AuthError::NoSubject),
    }
}

/// The plan claim when it is a usable name; anything else counts as no plan (the
/// default plan applies), because a plan is a quota, not an identity.
fn plan(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(plan)) if usable_name(plan, MAX_PLAN_BYTES) => Some(plan.clone()),
        _ => None,
    }
}

fn usable_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(v: Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

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
        assert_eq!(bare(""), Err(AuthError::Malformed));
    }

    #[test]
    fn header_fields() {
        let token = |h: Value| format!("{}.e30.c2ln", b64(h));
        let h = header(&token(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}))).expect("ok");
        assert_eq!(h, Header { alg: "RS256".into(), kid: Some("k1".into()) });
        let h = header(&token(json!({"alg": "none"}))).expect("valid");
        assert_eq!(h, Header { alg: "none".into(), kid: None });
        for bad in [
            json!({}),
            json!({"alg": 1}),
            json!({"alg": "HS256", "kid": 7}),
            json!(["alg", "HS256"]),
            json!({"alg": "HS256", "crit": ["exp"]}),
        ] {
            assert_eq!(header(&token(bad.clone())), Err(AuthError::Malformed), "{bad}");
        }
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.e30.c2ln"] {
            assert_eq!(header(bad), Err(AuthError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn subject_and_plan_rules() {
        let of = |claims: Value| {
            let Value::Object(map) = claims else { unreachable!() };
            principal(&map, "plan")
        };
        let p = of(json!({"sub": "user-42", "plan": "pro"})).expect("ok");
        assert_eq!(p, Principal { uid: "user-42".into(), plan: Some("pro".into()) });
        assert_eq!(of(json!({"sub": "ü".repeat(64)})).expect("128 bytes").uid, "ü".repeat(64));
        for plan in [json!(7), json!(""), json!("two words"), json!("p".repeat(65)), Value::Null] {
            assert_eq!(of(json!({"sub": "u", "plan": plan})).expect("ok").plan, None);
        }
        for bad in [json!(""), json!("a b"), json!("a\u{7f}"), json!("a\u{a0}b"), json!(42)] {
            assert_eq!(of(json!({"sub": bad})), Err(AuthError::NoSubject));
        }
        assert_eq!(
            of(json!({"sub": "x".repeat(MAX_SUBJECT_BYTES + 1)})),
            Err(AuthError::NoSubject)
        );
        assert_eq!(of(json!({})), Err(AuthError::NoSubject));
    }

    #[test]
    fn library_errors_map_to_stable_reasons() {
        let missing = |c: &str| reason(&ErrorKind::MissingRequiredClaim(c.into()));
        assert_eq!(missing("exp"), AuthError::Malformed);
        assert_eq!(missing("aud"), AuthError::BadAudience);
        assert_eq!(missing("iss"), AuthError::BadIssuer);
        assert_eq!(reason(&ErrorKind::InvalidClaimFormat("exp".into())), AuthError::Malformed);
        assert_eq!(reason(&ErrorKind::ExpiredSignature), AuthError::Expired);
        assert_eq!(reason(&ErrorKind::InvalidAlgorithm), AuthError::Algorithm);
    }
}
