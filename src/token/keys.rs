//! [`KeyRing`]: one issuer's verification keys — an HMAC secret
//! (`JWT_SECRET`), a PEM public key (`JWT_PUBLIC_KEY_FILE`), a JWK Set file
//! (`JWT_JWKS_FILE`), or a JWK Set fetched from the issuer (`remote`) — and
//! the choice of key for a token's `kid`.
//!
//! Every key is parsed to its public parameters here, so a bad local key
//! fails at start-up rather than on the first token. Errors name the file and
//! the key, never key material. Each key gets a serial number, kept by a
//! refreshed set for a key that did not change, so a verification can be
//! traced to the key that made it (see `Verifier::holds`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One verification key, parsed, with its prebuilt validation. Its `Debug`
/// shows the kid, algorithm and serial only: the parameters of an HMAC key
/// are the secret.
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
    /// Unique in the process; kept across refreshes while the key is the same.
    pub(super) serial: u64,
    /// The public parameters, which tell an unchanged key from a new one
    /// published under the same `kid`.
    params: AlgorithmParameters,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Why [`KeyRing::select`] found no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Miss {
    /// A JWK Set has no key with the token's `kid`: for a fetched set, the
    /// issuer may have published it since.
    UnknownKid,
    /// Any other refusal.
    Refused(Reason),
}

/// The settings' algorithm names, parsed.
pub(super) fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    Algorithm::from_str(name).map_err(|_| KeyError::UnsupportedAlgorithm(name.to_owned()))
}

impl KeyRing {
    /// Reads and parses the configured local key(s) (`JWT_SECRET`,
    /// `JWT_PUBLIC_KEY_FILE` or `JWT_JWKS_FILE`); errors name the bad
    /// setting.
    pub(super) fn load(settings: &KeySettings) -> Result<Self, KeyError> {
        let algorithm = settings
            .algorithm
            .as_deref()
            .map(parse_algorithm)
            .transpose()?;
        Self::load_local(Source::from_settings(settings)?, algorithm, None)
    }

    /// Parses one local key source. `algorithm` is the algorithm of a key
    /// that names none; `allowed`, when set, the only algorithms used.
    pub(super) fn load_local(
        source: Source<'_>,
        algorithm: Option<Algorithm>,
        allowed: Option<&[Algorithm]>,
    ) -> Result<Self, KeyError> {
        let keys = match source {
            Source::Secret(secret) => vec![load_secret(secret, algorithm)?],
            Source::PublicKey(path) => {
                let alg = algorithm.ok_or(KeyError::MissingAlgorithm)?;
                let key = load_public_pem(path, alg)?;
                let params = public_params(&key, alg).map_err(|reason| invalid(path, reason))?;
                vec![VerifyKey::new(None, alg, key, params)]
            }
            Source::Jwks(path) => {
                let bytes = read(path)?;
                parse_jwks(&bytes, algorithm, allowed, Strictness::Strict)
                    .map_err(|reason| invalid(path, reason))?
            }
        };
        let keys = allow_only(keys, allowed);
        if keys.is_empty() {
            let path = match source {
                Source::PublicKey(path) | Source::Jwks(path) => path,
                Source::Secret(_) => Path::new("JWT_SECRET"),
            };
            return Err(invalid(path, "no key for the allowed algorithms"));
        }
        Ok(Self {
            keys,
            by_kid: matches!(source, Source::Jwks(_)),
        })
    }

    /// A key set fetched from an issuer (chosen by `kid`); `None` when it
    /// holds no key revokd can use. Keys it cannot use are left out.
    pub(super) fn from_fetched(
        bytes: &[u8],
        algorithm: Option<Algorithm>,
        allowed: Option<&[Algorithm]>,
    ) -> Result<Self, String> {
        let keys = allow_only(
            parse_jwks(bytes, algorithm, allowed, Strictness::Lenient)?,
            allowed,
        );
        if keys.is_empty() {
            return Err("no usable signing key in the set".to_owned());
        }
        Ok(Self { keys, by_kid: true })
    }

    /// Gives every key that `previous` also held (same `kid`, algorithm and
    /// public parameters) its serial number there.
    pub(super) fn keep_serials(&mut self, previous: &KeyRing) {
        for key in &mut self.keys {
            if let Some(same) = previous
                .keys
                .iter()
                .find(|old| old.kid == key.kid && old.alg == key.alg && old.params == key.params)
            {
                key.serial = same.serial;
            }
        }
    }

    /// Whether the key with this serial number is in the ring.
    pub(super) fn holds(&self, serial: u64) -> bool {
        self.keys.iter().any(|key| key.serial == serial)
    }

    /// The `kid`s (`-` for a key without one), for logs.
    pub(super) fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|key| key.kid.as_deref().unwrap_or("-"))
            .collect()
    }

    /// The key a token with this `kid` is verified with.
    pub(super) fn select(&self, kid: Option<&str>) -> Result<&VerifyKey, Miss> {
        if !self.by_kid {
            // A secret or a PEM key has no kid: a token naming one names a
            // key that is not configured.
            return match kid {
                Some(_) => Err(Miss::Refused(Reason::InvalidSignature)),
                None => self
                    .keys
                    .first()
                    .ok_or(Miss::Refused(Reason::InvalidSignature)),
            };
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or(Miss::UnknownKid),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                _ => Err(Miss::Refused(Reason::Malformed)),
            },
        }
    }
}

