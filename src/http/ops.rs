//! Operations endpoints: `GET /healthz`, `GET /readyz`.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use revokd_jobs::now_unix;
use serde_json::{Value, json};

use super::AppState;
use crate::{check::LookupStats, instruments};

/// The operations routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let probe = Duration::from_millis(500);
    // "Up" means able to answer checks: Redis holding the whole deny-list
    // (marker present), Postgres with its tables.
    let (redis, pg) = tokio::join!(
        tokio::time::timeout(probe, state.deny.marker_present()),
        tokio::time::timeout(probe, state.db.lookup("readyz", None, None)),
    );
    let redis_up = matches!(redis, Ok(Ok(true)));
    let pg_up = matches!(pg, Ok(Ok(_)));
    let replica = match state.checker.replica() {
        None => "off",
        Some(r) if r.is_fresh() => "current",
        Some(_) => "stale",
    };
    // A replica within its staleness bound answers checks on its own.
    let ready = redis_up || pg_up || replica == "current";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let body = json!({ "ready": ready, "redis": word(redis_up), "postgres": word(pg_up), "replica": replica });
    (status, Json(body))
}

/// Prometheus text. Gauges that describe shared state (queue depth,
/// deny-list size, last cleanup) are sampled now; a store that does not
/// answer leaves its gauges at their last value.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let probe = Duration::from_millis(500);
    let (depth, counts, cleanup) = tokio::join!(
        tokio::time::timeout(probe, state.deny.queue_depth(&state.queue)),
        tokio::time::timeout(probe, state.db.counts(now_unix())),
        tokio::time::timeout(probe, state.deny.cleanup_report()),
    );
    if let Ok(Ok(depth)) = depth {
        instruments::queue_depth(depth);
    }
    if let Ok(Ok((tokens, subjects, _))) = counts {
        instruments::denylist_size(tokens, subjects);
    }
    if let Ok(Ok(Some(report))) = cleanup {
        instruments::last_cleanup(&report);
    }
    let (checker, stats) = (&state.checker, state.checker.stats());
    instruments::verify_cache(
        LookupStats::get(&stats.verify_cache_hits),
        LookupStats::get(&stats.verify_cache_misses),
        checker.verify_cache_len(),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        instruments::handle().render(),
    )
}
