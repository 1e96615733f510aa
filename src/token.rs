//! JWT handling: the configured keys, the checks a token must pass to be
//! verified, its `token_id`, and minting tokens for `revokd mint`.
//!
//! Keys are parsed once, in [`Verifier::new`] and [`Minter::new`]; verifying
//! only reads memory. Time is a parameter (`now`, unix seconds). The raw token
//! is never stored, logged, nor put in an error or a `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Longest token looked at; a longer string is `malformed` before any
/// decoding (common HTTP servers cap a whole header at 8–16 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token is not active, as the API reports it (`"subject_revoked"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its `token_id` is on the deny-list.
    Revoked,
    /// Its subject was revoked after the token was issued.
    SubjectRevoked,
    /// `exp` has passed, leeway included.
    Expired,
    /// `nbf` is still ahead, leeway included.
    NotYetValid,
    /// Bad signature, wrong key, a `kid` matching no key, or a supported `alg`
    /// other than the configured key's (algorithm confusion).
    InvalidSignature,
    /// An issuer is configured and `iss` is missing or different.
    InvalidIssuer,
    /// An audience is configured and `aud` is missing or does not name it.
    InvalidAudience,
    /// Not a JWT, undecodable header or claims, no `exp`, or no `kid` where a
    /// JWK Set of several keys needs one.
    Malformed,
    /// The header's `alg` is not one revokd supports (`none`, `HS1`, ...).
    UnsupportedAlgorithm,
    /// A rotated refresh token presented again.
    Reused,
    /// A refresh token that was never registered.
    Unknown,
}

impl Reason {
    /// The wire name, the same string serde produces.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::SubjectRevoked => "subject_revoked",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::Reused => "reused",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key material and checks, as read from configuration.
#[derive(Clone, Default)]
pub struct KeySettings {
    /// `JWT_SECRET`: HMAC secret, used as its UTF-8 bytes. Never printed.
    pub secret: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE`: PEM public key (RSA, EC or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// `JWT_JWKS_FILE`: a JWK Set whose keys are chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// `JWT_PRIVATE_KEY_FILE`: PEM private key, read only for minting.
    pub private_key_file: Option<PathBuf>,
    /// `JWT_ALGORITHM`: `HS256` when `None` with a secret; required with a PEM
    /// public key; with a JWK Set, the algorithm of keys that have no `alg`.
    pub algorithm: Option<String>,
    /// `JWT_ISSUER`: when set, `iss` must equal it.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: when set, `aud` (string or array) must contain it.
    pub audience: Option<String>,
    /// `JWT_LEEWAY_SECS`: clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("private_key_file", &self.private_key_file)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// A key configuration that cannot be used, or a token that cannot be minted.
/// Messages name files and settings, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// None of the three key settings is set.
    #[error("no JWT key configured: set one of JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE")]
    NoKey,
    /// More than one key setting is set; lists which.
    #[error("several JWT keys configured ({0}): set only one of them")]
    SeveralKeys(String),
    /// `JWT_SECRET` is set but empty.
    #[error(
        "JWT_SECRET is empty: HS256 needs a secret of at least 32 bytes \
         (e.g. `openssl rand -base64 32`)"
    )]
    EmptySecret,
    /// `JWT_SECRET` is shorter than RFC 7518 3.2 requires for its algorithm.
    #[error(
        "JWT_SECRET is too short for {algorithm:?}: RFC 7518 3.2 requires at least \
         {required} bytes ({} bits), got {actual} (e.g. `openssl rand -base64 {required}`)",
        .required * 8
    )]
    WeakSecret {
        /// The configured algorithm.
        algorithm: Algorithm,
        /// Its minimum key length in bytes.
        required: usize,
        /// The secret's length in bytes (never its content).
        actual: usize,
    },
    /// `JWT_ALGORITHM` names no supported algorithm.
    #[error(
        "unsupported JWT algorithm {0:?}; supported: HS256, HS384, HS512, RS256, RS384, \
         RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    )]
    UnsupportedAlgorithm(String),
    /// A PEM public key needs `JWT_ALGORITHM`.
    #[error("JWT_PUBLIC_KEY_FILE needs JWT_ALGORITHM (RS*, PS*, ES256, ES384 or EdDSA)")]
    MissingAlgorithm,
    /// The algorithm does not fit the kind of key.
    #[error("algorithm {algorithm:?} cannot be used with {key}")]
    AlgorithmMismatch {
        /// The configured algorithm.
        algorithm: Algorithm,
        /// Which key it was meant for.
        key: &'static str,
    },
    /// A key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("invalid key file {}: {reason}", path.display())]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (no key material).
        reason: String,
    },
    /// Minting with a public key needs `JWT_PRIVATE_KEY_FILE`.
    #[error("minting {0:?} tokens needs JWT_PRIVATE_KEY_FILE (PEM private key)")]
    MissingPrivateKey(Algorithm),
    /// The private key is not the pair of any configured public key.
    #[error("private key {} matches no configured verification key", path.display())]
    KeyMismatch {
        /// The private key file.
        path: PathBuf,
    },
    /// A JWK Set alone can sign only when it holds a single `oct` key.
    #[error(
        "cannot mint with JWT_JWKS_FILE alone: set JWT_PRIVATE_KEY_FILE, or use a set holding one oct key"
    )]
    NoSigningKey,
    /// The token lifetime must be positive (and `now + ttl` must fit).
    #[error("token lifetime must be positive, got {0} s")]
    InvalidTtl(i64),
    /// The crypto backend failed to sign.
    #[error("signing the token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// What a verified token says; never contains the raw token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `jti`, or a hash of it or of the token (see [`token_id`]).
    pub token_id: String,
    /// `sub`; a numeric `sub` as its decimal string. For display only.
    pub sub: Option<String>,
    /// The key `sub` is stored and looked up under: `sub` itself, or its
    /// hash when revokd cannot store it verbatim (`revokd_jobs::subject_id`);
    /// `None` for an empty `sub`.
    pub subject_id: Option<String>,
    /// `jti`; an empty `jti` counts as absent.
    pub jti: Option<String>,
    /// `iat`, unix seconds.
    pub iat: Option<i64>,
    /// `nbf`, unix seconds.
    pub nbf: Option<i64>,
    /// `exp`, unix seconds (required).
    pub exp: i64,
    /// `iss`.
    pub iss: Option<String>,
    /// `aud` as sent: a string or an array.
    pub aud: Option<Value>,
    /// For a token without `jti` signed with ECDSA (ES256/ES384): the
    /// `token_id` of its twin, the same token with the signature's other
    /// valid form (`s` → `n − s`, which verifies just as well). Anyone
    /// holding the token can make the twin, so a check refuses the token
    /// when either id is revoked.
    pub twin_token_id: Option<String>,
}

/// The identity a token is revoked under: its `jti` if present and non-empty
/// (an empty one would make every such token share one id) and storable
/// verbatim, `jti-sha256:<hex>` of a `jti` that is not, else `sha256:` and
/// the lowercase hex SHA-256 of the compact token. The same function
/// applications call as `revokd_jobs::token_id`.
pub use revokd_jobs::token_id;

/// Checks tokens against the configured keys. Built once; `Send + Sync`, so
/// share it behind an `Arc`.
///
/// Decisions, in order (so a forged expired token is `invalid_signature`):
/// 1. Format: not three base64url parts with a JSON header, or a header with
///    `crit` (RFC 7515 4.1.11: revokd understands no extension) → `malformed`.
/// 2. Header `alg`: not a supported algorithm (`none`, `HS1`) →
///    `unsupported_algorithm`. The algorithm is always the configured key's;
///    a supported `alg` other than the key's (e.g. `HS256` against an RSA key)
///    is treated like a wrong key → `invalid_signature`.
/// 3. Key choice (JWK Set only): `kid` matching no key → `invalid_signature`;
///    no `kid` → the set's only key, `malformed` if it has several.
/// 4. Signature → `invalid_signature`; undecodable claims or no `exp` →
///    `malformed`.
/// 5. `iss` → `invalid_issuer`, then `aud` → `invalid_audience`.
/// 6. Only in [`verify`](Self::verify): `exp` → `expired`, then `nbf` or
///    `iat` → `not_yet_valid`. A token is expired from the second
///    `exp + leeway` on (RFC 7519: valid only before `exp`) and not yet valid
///    before `nbf - leeway` or `iat - leeway`. NumericDates may be
///    fractional; they are truncated.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    /// Keys come from a JWK Set, so the token's `kid` chooses among them.
    by_kid: bool,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl Verifier {
    /// Reads and parses the configured key(s); errors name the bad setting.
    pub fn new(settings: &KeySettings) -> Result<Self, KeyError> {
        let source = Source::from_settings(settings)?;
        let keys = match source {
            Source::Secret(secret) => {
                let alg = hmac_algorithm(settings)?;
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
                vec![VerifyKey::new(
                    None,
                    alg,
                    DecodingKey::from_secret(secret.as_bytes()),
                )]
            }
            Source::PublicKey(path) => {
                let alg = configured_algorithm(settings)?.ok_or(KeyError::MissingAlgorithm)?;
                vec![VerifyKey::new(None, alg, load_public_pem(path, alg)?)]
            }
            Source::Jwks(path) => load_jwks(path, configured_algorithm(settings)?)?,
        };
        Ok(Self {
            keys,
            by_kid: matches!(source, Source::Jwks(_)),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
        })
    }

    /// Full check as of `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, Reason> {
        let verified = self.verify_signature(token)?;
        self.check_time(&verified, now)?;
        Ok(verified)
    }

