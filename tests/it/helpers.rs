//! Test harness: a fresh Postgres database and a unique Redis key prefix per
//! test, the real API and worker in-process, and cleanup of exactly what the
//! test created.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::Parser;
use revokd::{
    app::{Api, Services},
    cli::{Cli, Command},
    config::Config,
    store::pg::Db,
    token::Minter,
    worker::{self, WorkerDeps},
};
use revokd_jobs::{Producer, now_unix};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// HMAC secret of every test app.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// Redis every test uses unless it starts its own.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Postgres server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of this test's own, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub db: Db,
}

impl TestDb {
    /// A copy of the migrated template database.
    pub async fn create() -> Self {
        let name = format!("revokd_test_{}", uuid::Uuid::new_v4().simple());
        crate::template::create_from_template(&name).await;
        let url = crate::template::database_url(&name);
        let db = Db::connect_lazy(&url).expect("pool");
        Self { name, url, db }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin_url();
        // Drop may run inside the test's runtime: use a thread with its own.
        // `with (force)` ends the test pool's connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&admin).await {
                    let sql = format!("drop database if exists \"{name}\" with (force)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Deletes every Redis key under a prefix when dropped.
pub struct PrefixGuard {
    pub url: String,
    pub prefix: String,
}

impl PrefixGuard {
    /// Deletes the prefix's keys now, in one pass: for when nothing writes
    /// under it any more (every role of the test has ended).
    pub fn clean(mut self) {
        self.delete_keys(&[0]);
        self.prefix.clear();
    }

    /// One pass after each pause (milliseconds).
    fn delete_keys(&self, pauses: &[u64]) {
        // An empty prefix would be every key of the shared server.
        if self.prefix.is_empty() {
            return;
        }
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        for pause in pauses {
            std::thread::sleep(Duration::from_millis(*pause));
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", glob_escape(&self.prefix)))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
            // apalis registers each queue in one global key; remove only ours.
            let ours = format!("{}queue:jobs:workers", self.prefix);
            let _: redis::RedisResult<()> = redis::cmd("ZREM")
                .arg("core:apalis:queues:list")
                .arg(ours)
                .query(&mut conn);
        }
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        // Dropped while roles may still run (a test that panicked, or one
        // that aborts its tasks): again after a pause, for a background task
        // on another thread that lands a last write after the first pass.
        self.delete_keys(&[0, 200, 800]);
    }
}

fn glob_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "*?[]\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A database and a key prefix of a deployment the test runs itself (as
/// processes or nodes); the guard deletes the prefix's keys when dropped.
pub async fn own_deployment() -> (TestDb, String, PrefixGuard) {
    let prefix = unique_prefix();
    let guard = PrefixGuard {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    (TestDb::create().await, prefix, guard)
}

/// A unique key prefix.
pub fn unique_prefix() -> String {
    format!("revokd-test-{}:", uuid::Uuid::new_v4().simple())
}

/// The spool directory of every app under `prefix` (in the temp dir).
pub fn spool_dir(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("revokd-spool-{}", prefix.trim_end_matches(':')))
}

/// Configuration of a test app.
pub fn test_config(prefix: &str, redis: &str, db_url: &str, extra: &[&str]) -> Config {
    let mut args = vec!["revokd"];
    if !extra
        .iter()
        .any(|a| a.starts_with("--jwt-public-key-file") || a.starts_with("--jwt-jwks-file"))
    {
        args.extend(["--jwt-secret", SECRET]);
    }
    let spool = spool_dir(prefix);
    let spool = spool.to_str().expect("utf-8 temp dir");
    args.extend([
        "--spool-dir",
        spool,
        "--key-prefix",
        prefix,
        "--redis-url",
        redis,
        "--database-url",
        db_url,
        "--listen",
        "127.0.0.1:0",
    ]);
    args.extend_from_slice(extra);
    args.push("migrate");
    let cli = Cli::try_parse_from(args).expect("valid test config");
    assert!(matches!(cli.command, Command::Migrate));
    cli.config
}

/// The real API (and optionally a worker) on a fresh database and prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub prefix: String,
    pub services: Services,
    pub http: reqwest::Client,
    /// Fires the app's shutdown (what SIGTERM does to `serve`).
    pub shutdown: CancellationToken,
    pub checker_stats: std::sync::Arc<revokd::read::checker::Checker>,
    /// The roles running in the background: awaited by
    /// [`TestApp::stop`], aborted on drop.
    pub tasks: Roles,
    // Field order: stop roles before the database goes.
    guard: Option<PrefixGuard>,
    pub db: TestDb,
}

pub struct Options<'a> {
    pub worker: bool,
    pub redis_url: Option<String>,
    /// Reach the test database through this URL instead (e.g. a proxy).
    pub db_url: Option<String>,
    /// Run the replica follower, as `serve` does for the api role.
    pub replica: bool,
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
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

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
        // As `serve` does for the api and worker roles: watch the marker,
        // rebuild Redis from Postgres when it is gone.
        let guard = services
            .maintenance(services.deny_patient.clone())
            .guard(stop.clone());
        tasks.spawn("marker guard", guard);
        if options.worker {
            tasks.spawn("worker", worker::run(worker_deps(&services), stop.clone()));
        }
        if options.replica
            && let Some(follower) = services.follower()
        {
            tasks.spawn("replica follower", follower.run(stop.clone()));
        }
        // As a client of `serve` would, once it is ready: the pending
        // revocations have been read once.
        let pending = std::sync::Arc::clone(checker_stats.pending());
        eventually(Duration::from_secs(5), "pending revocations read", || {
            let loaded = pending.is_loaded();
            async move { loaded }
        })
        .await;
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn mint(&self, sub: &str) -> String {
        self.mint_with(sub, 900, true)
    }

    pub fn mint_with(&self, sub: &str, ttl: i64, jti: bool) -> String {
        Minter::new(&self.services.config.key_settings())
            .expect("minter")
            .mint(sub, ttl, jti, now_unix())
            .expect("mint")
    }

    /// A token for `sub` issued `ago` seconds ago (so a revoke-all made now
    /// is later than its `iat`, without waiting for the clock).
    pub fn mint_issued_ago(&self, sub: &str, ago: i64) -> String {
        mint_issued_ago(sub, ago)
    }

    pub async fn producer(&self) -> Producer {
        Producer::connect(&self.services.config.redis_url, &self.prefix, "test")
            .await
            .expect("producer")
    }

    /// The token's id, as revokd computes it (the signature checked).
    pub fn token_id(&self, token: &str) -> String {
        self.services
            .verifier
            .verify_signature(token)
            .expect("a token of this app")
            .token_id
    }

    /// `/v1/check` with the refresh-token hint: the body.
    pub async fn check_refresh(&self, token: &str) -> Value {
        let body = serde_json::json!({ "token": token, "token_type_hint": "refresh_token" });
        let response = self.http.post(self.url("/v1/check")).json(&body).send();
        response
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// `/v1/check`: the status and the body.
    pub async fn check(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/check"))
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// Polls /v1/check until it reports `reason` or the deadline passes.
    pub async fn wait_for_reason(&self, token: &str, reason: &str, deadline: Duration) {
        let started = Instant::now();
        loop {
            let (_, body) = self.check(token).await;
            if body["reason"] == reason {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "no {reason:?} within {deadline:?}; last answer {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// POSTs JSON with a bearer key; the status and the body (JSON, or the
    /// text as a JSON string, or null when empty).
    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = match text.as_str() {
            "" => Value::Null,
            t => serde_json::from_str(t).unwrap_or(Value::String(text)),
        };
        (status, value)
    }

    /// Waits (up to 15 s) until `token_id` is recorded in Postgres; the row.
    pub async fn wait_for_row(&self, token_id: &str) -> revokd::store::pg::RevokedRow {
        let started = Instant::now();
        loop {
            if let Some(row) = self.db.db.revoked_token(token_id).await.expect("postgres") {
                return row;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{token_id} not in postgres within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.services.config.redis_url.as_str())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(1))
            .expect("redis connection")
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

/// How long a role may take to end once its shutdown has fired.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Roles of an app or node running in the background, by name.
#[derive(Default)]
pub struct Roles(Vec<(&'static str, tokio::task::JoinHandle<()>)>);

impl Roles {
    /// Runs `role` in the background.
    pub fn spawn<F>(&mut self, name: &'static str, role: F)
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let handle = tokio::spawn(async move {
            let _ = role.await;
        });
        self.0.push((name, handle));
    }

    /// Waits for every role to end (its shutdown has fired); fails the test
    /// naming a role that does not end within [`STOP_WITHIN`].
    pub async fn join(&mut self) {
        for (name, handle) in std::mem::take(&mut self.0) {
            let abort = handle.abort_handle();
            match tokio::time::timeout(STOP_WITHIN, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("{name} ended abnormally: {error}"),
                Err(_) => {
                    abort.abort();
                    panic!("{name} still running {STOP_WITHIN:?} after shutdown");
                }
            }
        }
    }

    /// Aborts every role without waiting.
    pub fn abort(&self) {
        self.0.iter().for_each(|(_, handle)| handle.abort());
    }
}

pub fn worker_deps(services: &Services) -> WorkerDeps {
    WorkerDeps {
        applier: services.applier(),
        redis_url: services.config.redis_url.clone(),
        prefix: services.config.key_prefix.clone(),
        concurrency: 8,
    }
}

/// Asserts a `/v1/check` answer: 200 and `want`, which is `active` or the
/// reason; on failure, the whole answer and the caller's line.
#[track_caller]
pub fn assert_answer(answer: &(u16, Value), want: &str) {
    let (status, body) = answer;
    let got = match (&body["active"], &body["reason"]) {
        (Value::Bool(true), _) => "active",
        (_, Value::String(reason)) => reason.as_str(),
        _ => "(neither)",
    };
    assert_eq!(
        (*status, got),
        (200, want),
        "check answered {status} {body}"
    );
}

/// Reports that `what` (a gateway, a client library) is not installed:
/// the caller skips, but only on a developer machine. Under CI (`CI` set,
/// as CI services do) or when one of `required_by` is set (`.ci/run` sets
/// them) the test fails instead.
#[track_caller]
pub fn missing_program(what: &str, required_by: &[&str]) {
    let required = std::iter::once("CI")
        .chain(required_by.iter().copied())
        .find(|var| std::env::var_os(var).is_some());
    if let Some(var) = required {
        panic!("{what} is required ({var} is set) but not installed");
    }
    eprintln!("skipped: {what} not installed");
}

/// Waits until `probe` returns true or the deadline passes.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A redis-server of the test's own on a free port, killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(self.port);
    }

    fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "private redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A TCP proxy to a target that the test can switch off (connections are
/// cut and refused) and on again: a store that goes down and comes back.
pub struct Proxy {
    pub port: u16,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let enabled = std::sync::Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts, target) = (enabled.clone(), cut.clone(), target.to_owned());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut = cuts.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, enabled, cut }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, std::sync::atomic::Ordering::SeqCst);
        if !on {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// The app's replica, once its follower has loaded it and proven it current.
pub async fn current_replica(app: &TestApp) -> std::sync::Arc<revokd::read::replica::Replica> {
    let replica = std::sync::Arc::clone(app.services.replica.as_ref().expect("read mode replica"));
    wait_current(&replica).await;
    replica
}

/// Waits until `replica` may answer.
pub async fn wait_current(replica: &std::sync::Arc<revokd::read::replica::Replica>) {
    let r = std::sync::Arc::clone(replica);
    eventually(Duration::from_secs(10), "replica current", move || {
        let fresh = r.is_fresh();
        async move { fresh }
    })
    .await;
}

/// Another revokd process of the same deployment, in this test process: its
/// own services, breakers, replica and pending overlay, on a database and a
/// key prefix someone else owns.
pub struct Node {
    pub addr: SocketAddr,
    pub services: Services,
    pub http: reqwest::Client,
    stop: CancellationToken,
    tasks: Roles,
}

pub struct NodeOptions<'a> {
    pub prefix: &'a str,
    pub redis_url: &'a str,
    pub db_url: &'a str,
    pub worker: bool,
    pub replica: bool,
    pub extra: &'a [&'a str],
}

impl Node {
    pub async fn start(options: NodeOptions<'_>) -> Self {
        let mut extra = vec!["--api-keys", "test:test-key"];
        if !options.replica {
            extra.extend(["--read-mode", "redis"]);
        }
        extra.extend_from_slice(options.extra);
        let config = test_config(options.prefix, options.redis_url, options.db_url, &extra);
        let db = Db::connect_lazy(options.db_url).expect("pool");
        let services = Services::with_db(config, db).expect("services");
        let stop = CancellationToken::new();
        let api = Api::bind(&services).await.expect("bind");
        let addr = api.local_addr().expect("addr");
        let pending = std::sync::Arc::clone(api.checker().pending());
        let mut tasks = Roles::default();
        tasks.spawn("api", api.run(stop.clone()));
        eventually(Duration::from_secs(5), "pending revocations read", || {
            let loaded = pending.is_loaded();
            async move { loaded }
        })
        .await;
        let guard = services
            .maintenance(services.deny_patient.clone())
            .guard(stop.clone());
        tasks.spawn("marker guard", guard);
        if options.worker {
            tasks.spawn("worker", worker::run(worker_deps(&services), stop.clone()));
            let resync = services.resync(services.deny_patient.clone());
            tasks.spawn("resync", resync.run(stop.clone()));
        }
        if let Some(follower) = services.follower() {
            tasks.spawn("replica follower", follower.run(stop.clone()));
        }
        Self {
            addr,
            services,
            http: reqwest::Client::new(),
            stop,
            tasks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/v1/check`'s reason (`active` when active), or `unavailable`.
    pub async fn reason(&self, token: &str) -> String {
        check_reason(&self.http, &self.url("/v1/check"), token).await
    }

    /// `/readyz`'s body.
    pub async fn readyz(&self) -> Value {
        let response = self.http.get(self.url("/readyz")).send().await;
        match response {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// POSTs JSON with the write key: status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth("test-key")
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.abort();
    }
}

/// `/v1/check` at `url`: its reason, `active`, or `unavailable`.
pub async fn check_reason(http: &reqwest::Client, url: &str, token: &str) -> String {
    let Ok(response) = http
        .post(url)
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
    else {
        return "unreachable".into();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (&body["active"], &body["reason"]) {
        (Value::Bool(true), _) => "active".into(),
        (_, Value::String(reason)) => reason.clone(),
        _ => format!("unexpected {body}"),
    }
}

/// A token for `sub` signed with the test secret.
pub fn mint(sub: &str) -> String {
    mint_issued_ago(sub, 0)
}

/// [`mint`], issued `ago` seconds ago.
pub fn mint_issued_ago(sub: &str, ago: i64) -> String {
    let config = test_config("mint:", &redis_url(), "postgres://unused/x", &[]);
    Minter::new(&config.key_settings())
        .expect("minter")
        .mint(sub, 900, true, now_unix() - ago)
        .expect("mint")
}

/// Postgres reached through `proxy`.
pub fn proxied(db: &TestDb, proxy: &Proxy) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name)
}

/// The audit's store half: every id has its row in Postgres and its key in
/// Redis (waiting up to 10 s for the resync).
pub async fn in_both_stores(db: &TestDb, redis: &str, prefix: &str, ids: &[String]) {
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    for id in ids {
        let row = db.db.revoked_token(id).await.unwrap();
        assert!(row.is_some(), "{id} not in postgres");
        let key = format!("{prefix}jti:{id}");
        eventually(Duration::from_secs(10), "in redis", || {
            let there: bool = redis::Commands::exists(&mut conn, &key).unwrap();
            async move { there }
        })
        .await;
    }
}

/// A child process (or none yet), killed (SIGKILL) on drop.
pub struct Process(Option<std::process::Child>);

impl Process {
    /// No process.
    pub fn idle() -> Self {
        Self(None)
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `revokd serve --roles <roles>` as a process of its own, with the write
/// key `test-key`, the deployment's spool directory and `extra` options;
/// its log (warnings and up) goes to `log` when given.
pub fn serve(
    prefix: &str,
    redis: &str,
    db_url: &str,
    port: u16,
    roles: &str,
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> Process {
    let stderr = match log {
        Some(path) => std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => std::process::Stdio::null(),
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .env("RUST_LOG", "warn")
        .args(["--jwt-secret", SECRET])
        .args(["--key-prefix", prefix, "--redis-url", redis])
        .args(["--database-url", db_url, "--api-keys", "test:test-key"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--spool-dir", spool_dir(prefix).to_str().expect("utf-8")])
        .args(extra)
        .args(["serve", "--roles", roles])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("revokd binary");
    Process(Some(child))
}

/// Waits until the process on `port` answers `/healthz`.
pub async fn healthy(http: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually(Duration::from_secs(20), "process up", || {
        let request = http.get(&url).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}
