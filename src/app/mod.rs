//! Wiring: builds the stores, the checker and the roles from configuration,
//! and runs the roles until shutdown.

pub mod shutdown;
pub mod telemetry;

use revokd_jobs::RedisTarget;
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use revokd_jobs::Producer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ReadMode, redact},
    http::{self, AppState, Shared, auth::KeyRing, grpc::ExtAuthz},
    read::{
        checker::Checker,
        replica::{Follower, Replica},
    },
    retry::Backoff,
    scheduler,
    store::{self, Stores, TtlPolicy, pg::Db, redis::DenyList, resync::Resync},
    token::Verifier,
    worker::{self, Applier, WorkerDeps, maintenance::Maintenance},
    write::{
        spool::Spool,
        submit::{self, Submitter},
    },
};

/// Postgres connections of a one-shot command (`revoke`, `cleanup`, ...).
pub const ONE_SHOT_PG_CONNECTIONS: u32 = 2;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API.
    pub api: bool,
    /// Queue workers.
    pub worker: bool,
    /// The cron scheduler.
    pub scheduler: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
        scheduler: true,
    };

    /// The default Postgres pool of a process running these roles (see
    /// `REVOKD_PG_MAX_CONNECTIONS`): the API's checks, write path and overlay
    /// 8, a worker's batches (4 in flight) and resync 8, the scheduler 2;
    /// summed, at most 16.
    pub fn pg_connections(self) -> u32 {
        let sum =
            u32::from(self.api) * 8 + u32::from(self.worker) * 8 + u32::from(self.scheduler) * 2;
        sum.min(16)
    }

    /// Parses `api,worker,scheduler` (any subset).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut roles = Roles {
            api: false,
            worker: false,
            scheduler: false,
        };
        for role in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match role {
                "api" => roles.api = true,
                "worker" => roles.worker = true,
                "scheduler" => roles.scheduler = true,
                other => {
                    return Err(format!(
                        "unknown role {other:?} (expected api, worker, scheduler)"
                    ));
                }
            }
        }
        if roles
            == (Roles {
                api: false,
                worker: false,
                scheduler: false,
            })
        {
            return Err("no role given".into());
        }
        Ok(roles)
    }
}

/// The long-lived parts every role draws from.
#[derive(Clone)]
pub struct Services {
    /// Configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// Postgres.
    pub db: Db,
    /// Deny-list on a fast-failing connection (read path).
    pub deny_fast: DenyList,
    /// Deny-list on a patient connection (worker).
    pub deny_patient: DenyList,
    /// Producer on a patient connection.
    pub producer: Producer,
    /// The local replica checks read first (read mode `replica`).
    pub replica: Option<Arc<Replica>>,
    /// Where revocations go while Postgres is unreachable (one per process).
    pub spool: Arc<Spool>,
    /// Where Redis is: `REDIS_URL`, or the primary Sentinel names.
    pub redis: RedisTarget,
}

