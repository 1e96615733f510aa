//! [`Verifier`]: the checks a token must pass, in a fixed order, and
//! [`VerifiedToken`], what a verified token says.
//!
//! The token's own header is read only to pick a key (and, with several
//! issuers, its unverified `iss` to pick whose keys): the algorithm is
//! always the configured key's, and every claim check is revokd's, against
//! the caller's `now`.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use revokd_jobs::{issuer_id, subject_id, token_id};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use std::sync::Arc;

use super::claims::Claims;
use super::ecdsa::ecdsa_twin;
use super::issuers::{KeySpec, issuer_specs};
use super::keys::{KeyRing, Miss, Source};
use super::remote::{Endpoint, FetchError, RemoteKeys};
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
    /// The key `iss` is stored and looked up under (an issuer watermark):
    /// `iss` itself, or its hash (`revokd_jobs::issuer_id`); `None` for a
    /// token without `iss` or with an empty one (never issuer-revoked).
    pub issuer_id: Option<String>,
    /// `aud` as sent: a string or an array.
    pub aud: Option<Value>,
    /// For a token without `jti` signed with ECDSA (ES256/ES384): the
    /// `token_id` of its twin, the same token with the signature's other
    /// valid form (`s` → `n − s`, which verifies just as well). Anyone
    /// holding the token can make the twin, so a check refuses the token
    /// when either id is revoked.
    pub twin_token_id: Option<String>,
}

/// Checks tokens against the configured issuers' keys. Built once;
/// `Send + Sync`, so share it behind an `Arc`.
///
/// Decisions, in order (so a forged expired token is `invalid_signature`):
/// 1. Format: not three base64url parts with a JSON header, or a header with
///    `crit` (RFC 7515 4.1.11: revokd understands no extension) → `malformed`.
/// 2. Header `alg`: not a supported algorithm (`none`, `HS1`) →
///    `unsupported_algorithm`. The algorithm is always the configured key's;
///    a supported `alg` other than the key's (e.g. `HS256` against an RSA key)
///    is treated like a wrong key → `invalid_signature`.
/// 3. Issuer (several configured): the unverified `iss` chooses whose keys
///    verify the token; naming none of them → `invalid_issuer`. A token of
///    one issuer with `iss` rewritten to another's is then checked with the
///    other's keys → `invalid_signature`.
/// 4. Key choice (JWK Set only): `kid` matching no key → `invalid_signature`
///    (for fetched keys, once the set was fetched again — see
///    [`verify_signature_latest`](Self::verify_signature_latest)); no `kid` →
///    the set's only key, `malformed` if it has several. Fetched keys not
///    loaded yet → [`Unverified::NoKeys`].
/// 5. Signature → `invalid_signature`; undecodable claims or no `exp` →
///    `malformed`.
/// 6. `iss` → `invalid_issuer`, then `aud` → `invalid_audience`.
/// 7. Only in [`verify`](Self::verify): `exp` → `expired`, then `nbf` or
///    `iat` → `not_yet_valid`. A token is expired from the second
///    `exp + leeway` on (RFC 7519: valid only before `exp`) and not yet valid
///    before `nbf - leeway` or `iat - leeway`. NumericDates may be
///    fractional; they are truncated.
#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<Issuer>,
    /// Several issuers: the token's `iss` chooses.
    routed: bool,
}

impl Verifier {
    /// Whether tokens whose `iss` is `iss` can verify: some configured
    /// issuer names it, or one checks no `iss` at all.
    pub fn trusts_issuer(&self, iss: &str) -> bool {
        self.issuers
            .iter()
            .any(|i| super::issuers::accepts(i.iss.as_deref(), iss))
    }
}

/// One trusted issuer: its keys and checks.
#[derive(Debug)]
struct Issuer {
    iss: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    keys: IssuerKeys,
}

#[derive(Debug)]
enum IssuerKeys {
    /// Parsed at start-up, fixed for the life of the process.
    Local(KeyRing),
    /// Fetched from the issuer and kept current.
    Remote(Arc<RemoteKeys>),
}

