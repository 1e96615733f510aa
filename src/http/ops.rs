//! Operations endpoints: `GET /healthz`, `GET /readyz`.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use super::AppState;

/// The operations routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let probe = Duration::from_millis(500);
    let (redis, pg) = tokio::join!(
        tokio::time::timeout(probe, state.deny.ping()),
        tokio::time::timeout(probe, state.db.ping()),
    );
    let redis_up = matches!(redis, Ok(Ok(())));
    let pg_up = matches!(pg, Ok(Ok(())));
    let ready = redis_up || pg_up;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        Json(json!({ "ready": ready, "redis": word(redis_up), "postgres": word(pg_up) })),
    )
}