impl Services {
    /// Builds every part from configuration, as a one-shot command does
    /// (a Postgres pool of [`ONE_SHOT_PG_CONNECTIONS`] unless configured);
    /// needs neither store to be up.
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let max = config.pg_max_connections.unwrap_or(ONE_SHOT_PG_CONNECTIONS);
        // Before the pool: its first probe of several hosts may switch
        // (a counted event) before anything else records.
        crate::instruments::handle();
        let db = Db::connect_lazy_sized(&config.database_url, max)
            .map_err(|e| redact::url_error("DATABASE_URL", &config.database_url, e))?;
        Self::with_db(config, db)
    }

    /// [`build`](Self::build) for a process running `roles`: its Postgres
    /// pool sized by [`Roles::pg_connections`] unless configured.
    pub fn build_for(mut config: Config, roles: Roles) -> anyhow::Result<Self> {
        config
            .pg_max_connections
            .get_or_insert(roles.pg_connections());
        Self::build(config)
    }

    /// Builds every part around an existing Postgres handle.
    pub fn with_db(config: Config, db: Db) -> anyhow::Result<Self> {
        crate::instruments::handle();
        let verifier = Verifier::new(&config.key_settings()).context("verification key")?;
        let invalid_redis =
            |e: ::redis::RedisError| redact::url_error("REDIS_URL", &config.redis_url, e);
        let redis = match (&config.redis_sentinels, &config.redis_sentinel_master) {
            (Some(sentinels), Some(master)) => RedisTarget::sentinel(
                sentinels,
                master,
                &config.redis_url,
                config.redis_sentinel_password.as_ref().map(|p| p.expose()),
            ),
            _ => RedisTarget::url(&config.redis_url),
        }
        .map_err(invalid_redis)?;
        let fast = store::fast_redis(&redis);
        let patient = store::patient_redis(&redis);
        let prefix = config.key_prefix.clone();
        Ok(Self {
            verifier: Arc::new(verifier),
            db,
            deny_fast: DenyList::new(fast, &prefix),
            deny_patient: DenyList::new(patient.clone(), &prefix),
            producer: Producer::new(patient, &prefix, "revokd"),
            replica: (config.read_mode == ReadMode::Replica)
                .then(|| Replica::new(config.replica_max_lag)),
            spool: Arc::new(Spool::new(config.spool_dir(), &prefix)),
            redis,
            config: Arc::new(config),
        })
    }

    /// The lifetime rules of stored revocations, from the settings.
    pub fn ttl_policy(&self) -> TtlPolicy {
        TtlPolicy {
            // Deny-list entries outlive the longest leeway any issuer allows.
            leeway: self
                .config
                .leeway()
                .max(i64::try_from(self.verifier.leeway_secs()).unwrap_or(i64::MAX)),
            max_lifetime: self.config.max_lifetime_secs(),
        }
    }

    /// Both stores, the deny-list over `deny`'s connection.
    pub fn stores(&self, deny: DenyList) -> Stores {
        Stores {
            deny,
            db: self.db.clone(),
        }
    }

    /// The job applier.
    pub fn applier(&self) -> Applier {
        let bulk = DenyList::new(store::patient_redis(&self.redis), &self.config.key_prefix);
        Applier::new(
            self.stores(self.deny_patient.clone().announcing_repeats()),
            self.ttl_policy(),
        )
        .with_bulk_deny(bulk.announcing_repeats())
        .with_maintenance(self.maintenance(self.deny_patient.clone()))
    }

    /// Cleanup and rebuild over `deny`.
    pub fn maintenance(&self, deny: DenyList) -> Maintenance {
        Maintenance {
            stores: self.stores(deny),
            queue: revokd_jobs::queue_config(&self.config.key_prefix),
            ttl: self.ttl_policy(),
            audit_retention: Config::secs(self.config.audit_retention),
            job_retention: Config::secs(self.config.job_retention),
            batch: crate::worker::maintenance::BATCH,
        }
    }

    /// The read-path checker.
    pub fn checker(&self) -> Checker {
        let checker = Checker::new(
            Arc::clone(&self.verifier),
            self.resync(self.deny_fast.clone()),
            self.config.fail_mode,
        )
        .with_verify_cache(self.config.verify_cache_size);
        match &self.replica {
            Some(replica) => checker.with_replica(Arc::clone(replica)),
            None => checker,
        }
    }

    /// Keeps the replica current (none in read mode `redis`).
    pub fn follower(&self) -> Option<Follower> {
        Some(Follower {
            replica: Arc::clone(self.replica.as_ref()?),
            redis: self.redis.clone(),
            deny: self.deny_fast.clone(),
            db: self.db.clone(),
            resync: self.resync(self.deny_fast.clone()),
            ttl: self.ttl_policy(),
            followed: Arc::default(),
            copy_blocks: crate::read::replica::COPY_BLOCKS,
            after_copy: None,
        })
    }

    /// Copies revocations written during a Redis outage into `deny`.
    /// Its writes announce entries Redis already held, as the applier's
    /// do: the rows it marks move in Postgres's heap, and a replica's load
    /// resumed across that move learns them from the stream.
    pub fn resync(&self, deny: DenyList) -> Resync {
        Resync {
            stores: self.stores(deny.announcing_repeats()),
            ttl: self.ttl_policy(),
            batch: crate::store::resync::BATCH,
        }
    }

    /// The write path shared by HTTP and CLI, around `checker`'s breaker.
    pub fn submitter(&self, checker: Arc<Checker>) -> Submitter {
        Submitter {
            producer: self.producer.clone(),
            checker,
            db: self.db.clone(),
            revokes: crate::store::pg::batch::RevokeBatcher::pending(self.db.clone()),
            spool: Arc::clone(&self.spool),
            completions: crate::write::completion::Completions::new(
                &self.redis,
                &self.config.key_prefix,
                self.config.max_waiters,
            ),
            wait_timeout: self.config.wait_timeout,
            ttl: self.ttl_policy(),
            // A connection of its own: checks share `deny_fast`'s, and a
            // burst of writes ahead of them would delay their reads past
            // its timeout.
            denies: DenyList::new(store::fast_redis(&self.redis), &self.config.key_prefix)
                .grouped(),
        }
    }

    /// The HTTP state.
    pub fn http_state(&self) -> anyhow::Result<AppState> {
        let checker = Arc::new(self.checker());
        Ok(Arc::new(Shared {
            submitter: Arc::new(self.submitter(Arc::clone(&checker))),
            queue: revokd_jobs::queue_config(&self.config.key_prefix),
            config: Arc::clone(&self.config),
            ttl: self.ttl_policy(),
            checker,
            deny: self.deny_fast.clone(),
            db: self.db.clone(),
            probe: crate::http::probe::Probe::new(
                self.deny_fast.clone(),
                self.db.clone(),
                revokd_jobs::queue_config(&self.config.key_prefix),
            ),
            check_keys: Arc::new(
                KeyRing::parse(self.config.check_keys.expose())
                    .map_err(anyhow::Error::msg)
                    .context("REVOKD_CHECK_KEYS")?,
            ),
            api_keys: Arc::new(
                KeyRing::parse(self.config.api_keys.expose())
                    .map_err(anyhow::Error::msg)
                    .context("REVOKD_API_KEYS")?,
            ),
        }))
    }
}

