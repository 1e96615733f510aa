//! [`KeyRing`]: the verification keys the settings name, parsed once at
//! start-up — an HMAC secret (`JWT_SECRET`), a PEM public key
//! (`JWT_PUBLIC_KEY_FILE`) or a JWK Set (`JWT_JWKS_FILE`) — and the choice of
//! key for a token's `kid`.
//!
//! Every key is parsed to its public parameters here, so a bad key fails at
//! start-up rather than on the first token. Errors name the file and the key,
//! never key material.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::{KeyError, KeySettings, Reason};

/// The configured verification keys.
#[derive(Debug)]
pub(super) struct KeyRing {
    pub(super) keys: Vec<VerifyKey>,
    /// Keys come from a JWK Set, so the token's `kid` chooses among them.
    by_kid: bool,
}

/// One verification key, parsed, with its prebuilt validation.
#[derive(Debug)]
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

impl KeyRing {
    /// Reads and parses the configured key(s); errors name the bad setting.
    pub(super) fn load(settings: &KeySettings) -> Result<Self, KeyError> {
        let source = Source::from_settings(settings)?;
        let algorithm = settings
            .algorithm
            .as_deref()
            .map(|name| {
                Algorithm::from_str(name)
                    .map_err(|_| KeyError::UnsupportedAlgorithm(name.to_owned()))
            })
            .transpose()?;
        let keys = match source {
            Source::Secret(secret) => vec![load_secret(secret, algorithm)?],
            Source::PublicKey(path) => {
                let alg = algorithm.ok_or(KeyError::MissingAlgorithm)?;
                vec![VerifyKey::new(None, alg, load_public_pem(path, alg)?)]
            }
            Source::Jwks(path) => load_jwks(path, algorithm)?,
        };
        Ok(Self {
            keys,
            by_kid: matches!(source, Source::Jwks(_)),
        })
    }

    /// The key a token with this `kid` is verified with.
    pub(super) fn select(&self, kid: Option<&str>) -> Result<&VerifyKey, Reason> {
        if !self.by_kid {
            // A secret or a PEM key has no kid: a token naming one names a
            // key that is not configured.
            return match kid {
                Some(_) => Err(Reason::InvalidSignature),
                None => self.keys.first().ok_or(Reason::InvalidSignature),
            };
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or(Reason::InvalidSignature),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                _ => Err(Reason::Malformed),
            },
        }
    }
}

impl VerifyKey {
    fn new(kid: Option<String>, alg: Algorithm, key: DecodingKey) -> Self {
        // jsonwebtoken checks the signature and header alg only: every claim
        // check is ours, against the caller's `now` and in a fixed order.
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            kid,
            alg,
            key,
            validation,
        }
    }
}

