//! Worker apply throughput: how fast one worker drains a backlog of
//! revocations into Redis and Postgres, on a fresh prefix and database.
//!
//! `BENCH_JOBS` (default 50,000) `revoke` jobs are pushed with
//! `revokd_jobs::Producer` (`BENCH_PUSHERS` concurrent pushers, default 16,
//! on one multiplexed connection) while no worker runs; the queue must then
//! hold all of them. Then the worker starts in this process
//! (`revokd::worker::run`, the same code as `revokd serve --roles worker`,
//! concurrency `REVOKD_WORKER_CONCURRENCY`, default 32) and the clock runs
//! from its start until Postgres `revoked_tokens` holds `BENCH_JOBS` rows
//! (polled every 50 ms; a job writes Redis first, then Postgres, so the last
//! row means both stores have every revocation). The number of
//! `{prefix}jti:*` keys in Redis is checked afterwards.
//!
//! The run fails when the row count does not move for `BENCH_STALL_SECS`
//! (default 30) — a worker that cannot fetch its backlog (as apalis-redis
//! 1.0's own push and fetch could not from 8,000 due jobs, before the
//! producer pushed onto the active list and the worker promoted scheduled
//! jobs in chunks) — or when the drain takes longer than 10 minutes.
//!
//! At the end, also after a failure or Ctrl-C, it deletes exactly the keys
//! under its prefix `revokd-bench-<uuid>:`, removes its queue from
//! `core:apalis:queues:list` and drops its database `revokd_bench_<uuid>`.
//!
//! ```text
//! cargo run --release --example bench_worker
//! BENCH_JOBS=10000 cargo run --release --example bench_worker
//! ```
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `BENCH_DATABASE_URL` (the server to create the bench database on;
//! default `postgres://postgres@127.0.0.1:5432/postgres`), `BENCH_JOBS`,
//! `BENCH_PUSHERS`, `BENCH_STALL_SECS`, `REVOKD_WORKER_CONCURRENCY`,
//! `RUST_LOG` (default `warn`). One result line goes to stdout, `worker
//! jobs=N concurrency=C push_per_s=P drain_s=S applied_per_s=A
//! steady_per_s=R first_row_ms=F` (`steady_per_s`: the rate from the first
//! row to the last); progress to stderr.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use clap::Parser as _;
use revokd::{
    app::Services,
    cli::Cli,
    store::pg::Db,
    worker::{self, WorkerDeps},
};
use revokd_jobs::{Producer, RevokeToken, now_unix};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// HMAC secret of the bench configuration (no token is ever verified).
const SECRET: &str = "bench-secret-that-is-long-enough-for-hs256";
/// Longest the drain may take before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the rows are counted.
const POLL: Duration = Duration::from_millis(50);

struct Settings {
    redis_url: String,
    pg_server: String,
    jobs: usize,
    pushers: usize,
    stall_after: Duration,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn count(name: &str, default: &str) -> anyhow::Result<usize> {
    env_or(name, default)
        .parse()
        .with_context(|| format!("{name} must be a count"))
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            pg_server: env_or(
                "BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            jobs: count("BENCH_JOBS", "50000")?.max(1),
            pushers: count("BENCH_PUSHERS", "16")?.max(1),
            stall_after: Duration::from_secs(
                u64::try_from(count("BENCH_STALL_SECS", "30")?)
                    .unwrap_or(30)
                    .max(1),
            ),
        })
    }
}

/// What the run measured.
struct Outcome {
    concurrency: usize,
    push_per_s: f64,
    drain_secs: f64,
    applied_per_s: f64,
    steady_per_s: f64,
    first_row_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    revokd::telemetry::init("warn");
    let settings = Settings::from_env()?;
    let o = run(&settings).await?;
    println!(
        "worker jobs={} concurrency={} push_per_s={:.0} drain_s={:.2} applied_per_s={:.0} \
         steady_per_s={:.0} first_row_ms={:.0}",
        settings.jobs,
        o.concurrency,
        o.push_per_s,
        o.drain_secs,
        o.applied_per_s,
        o.steady_per_s,
        o.first_row_ms
    );
    Ok(())
}