/// The key a token was verified with: its issuer and the key's serial
/// number. A verification stays good while [`Verifier::holds`] the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    issuer: usize,
    serial: u64,
}

/// An issuer whose fetched keys lack a token's `kid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind(usize);

/// Why a token was not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// It is not valid, for this reason.
    Inactive(Reason),
    /// Its issuer's keys have not loaded yet: no answer can be given.
    NoKeys,
    /// Its `kid` is not in its issuer's fetched set: [`Verifier::catch_up`]
    /// may fetch it; until then it is `invalid_signature` ([`settled`]).
    ///
    /// [`settled`]: Self::settled
    UnknownKid(Behind),
}

impl Unverified {
    /// The final answer once catching up is over: an unknown `kid` is
    /// `invalid_signature`.
    pub fn settled(self) -> Self {
        match self {
            Self::UnknownKid(_) => Self::Inactive(Reason::InvalidSignature),
            other => other,
        }
    }

    /// As a reason, for callers that only have keys loaded at start-up
    /// (an issuer without keys fails closed: `invalid_signature`).
    pub fn reason(self) -> Reason {
        match self {
            Self::Inactive(reason) => reason,
            Self::NoKeys | Self::UnknownKid(_) => Reason::InvalidSignature,
        }
    }
}

impl From<Reason> for Unverified {
    fn from(reason: Reason) -> Self {
        Self::Inactive(reason)
    }
}

/// The state of one issuer's keys, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyStatus {
    /// The issuer (or JWKS URL).
    pub issuer: String,
    /// Whether its keys are usable (local keys always are).
    pub loaded: bool,
    /// Keys held.
    pub keys: usize,
    /// Seconds since they were last fetched; `None` for local keys and
    /// before the first fetch.
    pub age_secs: Option<f64>,
}

impl Verifier {
    /// Reads and parses the configured key(s); errors name the bad setting.
    /// Keys fetched from an identity provider load in the background (a
    /// task per issuer, on the current tokio runtime): until they do,
    /// [`is_ready`](Self::is_ready) is false and their tokens are
    /// [`Unverified::NoKeys`].
    pub fn new(settings: &KeySettings) -> Result<Self, KeyError> {
        let specs = issuer_specs(settings)?;
        let mut issuers = Vec::with_capacity(specs.len());
        for spec in specs {
            let keys = match spec.keys {
                KeySpec::Secret(secret) => IssuerKeys::Local(KeyRing::load_local(
                    Source::Secret(&secret),
                    spec.algorithm,
                    spec.allowed.as_deref(),
                )?),
                KeySpec::PublicKey(path) => IssuerKeys::Local(KeyRing::load_local(
                    Source::PublicKey(&path),
                    spec.algorithm,
                    spec.allowed.as_deref(),
                )?),
                KeySpec::JwksFile(path) => IssuerKeys::Local(KeyRing::load_local(
                    Source::Jwks(&path),
                    spec.algorithm,
                    spec.allowed.as_deref(),
                )?),
                KeySpec::Remote(endpoint) => {
                    let label = match (&spec.iss, &endpoint) {
                        (Some(iss), _) => iss.clone(),
                        (None, Endpoint::Jwks(url) | Endpoint::Discovery(url)) => url.clone(),
                    };
                    let remote = Arc::new(RemoteKeys::new(
                        label,
                        endpoint,
                        spec.algorithm,
                        spec.allowed,
                    ));
                    if tokio::runtime::Handle::try_current().is_ok() {
                        remote.spawn_refresh();
                    }
                    IssuerKeys::Remote(remote)
                }
            };
            issuers.push(Issuer {
                iss: spec.iss,
                audience: spec.audience,
                leeway_secs: spec.leeway_secs,
                keys,
            });
        }
        Ok(Self {
            routed: issuers.len() > 1,
            issuers,
        })
    }

