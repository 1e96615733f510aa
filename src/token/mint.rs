//! [`Minter`]: signing tokens for `revokd mint` and the tests, with the key
//! the verifier would check them against.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde::Serialize;

use super::keys::{KeyRing, VerifyKey, invalid, public_params, read};
use super::{KeyError, KeySettings};

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
    /// Loads the signing key; the settings are checked as
    /// [`Verifier::new`](super::Verifier::new) does.
    pub fn new(settings: &KeySettings) -> Result<Self, KeyError> {
        let ring = KeyRing::load(settings)?;
        let (key, signer) = signing_key(settings, &ring.keys)?;
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

/// Chooses how [`Minter`] signs; `keys` are the ones a verifier
/// would use, already checked.
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
