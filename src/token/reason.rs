//! [`Reason`]: why a token is not active, in the words the API answers with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a token is not active, as the API reports it (`"subject_revoked"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its `token_id` is on the deny-list.
    Revoked,
    /// Its subject was revoked after the token was issued.
    SubjectRevoked,
    /// Its issuer (`iss`) was revoked after the token was issued.
    IssuerRevoked,
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
            Self::IssuerRevoked => "issuer_revoked",
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
