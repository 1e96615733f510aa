//! Redis for benchmarks: a connection with a timeout, and SCAN-based
//! deletion of a prefix (never KEYS on a server that may be large).

use std::time::Duration;

use anyhow::{Context, bail};
use redis::aio::MultiplexedConnection;

use crate::prefix::glob_escape;

/// A connection to `redis_url`, failing after 5 s.
pub async fn redis_connection(redis_url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(redis_url).context("REDIS_URL")?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect to Redis: timed out")?
    .context("connect to Redis")
}

/// Deletes every key under `prefix`: SCAN (not KEYS: the server is shared)
/// with a DEL of each batch found, repeated until a full pass finds nothing.
/// Returns keys deleted.
pub async fn delete_prefix(conn: &mut MultiplexedConnection, prefix: &str) -> anyhow::Result<u64> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut deleted = 0;
    for _pass in 0..10 {
        let mut found = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = scan(conn, cursor, &pattern).await?;
            found += batch.len();
            for chunk in batch.chunks(500) {
                let n: u64 = redis::cmd("DEL")
                    .arg(chunk)
                    .query_async(conn)
                    .await
                    .context("DEL")?;
                deleted += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if found == 0 {
            return Ok(deleted);
        }
    }
    bail!("keys under {prefix} kept appearing after 10 passes")
}

/// One `SCAN cursor MATCH pattern COUNT 1000`: the next cursor and the keys
/// of this step.
pub async fn scan<K: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cursor: u64,
    pattern: &str,
) -> anyhow::Result<(u64, Vec<K>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .query_async(conn)
        .await
        .context("SCAN")
}
