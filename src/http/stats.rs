//! `GET /v1/stats`: revoked tokens, subjects and issuers in Redis and Postgres, and
//! the queue's depth.

use std::time::Duration;

use axum::{Json, Router, extract::State, routing::get};
use revokd_jobs::now_unix;
use serde_json::{Value, json};
use tokio::time::timeout;

use super::{AppState, auth::WriteKey};
use crate::store::{pg::Db, redis::DenyList};

/// The stats route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats))
}

async fn stats(State(state): State<AppState>, _key: WriteKey) -> Json<Value> {
    Json(collect(&state.deny, &state.queue, &state.db).await)
}

/// Longest each store may take to answer; one that does not shows as `null`.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The stats document; a store that does not answer in time shows as
/// `null`. Redis's counts come from the counters its write scripts keep
/// (no key scan, see [`DenyList::revocation_counts`]); Postgres's are live
/// counts, the source of truth.
pub async fn collect(deny: &DenyList, queue: &apalis_redis::Config, db: &Db) -> Value {
    let now = now_unix();
    let (redis, queue, pg) = tokio::join!(
        timeout(STORE_TIMEOUT, deny.revocation_counts(now)),
        timeout(STORE_TIMEOUT, deny.queue_depth(queue)),
        timeout(STORE_TIMEOUT, db.counts(now))
    );
    let redis = match redis {
        Ok(Ok((tokens, subjects, issuers))) => {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects, "revoked_issuers": issuers })
        }
        _ => Value::Null,
    };
    let pg = match pg {
        Ok(Ok((tokens, subjects, issuers, pending))) => {
            json!({ "revoked_tokens": tokens, "revoked_subjects": subjects, "revoked_issuers": issuers, "pending_redis": pending })
        }
        _ => Value::Null,
    };
    let queue = match queue {
        Ok(Ok(d)) => {
            json!({ "pending": d.pending, "running": d.running, "failed": d.failed, "done": d.done })
        }
        _ => Value::Null,
    };
    json!({ "redis": redis, "postgres": pg, "queue": queue })
}
