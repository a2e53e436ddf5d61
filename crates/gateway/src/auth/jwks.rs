//! A JWKS document (from a file or a URL) as the set of keys Hark verifies with.
//!
//! The document is read with `jsonwebtoken::jwk::JwkSet`; Hark adds its policy on
//! top. Only keys it can use are kept: RSA keys for RS256 (2048–4096 bits) and
//! P-256 EC keys for ES256. Keys meant for something else (`use` other than `sig`,
//! another `alg`, another key type) are skipped with a warning, because a JWKS
//! published by an identity provider often holds them. A document that carries
//! private or symmetric key material is refused outright: such a file does not
//! belong on a relay.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::Value;

/// The largest JWKS document Hark reads; a real one is a few KiB.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Members that only a private (or symmetric) JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/// One verification key from the JWKS.
pub(crate) struct JwksKey {
    /// The key's `kid`, if the document gives one.
    pub(crate) kid: Option<String>,
    /// The one algorithm this key verifies: RS256 or ES256.
    pub(crate) alg: Algorithm,
    /// The public key.
    pub(crate) key: DecodingKey,
}

/// The usable keys of one version of the JWKS.
pub(crate) struct KeySet {
    /// The keys, in document order.
    pub(crate) keys: Vec<JwksKey>,
}

/// Why a JWKS document was refused. Says where in the document, never echoes
/// private key material (documents holding any are refused before they are read).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document is larger than Hark reads.
    #[error("document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not valid JSON.
    #[error("not valid JSON (line {line}, column {column})")]
    Json {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// Valid JSON, but not a JWK set.
    #[error("not a JWKS document (a JSON object with a \"keys\" array of JWKs): {0}")]
    NotJwks(String),
    /// A key carries private or symmetric key material.
    #[error("key #{index} contains private or symmetric key material; publish only public keys")]
    PrivateKey {
        /// The key's position in `keys`.
        index: usize,
    },
    /// A key that claims to be usable is broken.
    #[error("key #{index}: {what}")]
    InvalidKey {
        /// The key's position in `keys`.
        index: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// Two keys share a `kid`.
    #[error("two keys share the kid {kid:?}")]
    DuplicateKid {
        /// The repeated `kid`.
        kid: String,
    },
    /// Nothing usable is left.
    #[error("no usable RS256 or ES256 signing key")]
    NoUsableKeys,
}

/// Parses a JWKS document.
pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| JwksError::Json { line: e.line(), column: e.column() })?;
    // `JwkSet` ignores members it does not model, `d` among them: look first.
    if let Some(entries) = doc.get("keys").and_then(Value::as_array) {
        for (index, entry) in entries.iter().enumerate() {
            let private = entry
                .as_object()
                .is_some_and(|jwk| PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)));
            if private {
                return Err(JwksError::PrivateKey { index });
            }
        }
    }
    let set: JwkSet = serde_json::from_value(doc).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    let mut keys: Vec<JwksKey> = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        let Some(key) = usable(index, jwk)? else { continue };
        if let Some(kid) = &key.kid {
            if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                return Err(JwksError::DuplicateKid { kid: kid.clone() });
            }
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys);
    }
    Ok(KeySet { keys })
}

/// One JWK: `Ok(None)` for a key Hark does not use.
fn usable(index: usize, jwk: &Jwk) -> Result<Option<JwksKey>, JwksError> {
    let common = &jwk.common;
    let declared = common.key_algorithm;
    let skip = |why: &str| {
        tracing::warn!(index, alg = ?declared, why, "skipping a JWKS key Hark does not use");
        Ok(None)
    };
    if common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return skip("its \"use\" is not \"sig\"");
    }
    if common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return skip("its \"key_ops\" does not allow \"verify\"");
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if declared.is_some_and(|a| a != KeyAlgorithm::RS256) => {
            return skip("only RS256 is accepted for RSA keys");
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve != EllipticCurve::P256 => {
            return skip("only the P-256 curve is accepted");
        }
        AlgorithmParameters::EllipticCurve(_)
            if declared.is_some_and(|a| a != KeyAlgorithm::ES256) =>
        {
            return skip("only ES256 is accepted for EC keys");
        }
        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
        _ => return skip("only RSA and EC keys are accepted"),
    };
    let invalid = |what| JwksError::InvalidKey { index, what };
    let key =
        DecodingKey::from_jwk(jwk).map_err(|_| invalid("key components are not base64url"))?;
    match alg {
        Algorithm::RS256 => check_rsa(&key),
        _ => check_ec(&key),
    }
    .map_err(invalid)?;
    Ok(Some(JwksKey { kid: common.key_id.clone(), alg, key }))
}

