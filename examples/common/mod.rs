//! Setup and teardown shared by the benchmark examples that run against real
//! servers (`pickup_latency`, `bench_worker`, `maintenance_bench`), used with
//! `mod common;` (Cargo does not build `examples/common/mod.rs` as an example).
//!
//! A [`Bench`] owns a unique Redis key prefix `revokd-bench-<uuid>:` and a
//! fresh Postgres database `revokd_bench_<uuid>`. [`Bench::measure`] runs a
//! measurement until it ends or Ctrl-C, then stops the tasks it started in
//! [`Background`]; [`Bench::clean_up`] then deletes exactly the keys under the
//! prefix, removes the prefix's queue from `core:apalis:queues:list` and
//! drops the database, whatever the outcome. Nothing else on the (shared)
//! servers is touched.

use std::{str::FromStr, time::Duration};

use anyhow::{Context, anyhow, bail};
use clap::Parser as _;
use redis::aio::MultiplexedConnection;
use revokd::{
    app::Services,
    cli::Cli,
    store::pg::Db,
    worker::{self, WorkerDeps},
};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The allocator `revokd` runs with (`src/main.rs`), so the service code
/// these examples run in-process is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// HMAC secret of the bench configuration (no token is ever verified).
const SECRET: &str = "bench-secret-that-is-long-enough-for-hs256";
/// apalis's global list of queues, where a running worker registers its own.
const QUEUES_LIST: &str = "core:apalis:queues:list";
/// How long background tasks get to stop before they are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One run's own Redis prefix and Postgres database.
pub struct Bench {
    pub redis_url: String,
    /// `revokd-bench-<uuid>:`.
    pub prefix: String,
    /// `revokd_bench_<uuid>`.
    pub db_name: String,
    /// `pg_server` with its database replaced by [`Bench::db_name`].
    pub db_url: String,
}

/// Tasks a measurement runs in the background (the worker), stopped before
/// cleanup whichever way the measurement ends.
pub struct Background {
    /// Cancelled when the measurement ends.
    pub stop: CancellationToken,
    pub tasks: JoinSet<anyhow::Result<()>>,
}

impl Bench {
    /// A fresh prefix and database name on `pg_server` (a server URL or any
    /// database URL on it); creates nothing yet.
    pub fn new(redis_url: &str, pg_server: &str) -> Self {
        let prefix = format!("revokd-bench-{}:", Uuid::new_v4().simple());
        let db_name = format!("revokd_bench_{}", Uuid::new_v4().simple());
        let db_url = database_url(pg_server, &db_name);
        Self {
            redis_url: redis_url.to_owned(),
            prefix,
            db_name,
            db_url,
        }
    }

    /// Runs `measure` until it ends or Ctrl-C (an `interrupted` error), then
    /// stops its background tasks.
    pub async fn measure<T>(
        &self,
        measure: impl AsyncFnOnce(&mut Background) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut background = Background {
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
        };
        let outcome = tokio::select! {
            outcome = measure(&mut background) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        background.shut_down().await;
        outcome
    }

    /// Creates and migrates the database, and builds revokd's services on
    /// the prefix and the database.
    pub async fn services(&self) -> anyhow::Result<Services> {
        revokd::store::pg::prepare(&self.db_url)
            .await
            .context("create and migrate the bench database")?;
        let cli = Cli::try_parse_from([
            "revokd",
            "--jwt-secret",
            SECRET,
            "--key-prefix",
            self.prefix.as_str(),
            "--redis-url",
            self.redis_url.as_str(),
            "--database-url",
            self.db_url.as_str(),
            "--listen",
            "127.0.0.1:0",
            "migrate",
        ])
        .context("bench configuration")?;
        let db = Db::connect_lazy(&self.db_url).context("Postgres pool")?;
        Services::with_db(cli.config, db).context("services")
    }

    /// Deletes the keys under the prefix, removes its queue from apalis's
    /// list and drops the database, reporting on stderr; then `outcome`, or
    /// an error when the cleanup was incomplete.
    pub async fn clean_up<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        let Self {
            prefix, db_name, ..
        } = self;
        eprintln!("cleaning up: Redis keys {prefix}*, database {db_name}");
        let mut cleanup_failed = false;
        match self.delete_redis_keys().await {
            Ok(deleted) => eprintln!("deleted {deleted} Redis keys"),
            Err(error) => {
                cleanup_failed = true;
                eprintln!("Redis cleanup failed: {error:#}");
            }
        }
        if let Err(error) = drop_database(&self.db_url, db_name).await {
            cleanup_failed = true;
            eprintln!("dropping database {db_name} failed: {error:#}");
        }
        let outcome = outcome?;
        if cleanup_failed {
            bail!("cleanup incomplete (see above)");
        }
        Ok(outcome)
    }

    /// Every key under the prefix and this queue's entry in apalis's global
    /// queue list. Returns keys deleted.
    async fn delete_redis_keys(&self) -> anyhow::Result<u64> {
        let mut conn = redis_connection(&self.redis_url).await?;
        let deleted = delete_prefix(&mut conn, &self.prefix).await?;
        let _: u64 = redis::cmd("ZREM")
            .arg(QUEUES_LIST)
            .arg(format!("{}queue:jobs:workers", self.prefix))
            .query_async(&mut conn)
            .await
            .context("ZREM")?;
        Ok(deleted)
    }
}

impl Background {
    /// Starts revokd's worker (`revokd::worker::run`, concurrency from the
    /// configuration) on the bench prefix, until [`Background::stop`].
    #[allow(dead_code, reason = "not every example runs a worker")]
    pub fn start_worker(&mut self, bench: &Bench, services: &Services) {
        self.tasks.spawn(worker::run(
            WorkerDeps {
                applier: services.applier(),
                redis_url: bench.redis_url.clone(),
                prefix: bench.prefix.clone(),
                concurrency: services.config.worker_concurrency,
            },
            self.stop.clone(),
        ));
    }

    /// Cancels [`Background::stop`] and waits for the tasks, aborting them
    /// after [`STOP_TIMEOUT`].
    async fn shut_down(&mut self) {
        self.stop.cancel();
        let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            eprintln!("worker did not stop within 10 s; aborting it");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
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

/// `s` with the glob metacharacters of a `SCAN MATCH` pattern escaped.
pub fn glob_escape(s: &str) -> String {
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