/// The measurement on its own prefix and database, cleaned up whatever
/// happens.
async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let prefix = format!("revokd-bench-{}:", Uuid::new_v4().simple());
    let db_name = format!("revokd_bench_{}", Uuid::new_v4().simple());
    let db_url = database_url(&settings.pg_server, &db_name);

    // The worker lives in `background` so that it is stopped before cleanup,
    // whichever way the measurement ends.
    let stop = CancellationToken::new();
    let mut background = JoinSet::new();
    let outcome = tokio::select! {
        outcome = measure(settings, &prefix, &db_url, &stop, &mut background) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        eprintln!("worker did not stop within 10 s; aborting it");
        background.abort_all();
        while background.join_next().await.is_some() {}
    }

    eprintln!("cleaning up: Redis keys {prefix}*, database {db_name}");
    let mut cleanup_failed = false;
    match delete_prefix(&settings.redis_url, &prefix).await {
        Ok(deleted) => eprintln!("deleted {deleted} Redis keys"),
        Err(error) => {
            cleanup_failed = true;
            eprintln!("Redis cleanup failed: {error:#}");
        }
    }
    if let Err(error) = drop_database(&db_url, &db_name).await {
        cleanup_failed = true;
        eprintln!("dropping database {db_name} failed: {error:#}");
    }
    let outcome = outcome?;
    if cleanup_failed {
        bail!("cleanup incomplete (see above)");
    }
    Ok(outcome)
}

