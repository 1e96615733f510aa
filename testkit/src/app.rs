//! [`TestApp`]: the real API, marker guard and (optionally) worker and
//! replica follower in-process, on a database and a key prefix of its own;
//! [`TestApp::stop`] ends them and cleans up. Its endpoint helpers are in
//! `app_api`.

use std::{net::SocketAddr, time::Duration};

use revokd::{
    app::{Api, Services},
    store::pg::Db,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{redis_url, spool_dir, test_config},
    db::TestDb,
    prefix::{PrefixGuard, unique_prefix},
    roles::{Roles, pending_loaded},
    wait::eventually,
};

/// The real API (and optionally a worker) on a fresh database and prefix.
pub struct TestApp {
    /// Where its API listens.
    pub addr: SocketAddr,
    /// Its key prefix.
    pub prefix: String,
    /// Its services, as `serve` builds them.
    pub services: Services,
    /// A client for its API.
    pub http: reqwest::Client,
    /// Fires the app's shutdown (what SIGTERM does to `serve`).
    pub shutdown: CancellationToken,
    /// Its checker (pending overlay, counters).
    pub checker_stats: std::sync::Arc<revokd::read::checker::Checker>,
    /// The roles running in the background: awaited by
    /// [`TestApp::stop`], aborted on drop.
    pub tasks: Roles,
    // Field order: stop roles before the database goes.
    guard: Option<PrefixGuard>,
    /// Its database.
    pub db: TestDb,
}

/// What a [`TestApp`] runs, and on what.
pub struct Options<'a> {
    /// Run the worker (default).
    pub worker: bool,
    /// Another Redis than the shared one (e.g. a private server or a proxy).
    pub redis_url: Option<String>,
    /// Reach the test database through this URL instead (e.g. a proxy).
    pub db_url: Option<String>,
    /// Run the replica follower, as `serve` does for the api role.
    pub replica: bool,
    /// More command-line options.
    pub extra: &'a [&'a str],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            worker: true,
            redis_url: None,
            db_url: None,
            replica: false,
            extra: &[],
        }
    }
}

impl TestApp {
    /// The default app: API and worker.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// An app on a database of its own.
    pub async fn spawn_with(options: Options<'_>) -> Self {
        Self::spawn_on(TestDb::create().await, options).await
    }

    /// [`TestApp::spawn_with`] on a database created beforehand (so
    /// `options.db_url` can name it).
    pub async fn spawn_on(db: TestDb, options: Options<'_>) -> Self {
        let prefix = unique_prefix();
        let redis = options.redis_url.clone().unwrap_or_else(redis_url);
        let db_url = options.db_url.clone().unwrap_or_else(|| db.url.clone());
        let config = test_config(&prefix, &redis, &db_url, options.extra);
        let handle = match &options.db_url {
            Some(url) => Db::connect_lazy(url).expect("pool"),
            None => db.db.clone(),
        };
        let services = Services::with_db(config, handle).expect("services");
        let stop = CancellationToken::new();
        let api = Api::bind(&services).await.expect("bind");
        let addr = api.local_addr().expect("addr");
        let checker_stats = api.checker();
        let mut tasks = Roles::default();
        tasks.spawn("api", api.run(stop.clone()));
        tasks.spawn_marker_guard(&services, &stop);
        if options.worker {
            tasks.spawn_worker(&services, &stop);
        }
        if options.replica
            && let Some(follower) = services.follower()
        {
            tasks.spawn("replica follower", follower.run(stop.clone()));
        }
        pending_loaded(&checker_stats).await;
        if options.redis_url.is_none() {
            let deny = services.deny_fast.clone();
            eventually(
                Duration::from_secs(5),
                "marker set by the first rebuild",
                || {
                    let deny = deny.clone();
                    async move { deny.marker_present().await.unwrap_or(false) }
                },
            )
            .await;
        }
        Self {
            addr,
            tasks,
            // The shared server, also when the app reached it through a proxy
            // (a private redis-server of a test is simply killed).
            guard: Some(PrefixGuard {
                url: redis_url(),
                prefix: prefix.clone(),
            }),
            prefix,
            services,
            http: reqwest::Client::new(),
            shutdown: stop,
            checker_stats,
            db,
        }
    }
}

impl TestApp {
    /// Shuts the app down as SIGTERM does and waits for every role to end;
    /// then its keys, spool and database go. Without it (a test that
    /// panics) drop aborts the roles and cleans up with pauses.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.tasks.join().await;
        if let Some(guard) = self.guard.take() {
            guard.clean();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tasks.abort();
        // A spool the test made (Postgres cut) goes with it.
        let _ = std::fs::remove_dir_all(spool_dir(&self.prefix));
    }
}
