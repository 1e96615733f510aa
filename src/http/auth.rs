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
            // UTF-8 (RFC 7617), or else ISO-8859-1, which some clients
            // (Authlib, browsers of old) use.
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .map(|bytes| {
                    String::from_utf8(bytes).unwrap_or_else(|not_utf8| {
                        not_utf8.into_bytes().into_iter().map(char::from).collect()
                    })
                })
                .map_err(|_| ApiError::unauthorized("malformed Basic credentials"))?;
            let (name, key) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            // RFC 6749 2.3.1: OAuth clients form-urlencode id and secret
            // before Basic encoding; many other clients do not. Both forms
            // are tried (each in constant time).
            let (name_decoded, key_decoded) = (form_decode(name), form_decode(key));
            let decoded = self.named(&name_decoded, &key_decoded);
            // Only when decoding changed something is there a second form.
            let changed = name_decoded != name || key_decoded != key;
            let raw = changed.then(|| self.named(name, key)).flatten();
            return decoded
                .or(raw)
                .ok_or_else(|| ApiError::unauthorized("invalid API key"));
        }
        Err(ApiError::unauthorized("unsupported Authorization scheme"))
    }

    /// The key named `name` if `key` is its key.
    fn named(&self, name: &str, key: &str) -> Option<&str> {
        self.find(key).filter(|found| *found == name)
    }

    /// OAuth client authentication (RFC 6749 2.3.1) for `/revoke` and
    /// `/introspect`: the `Authorization` header as [`authenticate`]
    /// (`Self::authenticate`) reads it, or else `client_id` and
    /// `client_secret` from the form body. A failure is 401
    /// `invalid_client` with `WWW-Authenticate: Basic realm="revokd"`.
    pub fn authenticate_client(
        &self,
        headers: &HeaderMap,
        client_id: Option<&str>,
        client_secret: Option<&str>,
    ) -> Result<&str, ApiError> {
        let found = match (
            headers.contains_key(header::AUTHORIZATION),
            client_id,
            client_secret,
        ) {
            (true, _, _) => self.authenticate(headers).ok(),
            (false, Some(id), Some(secret)) => self.named(id, secret),
            _ => None,
        };
        found.ok_or_else(|| {
            let message = if headers.contains_key(header::AUTHORIZATION) || client_id.is_some() {
                "client authentication failed"
            } else {
                "client authentication required: HTTP Basic, or client_id and client_secret"
            };
            ApiError::invalid_client(message)
        })
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a
/// space, `%XX` a byte); a value that is not valid after decoding is kept
/// as it is.
fn form_decode(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['+', '%']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' if tail.len() >= 2 => match std::str::from_utf8(&tail[..2])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    bytes.push(byte);
                    rest = &tail[2..];
                    continue;
                }
                None => bytes.push(b),
            },
            _ => bytes.push(b),
        }
        rest = tail;
    }
    String::from_utf8(bytes).map_or(std::borrow::Cow::Borrowed(value), std::borrow::Cow::Owned)
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
    fn basic_credentials_are_form_urldecoded_and_raw_ones_still_pass() {
        let ring = KeyRing::parse("my app:a+b/c=d%e&f").unwrap();
        let basic = |s: &str| {
            headers(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            ))
        };
        // RFC 6749 2.3.1: encoded first (space as +, reserved as %XX).
        let encoded = basic("my+app:a%2Bb%2Fc%3Dd%25e%26f");
        assert_eq!(ring.authenticate(&encoded).unwrap(), "my app");
        assert_eq!(
            ring.authenticate(&basic("my app:a+b/c=d%e&f")).unwrap(),
            "my app"
        );
        assert!(ring.authenticate(&basic("my+app:wrong")).is_err());
        assert_eq!(form_decode("a%2"), "a%2", "a cut escape stays as it is");
        assert_eq!(form_decode("%C3%A9"), "é");
        let latin1 = base64::engine::general_purpose::STANDARD.encode(b"my app:a+b/c=d%e&f");
        assert_eq!(
            ring.authenticate(&headers(&format!("Basic {latin1}")))
                .unwrap(),
            "my app"
        );
    }

    #[test]
    fn client_credentials_in_the_form_body_authenticate_a_client() {
        let ring = KeyRing::parse("app:s3cret").unwrap();
        let none = HeaderMap::new();
        assert_eq!(
            ring.authenticate_client(&none, Some("app"), Some("s3cret"))
                .unwrap(),
            "app"
        );
        let failed = ring
            .authenticate_client(&none, Some("app"), Some("nope"))
            .unwrap_err();
        assert_eq!(
            (failed.status.as_u16(), failed.code),
            (401, "invalid_client")
        );
        assert_eq!(failed.challenge.as_deref(), Some(r#"Basic realm="revokd""#));
        assert!(ring.authenticate_client(&none, None, None).is_err());
        assert!(
            ring.authenticate_client(&headers("Bearer nope"), Some("app"), Some("s3cret"))
                .is_err(),
            "a header that fails is not rescued by the body"
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