    /// The time rules of [`verify`](Self::verify) (`exp`, then `nbf` and
    /// `iat`, with leeway) for a token whose signature was verified.
    pub fn check_time(&self, verified: &VerifiedToken, now: i64) -> Result<(), Reason> {
        let leeway = i64::try_from(self.leeway_secs).unwrap_or(i64::MAX);
        if now >= verified.exp.saturating_add(leeway) {
            return Err(Reason::Expired);
        }
        if let Some(nbf) = verified.nbf
            && now < nbf.saturating_sub(leeway)
        {
            return Err(Reason::NotYetValid);
        }
        // A token issued in the future (beyond the leeway) is not valid yet:
        // read as "now" it would still sort after a fresh watermark and
        // escape revoke-all.
        if let Some(iat) = verified.iat
            && now < iat.saturating_sub(leeway)
        {
            return Err(Reason::NotYetValid);
        }
        Ok(())
    }

    /// Signature (and iss/aud) only; expiry and nbf are not checked. Used to
    /// revoke tokens that may already be expired.
    pub fn verify_signature(&self, token: &str) -> Result<VerifiedToken, Reason> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Reason::Malformed);
        }
        let header = peek_header(token)?;
        let alg = Algorithm::from_str(&header.alg).map_err(|_| Reason::UnsupportedAlgorithm)?;
        let key = self.select_key(header.kid.as_deref())?;
        if alg != key.alg {
            return Err(Reason::InvalidSignature);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| match e.kind() {
                // A base64 error is the signature's when the claims decode: a
                // tampered signature is invalid, not malformed. (Looked at
                // only on this error path, not for every good token.)
                jsonwebtoken::errors::ErrorKind::Base64(_)
                    if token
                        .split('.')
                        .nth(1)
                        .is_some_and(|p| URL_SAFE_NO_PAD.decode(p).is_ok()) =>
                {
                    Reason::InvalidSignature
                }
                _ => decode_reason(e),
            })?
            .claims;
        let exp = claims.exp.ok_or(Reason::Malformed)?;
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(Reason::InvalidIssuer);
        }
        if let Some(audience) = &self.audience
            && !audience_contains(claims.aud.as_ref(), audience)
        {
            return Err(Reason::InvalidAudience);
        }
        let twin_token_id = match claims.jti {
            None => ecdsa_twin(token, key.alg).map(|twin| token_id(&twin, None)),
            Some(_) => None,
        };
        Ok(VerifiedToken {
            twin_token_id,
            token_id: token_id(token, claims.jti.as_deref()),
            // An empty `sub` names no subject (nothing could revoke it all).
            subject_id: claims
                .sub
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(revokd_jobs::subject_id),
            sub: claims.sub,
            jti: claims.jti,
            iat: claims.iat,
            nbf: claims.nbf,
            exp,
            iss: claims.iss,
            aud: claims.aud,
        })
    }

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    fn select_key(&self, kid: Option<&str>) -> Result<&VerifyKey, Reason> {
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

/// Signs tokens for `revokd mint` with the configured key: the HMAC secret
/// (`JWT_SECRET`, or a JWK Set holding one `oct` key), else the PEM private
/// key of `JWT_PRIVATE_KEY_FILE`, which must pair with a configured public key
/// (with a JWK Set, the matching key's `kid` goes into the header).
#[derive(Debug)]
pub struct Minter {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    /// Loads the signing key; the settings are checked as [`Verifier::new`] does.
    pub fn new(settings: &KeySettings) -> Result<Self, KeyError> {
        let verifier = Verifier::new(settings)?;
        let (key, signer) = signing_key(settings, &verifier.keys)?;
        let mut header = Header::new(signer.alg);
        header.kid.clone_from(&signer.kid);
        Ok(Self {
            key,
            header,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// A signed token with `sub`, `iat = now`, `exp = now + ttl_secs`, a random
    /// `jti` unless `with_jti` is false, and the configured `iss`/`aud`.
    pub fn mint(
        &self,
        sub: &str,
        ttl_secs: i64,
        with_jti: bool,
        now: i64,
    ) -> Result<String, KeyError> {
        let exp = now
            .checked_add(ttl_secs)
            .filter(|_| ttl_secs > 0)
            .ok_or(KeyError::InvalidTtl(ttl_secs))?;
        let claims = MintClaims {
            sub,
            iat: now,
            exp,
            // UUIDv7: 16 bytes, 74 of them random, unique even within a millisecond.
            jti: with_jti.then(|| uuid::Uuid::now_v7().simple().to_string()),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(KeyError::Sign)
    }
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// One verification key, parsed, with its prebuilt validation.
#[derive(Debug)]
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
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

fn configured_algorithm(settings: &KeySettings) -> Result<Option<Algorithm>, KeyError> {
    settings
        .algorithm
        .as_deref()
        .map(|name| {
            Algorithm::from_str(name).map_err(|_| KeyError::UnsupportedAlgorithm(name.to_owned()))
        })
        .transpose()
}

fn hmac_algorithm(settings: &KeySettings) -> Result<Algorithm, KeyError> {
    let algorithm = configured_algorithm(settings)?.unwrap_or(Algorithm::HS256);
    if algorithm.family() != AlgorithmFamily::Hmac {
        return Err(KeyError::AlgorithmMismatch {
            algorithm,
            key: "JWT_SECRET (an HMAC secret)",
        });
    }
    Ok(algorithm)
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, reason: impl fmt::Display) -> KeyError {
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
fn public_params(key: &DecodingKey, alg: Algorithm) -> Result<AlgorithmParameters, String> {
    let params = Jwk::from_decoding_key(key, Some(alg))
        .map_err(|e| format!("not a {alg:?} public key ({e})"))?
        .algorithm;
    if !fits(&params, alg) {
        return Err(format!("the key does not fit {alg:?}"));
    }
    Ok(params)
}

/// Chooses how [`Minter`] signs; `keys` are the verifier's, already checked.
fn signing_key<'k>(
    settings: &KeySettings,
    keys: &'k [VerifyKey],
) -> Result<(EncodingKey, &'k VerifyKey), KeyError> {
    // An HMAC key signs as it verifies: JWT_SECRET, or a set of one oct key.
    if let [only] = keys
        && only.alg.family() == AlgorithmFamily::Hmac
    {
        let secret = only
            .key
            .try_get_as_bytes()
            .map_err(|_| KeyError::NoSigningKey)?;
        return Ok((EncodingKey::from_secret(secret), only));
    }
    let Some(path) = &settings.private_key_file else {
        return Err(match keys.first() {
            Some(key) if settings.public_key_file.is_some() => KeyError::MissingPrivateKey(key.alg),
            _ => KeyError::NoSigningKey,
        });
    };
    let pem = read(path)?;
    let mut parsed = false;
    for candidate in keys
        .iter()
        .filter(|k| k.alg.family() != AlgorithmFamily::Hmac)
    {
        let Some((private, params)) = private_key(&pem, candidate.alg) else {
            continue;
        };
        parsed = true;
        if public_params(&candidate.key, candidate.alg).is_ok_and(|public| public == params) {
            return Ok((private, candidate));
        }
    }
    Err(if parsed {
        KeyError::KeyMismatch { path: path.clone() }
    } else {
        invalid(path, "not a PEM private key for the configured algorithm")
    })
}

/// Parses a PEM private key for `alg`, with its public half as JWK parameters.
fn private_key(pem: &[u8], alg: Algorithm) -> Option<(EncodingKey, AlgorithmParameters)> {
    let key = match alg.family() {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return None,
    }
    .ok()?;
    let params = Jwk::from_encoding_key(&key, alg).ok()?.algorithm;
    Some((key, params))
}

/// Order `n` of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// Order `n` of the P-384 group, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// The compact token with its ECDSA signature `r || s` replaced by
/// `r || (n − s)`: ECDSA signatures are malleable, and this twin verifies
/// under the same key. `None` for other algorithms or a signature of the
/// wrong shape (`0 < s < n` holds for any signature that verified).
pub fn ecdsa_twin(token: &str, alg: Algorithm) -> Option<String> {
    let order: &[u8] = match alg {
        Algorithm::ES256 => &P256_ORDER,
        Algorithm::ES384 => &P384_ORDER,
        _ => return None,
    };
    let (signed, signature) = token.rsplit_once('.')?;
    let mut signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    if signature.len() != 2 * order.len() {
        return None;
    }
    let s = &mut signature[order.len()..];
    // s ← n − s, big-endian, with borrow.
    let mut borrow = 0u16;
    for (digit, &n) in s.iter_mut().rev().zip(order.iter().rev()) {
        let d = u16::from(n)
            .wrapping_sub(u16::from(*digit))
            .wrapping_sub(borrow);
        borrow = u16::from(u16::from(n) < u16::from(*digit) + borrow);
        *digit = (d & 0xff) as u8;
    }
    (borrow == 0).then(|| format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&signature)))
}

/// The header members looked at before any key is chosen.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Present at all (any value, even `null`) is enough to refuse.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Reads `alg` and `kid` without trusting them, so that an unsupported `alg`
/// is told apart from a string that is not a JWT at all. A header with
/// `crit` is `malformed`: it names extensions the recipient must understand,
/// and revokd understands none (RFC 7515 4.1.11).
fn peek_header(token: &str) -> Result<PeekedHeader, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Reason::Malformed)?;
    let header: PeekedHeader = serde_json::from_slice(&json).map_err(|_| Reason::Malformed)?;
    if header.crit {
        return Err(Reason::Malformed);
    }
    Ok(header)
}

fn decode_reason(err: jsonwebtoken::errors::Error) -> Reason {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::MissingRequiredClaim(_) => Reason::Malformed,
        // A bad signature, and any key or algorithm error: fail closed.
        _ => Reason::InvalidSignature,
    }
}

fn audience_contains(aud: Option<&Value>, wanted: &str) -> bool {
    match aud {
        Some(Value::String(one)) => one == wanted,
        Some(Value::Array(many)) => many.iter().any(|a| a.as_str() == Some(wanted)),
        _ => false,
    }
}

/// The claims revokd reads; all optional here so that a missing one is
/// reported precisely. A claim of the wrong type makes the token `malformed`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default, deserialize_with = "non_empty")]
    jti: Option<String>,
    #[serde(default, deserialize_with = "string_or_integer")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(D::Error::custom("sub must be a string or an integer")),
    }
}

