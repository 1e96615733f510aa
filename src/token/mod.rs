//! JWT handling: the configured keys, the checks a token must pass to be
//! verified, its `token_id`, and minting tokens for `revokd mint`.
//!
//! Local keys are parsed once, in [`Verifier::new`] and [`Minter::new`];
//! an identity provider's keys are fetched in the background. Verifying
//! only reads memory, except for a `kid` the fetched keys lack. Time is a parameter (`now`, unix seconds). The raw token
//! is never stored, logged, nor put in an error or a `Debug` output.
//!
//! - `settings`: [`KeySettings`] as configured, and [`KeyError`].
//! - `keys`: the key ring — HMAC secret, PEM public key or JWK Set, parsed
//!   and checked at start-up, or fetched; the choice of key by `kid`.
//! - `issuers`: the trusted issuers as configured (`JWT_*`, or
//!   `REVOKD_ISSUERS_FILE`).
//! - `remote`: an identity provider's keys — discovery, JWKS fetch,
//!   periodic refresh, unknown-`kid` catch-up, last good set.
//! - `verify`: [`Verifier`], the checks in order, and [`VerifiedToken`].
//! - `claims`: how the registered claims are decoded.
//! - `ecdsa`: [`ecdsa_twin`], the other valid form of an ECDSA signature.
//! - `mint`: [`Minter`], signing with the configured key.
//! - `reason`: [`Reason`], why a token is not active.
//! - [`token_id`] is `revokd_jobs::token_id`, the one applications call: the
//!   service has no copy of its own.

mod claims;
mod ecdsa;
mod issuers;
mod keys;
mod mint;
mod reason;
mod remote;
mod settings;
mod verify;

#[cfg(test)]
mod tests;

pub use ecdsa::ecdsa_twin;
pub use issuers::trusts_issuer;
pub use mint::Minter;
pub use reason::Reason;
pub use remote::FetchError;
pub use settings::{KeyError, KeySettings};
pub use verify::{Behind, KeyRef, KeyStatus, MAX_TOKEN_LEN, Unverified, VerifiedToken, Verifier};

/// The identity a token is revoked under: its `jti` if present and non-empty
/// (an empty one would make every such token share one id) and storable
/// verbatim, `jti-sha256:<hex>` of a `jti` that is not, else `sha256:` and
/// the lowercase hex SHA-256 of the compact token. The same function
/// applications call as `revokd_jobs::token_id`.
pub use revokd_jobs::token_id;
