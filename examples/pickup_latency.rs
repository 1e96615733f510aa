//! Push-to-applied latency of revokd's queue pipeline.
//!
//! Measures the time from just before `Producer::revoke` is called to the
//! moment the worker announces the revocation applied (Redis deny-list and
//! Postgres both written) on the channel `{prefix}done`, whose message is the job id (see
//! `revokd::write::completion`). The probe is sequential: register for the job's
//! completion, start the clock, push, wait, repeat.
//!
//! 1. **idle**: `BENCH_N` (default 300) probes on an otherwise empty queue;
//! 2. **under load**: the same probe while 4 background producers push other
//!    revocations at `BENCH_LOAD_RATE` jobs/s in total (default 2000; `0`
//!    means as fast as they go, one push in flight each), starting 3 s before
//!    the probe and stopping after it. The background throughput is counted
//!    in Postgres `revoked_tokens` over that whole run.
//!
//! The worker runs in this process (`revokd::worker::run`, concurrency from
//! `REVOKD_WORKER_CONCURRENCY`, default 64) against a unique Redis key prefix
//! `revokd-bench-<uuid>:` and a fresh Postgres database `revokd_bench_<uuid>`.
//! At the end, also after a failure or Ctrl-C, it deletes exactly the keys
//! under that prefix, removes its queue from `core:apalis:queues:list` and
//! drops that database; nothing else on the (shared) servers is touched.
//!
//! ```text
//! cargo run --release --features bench --example pickup_latency
//! ```
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `BENCH_DATABASE_URL` (the server to create the bench database on, e.g.
//! `postgres://postgres@127.0.0.1:5432` or any database URL on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `BENCH_N`,
//! `BENCH_LOAD_RATE`, `RUST_LOG` (default `warn`, on stderr). The table goes
//! to stdout, progress to stderr.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use revokd::{app::Services, write::completion::Completions};
use revokd_jobs::{Producer, RevokeToken, now_unix};
use testkit::bench::{Background, Bench, env_or};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The allocator `revokd` runs with (`src/main.rs`), so the service code
/// this example runs in-process is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Background producers in the loaded scenario.
const LOAD_PRODUCERS: usize = 4;
/// Subjects of the two kinds of revocation, to count them apart in Postgres.
const PROBE_SUBJECT: &str = "bench-probe";
const LOAD_SUBJECT: &str = "bench-load";
/// Probes pushed (and not counted) before each measurement.
const WARMUP_PROBES: usize = 20;
/// How long the background load runs before the loaded probe starts.
const LOAD_WARMUP: Duration = Duration::from_secs(3);
/// A probe not applied within this long counts as timed out.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the backlog may take to drain after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run against, from the environment.
struct Settings {
    redis_url: String,
    pg_server: String,
    n: usize,
    load_rate: f64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            pg_server: env_or(
                "BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            n: env_or("BENCH_N", "300")
                .parse()
                .context("BENCH_N must be a count")?,
            load_rate: env_or("BENCH_LOAD_RATE", "2000")
                .parse()
                .context("BENCH_LOAD_RATE must be a number of jobs per second")?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    revokd::app::telemetry::init("warn");
    let settings = Settings::from_env()?;
    let bench = Bench::new(&settings.redis_url, &settings.pg_server);
    let outcome = bench
        .measure(async |background| measure(&settings, &bench, background).await)
        .await;
    bench.clean_up(outcome).await
}

/// Sets up the database and the worker, runs both scenarios, prints the table.
async fn measure(
    settings: &Settings,
    bench: &Bench,
    background: &mut Background,
) -> anyhow::Result<()> {
    let prefix = bench.prefix.as_str();
    let services = bench.services().await?;
    let concurrency = services.config.worker_concurrency;
    background.start_worker(bench, &services);
    eprintln!("worker started (concurrency {concurrency}), prefix {prefix}");

    // Its own connection, so that probe pushes never queue behind the load's.
    let producer = Producer::connect(&settings.redis_url, prefix, "bench-probe")
        .await
        .context("probe producer")?;
    let probe = Probe {
        producer: &producer,
        completions: Completions::new(
            &revokd_jobs::RedisTarget::url(&settings.redis_url)?,
            prefix,
            1,
        ),
    };

    eprintln!("warm-up: {WARMUP_PROBES} probes");
    // One first, so that a worker that cannot start fails fast.
    for n in [1, WARMUP_PROBES - 1] {
        if probe.run(n).await?.timeouts > 0 {
            bail!("the worker did not apply a warm-up job within {WAIT_TIMEOUT:?}");
        }
    }

    eprintln!("idle: {} sequential probes", settings.n);
    let idle = probe.run(settings.n).await?;

    let rate = settings.load_rate;
    eprintln!(
        "under load: {LOAD_PRODUCERS} producers at {}, then {} probes",
        if rate > 0.0 {
            format!("{rate} jobs/s in total")
        } else {
            "full speed".to_owned()
        },
        settings.n
    );
    let load_stop = background.stop.child_token();
    let pushed = Arc::new(AtomicU64::new(0));
    let mut loaders = JoinSet::new();
    let load_started = Instant::now();
    for _ in 0..LOAD_PRODUCERS {
        let producer = Producer::connect(&settings.redis_url, prefix, "bench-load")
            .await
            .context("load producer")?;
        let per_task = (rate > 0.0).then(|| rate / LOAD_PRODUCERS as f64);
        loaders.spawn(push_load(
            producer,
            per_task,
            Arc::clone(&pushed),
            load_stop.clone(),
        ));
    }
    tokio::time::sleep(LOAD_WARMUP).await;
    let loaded = probe.run(settings.n).await?;
    load_stop.cancel();
    while let Some(joined) = loaders.join_next().await {
        joined.context("load producer panicked")??;
    }
    let ran = load_started.elapsed();
    let pushed_total = pushed.load(Ordering::Relaxed);
    let applied_at_stop = count_load_rows(&services).await?;
    let drain = Instant::now();
    let mut applied_total = applied_at_stop;
    while applied_total < pushed_total && drain.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        applied_total = count_load_rows(&services).await?;
    }
    let drain = drain.elapsed();

    let secs = ran.as_secs_f64();
    let load = LoadReport {
        pushed_per_sec: pushed_total as f64 / secs,
        applied_per_sec: applied_at_stop as f64 / secs,
        ran,
        backlog: pushed_total.saturating_sub(applied_at_stop),
        pushed_total,
        applied_total,
        drain,
    };
    print_report(settings, concurrency, &idle, &loaded, &load);
    Ok(())
}

/// Sequential probes: one revocation in flight at a time.
struct Probe<'a> {
    producer: &'a Producer,
    completions: Completions,
}

