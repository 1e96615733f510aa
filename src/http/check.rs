//! Read path endpoints: `POST /v1/check`, `GET /v1/auth`, `POST /introspect`.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use revokd_jobs::now_unix;
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::ApiError,
    extract::{FormBody, JsonBody},
};
use crate::{check::Verdict, token::VerifiedToken};

/// The read-path routes that take a body.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/check", post(check))
        .route("/introspect", post(introspect))
}

/// `GET /v1/auth`, the gateways' hot path: it reads no body, so it is served
/// outside the body-limit and trace layers (it logs its 503s itself).
pub fn auth_router() -> Router<AppState> {
    Router::new().route("/v1/auth", get(forward_auth))
}

/// `POST /v1/check` body.
#[derive(Deserialize)]
pub struct CheckRequest {
    token: String,
    token_type_hint: Option<String>,
}

/// Checks `token` as a refresh token when the hint says so, else as an
/// access token.
async fn verdict(state: &AppState, token: &str, hint: Option<&str>) -> Verdict {
    let now = now_unix();
    if hint == Some("refresh_token") {
        state.refresh_checker().check(token, now).await
    } else {
        state.checker.check(token, now).await
    }
}

#[derive(Serialize)]
struct ActiveBody<'a> {
    active: bool,
    sub: Option<&'a str>,
    jti: Option<&'a str>,
    token_id: &'a str,
    iat: Option<i64>,
    exp: i64,
}

#[derive(Serialize)]
struct InactiveBody {
    active: bool,
    reason: &'static str,
}

/// Passes when `REVOKD_CHECK_KEYS` is unset or the request carries one of
/// its keys; checked before the body is read.
pub struct CheckKey;

impl FromRequestParts<AppState> for CheckKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.check_keys.is_empty() {
            return Ok(CheckKey);
        }
        state
            .check_keys
            .authenticate(&parts.headers)
            .map(|_| CheckKey)
    }
}

async fn check(
    State(state): State<AppState>,
    _key: CheckKey,
    JsonBody(req): JsonBody<CheckRequest>,
) -> Response {
    match verdict(&state, &req.token, req.token_type_hint.as_deref()).await {
        Verdict::Active(t) => Json(ActiveBody {
            active: true,
            sub: t.sub.as_deref(),
            jti: t.jti.as_deref(),
            token_id: &t.token_id,
            iat: t.iat,
            exp: t.exp,
        })
        .into_response(),
        Verdict::Inactive(reason) => Json(InactiveBody {
            active: false,
            reason: reason.as_str(),
        })
        .into_response(),
        Verdict::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(InactiveBody {
                active: false,
                reason: "unavailable",
            }),
        )
            .into_response(),
    }
}

static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
static X_AUTH_TOKEN_ID: HeaderName = HeaderName::from_static("x-auth-token-id");

async fn forward_auth(State(state): State<AppState>, request: Request) -> Response {
    // The whole request is the extractor, so the token is read in place.
    let (parts, _) = request.into_parts();
    let Some(token) = bearer(&parts.headers) else {
        return ApiError::unauthorized("missing or malformed Bearer token")
            .with_challenge(
                r#"Bearer error="invalid_request", error_description="missing bearer token""#,
            )
            .into_response();
    };
    match state.checker.check(token, now_unix()).await {
        Verdict::Active(t) => {
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            if let Some(sub) = &t.sub {
                out.insert(X_AUTH_SUBJECT.clone(), header_safe(sub));
            }
            out.insert(X_AUTH_TOKEN_ID.clone(), header_safe(&t.token_id));
            response
        }
        Verdict::Inactive(reason) => {
            ApiError::unauthorized(format!("token is not active: {}", reason.as_str()))
                .with_challenge(format!(
                    r#"Bearer error="invalid_token", error_description="{}""#,
                    reason.as_str()
                ))
                .into_response()
        }
        Verdict::Unavailable => {
            // As the trace layer of the other routes reports a 5xx.
            tracing::error!(
                path = "/v1/auth",
                status = 503,
                "no store can answer the check"
            );
            ApiError::unavailable("no store can answer").into_response()
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A header value for any string: UTF-8 passes as is, control characters
/// are percent-encoded.
fn header_safe(value: &str) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| {
        let encoded: String = value
            .chars()
            .map(|c| {
                if c.is_control() || c == '%' {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        HeaderValue::from_bytes(encoded.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

/// RFC 7662 request.
#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: String,
    token_type_hint: Option<String>,
}

/// RFC 7662: members the token does not have are left out.
#[derive(Serialize)]
struct IntrospectActive<'a> {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a serde_json::Value>,
    token_type: &'static str,
}

impl<'a> From<&'a VerifiedToken> for IntrospectActive<'a> {
    fn from(t: &'a VerifiedToken) -> Self {
        Self {
            active: true,
            sub: t.sub.as_deref(),
            exp: t.exp,
            iat: t.iat,
            jti: t.jti.as_deref(),
            iss: t.iss.as_deref(),
            aud: t.aud.as_ref(),
            token_type: "access_token",
        }
    }
}

async fn introspect(
    State(state): State<AppState>,
    _key: CheckKey,
    FormBody(req): FormBody<IntrospectRequest>,
) -> Response {
    let hint = req.token_type_hint.as_deref();
    match verdict(&state, &req.token, hint).await {
        Verdict::Active(t) => {
            let mut body = IntrospectActive::from(&*t);
            if hint == Some("refresh_token") {
                body.token_type = "refresh_token";
            }
            Json(body).into_response()
        }
        Verdict::Inactive(_) => Json(serde_json::json!({ "active": false })).into_response(),
        Verdict::Unavailable => ApiError::unavailable("no store can answer").into_response(),
    }
}