    /// Full check as of `now` (unix seconds), with the keys as they are
    /// (no fetch).
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, Reason> {
        let (verified, key) = self.attempt(token).map_err(Unverified::reason)?;
        self.check_time(&verified, key, now)?;
        Ok(verified)
    }

    /// Signature (and iss/aud) only, with the keys as they are (no fetch);
    /// expiry and nbf are not checked.
    pub fn verify_signature(&self, token: &str) -> Result<VerifiedToken, Reason> {
        self.attempt(token)
            .map(|(verified, _)| verified)
            .map_err(Unverified::reason)
    }

    /// Full check as of `now`; a `kid` its issuer's fetched set lacks makes
    /// the set fetched again first (see [`catch_up`](Self::catch_up)).
    pub async fn verify_latest(&self, token: &str, now: i64) -> Result<VerifiedToken, Unverified> {
        let (verified, key) = self.verify_signature_latest(token).await?;
        self.check_time(&verified, key, now)?;
        Ok(verified)
    }

    /// Signature (and iss/aud) only — used to revoke tokens that may
    /// already be expired — catching up with the issuer's keys as
    /// [`verify_latest`](Self::verify_latest) does. Never
    /// [`Unverified::UnknownKid`].
    pub async fn verify_signature_latest(
        &self,
        token: &str,
    ) -> Result<(VerifiedToken, KeyRef), Unverified> {
        match self.attempt(token) {
            Err(Unverified::UnknownKid(behind)) if self.catch_up(behind).await => {
                self.attempt(token).map_err(Unverified::settled)
            }
            other => other.map_err(Unverified::settled),
        }
    }

