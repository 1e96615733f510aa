//! Worker apply throughput: how fast one worker drains a backlog of
//! revocations into Redis and Postgres, on a fresh prefix and database.
//!
//! `BENCH_JOBS` (default 50,000) `revoke` jobs are pushed with
//! `revokd_jobs::Producer` (`BENCH_PUSHERS` concurrent pushers, default 16,
//! on one multiplexed connection) while no worker runs; the queue must then
//! hold all of them. Then the worker starts in this process
//! (`revokd::worker::run`, the same code as `revokd serve --roles worker`,
//! concurrency `REVOKD_WORKER_CONCURRENCY`, default 256) and the clock runs
//! from its start until the queue counts `BENCH_JOBS` jobs done (polled
//! every 50 ms, O(1); a job is acknowledged only after it wrote Redis and
//! then Postgres). Postgres `revoked_tokens` must then hold `BENCH_JOBS`
//! rows and Redis as many `{prefix}jti:*` keys.
//!
//! The run fails when the done count does not move for `BENCH_STALL_SECS`
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
//! cargo run --release --features bench --example bench_worker
//! BENCH_JOBS=10000 cargo run --release --features bench --example bench_worker
//! ```
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `BENCH_DATABASE_URL` (the server to create the bench database on;
//! default `postgres://postgres@127.0.0.1:5432/postgres`), `BENCH_JOBS`,
//! `BENCH_PUSHERS`, `BENCH_STALL_SECS`, `BENCH_CHUNKED` (`1`: the
//! revocations go as `revoke_batch` jobs of 1,000 items, pushed with
//! `Producer::revoke_many`, instead of one `revoke` job each),
//! `REVOKD_WORKER_CONCURRENCY`, `BENCH_COMMIT_DELAY_US` (a slow disk:
//! every commit in the bench database waits this long before its WAL flush,
//! Postgres's `commit_delay` with `commit_siblings = 0`, set on that
//! database alone; at most 100000),
//! `RUST_LOG` (default `warn`). One result line goes to stdout, `worker
//! jobs=N concurrency=C push_per_s=P drain_s=S applied_per_s=A
//! steady_per_s=R first_row_ms=F chunk=K` (`steady_per_s`: the rate from the first
//! job done to the last); progress to stderr.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use revokd_jobs::{BATCH_CHUNK, Producer, RevokeItem, RevokeToken, now_unix};
use testkit::bench::{Background, Bench};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The allocator `revokd` runs with (`src/main.rs`), so the service code
/// this example runs in-process is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// `BENCH_CHUNKED=1`: the revocations go as `revoke_batch` jobs of
    /// [`BATCH_CHUNK`] items (`Producer::revoke_many`) instead of one
    /// `revoke` job each.
    chunked: bool,
    /// `BENCH_COMMIT_DELAY_US`: µs every commit waits (a slow disk).
    commit_delay_us: usize,
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
            chunked: env_or("BENCH_CHUNKED", "0") == "1",
            commit_delay_us: count("BENCH_COMMIT_DELAY_US", "0")?.min(100_000),
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
    revokd::app::telemetry::init("warn");
    let settings = Settings::from_env()?;
    let o = run(&settings).await?;
    println!(
        "worker jobs={} concurrency={} push_per_s={:.0} drain_s={:.2} applied_per_s={:.0} \
         steady_per_s={:.0} first_row_ms={:.0} chunk={}",
        settings.jobs,
        o.concurrency,
        o.push_per_s,
        o.drain_secs,
        o.applied_per_s,
        o.steady_per_s,
        o.first_row_ms,
        if settings.chunked { BATCH_CHUNK } else { 1 }
    );
    Ok(())
}

/// The measurement on its own prefix and database, cleaned up whatever
/// happens.
async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let bench = Bench::new(&settings.redis_url, &settings.pg_server);
    let outcome = bench
        .measure(async |background| measure(settings, &bench, background).await)
        .await;
    bench.clean_up(outcome).await
}

async fn measure(
    settings: &Settings,
    bench: &Bench,
    background: &mut Background,
) -> anyhow::Result<Outcome> {
    let prefix = bench.prefix.as_str();
    let services = bench.services().await?;
    if settings.commit_delay_us > 0 {
        // The services' pool connects lazily: all its sessions wait.
        let admin = sqlx::PgPool::connect(&bench.db_url).await?;
        for setting in [
            format!("commit_delay = {}", settings.commit_delay_us),
            "commit_siblings = 0".to_owned(),
        ] {
            let alter = format!("alter database \"{}\" set {setting}", bench.db_name);
            // A name of this run and a number: nothing from outside.
            let alter = sqlx::AssertSqlSafe(alter);
            sqlx::query(alter)
                .execute(&admin)
                .await
                .context("slow commits")?;
        }
        admin.close().await;
    }
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
    if settings.chunked {
        push_chunked(&producer, n, settings.pushers).await?;
    } else {
        push(&producer, n, settings.pushers).await?;
    }
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
    // Each job revokes `per_job` tokens.
    let per_job = if settings.chunked { BATCH_CHUNK } else { 1 };
    let jobs = n.div_ceil(per_job);
    if depth.pending != u64::try_from(jobs)? {
        bail!(
            "pushed {jobs} jobs but the queue holds {} pending",
            depth.pending
        );
    }

    background.start_worker(bench, &services);
    let started = Instant::now();

    let mut first_row: Option<(Duration, i64)> = None;
    // The last time the row count moved, and to what.
    let mut progress = (Duration::ZERO, 0_i64);
    let mut last_report = Instant::now();
    let queue = revokd_jobs::queue_config(prefix);
    let drained = loop {
        // The queue's done count: O(1), where a count(*) of the growing
        // table every 50 ms took a few % of the machine from the worker. A
        // job is done only once both stores have its revocation; the rows
        // are counted once at the end.
        let done = services
            .deny_fast
            .queue_depth(&queue)
            .await
            .context("queue depth")?
            .done;
        // Revocations applied (the last chunk may be short).
        let rows = i64::try_from(done)?
            .saturating_mul(i64::try_from(per_job)?)
            .min(target);
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
        if let Some(done) = background.tasks.try_join_next() {
            done.context("worker panicked")??;
            bail!("the worker stopped before draining the queue");
        }
        tokio::time::sleep(POLL).await;
    };

    let rows: i64 = sqlx::query_scalar("select count(*) from revoked_tokens")
        .fetch_one(services.db.pool())
        .await
        .context("count revoked_tokens")?;
    if rows != target {
        bail!("{n} jobs done but Postgres holds {rows} revocations");
    }
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

/// Pushes `n` revocations as `revoke_batch` jobs: calls of 10 chunks,
/// `pushers` at a time.
async fn push_chunked(producer: &Producer, n: usize, pushers: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let per_call = 10 * BATCH_CHUNK;
    let expires_at = now_unix() + 3600;
    let mut tasks = JoinSet::new();
    for _ in 0..pushers {
        let (producer, next) = (producer.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(per_call, Ordering::Relaxed);
                if from >= n {
                    return anyhow::Ok(());
                }
                let items = (from..n.min(from + per_call)).map(|_| {
                    let subject = Some(format!("bench-worker-{}", subject_bucket()));
                    let token_id = Uuid::now_v7().simple().to_string();
                    RevokeItem::new(token_id, subject, expires_at).reason("bench")
                });
                producer.revoke_many(items).await.context("push a chunk")?;
            }
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
