//! Failures: Redis down for the read path, a worker killed mid-batch, a
//! killed Redis connection, an undecodable payload.

use std::{process::Stdio, time::Duration};

use redis::Commands;
use revokd::{read::checker::LookupStats, store::pg::Db};
use revokd_jobs::{Job, Producer, RevokeToken, now_unix};

use crate::helpers::{
    Options, PrivateRedis, TestApp, TestDb, assert_answer, eventually, free_port, unique_prefix,
    worker_deps,
};

/// A TCP server that accepts connections and never answers: a hung Redis.
async fn blackhole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn with_redis_hung_checks_come_from_postgres_without_a_timeout_each() {
    let port = blackhole().await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..Default::default()
    })
    .await;
    let revoked = app.mint("mia");
    let active = app.mint("mia-2");
    let claims = app.services.verifier.verify(&revoked, now_unix()).unwrap();
    let job = RevokeToken::new(claims.token_id, claims.sub, claims.exp);
    app.db
        .db
        .apply_revoke(&job, job.expires_at, now_unix())
        .await
        .unwrap();

    assert_answer(&app.check(&revoked).await, "revoked");
    for _ in 0..20 {
        assert_answer(&app.check(&revoked).await, "revoked");
        assert_answer(&app.check(&active).await, "active");
    }
    let stats = app.checker_stats.stats();
    assert_eq!(
        LookupStats::get(&stats.redis_failures),
        1,
        "only the first request tried redis"
    );
    assert_eq!(LookupStats::get(&stats.postgres), 41);
    assert!(!app.checker_stats.redis_health().is_up());
    let ready: serde_json::Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (ready["ready"].as_bool(), ready["redis"].as_str()),
        (Some(true), Some("down"))
    );
    app.stop().await;
}

