//! Read path endpoints: `POST /v1/check`, `GET /v1/auth`, `POST /introspect`,
//! and the gateways' decision `/v1/auth` shares with the gRPC ext_authz
//! service.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use revokd_jobs::now_unix;
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, LenientForm, no_token},
};
use crate::{
    read::checker::{Checker, Verdict},
    token::VerifiedToken,
};

/// The read-path routes that take a body.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/check", post(check))
        .route("/introspect", post(introspect))
}

/// `/v1/auth`, the gateways' hot path: it reads no body, so it is served
/// outside the body-limit and trace layers (it logs its 503s itself). Any
/// method and any path under it: Envoy's ext_authz HTTP service calls it
/// with the client's method and path appended (`POST /v1/auth/orders?a=1`).
pub fn auth_router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth", any(forward_auth))
        .route("/v1/auth/", any(forward_auth))
        .route("/v1/auth/{*path}", any(forward_auth))
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
        Verdict::KeysUnavailable => ApiError::keys_unavailable().into_response(),
    }
}

/// The subject header of an allowed request.
pub static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
/// The token-id header of an allowed request.
pub static X_AUTH_TOKEN_ID: HeaderName = HeaderName::from_static("x-auth-token-id");

async fn forward_auth(State(state): State<AppState>, request: Request) -> Response {
    // The whole request is the extractor, so the token is read in place.
    let authorization = request.headers().get(header::AUTHORIZATION);
    let authorization = authorization.and_then(|v| v.to_str().ok());
    auth_decision(&state.checker, authorization, "/v1/auth").await
}

/// The gateways' decision for a request whose `Authorization` header is
/// `authorization`, as `/v1/auth` answers it (the gRPC ext_authz service
/// translates the same answer): 200 with `X-Auth-Subject` and
/// `X-Auth-Token-Id`; 401 with a Bearer challenge (no error code without
/// credentials, RFC 6750 3.1); 503 when no store can answer. `route`
/// names the caller in the log of a 503.
pub async fn auth_decision(
    checker: &Checker,
    authorization: Option<&str>,
    route: &'static str,
) -> Response {
    let Some(token) = authorization.and_then(bearer) else {
        return ApiError::unauthorized("missing or malformed Bearer token")
            .with_challenge(r#"Bearer realm="revokd""#)
            .into_response();
    };
    match checker.check(token, now_unix()).await {
        Verdict::Active(t) => {
            let mut response = StatusCode::OK.into_response();
            let out = response.headers_mut();
            // Always both, so a gateway that copies them never passes on a
            // value its client sent.
            out.insert(
                X_AUTH_SUBJECT.clone(),
                header_safe(t.sub.as_deref().unwrap_or("")),
            );
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
            tracing::error!(path = route, status = 503, "no store can answer the check");
            ApiError::unavailable("no store can answer").into_response()
        }
        Verdict::KeysUnavailable => {
            tracing::error!(
                path = route,
                status = 503,
                "the token issuer's keys have not loaded yet"
            );
            ApiError::keys_unavailable().into_response()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (any case of the
/// scheme).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A header value for any string, ASCII and unambiguous: visible ASCII
/// other than `%` passes unchanged (`alice@example.com`, `auth0|42`); `%`,
/// space, control characters and every byte of a non-ASCII character
/// become `%XX` — so a client decodes it with any percent-decoder.
pub fn header_safe(value: &str) -> HeaderValue {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'%';
    if value.bytes().all(plain)
        && let Ok(header) = HeaderValue::from_str(value)
    {
        return header;
    }
    let mut encoded = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if plain(b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// RFC 7662 request, with the client's credentials when it sends them in
/// the body (`client_secret_post`).
#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: Option<String>,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
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
            // RFC 6749 7.1: the access token type revokd checks.
            token_type: "Bearer",
        }
    }
}

/// RFC 7662. Client authentication (when `REVOKD_CHECK_KEYS` is set) as
/// RFC 6749 2.3.1 has it. `token_type_hint` is only a hint (RFC 7662 2.1):
/// a token the refresh-token registry does not know is looked up as an
/// access token.
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    LenientForm(req): LenientForm<IntrospectRequest>,
) -> Result<Response, ApiError> {
    if !state.check_keys.is_empty() {
        let (id, secret) = req.as_ref().map_or((None, None), |r| {
            (r.client_id.as_deref(), r.client_secret.as_deref())
        });
        state.check_keys.authenticate_client(&headers, id, secret)?;
    }
    let req = req.ok_or_else(no_token)?;
    let token = req.token.ok_or_else(no_token)?;
    let mut refresh = req.token_type_hint.as_deref() == Some("refresh_token");
    let mut verdict = verdict(&state, &token, refresh.then_some("refresh_token")).await;
    if refresh && verdict == Verdict::Inactive(crate::token::Reason::Unknown) {
        refresh = false;
        verdict = state.checker.check(&token, now_unix()).await;
    }
    Ok(match verdict {
        Verdict::Active(t) => {
            let mut body = IntrospectActive::from(&*t);
            if refresh {
                body.token_type = "refresh_token";
            }
            Json(body).into_response()
        }
        Verdict::Inactive(_) => Json(serde_json::json!({ "active": false })).into_response(),
        Verdict::Unavailable => ApiError::unavailable("no store can answer").into_response(),
        Verdict::KeysUnavailable => ApiError::keys_unavailable().into_response(),
    })
}