/// What a probe run measured.
struct Samples {
    /// From just before `revoke` to the completion message, sorted.
    applied: Vec<Duration>,
    /// How long the `revoke` call itself took, sorted.
    push: Vec<Duration>,
    /// Probes not applied within [`WAIT_TIMEOUT`] (not in the samples).
    timeouts: usize,
}

impl Probe<'_> {
    async fn run(&self, n: usize) -> anyhow::Result<Samples> {
        let mut samples = Samples {
            applied: Vec::with_capacity(n),
            push: Vec::with_capacity(n),
            timeouts: 0,
        };
        for _ in 0..n {
            let job = RevokeToken::new(
                format!("probe-{}", Uuid::now_v7().simple()),
                Some(PROBE_SUBJECT.to_owned()),
                now_unix() + 900,
            )
            .reason("bench");
            let completion = self
                .completions
                .subscribe(&job.meta.job_id)
                .await
                .context("subscribe to a probe's completion")?;
            let started = Instant::now();
            self.producer
                .revoke(job)
                .await
                .context("push a probe job")?;
            let pushed = started.elapsed();
            let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
            if completion.wait_until(deadline).await == revokd::write::completion::Outcome::Applied
            {
                samples.applied.push(started.elapsed());
                samples.push.push(pushed);
            } else {
                samples.timeouts += 1;
            }
        }
        samples.applied.sort_unstable();
        samples.push.sort_unstable();
        Ok(samples)
    }
}

/// One background producer: pushes revocations at `rate` jobs/s (catching up
/// when behind), or back to back when `rate` is `None`, until `stop`.
async fn push_load(
    producer: Producer,
    rate: Option<f64>,
    pushed: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    while !stop.is_cancelled() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            // Sleeping until an instant already past still waits for a timer
            // tick (about 1 ms); a producer that is behind pushes at once.
            if due > tokio::time::Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
        let job = RevokeToken::new(
            format!("load-{}", Uuid::now_v7().simple()),
            Some(LOAD_SUBJECT.to_owned()),
            now_unix() + 900,
        );
        producer
            .revoke(job)
            .await
            .context("push a background job")?;
        sent += 1;
        pushed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Background revocations recorded in Postgres so far.
async fn count_load_rows(services: &Services) -> anyhow::Result<u64> {
    let rows: i64 = sqlx::query_scalar("select count(*) from revoked_tokens where subject = $1")
        .bind(LOAD_SUBJECT)
        .fetch_one(services.db.pool())
        .await
        .context("count background revocations")?;
    Ok(u64::try_from(rows).unwrap_or_default())
}

/// The background load, from its start to its stop.
struct LoadReport {
    pushed_per_sec: f64,
    /// Applied by the time the load stopped, per second of load.
    applied_per_sec: f64,
    ran: Duration,
    /// Pushed but not yet applied when the load stopped.
    backlog: u64,
    pushed_total: u64,
    applied_total: u64,
    /// From stopping the load to the last background job applied.
    drain: Duration,
}

fn print_report(
    settings: &Settings,
    concurrency: usize,
    idle: &Samples,
    loaded: &Samples,
    load: &LoadReport,
) {
    println!(
        "push-to-applied latency (ms), sequential probe; worker concurrency {concurrency}, \
         {LOAD_PRODUCERS} background producers{}",
        if settings.load_rate > 0.0 {
            format!(" at {} jobs/s target", settings.load_rate)
        } else {
            " at full speed".to_owned()
        }
    );
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>8} {:>8} {:>13}",
        "scenario", "n", "p50", "p90", "p99", "max", "push-call p50"
    );
    for (name, samples) in [("idle", idle), ("under load", loaded)] {
        let p = |q: f64| millis(percentile(&samples.applied, q));
        println!(
            "{:<12} {:>5} {:>8} {:>8} {:>8} {:>8} {:>13}",
            name,
            samples.applied.len(),
            p(50.0),
            p(90.0),
            p(99.0),
            p(100.0),
            millis(percentile(&samples.push, 50.0)),
        );
        if samples.timeouts > 0 {
            println!(
                "{:<12} {} probes not applied within {WAIT_TIMEOUT:?} (not counted)",
                "", samples.timeouts
            );
        }
    }
    println!(
        "background load ({:.1} s, around the loaded probe): pushed {:.0} jobs/s, applied {:.0} \
         jobs/s (revoked_tokens rows); backlog at stop {}; {}/{} applied, drained in {:.1} s",
        load.ran.as_secs_f64(),
        load.pushed_per_sec,
        load.applied_per_sec,
        load.backlog,
        load.applied_total,
        load.pushed_total,
        load.drain.as_secs_f64(),
    );
}

/// Nearest-rank percentile of sorted samples; `None` when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}", d.as_secs_f64() * 1e3),
    )
}