async fn measure(
    settings: &Settings,
    prefix: &str,
    db_url: &str,
    stop: &CancellationToken,
    background: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Outcome> {
    revokd::store::pg::prepare(db_url)
        .await
        .context("create and migrate the bench database")?;
    let cli = Cli::try_parse_from([
        "revokd",
        "--jwt-secret",
        SECRET,
        "--key-prefix",
        prefix,
        "--redis-url",
        settings.redis_url.as_str(),
        "--database-url",
        db_url,
        "--listen",
        "127.0.0.1:0",
        "migrate",
    ])
    .context("bench configuration")?;
    let db = Db::connect_lazy(db_url).context("Postgres pool")?;
    let services = Services::with_db(cli.config, db).context("services")?;
    let concurrency = services.config.worker_concurrency;
    let producer = Producer::connect(&settings.redis_url, prefix, "bench-worker")
        .await
        .context("producer")?;
    let n = settings.jobs;
    let target = i64::try_from(n).context("BENCH_JOBS too large")?;

    eprintln!(
        "pushing {n} revoke jobs ({} pushers), no worker running, prefix {prefix}",
        settings.pushers
    );
    let pushed = Instant::now();
    push(&producer, n, settings.pushers).await?;
    let push_secs = pushed.elapsed().as_secs_f64();
    let push_per_s = n as f64 / push_secs;
    let depth = services
        .deny_fast
        .queue_depth(&revokd_jobs::queue_config(prefix))
        .await
        .context("queue depth")?;
    eprintln!(
        "pushed in {push_secs:.1} s ({push_per_s:.0}/s), {} pending; starting the worker \
         (concurrency {concurrency})",
        depth.pending
    );
    if depth.pending != u64::try_from(n)? {
        bail!(
            "pushed {n} jobs but the queue holds {} pending",
            depth.pending
        );
    }

    let deps = WorkerDeps {
        applier: services.applier(),
        redis_url: settings.redis_url.clone(),
        prefix: prefix.to_owned(),
        concurrency,
    };
    background.spawn(worker::run(deps, stop.clone()));
    let started = Instant::now();

    let mut first_row: Option<(Duration, i64)> = None;
    // The last time the row count moved, and to what.
    let mut progress = (Duration::ZERO, 0_i64);
    let mut last_report = Instant::now();
    let drained = loop {
        let rows: i64 = sqlx::query_scalar("select count(*) from revoked_tokens")
            .fetch_one(services.db.pool())
            .await
            .context("count revoked_tokens")?;
        let elapsed = started.elapsed();
        if rows > 0 && first_row.is_none() {
            first_row = Some((elapsed, rows));
        }
        if rows >= target {
            break elapsed;
        }
        if rows != progress.1 {
            progress = (elapsed, rows);
        } else if elapsed - progress.0 > settings.stall_after {
            bail!(
                "the worker stalled: {rows}/{n} revocations applied, none for {:.0} s \
                 (see its warnings above)",
                (elapsed - progress.0).as_secs_f64()
            );
        }
        if elapsed > DRAIN_TIMEOUT {
            bail!("only {rows}/{n} revocations applied after {DRAIN_TIMEOUT:?}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {rows}/{n} applied after {:.1} s", elapsed.as_secs_f64());
            last_report = Instant::now();
        }
        if let Some(done) = background.try_join_next() {
            done.context("worker panicked")??;
            bail!("the worker stopped before draining the queue");
        }
        tokio::time::sleep(POLL).await;
    };

    let redis_keys = services
        .deny_fast
        .count("jti:")
        .await
        .context("count the deny-list keys")?;
    let (first_at, first_rows) = first_row.unwrap_or((drained, 0));
    let drain_secs = drained.as_secs_f64();
    let steady_secs = (drained - first_at).as_secs_f64();
    let applied_per_s = n as f64 / drain_secs;
    let steady_per_s = if steady_secs > 0.0 {
        (target - first_rows) as f64 / steady_secs
    } else {
        applied_per_s
    };
    let first_row_ms = first_at.as_secs_f64() * 1e3;
    eprintln!(
        "applied {n} jobs in {drain_secs:.2} s: {applied_per_s:.0} revocations/s \
         ({steady_per_s:.0}/s after the first row at {first_row_ms:.0} ms); \
         {redis_keys} deny-list keys in Redis"
    );
    if redis_keys != u64::try_from(n)? {
        bail!("expected {n} deny-list keys in Redis, found {redis_keys}");
    }
    Ok(Outcome {
        concurrency,
        push_per_s,
        drain_secs,
        applied_per_s,
        steady_per_s,
        first_row_ms,
    })
}

/// Pushes `n` revoke jobs with `pushers` concurrent calls.
async fn push(producer: &Producer, n: usize, pushers: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let expires_at = now_unix() + 3600;
    let mut tasks = JoinSet::new();
    for _ in 0..pushers {
        let (producer, next) = (producer.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let job = RevokeToken::new(
                    Uuid::now_v7().simple().to_string(),
                    Some(format!("bench-worker-{}", subject_bucket())),
                    expires_at,
                )
                .reason("bench");
                producer.revoke(job).await.context("push a job")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("pusher panicked")??;
    }
    Ok(())
}

/// One of 10,000 subjects, so that subjects repeat as in real traffic.
fn subject_bucket() -> u64 {
    u64::from(Uuid::new_v4().as_fields().0 % 10_000)
}

/// `server` with its database (if any) replaced by `name`, query kept.
fn database_url(server: &str, name: &str) -> String {
    let (head, query) = match server.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (server, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(slash) => &head[..authority + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Deletes every key under `prefix` (SCAN, not KEYS: the server is shared)
/// and this queue's entry in apalis's global queue list. Returns keys deleted.
async fn delete_prefix(redis_url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url).context("REDIS_URL")?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect to Redis: timed out")?
    .context("connect to Redis")?;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .context("SCAN")?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort_unstable();
    keys.dedup();
    let mut deleted = 0;
    for chunk in keys.chunks(500) {
        let n: u64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .context("DEL")?;
        deleted += n;
    }
    let _: u64 = redis::cmd("ZREM")
        .arg("core:apalis:queues:list")
        .arg(format!("{prefix}queue:jobs:workers"))
        .query_async(&mut conn)
        .await
        .context("ZREM")?;
    Ok(deleted)
}

fn glob_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if "*?[]\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Drops the bench database (ending any connection still on it).
async fn drop_database(db_url: &str, name: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(db_url)
        .context("database URL")?
        .database("postgres");
    let mut admin = PgConnection::connect_with(&options)
        .await
        .context("connect to Postgres")?;
    let sql = format!(
        "drop database if exists \"{}\" with (force)",
        name.replace('"', "\"\"")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .context("drop database")?;
    admin.close().await.context("close admin connection")?;
    Ok(())
}
