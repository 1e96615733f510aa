//! `GET /v1/stats`: revoked tokens and subjects in Redis and Postgres, and
//! the queue's depth.

use axum::{Json, Router, extract::State, routing::get};
use revokd_jobs::now_unix;
use serde_json::{Value, json};

use super::{AppState, auth::WriteKey};

/// The stats route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats))
}

async fn stats(State(state): State<AppState>, _key: WriteKey) -> Json<Value> {
    let (redis, queue, pg) = tokio::join!(
        redis_counts(&state),
        state.deny.queue_depth(&state.queue),
        state.db.counts(now_unix())
    );
    let pg = pg
        .map(|(tokens, subjects, pending)| {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects, "pending_redis": pending })
        })
        .unwrap_or(Value::Null);
    let queue = queue
        .map(|d| json!({ "pending": d.pending, "running": d.running, "failed": d.failed, "done": d.done }))
        .unwrap_or(Value::Null);
    Json(json!({ "redis": redis, "postgres": pg, "queue": queue }))
}

async fn redis_counts(state: &AppState) -> Value {
    match tokio::join!(state.deny.count("jti:"), state.deny.count("sub:")) {
        (Ok(tokens), Ok(subjects)) => {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects })
        }
        _ => Value::Null,
    }
}
