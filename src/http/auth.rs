//! API keys: `name:key,...` lists, compared in constant time.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};

/// The name of the write-API key a request authenticated with
/// (`Authorization: Bearer <key>` or Basic `name:key`).
pub struct WriteKey(pub String);

impl FromRequestParts<AppState> for WriteKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.api_keys.is_empty() {
            return Err(ApiError::unauthorized(
                "the write API is disabled: set REVOKD_API_KEYS",
            ));
        }
        state
            .api_keys
            .authenticate(&parts.headers)
            .map(|name| WriteKey(name.to_owned()))
    }
}

/// A set of named keys.
#[derive(Default)]
pub struct KeyRing {
    // (name, SHA-256 of key): hashing first makes every comparison the same
    // length, so timing reveals neither content nor length.
    keys: Vec<(String, [u8; 32])>,
}

impl KeyRing {
    /// Parses `name:key,...`; an empty string is an empty ring. An error
    /// names the entry by its position (1 = first, counting between commas),
    /// never by its text: an entry without `:` may be a bare key.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (index, item) in spec.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let (name, key) = item
                .split_once(':')
                .filter(|(n, k)| !n.is_empty() && !k.is_empty())
                .ok_or_else(|| {
                    format!(
                        "entry {} is not name:key (a non-empty name, a colon, a non-empty key)",
                        index + 1
                    )
                })?;
            keys.push((name.to_owned(), digest(key)));
        }
        Ok(Self { keys })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key equal to `presented`, checking every key in
    /// constant time.
    pub fn find(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, key) in &self.keys {
            if constant_time_eq(key, &presented) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Authenticates a request: `Authorization: Bearer <key>`, or HTTP Basic
    /// `name:key`. Returns the key's name.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let (scheme, credentials) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .find(credentials)
                .ok_or_else(|| ApiError::unauthorized("invalid API key"));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            let (name, key) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            return match self.find(key) {
                Some(found) if found == name => Ok(found),
                _ => Err(ApiError::unauthorized("invalid API key")),
            };
        }
        Err(ApiError::unauthorized("unsupported Authorization scheme"))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality (the `subtle` crate's).
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_resolve_the_key_name() {
        let ring = KeyRing::parse("app:s3cret, ops:other").unwrap();
        assert_eq!(ring.authenticate(&headers("Bearer s3cret")).unwrap(), "app");
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:other");
        assert_eq!(
            ring.authenticate(&headers(&format!("Basic {basic}")))
                .unwrap(),
            "ops"
        );
        let wrong_name = base64::engine::general_purpose::STANDARD.encode("app:other");
        assert!(
            ring.authenticate(&headers(&format!("Basic {wrong_name}")))
                .is_err()
        );
        assert!(ring.authenticate(&headers("Bearer nope")).is_err());
        assert!(ring.authenticate(&headers("Token s3cret")).is_err());
        assert!(ring.authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn comparison_is_subtles_constant_time_eq() {
        // The ring compares fixed-length digests with subtle::ConstantTimeEq.
        let a = digest("x");
        assert!(constant_time_eq(&a, &digest("x")));
        assert!(!constant_time_eq(&a, &digest("y")));
        assert_eq!(
            bool::from(a.ct_eq(&digest("x"))),
            constant_time_eq(&a, &digest("x"))
        );
    }

    #[test]
    fn malformed_specs_are_rejected_by_position_without_their_text() {
        let message = KeyRing::parse("app:ok, s3cret-without-name,x:y")
            .err()
            .unwrap();
        assert!(
            message.contains("entry 2") && !message.contains("s3cret"),
            "{message}"
        );
        assert!(KeyRing::parse("nocolon").is_err());
        assert!(KeyRing::parse(":key").is_err());
        assert!(KeyRing::parse("").unwrap().is_empty());
    }
}
