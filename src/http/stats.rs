//! `GET /v1/stats`: revoked tokens and subjects in Redis and Postgres, and
//! the queue's depth.

use axum::{Json, Router, extract::State, routing::get};
use revokd_jobs::now_unix;
use serde_json::{Value, json};

use super::{AppState, auth::WriteKey};
use crate::store::{pg::Db, redis::DenyList};

/// The stats route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats))
}

async fn stats(State(state): State<AppState>, _key: WriteKey) -> Json<Value> {
    Json(collect(&state.deny, &state.queue, &state.db).await)
}

/// The stats document; a store that does not answer shows as `null`.
pub async fn collect(deny: &DenyList, queue: &apalis_redis::Config, db: &Db) -> Value {
    let (redis, queue, pg) = tokio::join!(
        redis_counts(deny),
        deny.queue_depth(queue),
        db.counts(now_unix())
    );
    let pg = pg
        .map(|(tokens, subjects, pending)| {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects, "pending_redis": pending })
        })
        .unwrap_or(Value::Null);
    let queue = queue
        .map(|d| json!({ "pending": d.pending, "running": d.running, "failed": d.failed, "done": d.done }))
        .unwrap_or(Value::Null);
    json!({ "redis": redis, "postgres": pg, "queue": queue })
}

async fn redis_counts(deny: &DenyList) -> Value {
    match tokio::join!(deny.count("jti:"), deny.count("sub:")) {
        (Ok(tokens), Ok(subjects)) => {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects })
        }
        _ => Value::Null,
    }
}
