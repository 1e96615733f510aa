//! [`KeySettings`] (the key configuration as read) and [`KeyError`] (why it
//! cannot be used, or why a token cannot be minted).

use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::Algorithm;

/// Key material and checks, as read from configuration.
#[derive(Clone, Default)]
pub struct KeySettings {
    /// `JWT_SECRET`: HMAC secret, used as its UTF-8 bytes. Never printed.
    pub secret: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE`: PEM public key (RSA, EC or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// `JWT_JWKS_FILE`: a JWK Set whose keys are chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// `JWT_OIDC_ISSUER`: keys found by OIDC discovery from this issuer,
    /// which `iss` must equal.
    pub oidc_issuer: Option<String>,
    /// `JWT_JWKS_URL`: keys fetched from this JWK Set URL.
    pub jwks_url: Option<String>,
    /// `REVOKD_ISSUERS_FILE`: several issuers, from a TOML file.
    pub issuers_file: Option<PathBuf>,
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
            .field("oidc_issuer", &self.oidc_issuer)
            .field("jwks_url", &self.jwks_url)
            .field("issuers_file", &self.issuers_file)
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
    /// None of the key settings is set.
    #[error(
        "no JWT key configured: set one of JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWT_JWKS_FILE, \
         JWT_OIDC_ISSUER, JWT_JWKS_URL or REVOKD_ISSUERS_FILE"
    )]
    NoKey,
    /// Minting needs a local key; only an identity provider's is configured.
    #[error(
        "revokd mint signs with a local key (JWT_SECRET, or JWT_PUBLIC_KEY_FILE/JWT_JWKS_FILE \
         with JWT_PRIVATE_KEY_FILE); the identity provider's keys verify only"
    )]
    NoLocalKey,
    /// The issuers file is unusable.
    #[error("invalid issuers file {}: {reason}", path.display())]
    IssuersFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (no key material).
        reason: String,
    },
    /// An identity provider setting is unusable.
    #[error("{setting}: {reason}")]
    Remote {
        /// The setting (`JWT_OIDC_ISSUER`, `JWT_JWKS_URL`, or an entry of the issuers file).
        setting: String,
        /// What is wrong.
        reason: String,
    },
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