#[tokio::test]
async fn redis_unreachable_then_back_switches_reads_back_to_redis() {
    let mut redis = PrivateRedis::start();
    let app = TestApp::spawn_with(Options {
        worker: false,
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let token = app.mint("noa");
    assert_answer(&app.check(&token).await, "active");
    redis.kill();
    assert_eq!(
        app.check(&token).await.1["active"],
        true,
        "answered from postgres"
    );
    let checker = app.checker_stats.clone();
    eventually(Duration::from_secs(2), "breaker opens", || {
        let up = checker.redis_health().is_up();
        async move { !up }
    })
    .await;
    redis.restart();
    eventually(Duration::from_secs(5), "breaker closes", || {
        let up = checker.redis_health().is_up();
        async move { up }
    })
    .await;
    // The restarted Redis is empty: checks use Postgres until the marker
    // is back, then Redis again.
    eventually(
        Duration::from_secs(5),
        "checks answered by redis again",
        || async {
            let before = LookupStats::get(&app.checker_stats.stats().redis);
            assert_answer(&app.check(&token).await, "active");
            LookupStats::get(&app.checker_stats.stats().redis) == before + 1
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn with_neither_store_checks_fail_closed_with_503() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        redis_url: Some(format!("redis://127.0.0.1:{}", free_port())),
        ..Default::default()
    })
    .await;
    let token = app.mint("olga");
    // Point Postgres away too: a fresh checker over a dead database URL.
    let dead_db =
        Db::connect_lazy(&format!("postgres://postgres@127.0.0.1:{}/x", free_port())).unwrap();
    let services = revokd::app::Services::with_db((*app.services.config).clone(), dead_db).unwrap();
    let checker = services.checker();
    assert_eq!(
        checker.check(&token, now_unix()).await,
        revokd::read::checker::Verdict::Unavailable
    );
    assert_eq!(
        checker.check(&token, now_unix()).await,
        revokd::read::checker::Verdict::Unavailable
    );
    app.stop().await;
}

async fn count_rows(db: &Db) -> i64 {
    sqlx::query_scalar("select count(*) from revoked_tokens")
        .fetch_one(db.pool())
        .await
        .unwrap_or(-1)
}

#[tokio::test]
async fn jobs_of_a_sigkilled_worker_are_applied_once_a_worker_runs_again() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let _guard = crate::helpers::PrefixGuard {
        url: crate::helpers::redis_url(),
        prefix: prefix.clone(),
    };
    // The doomed worker talks to a Postgres that never answers, so its jobs
    // stay in flight until it is killed.
    let hung_pg = format!("postgres://postgres@127.0.0.1:{}/hung", blackhole().await);
    let doomed = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .args([
            "--jwt-secret",
            crate::helpers::SECRET,
            "--key-prefix",
            &prefix,
            "--redis-url",
            &crate::helpers::redis_url(),
        ])
        .args(["--database-url", &hung_pg, "serve", "--roles", "worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed on drop too, so a failing assertion leaves no process behind.
    let mut doomed = KillOnDrop(doomed);
    let producer = Producer::connect(&crate::helpers::redis_url(), &prefix, "test")
        .await
        .unwrap();
    let total = 40;
    for i in 0..total {
        producer
            .revoke(RevokeToken::new(format!("k{i}"), None, now_unix() + 600))
            .await
            .unwrap();
    }
    let mut redis = redis::Client::open(crate::helpers::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let inflight_pattern = format!("{prefix}queue:jobs:inflight:*");
    eventually(
        Duration::from_secs(20),
        "the doomed worker holds jobs",
        || {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&inflight_pattern)
                .query(&mut redis)
                .unwrap();
            let held: usize = keys
                .iter()
                .map(|k| redis.scard::<_, usize>(k).unwrap())
                .sum();
            async move { held > 0 }
        },
    )
    .await;
    doomed.0.kill().unwrap(); // SIGKILL
    doomed.0.wait().unwrap();

    let config = crate::helpers::test_config(&prefix, &crate::helpers::redis_url(), &db.url, &[]);
    let services = revokd::app::Services::with_db(config, db.db.clone()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(revokd::worker::run(worker_deps(&services), stop.clone()));
    eventually(
        Duration::from_secs(30),
        "every queued revocation applied",
        || async { count_rows(&db.db).await == total },
    )
    .await;
    stop.cancel();
    worker.abort();
    let _ = worker.await;
}

#[tokio::test]
async fn a_killed_redis_connection_does_not_stop_the_worker() {
    let redis_server = PrivateRedis::start();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis_server.url()),
        ..Default::default()
    })
    .await;
    let producer = app.producer().await;
    producer
        .revoke(RevokeToken::new("before", None, now_unix() + 600))
        .await
        .unwrap();
    app.wait_for_row("before").await;
    let mut admin = redis::Client::open(redis_server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for _ in 0..3 {
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut admin);
        // Repeated cuts, each after the worker reconnected: the pace is the point.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer
        .revoke(RevokeToken::new("after", None, now_unix() + 600))
        .await
        .unwrap();
    app.wait_for_row("after").await;
    app.stop().await;
}

#[tokio::test]
async fn an_undecodable_payload_is_set_aside_and_jobs_behind_it_apply() {
    let app = TestApp::spawn().await;
    let producer = app.producer().await;
    producer
        .push_bytes(b"{not json at all".to_vec())
        .await
        .unwrap();
    producer
        .push_bytes(br#"{"kind":"from_the_future"}"#.to_vec())
        .await
        .unwrap();
    producer
        .push(&Job::Revoke(RevokeToken::new(
            "behind",
            None,
            now_unix() + 600,
        )))
        .await
        .unwrap();
    app.wait_for_row("behind").await;
    let mut redis = app.redis();
    let dead_key = format!("{}queue:jobs:dead", app.prefix);
    eventually(
        Duration::from_secs(5),
        "both bad payloads kept visible in the dead set",
        || {
            let dead: u64 = redis.scard(&dead_key).unwrap();
            async move { dead == 2 }
        },
    )
    .await;
    // The worker is still alive: one more job applies.
    producer
        .push(&Job::Revoke(RevokeToken::new(
            "later",
            None,
            now_unix() + 600,
        )))
        .await
        .unwrap();
    app.wait_for_row("later").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_10k_scheduled_jobs_does_not_stall_the_worker() {
    // apalis-redis's own push parks jobs in the scheduled set; its fetch
    // promotes them with one Lua unpack, which fails from 8,000 on.
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let config = revokd_jobs::queue_config(&app.prefix);
    let mut conn = redis::Client::open(app.services.config.redis_url.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let total = 10_000;
    let tasks: Vec<_> = (0..total)
        .map(|i| {
            let job = Job::Revoke(RevokeToken::new(format!("b{i}"), None, now_unix() + 600));
            apalis::prelude::TaskBuilder::new(serde_json::to_vec(&job).unwrap()).build()
        })
        .collect();
    for chunk in tasks.chunks(2_000) {
        apalis_redis::queries::push_tasks(&mut conn, &config, chunk)
            .await
            .unwrap();
    }
    let scheduled: usize = redis::AsyncCommands::zcard(&mut conn, config.scheduled_jobs_set())
        .await
        .unwrap();
    assert_eq!(scheduled, total, "the backlog sits in the scheduled set");
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(revokd::worker::run(
        worker_deps(&app.services),
        stop.clone(),
    ));
    eventually(
        Duration::from_secs(60),
        "the whole backlog applied",
        || async { count_rows(&app.db.db).await == total as i64 },
    )
    .await;
    stop.cancel();
    worker.abort();
    let _ = worker.await;
    app.stop().await;
}

/// A child process killed (SIGKILL) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