/// Which of the three exclusive key settings is in use.
#[derive(Clone, Copy)]
enum Source<'a> {
    Secret(&'a str),
    PublicKey(&'a Path),
    Jwks(&'a Path),
}

impl<'a> Source<'a> {
    fn from_settings(settings: &'a KeySettings) -> Result<Self, KeyError> {
        let KeySettings {
            secret,
            public_key_file,
            jwks_file,
            ..
        } = settings;
        match (secret, public_key_file, jwks_file) {
            (Some(secret), None, None) => Ok(Source::Secret(secret)),
            (None, Some(path), None) => Ok(Source::PublicKey(path)),
            (None, None, Some(path)) => Ok(Source::Jwks(path)),
            (None, None, None) => Err(KeyError::NoKey),
            _ => {
                let set = [
                    ("JWT_SECRET", secret.is_some()),
                    ("JWT_PUBLIC_KEY_FILE", public_key_file.is_some()),
                    ("JWT_JWKS_FILE", jwks_file.is_some()),
                ];
                let names: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
                Err(KeyError::SeveralKeys(names.join(", ")))
            }
        }
    }
}

/// `JWT_SECRET`: HS256 unless another HMAC algorithm is named, and at least
/// as long as RFC 7518 3.2 requires for that algorithm.
fn load_secret(secret: &str, algorithm: Option<Algorithm>) -> Result<VerifyKey, KeyError> {
    let alg = algorithm.unwrap_or(Algorithm::HS256);
    if alg.family() != AlgorithmFamily::Hmac {
        return Err(KeyError::AlgorithmMismatch {
            algorithm: alg,
            key: "JWT_SECRET (an HMAC secret)",
        });
    }
    if secret.is_empty() {
        return Err(KeyError::EmptySecret);
    }
    let required = hmac_min_bytes(alg);
    if secret.len() < required {
        return Err(KeyError::WeakSecret {
            algorithm: alg,
            required,
            actual: secret.len(),
        });
    }
    Ok(VerifyKey::new(
        None,
        alg,
        DecodingKey::from_secret(secret.as_bytes()),
    ))
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn invalid(path: &Path, reason: impl fmt::Display) -> KeyError {
    KeyError::InvalidKey {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn load_public_pem(path: &Path, algorithm: Algorithm) -> Result<DecodingKey, KeyError> {
    let pem = read(path)?;
    let key = match algorithm.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
        AlgorithmFamily::Hmac => {
            return Err(KeyError::AlgorithmMismatch {
                algorithm,
                key: "JWT_PUBLIC_KEY_FILE (a public key)",
            });
        }
    };
    let key = key.map_err(|e| invalid(path, format!("not a {algorithm:?} public key ({e})")))?;
    public_params(&key, algorithm).map_err(|reason| invalid(path, reason))?;
    Ok(key)
}

/// Reads a JWK Set. Keys marked `"use": "enc"` are skipped; any other key
/// that cannot verify makes the whole set invalid rather than silently absent.
fn load_jwks(path: &Path, default_alg: Option<Algorithm>) -> Result<Vec<VerifyKey>, KeyError> {
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| {
        // serde_json's message may quote a value, i.e. key material.
        invalid(
            path,
            format!(
                "not a JWK Set ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let mut keys: Vec<VerifyKey> = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let bad = |reason: String| match &kid {
            Some(kid) => invalid(path, format!("key {kid:?}: {reason}")),
            None => invalid(path, format!("key #{index}: {reason}")),
        };
        let alg = match jwk.common.key_algorithm {
            Some(named) => {
                Algorithm::try_from(named).map_err(|_| bad(format!("unsupported alg {named}")))?
            }
            None => default_alg
                .or_else(|| implied_algorithm(&jwk.algorithm))
                .ok_or_else(|| bad("unsupported kty or crv".to_owned()))?,
        };
        if !fits(&jwk.algorithm, alg) {
            return Err(bad(format!("alg {alg:?} does not fit its kty/crv")));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        if alg.family() == AlgorithmFamily::Hmac {
            hmac_strength(&key, alg).map_err(bad)?;
        }
        public_params(&key, alg).map_err(bad)?;
        if kid.is_some() && keys.iter().any(|k| k.kid == kid) {
            return Err(bad("duplicate kid".to_owned()));
        }
        keys.push(VerifyKey::new(kid, alg, key));
    }
    if keys.is_empty() {
        return Err(invalid(path, "no signing key"));
    }
    Ok(keys)
}

/// RFC 7518 3.2: an HMAC key must be at least as long as the hash output
/// (32, 48, 64 bytes for HS256, HS384, HS512); a shorter one, and above all
/// an empty one, lets anyone who guesses it forge tokens.
fn hmac_min_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Refuses an `oct` key shorter than [`hmac_min_bytes`]; says its length,
/// never its bytes.
fn hmac_strength(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    let required = hmac_min_bytes(alg);
    match key.try_get_as_bytes().map(<[u8]>::len) {
        Ok(0) => Err(format!(
            "empty oct key: {alg:?} needs at least {required} bytes (RFC 7518 3.2)"
        )),
        Ok(actual) if actual < required => Err(format!(
            "oct key too short for {alg:?}: RFC 7518 3.2 requires at least {required} bytes, got {actual}"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not an oct key ({e})")),
    }
}

/// The algorithm a key type implies when none is named: RSA → RS256,
/// oct → HS256, EC P-256 → ES256, EC P-384 → ES384, OKP Ed25519 → EdDSA.
fn implied_algorithm(params: &AlgorithmParameters) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => {
            (okp.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

/// Whether `alg` can use a key of this type: same family, and for ECDSA the
/// curve the algorithm is defined on.
fn fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    implied_algorithm(params).is_some_and(|implied| match implied.family() {
        AlgorithmFamily::Ec => implied == alg,
        family => family == alg.family(),
    })
}

/// The public half of `key` as JWK parameters. Computing it parses the key
/// material (RSA DER, EC point, Ed25519 length), so bad keys fail at start-up.
pub(super) fn public_params(
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<AlgorithmParameters, String> {
    let params = Jwk::from_decoding_key(key, Some(alg))
        .map_err(|e| format!("not a {alg:?} public key ({e})"))?
        .algorithm;
    if !fits(&params, alg) {
        return Err(format!("the key does not fit {alg:?}"));
    }
    Ok(params)
}
