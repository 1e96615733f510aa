//! The one HTTP error type: a status and a stable code, rendered as
//! `{"error": "<code>", "message": "<human text>"}`. 5xx bodies say nothing internal.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human text; never contains a token or internal detail.
    pub message: String,
    /// `WWW-Authenticate` value, for 401s.
    pub challenge: Option<String>,
    /// `Retry-After` seconds, for 429s and 503s.
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: missing, malformed or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 401 for an OAuth client that failed to authenticate (RFC 6749 5.2).
    pub fn invalid_client(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", message)
            .with_challenge(r#"Basic realm="revokd""#)
    }

    /// 413: body over the limit.
    pub fn too_large() -> Self {
        Self::too_large_for(crate::http::extract::BODY_LIMIT)
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large_for(limit: usize) -> Self {
        let size = match limit {
            l if l >= 1 << 20 && l % (1 << 20) == 0 => format!("{} MiB", l >> 20),
            l if l % 1024 == 0 => format!("{} KiB", l >> 10),
            l => format!("{l} bytes"),
        };
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {size}"),
        )
    }

    /// 413: a batch carries more than `max` items.
    pub fn too_many_items(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!("a batch carries at most {max} items"),
        )
    }

    /// 408: the request body did not arrive in time.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "request body not received within the body timeout",
        )
    }

    /// 414: the URI is over the limit.
    pub fn uri_too_long() -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "request URI is longer than 8 KiB",
        )
    }

    /// 431: the header fields are over the limit.
    pub fn headers_too_large() -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "request header fields are larger than 16 KiB",
        )
    }

    /// 503: no store can answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 with `Retry-After`: the token's issuer's keys have not loaded
    /// yet (the identity provider has not answered since start-up).
    pub fn keys_unavailable() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                "the token issuer's keys have not loaded yet",
            )
        }
    }

    /// A token refused at verification, named `which` in the message: 400
    /// `invalid_token`, or 503 while its issuer's keys have not loaded.
    pub fn unverified(which: &str, unverified: crate::token::Unverified) -> Self {
        match unverified {
            crate::token::Unverified::NoKeys => Self::keys_unavailable(),
            other => Self::bad_request(
                "invalid_token",
                format!("{which} rejected: {}", other.reason().as_str()),
            ),
        }
    }

    /// 429 with `Retry-After`: too many requests wait for their jobs.
    pub fn too_many_waiters() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_waiters",
                "too many requests are waiting for their jobs; retry, or submit without wait=true",
            )
        }
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                error: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

impl From<crate::write::submit::SubmitError> for ApiError {
    fn from(error: crate::write::submit::SubmitError) -> Self {
        match error {
            crate::write::submit::SubmitError::Unavailable => Self::unavailable(error.to_string()),
            crate::write::submit::SubmitError::Invalid(_)
            | crate::write::submit::SubmitError::Rejected(_) => {
                Self::bad_request("invalid_request", error.to_string())
            }
            crate::write::submit::SubmitError::TooManyWaiters(_) => Self::too_many_waiters(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_render_the_json_shape_with_their_status() {
        let response = ApiError::too_large().into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert!(body["message"].is_string());
    }

    #[test]
    fn unauthorized_carries_its_challenge() {
        let response = ApiError::unauthorized("no")
            .with_challenge("Bearer")
            .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
