//! Body extractors whose every rejection is the JSON error shape: 413 over
//! 16 KiB, 408 past the body timeout, 400 for a body that does not parse.
//! Unknown fields are ignored.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 16 * 1024;

/// A JSON body.
pub struct JsonBody<T>(pub T);

async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    read_limited(req, state, BODY_LIMIT).await
}

/// The whole body of a route whose `DefaultBodyLimit` is `limit` (413 in
/// the JSON shape beyond it).
pub async fn read_limited<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large_for(limit)
        } else if super::server::is_body_timeout(&rejection) {
            ApiError::body_timeout()
        } else {
            ApiError::bad_request("invalid_request", "cannot read the request body")
        }
    })
}

/// A JSON body that may be absent (an empty body).
pub struct OptionalJsonBody<T>(pub Option<T>);

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's messages can quote the input; say where, not what.
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            _ => "the body is not valid JSON",
        };
        ApiError::bad_request(
            "invalid_request",
            format!("{what} (line {}, column {})", e.line(), e.column()),
        )
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_json(&read(req, state).await?).map(JsonBody)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// A form body that may not parse: `None` then. For the OAuth endpoints,
/// which must authenticate the client (whose credentials may be in the
/// form) before they can say what else is wrong with the request.
pub struct LenientForm<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for LenientForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(req, state).await?;
        Ok(LenientForm(serde_urlencoded::from_bytes(&bytes).ok()))
    }
}

/// The body is not a form with a `token` field.
pub fn no_token() -> ApiError {
    ApiError::bad_request(
        "invalid_request",
        "the body is not a valid form with a token field",
    )
}
