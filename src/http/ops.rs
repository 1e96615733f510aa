//! Operations endpoints: `GET /healthz`, `GET /readyz`.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};

use super::AppState;
use crate::{instruments, read::checker::LookupStats};

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
    // "Up" means able to answer checks: Redis holding the whole deny-list
    // (marker present), Postgres with its tables — as last probed (at most
    // a second ago), and not failed by a request since (the breakers).
    let stores = state.probe.stores().await;
    let checker = &state.checker;
    // Redis answering is not enough for the replica and Redis to answer
    // checks alone: Redis must take writes (the breaker), and Postgres's
    // pending revocations must be listable (no overflow).
    let redis_writes = checker.redis_health().is_up();
    let (pending_tokens, pending_subjects, overflow) = checker.pending().len();
    let redis_up = stores.redis_complete && redis_writes && !overflow;
    let pg_up = stores.postgres && checker.pg_health().is_up();
    let replica = match checker.replica() {
        None => "off",
        Some(r) if r.is_fresh() && redis_writes => "current",
        Some(_) => "stale",
    };
    // A replica within its staleness bound answers checks on its own.
    let stores_ready = redis_up || pg_up || (replica == "current" && !overflow);
    // ... and tokens can be verified only once every issuer's keys loaded.
    let verifier = checker.verifier();
    let keys_ready = verifier.is_ready();
    let ready = stores_ready && keys_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let spool = &state.submitter.spool;
    let mut body = json!({
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
        "keys": if keys_ready { "loaded" } else { "loading" },
    });
    // With several Postgres hosts: the one the pool connects to.
    if let Some(target) = state.submitter.db.target() {
        body["postgres_host"] = json!(target.current_label());
    }
    (status, Json(body))
}

/// Prometheus text. Gauges that describe shared state (queue depth,
/// deny-list size, last cleanup) are at most [`GAUGES_EVERY`] old, whatever
/// the scrape rate (see [`crate::http::probe`]).
///
/// [`GAUGES_EVERY`]: crate::http::probe::GAUGES_EVERY
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.probe.refresh_gauges().await;
    let (checker, stats) = (&state.checker, state.checker.stats());
    instruments::verify_cache(
        LookupStats::get(&stats.verify_cache_hits),
        LookupStats::get(&stats.verify_cache_misses),
        checker.verify_cache_len(),
    );
    if checker.verifier().fetches_keys() {
        for status in checker.verifier().key_status(revokd_jobs::now_unix_ms()) {
            instruments::jwks_keys(&status.issuer, status.keys, status.age_secs);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        instruments::handle().render(),
    )
}
