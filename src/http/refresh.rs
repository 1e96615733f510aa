//! `POST /v1/refresh-tokens`: register a refresh token, or a rotation.

use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
    routing::post,
};
use revokd_jobs::{Job, RegisterRefresh, RotatedFrom, now_unix};
use serde::Deserialize;
use serde_json::json;

use super::{
    AppState,
    auth::WriteKey,
    error::ApiError,
    extract::JsonBody,
    revoke::{WaitQuery, answer, wait_flag},
};

/// The refresh-token route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/refresh-tokens", post(register))
}

/// Body: the new refresh token, and the one it replaces for a rotation.
#[derive(Deserialize)]
pub struct RegisterRequest {
    token: String,
    rotated_from: Option<String>,
}

fn bad_rotation(message: &str) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

async fn register(
    State(state): State<AppState>,
    WriteKey(key): WriteKey,
    query: Result<Query<WaitQuery>, QueryRejection>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_flag(query)?;
    let verifier = state.checker.verifier();
    let new = verifier
        .verify_latest(&req.token, now_unix())
        .await
        .map_err(|r| ApiError::unverified("token", r))?;
    let mut job = RegisterRefresh::new(new.token_id.clone(), new.subject_id.clone(), new.exp);
    if let Some(old) = &req.rotated_from {
        // The old token may have expired; its signature must hold.
        let (old, _) = verifier
            .verify_signature_latest(old)
            .await
            .map_err(|r| ApiError::unverified("rotated_from", r))?;
        // Neither can ever be stored: a token replacing itself, or a family
        // spanning two subjects.
        if old.token_id == new.token_id {
            return Err(bad_rotation("a token cannot be rotated from itself"));
        }
        if old.sub != new.sub {
            return Err(bad_rotation(
                "rotated_from belongs to another subject than token",
            ));
        }
        let family = family_of(&state, &old.token_id)
            .await?
            .unwrap_or_else(|| old.token_id.clone());
        job = job.rotating(
            RotatedFrom {
                token_id: old.token_id,
                expires_at: old.exp,
            },
            family,
        );
    }
    let job = RegisterRefresh {
        meta: job.meta.clone().by(key),
        ..job
    };
    let (job_id, family_id) = (job.meta.job_id.clone(), job.family_id.clone());
    let submitted = state
        .submitter
        .job(Job::RegisterRefresh(job), wait)
        .await
        .map_err(ApiError::from)?;
    let body = json!({ "job_id": job_id, "token_id": new.token_id, "family_id": family_id });
    Ok(answer(submitted, &job_id, body))
}

/// The family of a registered token: Redis, then Postgres; `None` when the
/// token was never registered (it then starts the family).
async fn family_of(state: &AppState, token_id: &str) -> Result<Option<String>, ApiError> {
    if let Ok(Some(entry)) = state.deny.refresh_entry(token_id).await {
        return Ok(Some(entry.family));
    }
    // A miss is not trusted here even when Redis is complete: a token
    // registered a moment ago may still wait for its worker, and the wrong
    // family would break reuse detection. The rotation is a write, rarer
    // than checks; its Postgres read is bounded like theirs.
    let read = state.db.refresh_row(token_id);
    match tokio::time::timeout(crate::read::checker::PG_LOOKUP_TIMEOUT, read).await {
        Ok(Ok(row)) => Ok(row.map(|r| r.family_id)),
        _ => Err(ApiError::unavailable(
            "cannot read the refresh-token registry",
        )),
    }
}
