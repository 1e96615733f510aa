//! revokd's maintenance at scale: cleanup of a million expired revocations
//! and rebuild of the Redis deny-list from a million live ones.
//!
//! 1. **cleanup**: `BENCH_ROWS` (default 1,000,000) expired rows plus
//!    `BENCH_ROWS / 100` live rows are inserted into `revoked_tokens` (one
//!    `insert ... select ... from generate_series` each, then `vacuum
//!    analyze`), and `Maintenance::cleanup(now, &Quiet)` is timed. Its time
//!    includes the batched deletes (5,000 rows a statement), the watermark and
//!    audit passes, the queue vacuum and the closing rebuild that writes the
//!    live rows back into Redis (`redis_restored`).
//! 2. **delete only**: the same number of expired rows inserted again, and
//!    `Db::delete_expired_tokens(now - leeway, 5000)` looped until a batch
//!    comes back short — the delete phase of cleanup alone.
//! 3. **rebuild**: the table emptied, every key under the bench prefix
//!    deleted, `BENCH_ROWS` live rows inserted (expiring in one hour, 100,000
//!    subjects), and `Maintenance::rebuild(now, &Quiet)` timed; afterwards
//!    the `{prefix}jti:*` keys are counted (`DenyList::count`) and must equal
//!    `BENCH_ROWS`. Redis memory is reported two ways: the change of
//!    `INFO memory` `used_memory` across the rebuild (approximate: the server
//!    is shared) and `MEMORY USAGE` averaged over a sample of the new keys
//!    times their count; the other keys under the prefix (the marker, and
//!    anything else the rebuild wrote) are listed with their `MEMORY USAGE`.
//!
//! Token ids are random UUIDs (as jti values usually are), so the keyset
//! pagination of the rebuild reads the heap in random order, as in
//! production. The Redis keys carry the bench prefix `revokd-bench-<uuid>:`
//! (46 bytes, longer than the default `revokd:`), which inflates the memory
//! per key a little.
//!
//! Everything runs against a unique Redis key prefix `revokd-bench-<uuid>:`
//! and a fresh Postgres database `revokd_bench_<uuid>`. At the end, also
//! after a failure or Ctrl-C, it deletes exactly the keys under that prefix
//! (SCAN + DEL in batches), removes the prefix's queue from
//! `core:apalis:queues:list` (no worker runs here, so it is not listed) and
//! drops that database; nothing else on the (shared) servers is touched. Keys
//! left behind by a killed run expire within about an hour.
//!
//! ```text
//! cargo run --release --features bench --example maintenance_bench
//! BENCH_ROWS=100000 cargo run --release --features bench --example maintenance_bench
//! ```
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `BENCH_DATABASE_URL` (the server to create the bench database on, e.g.
//! `postgres://postgres@127.0.0.1:5432` or any database URL on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `BENCH_ROWS`, `RUST_LOG`
//! (default `warn,sqlx::query=error`, on stderr). The table goes to stdout,
//! progress to stderr.

mod redis_memory;
mod report;
mod rows;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use revokd::worker::maintenance::{CleanupReport, Quiet, RebuildReport};
use revokd_jobs::now_unix;
use testkit::bench::{Bench, delete_prefix, env_or, redis_connection};

use crate::{
    redis_memory::{info_field, other_keys, sample_memory, used_memory},
    report::{check, print_report},
    rows::{count_rows, insert_expired_rows, insert_live_rows, vacuum},
};

/// The allocator `revokd` runs with (`src/main.rs`), so the service code
/// this example runs in-process is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rows per delete statement, as `Maintenance::cleanup` uses.
const BATCH: i64 = 5_000;

/// What to run against, from the environment.
struct Settings {
    redis_url: String,
    pg_server: String,
    rows: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let rows: u64 = env_or("BENCH_ROWS", "1000000")
            .parse()
            .context("BENCH_ROWS must be a count")?;
        if rows == 0 {
            bail!("BENCH_ROWS must be at least 1");
        }
        Ok(Self {
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            pg_server: env_or(
                "BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            rows,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Bulk statements are slow on purpose: no slow-statement warnings.
    revokd::app::telemetry::init("warn,sqlx::query=error");
    let settings = Settings::from_env()?;
    let bench = Bench::new(&settings.redis_url, &settings.pg_server);
    let outcome = bench
        .measure(async |_| measure(&settings, &bench).await)
        .await;
    if let Err(error) = &outcome {
        eprintln!("bench failed: {error:#}");
    }
    bench.clean_up(outcome).await
}

/// One timed step.
struct Timed<T> {
    value: T,
    took: Duration,
}

async fn timed<T, E>(step: impl Future<Output = Result<T, E>>) -> Result<Timed<T>, E> {
    let started = Instant::now();
    let value = step.await?;
    Ok(Timed {
        value,
        took: started.elapsed(),
    })
}

/// Everything measured, for the table.
struct Results {
    rows: u64,
    live: u64,
    leeway: i64,
    pg_version: String,
    redis_version: String,
    /// `/proc/loadavg` at the start and the end (other work on the machine
    /// skews the numbers).
    load_start: String,
    load_end: String,
    insert_expired: Duration,
    cleanup: Timed<CleanupReport>,
    rows_after_cleanup: i64,
    insert_expired_again: Duration,
    delete: Timed<u64>,
    delete_batches: u64,
    insert_live: Duration,
    rebuild: Timed<RebuildReport>,
    jti_keys: u64,
    used_memory_before: u64,
    used_memory_after: u64,
    sampled_bytes_per_key: Option<f64>,
    sampled_keys: usize,
    /// Keys under the prefix other than `jti:` after the rebuild, with
    /// their `MEMORY USAGE`.
    other_keys: Vec<(String, Option<u64>)>,
}

/// Sets up the database, runs the three steps, prints the table.
async fn measure(settings: &Settings, bench: &Bench) -> anyhow::Result<()> {
    let prefix = bench.prefix.as_str();
    let services = bench.services().await?;
    let maintenance = services.maintenance(services.deny_patient.clone());
    let pool = services.db.pool();
    let mut redis = redis_connection(&settings.redis_url).await?;
    let load_start = load_average();
    let rows = settings.rows;
    let live = (rows / 100).max(1);
    let leeway = maintenance.ttl.leeway;
    let pg_version: String = sqlx::query_scalar("show server_version")
        .fetch_one(pool)
        .await
        .context("Postgres version")?;
    let redis_version = info_field(&mut redis, "server", "redis_version")
        .await?
        .unwrap_or_else(|| "?".to_owned());
    eprintln!("prefix {prefix}, {rows} rows; Postgres {pg_version}, Redis {redis_version}");

    // 1. Cleanup of `rows` expired rows next to `live` live ones.
    let now = now_unix();
    eprintln!("cleanup: inserting {rows} expired and {live} live rows");
    let insert_expired = timed(insert_expired_rows(pool, rows, now)).await?.took;
    insert_live_rows(pool, live, now).await?;
    vacuum(pool).await?;
    eprintln!("cleanup: running Maintenance::cleanup");
    let cleanup = timed(maintenance.cleanup(now, &Quiet))
        .await
        .context("Maintenance::cleanup")?;
    let rows_after_cleanup = count_rows(pool).await?;

    // 2. The delete phase alone, on a second insert of expired rows.
    eprintln!("delete only: inserting {rows} expired rows");
    vacuum(pool).await?;
    let insert_expired_again = timed(insert_expired_rows(pool, rows, now)).await?.took;
    vacuum(pool).await?;
    eprintln!("delete only: looping Db::delete_expired_tokens");
    let cutoff = now - leeway;
    let mut delete_batches = 0;
    let delete = timed(async {
        let mut total = 0u64;
        loop {
            let n = services.db.delete_expired_tokens(cutoff, BATCH).await?;
            total += n;
            delete_batches += 1;
            if n < BATCH as u64 {
                return Ok::<_, sqlx::Error>(total);
            }
        }
    })
    .await
    .context("delete_expired_tokens")?;

    // 3. Rebuild of `rows` live rows into an empty prefix.
    eprintln!("rebuild: emptying the table and the prefix, inserting {rows} live rows");
    sqlx::query("truncate revoked_tokens")
        .execute(pool)
        .await
        .context("truncate")?;
    delete_prefix(&mut redis, prefix).await?;
    let left = services
        .deny_fast
        .count("jti:")
        .await
        .context("count jti keys")?;
    if left != 0 {
        bail!("{left} jti keys still under {prefix} before the rebuild");
    }
    let now = now_unix();
    let insert_live = timed(insert_live_rows(pool, rows, now)).await?.took;
    vacuum(pool).await?;
    let used_memory_before = used_memory(&mut redis).await?;
    eprintln!("rebuild: running Maintenance::rebuild");
    let rebuild = timed(maintenance.rebuild(now, &Quiet))
        .await
        .context("Maintenance::rebuild")?;
    let used_memory_after = used_memory(&mut redis).await?;
    let jti_keys = services
        .deny_fast
        .count("jti:")
        .await
        .context("count jti keys")?;
    let (sampled_bytes_per_key, sampled_keys) = sample_memory(&mut redis, prefix).await?;
    let other_keys = other_keys(&mut redis, prefix).await?;

    let results = Results {
        rows,
        live,
        leeway,
        pg_version,
        redis_version,
        load_start,
        load_end: load_average(),
        insert_expired,
        cleanup,
        rows_after_cleanup,
        insert_expired_again,
        delete,
        delete_batches,
        insert_live,
        rebuild,
        jti_keys,
        used_memory_before,
        used_memory_after,
        sampled_bytes_per_key,
        sampled_keys,
        other_keys,
    };
    print_report(&results);
    check(&results)
}

/// The 1, 5 and 15 minute load averages, or `?` off Linux.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

fn to_i64(n: u64) -> anyhow::Result<i64> {
    i64::try_from(n).context("row count too large")
}
