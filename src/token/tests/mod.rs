//! Unit tests of the token module, one file per part, with the fixtures and
//! helpers they share: throwaway keys under `tests/fixtures/keys`, a fixed
//! `NOW`, and settings for each kind of key.
#![allow(clippy::unwrap_used)]

mod claims;
mod ecdsa;
mod issuers;
mod keys;
mod mint;
mod reason;
mod verify;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use super::{KeySettings, Minter, Reason, VerifiedToken, Verifier};

const NOW: i64 = 1_750_000_000;
// 64 bytes: long enough for HS512 (RFC 7518 3.2).
const SECRET: &str = "test-secret-that-is-long-enough-for-hs512-0123456789abcdef0123456";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// A fixture's PEM bytes.
fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
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

/// Settings holding only the JWK Set `set`, written to a temp file `name`.
fn jwks_of(name: &str, set: &Value) -> KeySettings {
    KeySettings {
        jwks_file: Some(temp_file(name, &set.to_string())),
        ..Default::default()
    }
}

/// A token for `user-1` with a `jti`, minted at `NOW`.
fn mint(settings: &KeySettings, ttl_secs: i64) -> String {
    Minter::new(settings)
        .unwrap()
        .mint("user-1", ttl_secs, true, NOW)
        .unwrap()
}

/// A token for `user-1` without `jti`, minted at `NOW`.
fn mint_without_jti(settings: &KeySettings, ttl_secs: i64) -> String {
    Minter::new(settings)
        .unwrap()
        .mint("user-1", ttl_secs, false, NOW)
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

/// A token expiring a minute after `NOW`, signed with `key` as `alg`, its
/// header naming `kid`.
fn signed(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &serde_json::json!({"exp": NOW + 60}), key).unwrap()
}

/// `header.payload` (both as given, encoded or not) with a good HS256
/// signature by `SECRET`.
fn hs256_raw(header: &str, payload: &str) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let message = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