    /// One verification of the signature (and iss/aud) with the keys as
    /// they are, and the key that verified it.
    pub fn attempt(&self, token: &str) -> Result<(VerifiedToken, KeyRef), Unverified> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Reason::Malformed.into());
        }
        let header = peek_header(token)?;
        let alg = Algorithm::from_str(&header.alg).map_err(|_| Reason::UnsupportedAlgorithm)?;
        let index = self.route(token)?;
        let issuer = &self.issuers[index];
        let remote_ring;
        let ring = match &issuer.keys {
            IssuerKeys::Local(ring) => ring,
            IssuerKeys::Remote(remote) => {
                remote_ring = remote.ring();
                remote_ring.as_deref().ok_or(Unverified::NoKeys)?
            }
        };
        let key = ring
            .select(header.kid.as_deref())
            .map_err(|miss| match miss {
                Miss::UnknownKid => match issuer.keys {
                    IssuerKeys::Remote(_) => Unverified::UnknownKid(Behind(index)),
                    IssuerKeys::Local(_) => Reason::InvalidSignature.into(),
                },
                Miss::Refused(reason) => reason.into(),
            })?;
        if alg != key.alg {
            return Err(Reason::InvalidSignature.into());
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
        if let Some(iss) = &issuer.iss
            && claims.iss.as_deref() != Some(iss.as_str())
        {
            return Err(Reason::InvalidIssuer.into());
        }
        if let Some(audience) = &issuer.audience
            && !audience_contains(claims.aud.as_ref(), audience)
        {
            return Err(Reason::InvalidAudience.into());
        }
        let twin_token_id = match claims.jti {
            None => ecdsa_twin(token, key.alg).map(|twin| token_id(&twin, None)),
            Some(_) => None,
        };
        let key = KeyRef {
            issuer: index,
            serial: key.serial,
        };
        let verified = VerifiedToken {
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
            issuer_id: claims
                .iss
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(issuer_id),
            iss: claims.iss,
            aud: claims.aud,
        };
        Ok((verified, key))
    }

    /// The issuer whose keys verify `token`: the only one, or the one its
    /// unverified `iss` names.
    fn route(&self, token: &str) -> Result<usize, Unverified> {
        if !self.routed {
            return Ok(0);
        }
        #[derive(Deserialize)]
        struct Iss {
            #[serde(default)]
            iss: Option<String>,
        }
        let payload = token.split('.').nth(1).ok_or(Reason::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Reason::Malformed)?;
        let claims: Iss = serde_json::from_slice(&json).map_err(|_| Reason::Malformed)?;
        let iss = claims.iss.ok_or(Reason::InvalidIssuer)?;
        self.issuers
            .iter()
            .position(|issuer| issuer.iss.as_deref() == Some(iss.as_str()))
            .ok_or(Unverified::Inactive(Reason::InvalidIssuer))
    }

    /// An issuer's fetched keys lack a token's `kid`: fetches them again
    /// (at most once per 10 s per issuer, concurrent callers sharing the
    /// fetch; waiting at most 3 s). True when the token is worth verifying
    /// again (always, for fetched keys: the set may have changed meanwhile).
    pub async fn catch_up(&self, behind: Behind) -> bool {
        match self.issuers.get(behind.0).map(|issuer| &issuer.keys) {
            Some(IssuerKeys::Remote(remote)) => {
                remote.catch_up().await;
                true
            }
            _ => false,
        }
    }

    /// Whether the key that verified a token is still trusted: always for
    /// local keys; for fetched keys, while the issuer still publishes it (a
    /// key removed from the set no longer verifies anything, including
    /// tokens verified with it before).
    pub fn holds(&self, key: KeyRef) -> bool {
        match self.issuers.get(key.issuer).map(|issuer| &issuer.keys) {
            Some(IssuerKeys::Local(_)) => true,
            Some(IssuerKeys::Remote(remote)) => remote
                .ring()
                .as_deref()
                .is_some_and(|ring| ring.holds(key.serial)),
            None => false,
        }
    }

    /// The time rules of [`verify`](Self::verify) (`exp`, then `nbf` and
    /// `iat`, with the leeway of the issuer of `key`) for a token whose
    /// signature was verified with `key`.
    pub fn check_time(
        &self,
        verified: &VerifiedToken,
        key: KeyRef,
        now: i64,
    ) -> Result<(), Reason> {
        let leeway = self
            .issuers
            .get(key.issuer)
            .map_or(0, |issuer| issuer.leeway_secs);
        let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
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

    /// The largest clock skew allowed on `exp` and `nbf` by any issuer, in
    /// seconds (what deny-list entries must outlive).
    pub fn leeway_secs(&self) -> u64 {
        self.issuers
            .iter()
            .map(|issuer| issuer.leeway_secs)
            .max()
            .unwrap_or(0)
    }

    /// Whether every issuer's keys are usable (fetched ones loaded once).
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|issuer| match &issuer.keys {
            IssuerKeys::Local(_) => true,
            IssuerKeys::Remote(remote) => remote.is_loaded(),
        })
    }

    /// Whether any issuer's keys are fetched from an identity provider.
    pub fn fetches_keys(&self) -> bool {
        self.issuers
            .iter()
            .any(|issuer| matches!(issuer.keys, IssuerKeys::Remote(_)))
    }

    /// Each issuer's keys as of `now_ms` (unix ms).
    pub fn key_status(&self, now_ms: i64) -> Vec<KeyStatus> {
        self.issuers
            .iter()
            .map(|issuer| match &issuer.keys {
                IssuerKeys::Local(ring) => KeyStatus {
                    issuer: issuer.iss.clone().unwrap_or_else(|| "local".to_owned()),
                    loaded: true,
                    keys: ring.keys.len(),
                    age_secs: None,
                },
                IssuerKeys::Remote(remote) => KeyStatus {
                    issuer: remote.label().to_owned(),
                    loaded: remote.is_loaded(),
                    keys: remote.key_count(),
                    age_secs: remote.age_secs(now_ms),
                },
            })
            .collect()
    }

    /// Fetches every issuer's keys now; the first error. For one-shot
    /// commands (`revokd check`), which have no time to wait for the
    /// background refresh.
    pub async fn load_now(&self) -> Result<(), FetchError> {
        for issuer in &self.issuers {
            if let IssuerKeys::Remote(remote) = &issuer.keys
                && !remote.is_loaded()
            {
                remote.refresh().await?;
            }
        }
        Ok(())
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
