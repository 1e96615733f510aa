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
    let checker = &state.checker;
    // Redis answering is not enough for the replica and Redis to answer
    // checks alone: Redis must take writes (the breaker), and Postgres's
    // pending revocations must be listable (no overflow).
    let redis_writes = checker.redis_health().is_up();
    let (pending_tokens, pending_subjects, overflow) = checker.pending().len();
    let redis_up = matches!(redis, Ok(Ok(true))) && redis_writes && !overflow;
    let pg_up = matches!(pg, Ok(Ok(_)));
    let replica = match checker.replica() {
        None => "off",
        Some(r) if r.is_fresh() && redis_writes => "current",
        Some(_) => "stale",
    };
    // A replica within its staleness bound answers checks on its own.
    let ready = redis_up || pg_up || (replica == "current" && !overflow);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let spool = &state.submitter.spool;
    let body = json!({
        "ready": ready,
        "redis": word(redis_up),
        "redis_writes": if redis_writes { "ok" } else { "refused" },
        "postgres": word(pg_up),
        "replica": replica,
        "pending": {
            "tokens": pending_tokens,
            "subjects": pending_subjects,
            "overflow": overflow,
        },
        "spool": { "dir": spool.dir().display().to_string(), "pending": spool.pending() },
    });
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