/// A bound API listener, so tests can run the real server on port 0.
pub struct Api {
    listener: TcpListener,
    /// The gRPC ext_authz listener, when `REVOKD_GRPC_LISTEN` is set.
    grpc: Option<TcpListener>,
    state: AppState,
}

impl Api {
    /// Binds `config.listen`, and `config.grpc_listen` when set.
    pub async fn bind(services: &Services) -> anyhow::Result<Self> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))
        };
        let listener = bind(services.config.listen.clone()).await?;
        let grpc = match &services.config.grpc_listen {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        Ok(Self {
            listener,
            grpc,
            state: services.http_state()?,
        })
    }

    /// The checker behind the API (its breakers and counters).
    pub fn checker(&self) -> Arc<Checker> {
        Arc::clone(&self.state.checker)
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound gRPC ext_authz address, when one is configured.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves HTTP (and gRPC ext_authz when bound) until `stop` fires;
    /// meanwhile keeps the checks' overlay of pending revocations current
    /// and replays the spool. A failing gRPC server stops the process.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let checker = Arc::clone(&self.state.checker);
        let config = &self.state.config;
        let follow = Arc::clone(checker.pending()).follow(
            self.state.db.clone(),
            checker.replica().cloned(),
            config.leeway(),
            stop.clone(),
        );
        let replay = submit::keep_replaying(
            Arc::clone(&self.state.submitter.spool),
            self.state.db.clone(),
            Some(Arc::clone(&checker)),
            self.state.ttl,
            stop.clone(),
        );
        let writes = Arc::clone(&checker).watch_redis_writes(stop.clone());
        let background = [
            tokio::spawn(follow),
            tokio::spawn(replay),
            tokio::spawn(writes),
        ];
        let limits = http::server::Limits::from(&**config);
        let grpc = async {
            let Some(listener) = self.grpc else {
                return Ok(());
            };
            let served = ExtAuthz::new(Arc::clone(&checker))
                .serve(listener, stop.clone())
                .await
                .context("gRPC ext_authz");
            // The API role fails as a whole: its gRPC half is part of it.
            stop.cancel();
            served
        };
        let http = http::server::serve(
            self.listener,
            http::router(self.state),
            limits,
            stop.clone(),
        );
        let (grpc, ()) = tokio::join!(grpc, http);
        // Ended, not only told to end: nothing writes after `run` returns.
        for task in background {
            task.abort();
            let _ = task.await;
        }
        grpc
    }
}

