//! The rescue of a failed worker's in-flight jobs: handed back to the active
//! list at once, instead of after its heartbeat lapses (apalis-redis's
//! `reenqueue_orphaned`), and the worker deregistered.

use std::sync::LazyLock;

use apalis_redis::Config;
use redis::Script;
use revokd_jobs::RedisConn;

use super::{inflight_set, worker_metadata_key};

/// `lua/rescue.lua`.
static RESCUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/rescue.lua")));

/// Hands a failed worker's jobs back and deregisters it; returns how many
/// jobs. Safe only once the worker's future has ended: none of its jobs
/// still runs.
pub async fn rescue(conn: &RedisConn, config: &Config, worker: &str) -> redis::RedisResult<u64> {
    let mut conn = conn.clone();
    RESCUE
        .key(config.workers_set())
        .key(inflight_set(config, worker))
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .key(worker_metadata_key(config, worker))
        .arg(worker)
        .invoke_async(&mut conn)
        .await
}