/// A NumericDate: integer seconds, or a fraction (RFC 7519 allows one),
/// truncated toward zero. Out of the `i64` range is an error.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(secs) = n.as_i64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        // `as` truncates toward zero, which is the documented behaviour.
        Some(secs) if secs.is_finite() && secs.abs() < 9.0e18 => Ok(Some(secs as i64)),
        _ => Err(D::Error::custom("NumericDate out of range")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    const NOW: i64 = 1_750_000_000;
    // 64 bytes: long enough for HS512 (RFC 7518 3.2).
    const SECRET: &str = "test-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456";
    const RSA_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa_public.pem");

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    /// A file in the temp dir, unique per test process and name.
    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("revokd-token-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn hmac(alg: &str) -> KeySettings {
        KeySettings {
            secret: Some(SECRET.into()),
            algorithm: Some(alg.into()),
            ..Default::default()
        }
    }

    fn pem(alg: &str, stem: &str) -> KeySettings {
        KeySettings {
            public_key_file: Some(fixture(&format!("{stem}_public.pem"))),
            private_key_file: Some(fixture(&format!("{stem}_private.pem"))),
            algorithm: Some(alg.into()),
            ..Default::default()
        }
    }

    fn jwks(file: &str, private: Option<&str>) -> KeySettings {
        KeySettings {
            jwks_file: Some(fixture(file)),
            private_key_file: private.map(fixture),
            ..Default::default()
        }
    }

    fn mint(settings: &KeySettings, ttl_secs: i64) -> String {
        Minter::new(settings)
            .unwrap()
            .mint("user-1", ttl_secs, true, NOW)
            .unwrap()
    }

    fn verify(settings: &KeySettings, token: &str, now: i64) -> Result<VerifiedToken, Reason> {
        Verifier::new(settings).unwrap().verify(token, now)
    }

    /// An HS256 token over arbitrary claims, signed with `SECRET`.
    fn hs256(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn header_of(token: &str) -> Value {
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn every_supported_algorithm_round_trips_from_minter_to_verifier() {
        let cases = [
            hmac("HS256"),
            hmac("HS384"),
            hmac("HS512"),
            pem("RS256", "rsa"),
            pem("RS384", "rsa"),
            pem("RS512", "rsa"),
            pem("PS256", "rsa"),
            pem("PS384", "rsa"),
            pem("PS512", "rsa"),
            pem("ES256", "ec256"),
            pem("ES384", "ec384"),
            pem("EdDSA", "ed25519"),
        ];
        for settings in &cases {
            let alg = settings.algorithm.as_deref().unwrap();
            let token = mint(settings, 900);
            assert_eq!(header_of(&token)["alg"], alg);
            let verified =
                verify(settings, &token, NOW + 1).unwrap_or_else(|r| panic!("{alg}: {r}"));
            let jti = verified.jti.clone().unwrap();
            assert_eq!(jti.len(), 32, "{alg}");
            assert_eq!(verified.token_id, jti);
            assert_eq!(verified.sub.as_deref(), Some("user-1"));
            assert_eq!((verified.iat, verified.exp), (Some(NOW), NOW + 900));
        }
    }

    #[test]
    fn default_algorithm_for_a_secret_is_hs256() {
        let settings = KeySettings {
            secret: Some(SECRET.into()),
            ..Default::default()
        };
        let token = mint(&settings, 60);
        assert_eq!(header_of(&token)["alg"], "HS256");
        assert!(verify(&settings, &token, NOW).is_ok());
    }

    #[test]
    fn minted_jtis_are_unique() {
        let minter = Minter::new(&hmac("HS256")).unwrap();
        let verifier = Verifier::new(&hmac("HS256")).unwrap();
        let a = verifier
            .verify(&minter.mint("u", 60, true, NOW).unwrap(), NOW)
            .unwrap();
        let b = verifier
            .verify(&minter.mint("u", 60, true, NOW).unwrap(), NOW)
            .unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_unsupported() {
        let payload = b64(&json!({"sub": "u", "exp": NOW + 60}).to_string());
        for settings in [
            hmac("HS256"),
            pem("RS256", "rsa"),
            jwks("jwks_two.json", None),
        ] {
            for alg in ["none", "None", "HS1", "RSA-OAEP"] {
                let header = b64(&json!({"alg": alg, "typ": "JWT"}).to_string());
                for token in [
                    format!("{header}.{payload}."),
                    format!("{header}.{payload}.c2ln"),
                ] {
                    assert_eq!(
                        verify(&settings, &token, NOW),
                        Err(Reason::UnsupportedAlgorithm),
                        "{alg}"
                    );
                }
            }
        }
    }

    #[test]
    fn hs256_token_signed_with_the_rsa_public_key_is_invalid_signature() {
        let claims = json!({"sub": "attacker", "exp": NOW + 60});
        let key = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        let forged = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let verifier = Verifier::new(&pem("RS256", "rsa")).unwrap();
        assert_eq!(verifier.verify(&forged, NOW), Err(Reason::InvalidSignature));
        assert_eq!(
            verifier.verify_signature(&forged),
            Err(Reason::InvalidSignature)
        );
    }

    #[test]
    fn supported_algorithm_other_than_the_keys_is_invalid_signature() {
        assert_eq!(
            verify(&hmac("HS256"), &mint(&hmac("HS512"), 60), NOW),
            Err(Reason::InvalidSignature)
        );
        assert_eq!(
            verify(&pem("RS256", "rsa"), &mint(&pem("PS256", "rsa"), 60), NOW),
            Err(Reason::InvalidSignature)
        );
        assert_eq!(
            verify(&pem("RS256", "rsa"), &mint(&pem("ES256", "ec256"), 60), NOW),
            Err(Reason::InvalidSignature)
        );
    }

    #[test]
    fn wrong_secret_or_wrong_key_is_invalid_signature() {
        let token = mint(&hmac("HS256"), 60);
        let other = KeySettings {
            secret: Some("another-secret-just-as-long-as-the-first-one-for-hs256".into()),
            ..Default::default()
        };
        assert_eq!(verify(&other, &token, NOW), Err(Reason::InvalidSignature));

        let token = mint(&pem("ES256", "ec256"), 60);
        let mut tampered = token.clone();
        tampered.replace_range(token.len() - 4.., "AAAA");
        assert_eq!(
            verify(&pem("ES256", "ec256"), &tampered, NOW),
            Err(Reason::InvalidSignature)
        );
    }

    #[test]
    fn expiry_is_checked_against_now_with_leeway() {
        let settings = KeySettings {
            leeway_secs: 30,
            ..hmac("HS256")
        };
        let token = mint(&settings, 60);
        let exp = NOW + 60;
        assert!(verify(&settings, &token, exp - 1).is_ok());
        assert!(verify(&settings, &token, exp + 29).is_ok(), "within leeway");
        assert_eq!(verify(&settings, &token, exp + 30), Err(Reason::Expired));
        assert_eq!(verify(&settings, &token, exp + 3600), Err(Reason::Expired));
        let strict = hmac("HS256");
        assert_eq!(
            verify(&strict, &token, exp),
            Err(Reason::Expired),
            "valid only before exp"
        );
    }

    #[test]
    fn nbf_in_the_future_is_not_yet_valid() {
        let settings = KeySettings {
            leeway_secs: 30,
            ..hmac("HS256")
        };
        let token = hs256(&json!({"exp": NOW + 3600, "nbf": NOW + 100}));
        assert_eq!(verify(&settings, &token, NOW), Err(Reason::NotYetValid));
        assert_eq!(
            verify(&settings, &token, NOW + 69),
            Err(Reason::NotYetValid)
        );
        assert_eq!(
            verify(&settings, &token, NOW + 70).unwrap().nbf,
            Some(NOW + 100)
        );
    }

    #[test]
    fn iat_beyond_the_leeway_is_not_yet_valid_and_within_it_is_fine() {
        let settings = KeySettings {
            leeway_secs: 30,
            ..hmac("HS256")
        };
        let ahead = hs256(&json!({"sub": "u", "exp": NOW + 3600, "iat": NOW + 600}));
        assert_eq!(verify(&settings, &ahead, NOW), Err(Reason::NotYetValid));
        assert_eq!(
            verify(&settings, &ahead, NOW + 569),
            Err(Reason::NotYetValid)
        );
        assert!(verify(&settings, &ahead, NOW + 570).is_ok());
        let skewed = hs256(&json!({"sub": "u", "exp": NOW + 3600, "iat": NOW + 5}));
        assert!(verify(&settings, &skewed, NOW).is_ok(), "within leeway");
        // Signature-only verification (revoking) does not look at the time.
        let verifier = Verifier::new(&settings).unwrap();
        assert!(verifier.verify_signature(&ahead).is_ok());
    }

    #[test]
    fn a_crit_header_is_malformed() {
        let claims = b64(&json!({"sub": "u", "exp": NOW + 60}).to_string());
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        for header in [
            json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"], "exp": 1}),
            json!({"alg": "HS256", "crit": []}),
            json!({"alg": "HS256", "crit": null}),
        ] {
            let signing_input = format!("{}.{claims}", b64(&header.to_string()));
            let signature =
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
                    .unwrap();
            let token = format!("{signing_input}.{signature}");
            assert_eq!(
                verify(&hmac("HS256"), &token, NOW),
                Err(Reason::Malformed),
                "{header}"
            );
        }
        // The same token without crit verifies.
        let plain = b64(&json!({"alg": "HS256"}).to_string());
        let signing_input = format!("{plain}.{claims}");
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
        assert!(verify(&hmac("HS256"), &format!("{signing_input}.{signature}"), NOW).is_ok());
    }

    #[test]
    fn hard_to_store_ids_are_hashed_and_the_raw_sub_kept_for_display() {
        let long_jti = "j".repeat(300);
        let long_sub = "s".repeat(300);
        let token = hs256(&json!({"jti": long_jti, "sub": long_sub, "exp": NOW + 60}));
        let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
        assert_eq!(verified.token_id, revokd_jobs::jti_id(&long_jti));
        assert!(verified.token_id.starts_with("jti-sha256:"));
        assert_eq!(verified.jti.as_deref(), Some(long_jti.as_str()));
        assert_eq!(verified.sub.as_deref(), Some(long_sub.as_str()));
        assert_eq!(
            verified.subject_id.as_deref(),
            Some(revokd_jobs::subject_id(&long_sub).as_str())
        );
        let plain = verify(&hmac("HS256"), &mint(&hmac("HS256"), 60), NOW).unwrap();
        assert_eq!(plain.subject_id.as_deref(), Some("user-1"));
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let settings = KeySettings {
            issuer: Some("https://issuer.example".into()),
            ..hmac("HS256")
        };
        let good = hs256(&json!({"exp": NOW + 60, "iss": "https://issuer.example"}));
        assert_eq!(
            verify(&settings, &good, NOW).unwrap().iss.as_deref(),
            Some("https://issuer.example")
        );
        let wrong = hs256(&json!({"exp": NOW + 60, "iss": "https://evil.example"}));
        assert_eq!(verify(&settings, &wrong, NOW), Err(Reason::InvalidIssuer));
        let missing = hs256(&json!({"exp": NOW + 60}));
        assert_eq!(verify(&settings, &missing, NOW), Err(Reason::InvalidIssuer));
        assert!(
            verify(&hmac("HS256"), &wrong, NOW).is_ok(),
            "not checked when unset"
        );
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let settings = KeySettings {
            audience: Some("api".into()),
            ..hmac("HS256")
        };
        let ok = |aud: Value| {
            verify(
                &settings,
                &hs256(&json!({"exp": NOW + 60, "aud": aud})),
                NOW,
            )
        };
        assert!(ok(json!("api")).is_ok());
        assert_eq!(
            ok(json!(["web", "api"])).unwrap().aud,
            Some(json!(["web", "api"]))
        );
        assert_eq!(ok(json!("web")), Err(Reason::InvalidAudience));
        assert_eq!(ok(json!(["web", "admin"])), Err(Reason::InvalidAudience));
        assert_eq!(ok(json!([])), Err(Reason::InvalidAudience));
        assert_eq!(ok(json!(42)), Err(Reason::InvalidAudience));
        let missing = hs256(&json!({"exp": NOW + 60}));
        assert_eq!(
            verify(&settings, &missing, NOW),
            Err(Reason::InvalidAudience)
        );
        assert!(
            verify(
                &hmac("HS256"),
                &hs256(&json!({"exp": NOW + 60, "aud": "x"})),
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn issuer_is_checked_before_audience_and_expiry() {
        let settings = KeySettings {
            issuer: Some("i".into()),
            audience: Some("a".into()),
            ..hmac("HS256")
        };
        let token = hs256(&json!({"exp": NOW - 1000, "iss": "x"}));
        assert_eq!(verify(&settings, &token, NOW), Err(Reason::InvalidIssuer));
        let token = hs256(&json!({"exp": NOW - 1000, "iss": "i", "aud": "b"}));
        assert_eq!(verify(&settings, &token, NOW), Err(Reason::InvalidAudience));
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        let header = b64(r#"{"alg":"HS256"}"#);
        let huge = "x".repeat(100 * 1024);
        let huge_jwt = format!("{header}.{}.sig", "e".repeat(100 * 1024));
        let garbage = [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "..",
            huge.as_str(),
            huge_jwt.as_str(),
            "!!!.@@@.###",
            "ÿþ.ü.é",
            "eyJ.eyJ.eyJ",
            "//8.//8.//8",
            "bnVsbA.e30.c2ln",
            "W10.e30.c2ln",
            "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln",
        ];
        let own = [
            format!("{}.e30.c2ln", b64("\u{1}\u{2}not json")),
            format!("{}.e30.c2ln", b64(r#"{"alg":5}"#)),
        ];
        for settings in [
            hmac("HS256"),
            pem("ES256", "ec256"),
            jwks("jwks_two.json", None),
        ] {
            let verifier = Verifier::new(&settings).unwrap();
            for token in garbage
                .iter()
                .copied()
                .chain(own.iter().map(String::as_str))
            {
                let shown = &token[..token.len().min(20)];
                assert_eq!(
                    verifier.verify(token, NOW),
                    Err(Reason::Malformed),
                    "{shown:?}"
                );
            }
        }
    }

    #[test]
    fn undecodable_claims_with_a_good_signature_are_malformed() {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        for payload in [b64("not json"), "***".to_owned(), b64("[1,2]")] {
            let message = format!("{header}.{payload}");
            let sig =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
            assert_eq!(
                verify(&hmac("HS256"), &format!("{message}.{sig}"), NOW),
                Err(Reason::Malformed)
            );
        }
    }

    #[test]
    fn claims_of_the_wrong_type_are_malformed() {
        for claims in [
            json!({"exp": "tomorrow"}),
            json!({"exp": NOW + 60, "sub": 1.5}),
            json!({"exp": NOW + 60, "sub": ["a"]}),
            json!({"exp": NOW + 60, "jti": 7}),
            json!({"exp": NOW + 60, "iss": ["a", "b"]}),
            json!({"exp": NOW + 60, "iat": "now"}),
            json!({"exp": 1e300}),
            json!({"exp": u64::MAX}),
        ] {
            assert_eq!(
                verify(&hmac("HS256"), &hs256(&claims), NOW),
                Err(Reason::Malformed),
                "{claims}"
            );
        }
    }

    #[test]
    fn token_without_exp_is_malformed() {
        let token = hs256(&json!({"sub": "u", "iat": NOW}));
        assert_eq!(verify(&hmac("HS256"), &token, NOW), Err(Reason::Malformed));
        let verifier = Verifier::new(&hmac("HS256")).unwrap();
        assert_eq!(verifier.verify_signature(&token), Err(Reason::Malformed));
        let null_exp = hs256(&json!({"exp": null}));
        assert_eq!(
            verify(&hmac("HS256"), &null_exp, NOW),
            Err(Reason::Malformed)
        );
    }

    #[test]
    fn numeric_sub_is_read_as_its_decimal_string_and_fractional_dates_truncate() {
        let token = hs256(
            &json!({"sub": 12345678901234_u64, "exp": NOW as f64 + 60.9, "iat": NOW as f64 + 0.5}),
        );
        let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
        assert_eq!(verified.sub.as_deref(), Some("12345678901234"));
        assert_eq!((verified.exp, verified.iat), (NOW + 60, Some(NOW)));
        let negative = hs256(&json!({"sub": -7, "exp": NOW + 60}));
        assert_eq!(
            verify(&hmac("HS256"), &negative, NOW)
                .unwrap()
                .sub
                .as_deref(),
            Some("-7")
        );
    }

    #[test]
    fn an_ecdsa_token_without_jti_knows_its_twin_and_the_twin_knows_it() {
        for (alg, stem) in [("ES256", "ec256"), ("ES384", "ec384")] {
            let settings = pem(alg, stem);
            let verifier = Verifier::new(&settings).unwrap();
            let token = Minter::new(&settings)
                .unwrap()
                .mint("user-1", 600, false, NOW)
                .unwrap();
            let original = verifier.verify(&token, NOW).unwrap();
            let twin = ecdsa_twin(&token, verifier.keys[0].alg).unwrap();
            assert_ne!(twin, token);
            // The twin verifies too: it is the same token to anyone but a
            // byte comparison, so each names the other's id.
            let verified_twin = verifier.verify(&twin, NOW).unwrap();
            assert_eq!(verified_twin.token_id, token_id(&twin, None));
            assert_eq!(
                verified_twin.twin_token_id.as_ref(),
                Some(&original.token_id)
            );
            assert_eq!(
                original.twin_token_id.as_ref(),
                Some(&verified_twin.token_id)
            );
            assert_eq!(
                ecdsa_twin(&twin, verifier.keys[0].alg).as_deref(),
                Some(token.as_str())
            );
            // With a jti the id is the jti, the same for both forms.
            let with_jti = Minter::new(&settings)
                .unwrap()
                .mint("user-1", 600, true, NOW)
                .unwrap();
            assert_eq!(verifier.verify(&with_jti, NOW).unwrap().twin_token_id, None);
        }
        let hmac = hmac("HS256");
        let token = Minter::new(&hmac)
            .unwrap()
            .mint("user-1", 600, false, NOW)
            .unwrap();
        assert_eq!(verify(&hmac, &token, NOW).unwrap().twin_token_id, None);
    }

    #[test]
    fn token_without_jti_is_identified_by_its_sha256() {
        let token = Minter::new(&hmac("HS256"))
            .unwrap()
            .mint("u", 60, false, NOW)
            .unwrap();
        let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
        assert_eq!(verified.jti, None);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
        assert_eq!(verified.token_id, expected);
        let hash = verified.token_id.strip_prefix("sha256:").unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_eq!(token_id(&token, None), expected);
        assert_eq!(
            token_id(&token, Some("")),
            expected,
            "empty jti counts as absent"
        );
        assert_eq!(token_id(&token, Some("abc")), "abc");
        let empty_jti = hs256(&json!({"exp": NOW + 60, "jti": ""}));
        assert!(
            verify(&hmac("HS256"), &empty_jti, NOW)
                .unwrap()
                .token_id
                .starts_with("sha256:")
        );
    }

    #[test]
    fn jwks_chooses_the_key_by_kid() {
        let ec = mint(&jwks("jwks_two.json", Some("ec256_private.pem")), 60);
        assert_eq!(header_of(&ec)["kid"], "ec-key-1");
        assert_eq!(header_of(&ec)["alg"], "ES256");
        let rsa = mint(&jwks("jwks_two.json", Some("rsa_private.pem")), 60);
        assert_eq!(header_of(&rsa)["kid"], "rsa-key-1");
        assert_eq!(header_of(&rsa)["alg"], "RS256");
        let verifier = Verifier::new(&jwks("jwks_two.json", None)).unwrap();
        assert!(verifier.verify(&ec, NOW).is_ok());
        assert!(verifier.verify(&rsa, NOW).is_ok());
    }

    #[test]
    fn jwks_unknown_or_mismatched_kid_is_invalid_signature() {
        let key =
            EncodingKey::from_ec_pem(include_bytes!("../tests/fixtures/keys/ec256_private.pem"))
                .unwrap();
        let sign = |kid: Option<&str>| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, &json!({"exp": NOW + 60}), &key).unwrap()
        };
        let verifier = Verifier::new(&jwks("jwks_two.json", None)).unwrap();
        assert!(verifier.verify(&sign(Some("ec-key-1")), NOW).is_ok());
        assert_eq!(
            verifier.verify(&sign(Some("nope")), NOW),
            Err(Reason::InvalidSignature)
        );
        assert_eq!(
            verifier.verify(&sign(Some("rsa-key-1")), NOW),
            Err(Reason::InvalidSignature)
        );
        assert_eq!(
            verifier.verify(&sign(None), NOW),
            Err(Reason::Malformed),
            "no kid, two keys"
        );
    }

    #[test]
    fn jwks_of_one_key_accepts_a_token_without_kid() {
        let key =
            EncodingKey::from_ed_pem(include_bytes!("../tests/fixtures/keys/ed25519_private.pem"))
                .unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &json!({"exp": NOW + 60}),
            &key,
        )
        .unwrap();
        let settings = jwks("jwks_one.json", None);
        assert!(
            verify(&settings, &token, NOW).is_ok(),
            "alg inferred from OKP Ed25519"
        );
        let minted = mint(&jwks("jwks_one.json", Some("ed25519_private.pem")), 60);
        assert_eq!(header_of(&minted)["kid"], "ed-key-1");
        assert!(verify(&settings, &minted, NOW).is_ok());
    }

    #[test]
    fn jwks_of_one_oct_key_signs_and_verifies() {
        let k = URL_SAFE_NO_PAD.encode(SECRET);
        let set = json!({"keys": [{"kty": "oct", "kid": "hmac-1", "k": k}]});
        let settings = KeySettings {
            jwks_file: Some(temp_file("oct.json", &set.to_string())),
            ..Default::default()
        };
        let token = mint(&settings, 60);
        assert_eq!(header_of(&token)["kid"], "hmac-1");
        assert_eq!(header_of(&token)["alg"], "HS256");
        assert!(verify(&settings, &token, NOW).is_ok());
        assert_eq!(
            verify(&hmac("HS256"), &token, NOW).map(|_| ()),
            Err(Reason::InvalidSignature),
            "same secret, but a plain secret has no kid: the token names a key not configured"
        );
    }

    #[test]
    fn verify_signature_accepts_an_expired_token_but_not_a_forged_one() {
        let token = mint(&pem("ES256", "ec256"), 60);
        let verifier = Verifier::new(&pem("ES256", "ec256")).unwrap();
        assert_eq!(verifier.verify(&token, NOW + 10_000), Err(Reason::Expired));
        assert_eq!(verifier.verify_signature(&token).unwrap().exp, NOW + 60);
        let not_yet = hs256(&json!({"exp": NOW + 60, "nbf": NOW + 30}));
        assert!(
            Verifier::new(&hmac("HS256"))
                .unwrap()
                .verify_signature(&not_yet)
                .is_ok()
        );
        let other = KeySettings {
            private_key_file: Some(fixture("ec256_other_private.pem")),
            ..pem("ES256", "ec256")
        };
        let key = std::fs::read(other.private_key_file.as_ref().unwrap()).unwrap();
        let key = EncodingKey::from_ec_pem(&key).unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &json!({"exp": NOW + 60}),
            &key,
        )
        .unwrap();
        assert_eq!(
            verifier.verify_signature(&forged),
            Err(Reason::InvalidSignature)
        );
        let forged_expired = hs256(&json!({"exp": NOW - 1000}));
        let other = KeySettings {
            secret: Some("other-secret-that-is-long-enough-for-hs256".into()),
            ..Default::default()
        };
        assert_eq!(
            verify(&other, &forged_expired, NOW),
            Err(Reason::InvalidSignature)
        );
    }

    #[test]
    fn minted_tokens_carry_the_configured_issuer_and_audience() {
        let settings = KeySettings {
            issuer: Some("revokd".into()),
            audience: Some("api".into()),
            ..hmac("HS256")
        };
        let verified = verify(&settings, &mint(&settings, 60), NOW).unwrap();
        assert_eq!(verified.iss.as_deref(), Some("revokd"));
        assert_eq!(verified.aud, Some(json!("api")));
    }

    #[test]
    fn config_errors_are_reported() {
        let err = |settings: KeySettings| Verifier::new(&settings).unwrap_err();
        assert!(matches!(err(KeySettings::default()), KeyError::NoKey));
        let two = KeySettings {
            public_key_file: Some(fixture("rsa_public.pem")),
            ..hmac("HS256")
        };
        let KeyError::SeveralKeys(names) = err(two) else {
            panic!("expected SeveralKeys")
        };
        assert_eq!(names, "JWT_SECRET, JWT_PUBLIC_KEY_FILE");
        assert!(matches!(
            err(hmac("RS256")),
            KeyError::AlgorithmMismatch {
                algorithm: Algorithm::RS256,
                ..
            }
        ));
        assert!(
            matches!(err(hmac("none")), KeyError::UnsupportedAlgorithm(name) if name == "none")
        );
        assert!(matches!(
            err(KeySettings {
                secret: Some(String::new()),
                ..Default::default()
            }),
            KeyError::EmptySecret
        ));
        assert!(matches!(
            err(KeySettings {
                algorithm: None,
                ..pem("RS256", "rsa")
            }),
            KeyError::MissingAlgorithm
        ));
        assert!(matches!(
            err(pem("HS256", "rsa")),
            KeyError::AlgorithmMismatch { .. }
        ));
        assert!(
            matches!(err(pem("ES384", "ec256")), KeyError::InvalidKey { .. }),
            "curve mismatch"
        );
        assert!(matches!(
            err(pem("ES256", "rsa")),
            KeyError::InvalidKey { .. }
        ));
        assert!(matches!(
            err(pem("RS256", "ec256")),
            KeyError::InvalidKey { .. }
        ));
        let private_as_public = KeySettings {
            public_key_file: Some(fixture("rsa_private.pem")),
            ..pem("RS256", "rsa")
        };
        assert!(matches!(
            err(private_as_public),
            KeyError::InvalidKey { .. }
        ));
        let missing = err(KeySettings {
            public_key_file: Some(fixture("nope.pem")),
            ..pem("RS256", "rsa")
        });
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let not_json = KeySettings {
            jwks_file: Some(temp_file("bad.json", r#"{"keys": "k-secret"}"#)),
            ..Default::default()
        };
        let message = err(not_json).to_string();
        assert!(
            message.contains("bad.json") && !message.contains("k-secret"),
            "{message}"
        );
        let enc_only = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "use": "enc"}]}).to_string();
        let enc_only = KeySettings {
            jwks_file: Some(temp_file("enc.json", &enc_only)),
            ..Default::default()
        };
        assert!(matches!(err(enc_only), KeyError::InvalidKey { .. }));
        let wrong_alg =
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "ES256"}]}).to_string();
        let wrong_alg = KeySettings {
            jwks_file: Some(temp_file("alg.json", &wrong_alg)),
            ..Default::default()
        };
        assert!(matches!(err(wrong_alg), KeyError::InvalidKey { .. }));
        let (a, b) = (
            URL_SAFE_NO_PAD.encode([b'a'; 32]),
            URL_SAFE_NO_PAD.encode([b'b'; 32]),
        );
        let dup = json!({"keys": [{"kty": "oct", "k": a, "kid": "a"}, {"kty": "oct", "k": b, "kid": "a"}]});
        let dup = KeySettings {
            jwks_file: Some(temp_file("dup.json", &dup.to_string())),
            ..Default::default()
        };
        assert!(err(dup).to_string().contains("duplicate kid"));
    }

    #[test]
    fn hmac_keys_shorter_than_rfc_7518_requires_are_refused_without_echoing_them() {
        let secret = |secret: &str, alg: &str| KeySettings {
            secret: Some(secret.into()),
            algorithm: Some(alg.into()),
            ..Default::default()
        };
        for (alg, required) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
            let short = "k".repeat(required - 1);
            let message = Verifier::new(&secret(&short, alg)).unwrap_err().to_string();
            assert!(
                message.contains(&format!("at least {required} bytes"))
                    && message.contains(&format!("got {}", required - 1))
                    && !message.contains(&short),
                "{message}"
            );
            assert!(Verifier::new(&secret(&"k".repeat(required), alg)).is_ok());
        }
        assert!(matches!(
            Verifier::new(&secret("", "HS256")).unwrap_err(),
            KeyError::EmptySecret
        ));

        let oct = |k: &str, alg: Option<&str>| {
            let mut jwk = json!({"kty": "oct", "kid": "h", "k": k});
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            let name = format!("oct-{}-{}.json", k.len(), alg.unwrap_or("none"));
            KeySettings {
                jwks_file: Some(temp_file(&name, &json!({"keys": [jwk]}).to_string())),
                ..Default::default()
            }
        };
        let message = Verifier::new(&oct("", None)).unwrap_err().to_string();
        assert!(message.contains("empty oct key"), "{message}");
        let short = URL_SAFE_NO_PAD.encode("five!");
        let message = Verifier::new(&oct(&short, None)).unwrap_err().to_string();
        assert!(
            message.contains("at least 32 bytes") && !message.contains(&short),
            "{message}"
        );
        let k32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(Verifier::new(&oct(&k32, None)).is_ok());
        let message = Verifier::new(&oct(&k32, Some("HS512")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("at least 64 bytes"), "{message}");
    }

    #[test]
    fn minting_needs_a_usable_signing_key() {
        let err = |settings: KeySettings| Minter::new(&settings).unwrap_err();
        let with_private = |private: &str, settings: KeySettings| KeySettings {
            private_key_file: Some(fixture(private)),
            ..settings
        };
        let public_only = KeySettings {
            private_key_file: None,
            ..pem("RS256", "rsa")
        };
        assert!(matches!(
            err(public_only),
            KeyError::MissingPrivateKey(Algorithm::RS256)
        ));
        assert!(matches!(
            err(jwks("jwks_two.json", None)),
            KeyError::NoSigningKey
        ));
        let other_pair = with_private("ec256_other_private.pem", pem("ES256", "ec256"));
        assert!(matches!(err(other_pair), KeyError::KeyMismatch { .. }));
        let other_jwks = jwks("jwks_two.json", Some("ec256_other_private.pem"));
        assert!(matches!(err(other_jwks), KeyError::KeyMismatch { .. }));
        let other_curve = with_private("ec384_private.pem", pem("ES256", "ec256"));
        assert!(matches!(err(other_curve), KeyError::InvalidKey { .. }));
        let other_type = jwks("jwks_two.json", Some("ed25519_private.pem"));
        assert!(matches!(err(other_type), KeyError::InvalidKey { .. }));
        let public_as_private = with_private("rsa_public.pem", pem("RS256", "rsa"));
        assert!(matches!(
            err(public_as_private),
            KeyError::InvalidKey { .. }
        ));
        let missing = with_private("nope.pem", pem("RS256", "rsa"));
        assert!(matches!(err(missing), KeyError::Read { .. }));

        let minter = Minter::new(&hmac("HS256")).unwrap();
        assert!(matches!(
            minter.mint("u", 0, true, NOW),
            Err(KeyError::InvalidTtl(0))
        ));
        assert!(matches!(
            minter.mint("u", -5, true, NOW),
            Err(KeyError::InvalidTtl(-5))
        ));
        assert!(matches!(
            minter.mint("u", i64::MAX, true, NOW),
            Err(KeyError::InvalidTtl(_))
        ));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = hmac("HS256");
        let shown = format!(
            "{settings:?} {:?} {:?}",
            Verifier::new(&settings).unwrap(),
            Minter::new(&settings).unwrap()
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn reasons_serialize_as_their_snake_case_names() {
        use Reason::*;
        let all = [
            Revoked,
            SubjectRevoked,
            Expired,
            NotYetValid,
            InvalidSignature,
            InvalidIssuer,
            InvalidAudience,
            Malformed,
            UnsupportedAlgorithm,
            Reused,
            Unknown,
        ];
        for reason in all {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
            assert_eq!(
                serde_json::from_value::<Reason>(json!(reason.to_string())).unwrap(),
                reason
            );
        }
        assert_eq!(SubjectRevoked.as_str(), "subject_revoked");
    }

    #[test]
    fn verifier_is_send_sync_and_reports_leeway() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Verifier>();
        shareable::<Minter>();
        let verifier = Verifier::new(&KeySettings {
            leeway_secs: 45,
            ..hmac("HS256")
        })
        .unwrap();
        assert_eq!(verifier.leeway_secs(), 45);
    }
}
