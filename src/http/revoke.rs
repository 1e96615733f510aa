//! Write path endpoints: `POST /v1/revocations`,
//! `POST /v1/subjects/{sub}/revoke-all`, `POST /v1/issuers/{iss}/revoke-all`,
//! RFC 7009 `POST /revoke`.

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use revokd_jobs::{JobMeta, RevokeToken, now_unix};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    auth::WriteKey,
    error::ApiError,
    extract::{JsonBody, LenientForm, OptionalJsonBody, no_token},
};
use crate::store::Scope;
use crate::token::Unverified;
use crate::write::submit::Submitted;

/// The write routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/revocations", post(revoke))
        .route(
            super::revoke_batch::PATH,
            post(super::revoke_batch::batch)
                .layer(DefaultBodyLimit::max(super::revoke_batch::BODY_LIMIT)),
        )
        .route("/v1/subjects/{sub}/revoke-all", post(revoke_all))
        .route("/v1/issuers/{iss}/revoke-all", post(revoke_issuer))
        .route("/revoke", post(rfc7009_revoke))
}

/// `?wait=true`.
#[derive(Deserialize, Default)]
pub struct WaitQuery {
    wait: Option<String>,
}

impl WaitQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(_) => Err(ApiError::bad_request(
                "invalid_request",
                "wait must be true or false",
            )),
        }
    }
}

