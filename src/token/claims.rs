//! [`Claims`]: the registered claims revokd reads from a token's payload, and
//! how each is decoded (an empty `jti` is absent, a numeric `sub` is its
//! decimal string, a fractional NumericDate is truncated).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The claims revokd reads; all optional here so that a missing one is
/// reported precisely. A claim of the wrong type makes the token `malformed`.
#[derive(Deserialize)]
pub(super) struct Claims {
    #[serde(default, deserialize_with = "non_empty")]
    pub(super) jti: Option<String>,
    #[serde(default, deserialize_with = "string_or_integer")]
    pub(super) sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub(super) iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub(super) nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub(super) exp: Option<i64>,
    #[serde(default)]
    pub(super) iss: Option<String>,
    #[serde(default)]
    pub(super) aud: Option<Value>,
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
