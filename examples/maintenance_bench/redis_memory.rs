//! What the rebuild costs Redis: `INFO` fields, and `MEMORY USAGE` of a
//! sample of the new keys and of the prefix's other keys.

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use testkit::{bench::scan, glob_escape};

/// Keys sampled with `MEMORY USAGE`.
const MEMORY_SAMPLE: usize = 1_000;

/// One field of `INFO section`.
pub(crate) async fn info_field(
    conn: &mut MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<Option<String>> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .context("INFO")?;
    Ok(info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    }))
}

/// `used_memory` of the whole server, in bytes.
pub(crate) async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    info_field(conn, "memory", "used_memory")
        .await?
        .context("INFO memory has no used_memory")?
        .parse()
        .context("used_memory")
}

/// Average `MEMORY USAGE` of up to [`MEMORY_SAMPLE`] `{prefix}jti:*` keys,
/// and how many keys were sampled.
pub(crate) async fn sample_memory(
    conn: &mut MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<(Option<f64>, usize)> {
    let pattern = format!("{}jti:*", glob_escape(prefix));
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(MEMORY_SAMPLE);
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = scan(conn, cursor, &pattern).await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= MEMORY_SAMPLE {
            break;
        }
    }
    keys.truncate(MEMORY_SAMPLE);
    if keys.is_empty() {
        return Ok((None, 0));
    }
    let sizes = memory_usage(conn, &keys).await?;
    let known: Vec<u64> = sizes.into_iter().flatten().collect();
    if known.is_empty() {
        return Ok((None, 0));
    }
    let average = known.iter().sum::<u64>() as f64 / known.len() as f64;
    Ok((Some(average), known.len()))
}

/// Keys under `prefix` not starting with `j` (so not `jti:`; the marker and
/// whatever else the rebuild wrote) with their `MEMORY USAGE`, by name.
pub(crate) async fn other_keys(
    conn: &mut MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let pattern = format!("{}[^j]*", glob_escape(prefix));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = scan(conn, cursor, &pattern).await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sizes = memory_usage(conn, &keys).await?;
    Ok(keys
        .into_iter()
        .map(|key| key.strip_prefix(prefix).unwrap_or(&key).to_owned())
        .zip(sizes)
        .collect())
}

/// `MEMORY USAGE key SAMPLES 0` of each key, in one pipeline.
async fn memory_usage<K: redis::ToRedisArgs>(
    conn: &mut MultiplexedConnection,
    keys: &[K],
) -> anyhow::Result<Vec<Option<u64>>> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0);
    }
    pipe.query_async(conn).await.context("MEMORY USAGE")
}