pub(super) fn wait_flag(
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<bool, ApiError> {
    query
        .map_err(|_| ApiError::bad_request("invalid_request", "malformed query string"))?
        .wait()
}

/// `POST /v1/revocations` body: a token, or its `jti` + `exp` (+ `sub`).
#[derive(Deserialize)]
pub struct RevocationRequest {
    token: Option<String>,
    jti: Option<String>,
    sub: Option<Value>,
    exp: Option<Value>,
    reason: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

impl RevocationRequest {
    /// The job this request asks for, validated.
    pub(super) async fn into_job(
        self,
        state: &AppState,
        requested_by: String,
    ) -> Result<RevokeToken, ApiError> {
        let job = match (self.token, self.jti) {
            (Some(_), Some(_)) => return Err(bad("give either token or jti, not both")),
            (Some(token), None) => {
                // The signature must hold; expiry does not matter for revoking.
                let (claims, _) = state
                    .checker
                    .verifier()
                    .verify_signature_latest(&token)
                    .await
                    .map_err(|r| ApiError::unverified("token", r))?;
                RevokeToken::new(claims.token_id, claims.subject_id, claims.exp)
            }
            (None, Some(jti)) => {
                if jti.is_empty() {
                    return Err(bad("jti must not be empty"));
                }
                // The id a check computes for a token with this jti.
                let jti = revokd_jobs::jti_id(&jti);
                let exp = match self.exp {
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .ok_or_else(|| bad("exp must be an integer (unix seconds)"))?,
                    Some(_) => return Err(bad("exp must be an integer (unix seconds)")),
                    None => return Err(bad("exp is required with jti")),
                };
                let sub = match self.sub {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => {
                        return Err(bad("sub must not be empty"));
                    }
                    Some(Value::String(s)) => Some(s),
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                    Some(_) => return Err(bad("sub must be a string")),
                };
                RevokeToken::new(jti, sub.as_deref().map(revokd_jobs::subject_id), exp)
            }
            (None, None) => return Err(bad("give token, or jti with exp")),
        };
        Ok(RevokeToken {
            reason: self.reason,
            meta: job.meta.clone().by(requested_by),
            ..job
        })
    }
}

pub(super) fn answer(submitted: Submitted, job_id: &str, mut body: Value) -> Response {
    let status = match submitted {
        Submitted::Queued => StatusCode::ACCEPTED,
        Submitted::Applied => StatusCode::OK,
        Submitted::Degraded => {
            body["degraded"] = Value::Bool(true);
            StatusCode::ACCEPTED
        }
        Submitted::Spooled => {
            body["degraded"] = Value::Bool(true);
            body["spooled"] = Value::Bool(true);
            StatusCode::ACCEPTED
        }
        Submitted::TimedOut => {
            let body = json!({
                "error": "timeout",
                "message": "the revocation is recorded and queued but was not applied to every store within REVOKD_WAIT_TIMEOUT",
                "job_id": job_id,
            });
            return (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response();
        }
    };
    (status, Json(body)).into_response()
}

async fn revoke(
    State(state): State<AppState>,
    WriteKey(key): WriteKey,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    JsonBody(req): JsonBody<RevocationRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_flag(query)?;
    let job = req.into_job(&state, key).await?;
    let (job_id, token_id) = (job.meta.job_id.clone(), job.token_id.clone());
    let submitted = state
        .submitter
        .revoke(job, wait)
        .await
        .map_err(ApiError::from)?;
    Ok(answer(
        submitted,
        &job_id,
        json!({ "job_id": job_id, "token_id": token_id }),
    ))
}

/// `POST /v1/subjects/{sub}/revoke-all` and `POST /v1/issuers/{iss}/revoke-all` body.
#[derive(Deserialize, Default)]
pub struct RevokeAllRequest {
    reason: Option<String>,
}

/// A revoke-all of the subject or issuer (`scope`) named by the path
/// (percent-decoded, not empty): every token of it issued before now.
/// Answers `{"job_id", "not_before"}`.
async fn watermark(
    state: &AppState,
    key: String,
    scope: Scope,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    req: Option<RevokeAllRequest>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|_| {
        bad(format!(
            "the {} in the path is not valid UTF-8",
            scope.noun()
        ))
    })?;
    if id.is_empty() {
        return Err(bad(format!("{} must not be empty", scope.claim())));
    }
    // Tokens of an issuer no configuration trusts are refused already
    // (`invalid_issuer`): naming one is a mistake (`https://idp/` is not
    // `https://idp`), and would be answered 2xx while matching nothing.
    if scope == Scope::Issuer && !state.checker.verifier().trusts_issuer(&id) {
        return Err(ApiError::bad_request(
            "unknown_issuer",
            "no configured issuer has this iss (compare it with JWT_ISSUER or the issuers file, character for character): its tokens are refused already",
        ));
    }
    let wait = wait_flag(query)?;
    let (not_before, meta) = (now_unix(), JobMeta::now().by(key));
    let reason = req.unwrap_or_default().reason;
    // Keyed as a check looks it up (long or odd ids hashed).
    let job = crate::write::watermark::job(scope, &id, not_before, reason, meta);
    let job_id = job.job_id().unwrap_or_default().to_owned();
    let submitted = state
        .submitter
        .job(job, wait)
        .await
        .map_err(ApiError::from)?;
    Ok(answer(
        submitted,
        &job_id,
        json!({ "job_id": job_id, "not_before": not_before }),
    ))
}

async fn revoke_all(
    State(state): State<AppState>,
    WriteKey(key): WriteKey,
    sub: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    OptionalJsonBody(req): OptionalJsonBody<RevokeAllRequest>,
) -> Result<Response, ApiError> {
    watermark(&state, key, Scope::Subject, sub, query, req).await
}

/// Every token whose `iss` is the path's issuer and whose `iat` is earlier
/// than now is `issuer_revoked` (a leaked signing key, a compromised tenant).
async fn revoke_issuer(
    State(state): State<AppState>,
    WriteKey(key): WriteKey,
    iss: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    OptionalJsonBody(req): OptionalJsonBody<RevokeAllRequest>,
) -> Result<Response, ApiError> {
    watermark(&state, key, Scope::Issuer, iss, query, req).await
}

/// RFC 7009 form, with the client's credentials when it sends them in the
/// body (`client_secret_post`).
#[derive(Deserialize)]
pub struct Rfc7009Request {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7009's answer: 200 with `{}` (clients ignore the body; some need
/// it to be JSON).
fn revoked() -> Response {
    Json(json!({})).into_response()
}

/// RFC 7009: 200 whenever the client is authenticated (RFC 6749 2.3.1:
/// HTTP Basic, or `client_id` + `client_secret` in the form), also for
/// tokens it cannot parse (nothing to revoke then).
async fn rfc7009_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    LenientForm(req): LenientForm<Rfc7009Request>,
) -> Result<Response, ApiError> {
    if state.api_keys.is_empty() {
        return Err(ApiError::invalid_client(
            "the write API is disabled: set REVOKD_API_KEYS",
        ));
    }
    let (id, secret) = req.as_ref().map_or((None, None), |r| {
        (r.client_id.as_deref(), r.client_secret.as_deref())
    });
    let key = state
        .api_keys
        .authenticate_client(&headers, id, secret)?
        .to_owned();
    let token = req.and_then(|r| r.token).ok_or_else(no_token)?;
    // RFC 7009 2.2: an invalid token is answered as revoked; but while the
    // issuer's keys have not loaded, revokd cannot tell (2.2.1: 503).
    let claims = match state
        .checker
        .verifier()
        .verify_signature_latest(&token)
        .await
    {
        Ok((claims, _)) => claims,
        Err(Unverified::NoKeys) => return Err(ApiError::keys_unavailable()),
        Err(_) => return Ok(revoked()),
    };
    let job = RevokeToken {
        meta: JobMeta::now().by(key),
        ..RevokeToken::new(claims.token_id, claims.subject_id, claims.exp)
    };
    state
        .submitter
        .revoke(job, false)
        .await
        .map_err(ApiError::from)?;
    Ok(revoked())
}
