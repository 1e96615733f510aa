//! [`Verifier`]: the checks a token must pass, in a fixed order, and
//! [`VerifiedToken`], what a verified token says.
//!
//! The token's own header is read only to pick a key: the algorithm is
//! always the configured key's, and every claim check is revokd's, against
//! the caller's `now`.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use revokd_jobs::{subject_id, token_id};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::claims::Claims;
use super::ecdsa::ecdsa_twin;
use super::keys::KeyRing;
use super::{KeyError, KeySettings, Reason};

/// Longest token looked at; a longer string is `malformed` before any
/// decoding (common HTTP servers cap a whole header at 8–16 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

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
    keys: KeyRing,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl Verifier {
    /// Reads and parses the configured key(s); errors name the bad setting.
    pub fn new(settings: &KeySettings) -> Result<Self, KeyError> {
        Ok(Self {
            keys: KeyRing::load(settings)?,
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
        let key = self.keys.select(header.kid.as_deref())?;
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
                .map(subject_id),
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
