//! The JWKS file: parsing it into a set of verification keys, and noticing when it
//! changes on disk.
//!
//! Only the keys Hark can use are kept: RSA keys for RS256 (2048–4096 bits) and
//! P-256 EC keys for ES256. Keys meant for something else (`use` other than `sig`,
//! another `alg`, another key type) are skipped with a warning, because a JWKS
//! published by an identity provider often holds them. A document that carries
//! private or symmetric key material is refused outright: such a file does not
//! belong on a relay.

use std::path::Path;
use std::time::SystemTime;

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::{Map, Value};

/// The largest JWKS file Hark reads; a real one is a few KiB.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

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

/// The usable keys of one version of the JWKS file.
pub(crate) struct KeySet {
    /// The keys, in document order.
    pub(crate) keys: Vec<JwksKey>,
}

/// Why a JWKS document was refused. Says where in the document, never echoes key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file is larger than Hark reads.
    #[error("file is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document (a JSON object with a \"keys\" array): {0}")]
    NotJwks(&'static str),
    /// Not valid JSON.
    #[error("not valid JSON (line {line}, column {column})")]
    Json {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
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

/// What identifies one version of the file on disk: a change to either means
/// "read it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

/// The file's current fingerprint.
pub(crate) fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    Ok(Fingerprint { modified: meta.modified().ok(), len: meta.len() })
}

/// Why reading the file failed.
pub(crate) enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file was read but is not a usable JWKS; carries the version that was read.
    Invalid(Fingerprint, JwksError),
}

/// Reads and parses the file. The fingerprint is taken before reading, so a write
/// that lands during the read shows up as a change at the next poll.
pub(crate) fn load(path: &Path) -> Result<(Fingerprint, KeySet), LoadError> {
    let fp = fingerprint(path).map_err(LoadError::Io)?;
    if fp.len > MAX_JWKS_BYTES {
        return Err(LoadError::Invalid(fp, JwksError::TooLarge));
    }
    let bytes = std::fs::read(path).map_err(LoadError::Io)?;
    let keys = parse(&bytes).map_err(|e| LoadError::Invalid(fp, e))?;
    Ok((fp, keys))
}

/// Parses a JWKS document.
pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| JwksError::Json { line: e.line(), column: e.column() })?;
    let entries = doc
        .as_object()
        .ok_or(JwksError::NotJwks("the top level is not an object"))?
        .get("keys")
        .ok_or(JwksError::NotJwks("there is no \"keys\" member"))?
        .as_array()
        .ok_or(JwksError::NotJwks("\"keys\" is not an array"))?;

    let mut keys: Vec<JwksKey> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let jwk =
            entry.as_object().ok_or(JwksError::InvalidKey { index, what: "not an object" })?;
        let Some(key) = parse_key(index, jwk)? else { continue };
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
fn parse_key(index: usize, jwk: &Map<String, Value>) -> Result<Option<JwksKey>, JwksError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(JwksError::PrivateKey { index });
    }
    let invalid = |what| JwksError::InvalidKey { index, what };
    let text = |name: &str| -> Result<Option<&str>, JwksError> {
        match jwk.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid("a member that must be a string is not")),
        }
    };
    let kty = text("kty")?.ok_or(invalid("no \"kty\""))?;
    let declared_alg = text("alg")?;
    let kid = text("kid")?.map(str::to_owned);

    let skip = |why: &str| {
        tracing::warn!(
            index,
            kty,
            alg = declared_alg,
            why,
            "skipping a JWKS key Hark does not use"
        );
        Ok(None)
    };
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return skip("its \"use\" is not \"sig\"");
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op == "verify"));
        if !verifies {
            return skip("its \"key_ops\" does not allow \"verify\"");
        }
    }

    let (alg, key) = match kty {
        "RSA" => {
            if declared_alg.is_some_and(|a| a != "RS256") {
                return skip("only RS256 is accepted for RSA keys");
            }
            let n = text("n")?.ok_or(invalid("RSA key without \"n\""))?;
            let e = text("e")?.ok_or(invalid("RSA key without \"e\""))?;
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|_| invalid("RSA \"n\" or \"e\" is not base64url"))?;
            check_rsa(&key).map_err(invalid)?;
            (Algorithm::RS256, key)
        }
        "EC" => {
            if declared_alg.is_some_and(|a| a != "ES256") {
                return skip("only ES256 is accepted for EC keys");
            }
            if text("crv")? != Some("P-256") {
                return skip("only the P-256 curve is accepted");
            }
            let x = text("x")?.ok_or(invalid("EC key without \"x\""))?;
            let y = text("y")?.ok_or(invalid("EC key without \"y\""))?;
            let key = DecodingKey::from_ec_components(x, y)
                .map_err(|_| invalid("EC \"x\" or \"y\" is not base64url"))?;
            check_ec(&key).map_err(invalid)?;
            (Algorithm::ES256, key)
        }
        _ => return skip("only RSA and EC keys are accepted"),
    };
    Ok(Some(JwksKey { kid, alg, key }))
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
        for jwk in [enc, ps, okp] {
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
