//! Setup and teardown shared by the benchmark examples that run against real
//! servers (`pickup_latency`, `bench_worker`, `maintenance_bench`).
//!
//! A [`Bench`] owns a unique Redis key prefix `revokd-bench-<uuid>:` and a
//! fresh Postgres database `revokd_bench_<uuid>`. [`Bench::measure`] runs a
//! measurement until it ends or Ctrl-C, then stops the tasks it started in
//! [`Background`]; [`Bench::clean_up`] then deletes exactly the keys under the
//! prefix, removes the prefix's queue from `core:apalis:queues:list` and
//! drops the database, whatever the outcome. Nothing else on the (shared)
//! servers is touched.

mod redis_ops;

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser as _;
use revokd::{
    app::Services,
    cli::Cli,
    store::pg::Db,
    worker::{self, WorkerDeps},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use self::redis_ops::{delete_prefix, redis_connection, scan};
use crate::{
    pg::{database_url, drop_database},
    prefix::{QUEUES_LIST, queue_entry},
};

/// HMAC secret of the bench configuration (no token is ever verified).
const SECRET: &str = "bench-secret-that-is-long-enough-for-hs256";
/// How long background tasks get to stop before they are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The variable `name`, or `default` when it is unset.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

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
        let admin = database_url(&self.db_url, "postgres");
        if let Err(error) = drop_database(&admin, db_name).await {
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
            .arg(queue_entry(&self.prefix))
            .query_async(&mut conn)
            .await
            .context("ZREM")?;
        Ok(deleted)
    }
}

impl Background {
    /// Starts revokd's worker (`revokd::worker::run`, concurrency from the
    /// configuration) on the bench prefix, until [`Background::stop`].
    pub fn start_worker(&mut self, bench: &Bench, services: &Services) {
        self.tasks.spawn(worker::run(
            WorkerDeps {
                applier: services.applier(),
                redis: revokd_jobs::RedisTarget::url(&bench.redis_url).expect("REDIS_URL"),
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