/// Catches a broken RSA key at load time: the backend only builds the key when it
/// verifies, where a broken key would look like a bad signature on every token.
fn check_rsa(key: &DecodingKey) -> Result<(), &'static str> {
    let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() else {
        return Err("RSA key is not in modulus/exponent form");
    };
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(2048..=4096).contains(&bits) {
        return Err("RSA modulus must be 2048 to 4096 bits");
    }
    // An even modulus or exponent cannot be a real RSA key; e must be at least 3 and,
    // for the backend, fit in 33 bits.
    let odd = |v: &[u8]| v.last().is_some_and(|b| b & 1 == 1);
    if !odd(n) || !odd(e) || e.len() > 4 || e == [1] {
        return Err("RSA modulus or exponent is not plausible");
    }
    Ok(())
}

/// Catches an EC key whose point is not on P-256: building the verifier checks it.
fn check_ec(key: &DecodingKey) -> Result<(), &'static str> {
    // A dummy signature: the key is fine if the backend gets as far as verifying it.
    match jsonwebtoken::crypto::verify("AA", b"probe", key, Algorithm::ES256) {
        Ok(_) => Ok(()),
        Err(_) => Err("EC point is not on the P-256 curve"),
    }
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(jwk: Value) -> Result<KeySet, JwksError> {
        parse(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes())
    }

    #[test]
    fn refuses_non_documents() {
        assert!(matches!(parse(b"nope"), Err(JwksError::Json { .. })));
        assert!(matches!(parse(b"[]"), Err(JwksError::NotJwks(_))));
        assert!(matches!(parse(b"{}"), Err(JwksError::NotJwks(_))));
        assert!(matches!(parse(br#"{"keys":{}}"#), Err(JwksError::NotJwks(_))));
        assert!(matches!(parse(br#"{"keys":[]}"#), Err(JwksError::NoUsableKeys)));
        assert!(matches!(parse(&vec![b' '; MAX_JWKS_BYTES + 1]), Err(JwksError::TooLarge)));
    }

    #[test]
    fn refuses_private_and_symmetric_keys() {
        let oct = serde_json::json!({ "kty": "oct", "k": "c2VjcmV0" });
        assert!(matches!(one(oct), Err(JwksError::PrivateKey { index: 0 })));
        let rsa_private =
            serde_json::json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB" });
        assert!(matches!(one(rsa_private), Err(JwksError::PrivateKey { index: 0 })));
    }

    #[test]
    fn skips_keys_it_does_not_use() {
        let enc = serde_json::json!({ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" });
        let ps = serde_json::json!({ "kty": "RSA", "alg": "PS256", "n": "AQAB", "e": "AQAB" });
        let okp = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": "AQAB" });
        let p384 = serde_json::json!({ "kty": "EC", "crv": "P-384", "x": "AQAB", "y": "AQAB" });
        let sign_only =
            serde_json::json!({ "kty": "RSA", "key_ops": ["sign"], "n": "AQAB", "e": "AQAB" });
        for jwk in [enc, ps, okp, p384, sign_only] {
            assert!(matches!(one(jwk), Err(JwksError::NoUsableKeys)));
        }
    }

    #[test]
    fn refuses_small_rsa_and_off_curve_ec_keys() {
        // A 1024-bit modulus.
        let n = format!("{}E", "z".repeat(170));
        let small = serde_json::json!({ "kty": "RSA", "n": n, "e": "AQAB" });
        let err = one(small).err().expect("refused");
        assert!(err.to_string().contains("2048 to 4096 bits"), "{err}");
        let zero = "A".repeat(43);
        let off = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": zero, "y": zero });
        let err = one(off).err().expect("refused");
        assert!(err.to_string().contains("not on the P-256 curve"), "{err}");
    }
}