/// Keeps the keys whose algorithm is allowed (all when `allowed` is unset).
fn allow_only(keys: Vec<VerifyKey>, allowed: Option<&[Algorithm]>) -> Vec<VerifyKey> {
    match allowed {
        Some(allowed) => keys
            .into_iter()
            .filter(|key| allowed.contains(&key.alg))
            .collect(),
        None => keys,
    }
}

/// The next key serial number.
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl VerifyKey {
    fn new(
        kid: Option<String>,
        alg: Algorithm,
        key: DecodingKey,
        params: AlgorithmParameters,
    ) -> Self {
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
            serial: next_serial(),
            params,
        }
    }
}

/// Which of the three exclusive local key settings is in use.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    Secret(&'a str),
    PublicKey(&'a Path),
    Jwks(&'a Path),
}

impl<'a> Source<'a> {
    /// The one key setting in use; errors when none or several are set.
    /// Identity-provider settings count, so that mixing one with a local key
    /// is refused; with only those set, there is no local key
    /// ([`KeyError::NoLocalKey`]).
    pub(super) fn from_settings(settings: &'a KeySettings) -> Result<Self, KeyError> {
        let KeySettings {
            secret,
            public_key_file,
            jwks_file,
            ..
        } = settings;
        let set = [
            ("JWT_SECRET", secret.is_some()),
            ("JWT_PUBLIC_KEY_FILE", public_key_file.is_some()),
            ("JWT_JWKS_FILE", jwks_file.is_some()),
            ("JWT_OIDC_ISSUER", settings.oidc_issuer.is_some()),
            ("JWT_JWKS_URL", settings.jwks_url.is_some()),
            ("REVOKD_ISSUERS_FILE", settings.issuers_file.is_some()),
        ];
        let names: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if names.len() > 1 {
            return Err(KeyError::SeveralKeys(names.join(", ")));
        }
        match (secret, public_key_file, jwks_file) {
            (Some(secret), _, _) => Ok(Source::Secret(secret)),
            (_, Some(path), _) => Ok(Source::PublicKey(path)),
            (_, _, Some(path)) => Ok(Source::Jwks(path)),
            _ if names.is_empty() => Err(KeyError::NoKey),
            _ => Err(KeyError::NoLocalKey),
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
    let key = DecodingKey::from_secret(secret.as_bytes());
    let params = public_params(&key, alg).map_err(|reason| KeyError::InvalidKey {
        path: "JWT_SECRET".into(),
        reason,
    })?;
    Ok(VerifyKey::new(None, alg, key, params))
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
    key.map_err(|e| invalid(path, format!("not a {algorithm:?} public key ({e})")))
}

/// How [`parse_jwks`] treats a key it cannot use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// A file the operator wrote: any such key makes the set invalid rather
    /// than silently absent.
    Strict,
    /// A set fetched from an issuer, which may publish keys for other uses
    /// or algorithms revokd does not verify: such keys are left out (and
    /// logged by `kid`). Symmetric (`oct`) keys are always left out: a
    /// published secret lets anyone sign.
    Lenient,
}

/// Parses a JWK Set. Keys marked `"use": "enc"` are skipped. Errors are
/// reasons without key material; the caller names the source.
fn parse_jwks(
    bytes: &[u8],
    default_alg: Option<Algorithm>,
    allowed: Option<&[Algorithm]>,
    strictness: Strictness,
) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message may quote a value, i.e. key material.
        format!(
            "not a JWK Set ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let mut keys: Vec<VerifyKey> = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let name = match &kid {
            Some(kid) => format!("key {kid:?}"),
            None => format!("key #{index}"),
        };
        match parse_jwk(jwk, kid, default_alg, allowed, strictness, &keys) {
            Ok(key) => keys.push(key),
            Err(reason) if strictness == Strictness::Strict => {
                return Err(format!("{name}: {reason}"));
            }
            Err(reason) => tracing::warn!(key = %name, %reason, "issuer key left out"),
        }
    }
    if keys.is_empty() {
        return Err("no signing key".to_owned());
    }
    Ok(keys)
}

/// One key of a JWK Set, checked against those already taken.
fn parse_jwk(
    jwk: &Jwk,
    kid: Option<String>,
    default_alg: Option<Algorithm>,
    allowed: Option<&[Algorithm]>,
    strictness: Strictness,
    taken: &[VerifyKey],
) -> Result<VerifyKey, String> {
    // A key naming no algorithm: the default when it fits, else the first
    // allowed one that fits its key type, else the default (refused below
    // for not fitting) or what its key type implies.
    let fitting = || {
        default_alg
            .into_iter()
            .chain(allowed.into_iter().flatten().copied())
            .find(|alg| fits(&jwk.algorithm, *alg))
    };
    let alg = match jwk.common.key_algorithm {
        Some(named) => {
            Algorithm::try_from(named).map_err(|_| format!("unsupported alg {named}"))?
        }
        None => fitting()
            .or(default_alg)
            .or_else(|| implied_algorithm(&jwk.algorithm))
            .ok_or_else(|| "unsupported kty or crv".to_owned())?,
    };
    if !fits(&jwk.algorithm, alg) {
        return Err(format!("alg {alg:?} does not fit its kty/crv"));
    }
    if strictness == Strictness::Lenient && alg.family() == AlgorithmFamily::Hmac {
        return Err("a published symmetric key is never trusted".to_owned());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if alg.family() == AlgorithmFamily::Hmac {
        hmac_strength(&key, alg)?;
    }
    let params = public_params(&key, alg)?;
    if kid.is_some() && taken.iter().any(|k| k.kid == kid) {
        return Err("duplicate kid".to_owned());
    }
    Ok(VerifyKey::new(kid, alg, key, params))
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
