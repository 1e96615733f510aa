//! Promotion of due scheduled jobs (retries, jobs pushed with apalis-redis's
//! own push, [`revokd_jobs::Producer::push_after`]) to the active list in
//! chunks, so the scheduled set never grows past what apalis-redis's fetch
//! can promote in one `unpack`.

use std::{sync::LazyLock, time::Duration};

use apalis_redis::Config;
use redis::Script;
use revokd_jobs::RedisConn;
use tokio_util::sync::CancellationToken;

/// How often [`keep_promoting`] runs.
const EVERY: Duration = Duration::from_millis(500);

/// `lua/promote.lua`.
static PROMOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/promote.lua")));

/// Promotes the scheduled jobs due at `now`; returns how many.
pub async fn promote_due(conn: &RedisConn, config: &Config, now: i64) -> redis::RedisResult<u64> {
    let mut conn = conn.clone();
    PROMOTE
        .key(config.scheduled_jobs_set())
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .arg(now)
        .invoke_async(&mut conn)
        .await
}

/// Keeps the scheduled set below the size apalis-redis's fetch can promote,
/// until `stop` fires.
pub async fn keep_promoting(conn: RedisConn, config: Config, stop: CancellationToken) {
    loop {
        if let Err(error) = promote_due(&conn, &config, revokd_jobs::now_unix()).await {
            tracing::debug!(%error, "cannot promote scheduled jobs yet");
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