/// Runs the chosen roles until `stop` fires. Migrations are applied first,
/// retried in the background while Postgres is unreachable.
pub async fn serve(config: Config, roles: Roles, stop: CancellationToken) -> anyhow::Result<()> {
    // Every setting is checked before anything is served.
    validate(&config)?;
    let services = Services::build_for(config, roles)?;
    let url = services.config.database_url.clone();
    // Normally the database is ready before anything is served; when Postgres
    // is down at start, serve from Redis and keep trying in the background.
    let ready =
        tokio::time::timeout(std::time::Duration::from_secs(3), store::pg::prepare(&url)).await;
    let migrated = match ready {
        Ok(Ok(())) => tokio::spawn(async {}),
        Ok(Err(error)) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "database not ready; serving without it for now"
            );
            tokio::spawn(prepare_until_done(url, stop.clone()))
        }
        Err(_) => tokio::spawn(prepare_until_done(url, stop.clone())),
    };
    let mut tasks = tokio::task::JoinSet::new();
    if roles.api || roles.worker {
        // Every reader and writer watches the marker; a lease makes one rebuild.
        tokio::spawn(
            services
                .maintenance(services.deny_patient.clone())
                .guard(stop.clone()),
        );
    }
    if roles.api
        && let Some(follower) = services.follower()
    {
        tokio::spawn(follower.run(stop.clone()));
    }
    if roles.api {
        let api = Api::bind(&services).await?;
        tracing::info!(addr = %api.local_addr()?, "API listening");
        if let Some(addr) = api.grpc_addr() {
            tracing::info!(%addr, "gRPC ext_authz listening");
        }
        tasks.spawn(api.run(stop.clone()));
    }
    if roles.worker {
        tokio::spawn(
            services
                .resync(services.deny_patient.clone())
                .run(stop.clone()),
        );
        if !roles.api {
            // Spools left by API processes that died are replayed by any
            // process of the deployment.
            tokio::spawn(submit::keep_replaying(
                Arc::clone(&services.spool),
                services.db.clone(),
                None,
                services.ttl_policy(),
                stop.clone(),
            ));
        }
        let deps = WorkerDeps {
            applier: services.applier(),
            redis: services.redis.clone(),
            prefix: services.config.key_prefix.clone(),
            concurrency: services.config.worker_concurrency,
        };
        tasks.spawn(worker::run(deps, stop.clone()));
    }
    if roles.scheduler {
        tasks.spawn(scheduler::run(
            services.producer.clone(),
            services.config.cleanup_cron.clone(),
            stop.clone(),
        ));
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let outcome = done.context("role panicked").and_then(|r| r);
        if let Err(error) = outcome {
            tracing::error!(error = format!("{error:#}"), "role failed; shutting down");
            stop.cancel();
            result = Err(error);
        }
    }
    migrated.abort();
    result
}

/// Checks the settings parsed only when a role starts (the cleanup cron,
/// the key lists), so that `serve` refuses a bad one before anything
/// listens. The keys and URLs are checked when the services are built.
pub fn validate(config: &Config) -> anyhow::Result<()> {
    scheduler::parse(&config.cleanup_cron).map_err(|e| {
        anyhow::anyhow!(
            "invalid REVOKD_CLEANUP_CRON {:?}: {e} (6 fields, with seconds: \"0 */10 * * * *\")",
            config.cleanup_cron
        )
    })?;
    for (name, keys) in [
        ("REVOKD_API_KEYS", &config.api_keys),
        ("REVOKD_CHECK_KEYS", &config.check_keys),
    ] {
        KeyRing::parse(keys.expose()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(())
}

async fn prepare_until_done(url: String, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        match store::pg::prepare(&url).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "database not ready; retrying")
            }
        }
        backoff.wait(&stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_pools_are_sized_by_role() {
        let roles = |spec: &str| Roles::parse(spec).map(Roles::pg_connections);
        assert_eq!(roles("api"), Ok(8));
        assert_eq!(roles("worker"), Ok(8));
        assert_eq!(roles("scheduler"), Ok(2));
        assert_eq!(roles("api,scheduler"), Ok(10));
        assert_eq!(roles("api,worker"), Ok(16));
        assert_eq!(Roles::ALL.pg_connections(), 16);
        // The README's deployment: 2 API + 2 worker + 2 scheduler processes.
        let budget =
            2 * (roles("api").unwrap() + roles("worker").unwrap() + roles("scheduler").unwrap());
        assert_eq!(budget, 36);
    }
}
