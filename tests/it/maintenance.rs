//! Maintenance: batched cleanup, queue vacuum, automatic rebuild after Redis
//! lost its data, rehydrate, and one cleanup per cron tick across schedulers.

use std::{sync::Mutex, time::Duration};

use redis::Commands;
use revokd::worker::maintenance::{self, Maintenance, Progress, Quiet};
use revokd_jobs::{Job, RevokeToken, now_unix};

use crate::helpers::{Options, Proxy, SECRET, TestApp, assert_answer, eventually};

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(app.db.db.pool())
        .await
        .unwrap();
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(app.db.db.pool())
        .await
        .unwrap()
}

/// Records the size of every batch, by phase.
#[derive(Default)]
struct Batches(Mutex<Vec<(String, Vec<u64>)>>);

impl Progress for Batches {
    fn phase(&self, name: &str, _total: Option<u64>) {
        self.0.lock().unwrap().push((name.to_owned(), Vec::new()));
    }
    fn advance(&self, n: u64) {
        if let Some((_, sizes)) = self.0.lock().unwrap().last_mut() {
            sizes.push(n);
        }
    }
}

impl Batches {
    /// The batch sizes of `phase`.
    fn of(&self, phase: &str) -> Vec<u64> {
        let phases = self.0.lock().unwrap();
        let found = phases.iter().find(|(name, _)| name == phase);
        found.map(|(_, sizes)| sizes.clone()).unwrap_or_default()
    }
}

#[tokio::test]
async fn cleanup_purges_expired_rows_in_batches_and_keeps_live_ones() {
    cleanup_purges(23, 7, 5).await;
}

#[tokio::test]
#[ignore = "soak: 200k rows in batches of 5,000; .ci/run runs it"]
async fn cleanup_purges_200k_expired_rows_in_batches_and_keeps_live_ones() {
    cleanup_purges(200_000, 1_000, maintenance::BATCH).await;
}

/// Cleanup of `expired` expired revocations among `live` live ones, in
/// batches of `batch` rows.
async fn cleanup_purges(expired: i64, live: i64, batch: i64) {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let now = now_unix();
    exec(&app, &format!(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'old-' || g, 's', {} - (g % 1000), {} - 7200, 't' from generate_series(1, {expired}) g",
        now - 3600, now
    ))
    .await;
    exec(
        &app,
        &format!(
            "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'live-' || g, 's', {} + 600, {}, 't' from generate_series(1, {live}) g",
            now, now
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "insert into subject_watermarks (subject, not_before, updated_at)
         values ('gone', {old}, {old}), ('kept', {now}, {now})",
            old = now - 40 * 86_400
        ),
    )
    .await;
    exec(&app, &format!(
        "insert into revocation_audit (job_id, kind, requested_by, requested_at, applied_at)
         select 'a-' || g, 'revoke', 't', case when g <= 100 then {} else {} end, 0 from generate_series(1, 110) g",
        now - 91 * 86_400, now
    ))
    .await;

    let maintenance = Maintenance {
        batch,
        ..app.services.maintenance(app.services.deny_patient.clone())
    };
    let batches = Batches::default();
    let report = maintenance.cleanup(now, &batches).await.unwrap();
    assert_eq!(report.tokens_deleted, expired as u64);
    let full = (expired / batch) as usize;
    let mut sizes = vec![batch as u64; full];
    sizes.push((expired % batch) as u64);
    assert_eq!(batches.of("expired revocations"), sizes, "in batches");
    assert_eq!(report.subjects_deleted, 1);
    assert_eq!(report.audit_deleted, 100);
    assert_eq!(
        report.redis_restored,
        live as u64 + 1,
        "live rows missing in redis are written back"
    );
    assert_eq!(
        count(&app, "select count(*) from revoked_tokens").await,
        live
    );
    assert_eq!(
        count(&app, "select count(*) from subject_watermarks").await,
        1
    );
    assert_eq!(
        count(&app, "select count(*) from revocation_audit").await,
        10
    );
    let mut redis = app.redis();
    let exists: bool = redis.exists(format!("{}jti:live-7", app.prefix)).unwrap();
    assert!(exists);
    let again = maintenance.cleanup(now, &Quiet).await.unwrap();
    assert_eq!(
        again,
        Default::default(),
        "a second run finds nothing to do"
    );
    app.stop().await;
}

#[tokio::test]
async fn cleanup_vacuums_finished_and_dead_jobs_past_retention() {
    let app = TestApp::spawn().await;
    let producer = app.producer().await;
    for i in 0..4 {
        producer
            .push(&Job::Revoke(RevokeToken::new(
                format!("v{i}"),
                None,
                now_unix() + 60,
            )))
            .await
            .unwrap();
    }
    producer.push_bytes(b"garbage".to_vec()).await.unwrap();
    let mut redis = app.redis();
    let done_key = format!("{}queue:jobs:done", app.prefix);
    let dead_key = format!("{}queue:jobs:dead", app.prefix);
    eventually(Duration::from_secs(10), "jobs finished", || {
        let (done, dead): (usize, usize) = (
            redis.scard(&done_key).unwrap(),
            redis.scard(&dead_key).unwrap(),
        );
        async move { done == 4 && dead == 1 }
    })
    .await;
    // Age three finished jobs past the one-day retention, and the dead one
    // too: dead jobs are kept for the audit retention (90 days).
    let done: Vec<String> = redis.smembers(&done_key).unwrap();
    let dead: Vec<String> = redis.smembers(&dead_key).unwrap();
    let old = now_unix() - 2 * 86_400;
    for id in done.iter().take(3).chain(dead.iter()) {
        let _: () = redis
            .hset(
                format!("{}queue:jobs:meta:{id}", app.prefix),
                "done_at",
                old,
            )
            .unwrap();
    }
    // A worker killed without deregistering leaves its metadata behind.
    let ghost = format!("{}queue:jobs:workers:metadata:ghost", app.prefix);
    let _: () = redis.hset(&ghost, "service", "x").unwrap();
    let maintenance = app.services.maintenance(app.services.deny_patient.clone());
    let report = maintenance.cleanup(now_unix(), &Quiet).await.unwrap();
    assert_eq!(report.jobs_vacuumed, 3);
    let ghost_left: bool = redis.exists(&ghost).unwrap();
    assert!(!ghost_left, "a dead worker's metadata is vacuumed");
    let live: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}queue:jobs:workers:metadata:*", app.prefix))
        .query(&mut redis)
        .unwrap();
    // One apalis worker a lane (the test app's concurrency is 8).
    assert_eq!(
        live.len(),
        revokd::worker::LANES.min(8),
        "the running workers' metadata stays"
    );
    let (done_left, dead_left): (usize, usize) = (
        redis.scard(&done_key).unwrap(),
        redis.scard(&dead_key).unwrap(),
    );
    assert_eq!((done_left, dead_left), (1, 1));
    let data: usize = redis
        .hlen(format!("{}queue:jobs:data", app.prefix))
        .unwrap();
    assert_eq!(data, 2, "payloads of vacuumed jobs are gone");
    let meta_exists: bool = redis
        .exists(format!("{}queue:jobs:meta:{}", app.prefix, done[0]))
        .unwrap();
    assert!(!meta_exists);
    let very_old = now_unix() - 91 * 86_400;
    let _: () = redis
        .hset(
            format!("{}queue:jobs:meta:{}", app.prefix, dead[0]),
            "done_at",
            very_old,
        )
        .unwrap();
    let report = maintenance.cleanup(now_unix(), &Quiet).await.unwrap();
    assert_eq!(
        report.jobs_vacuumed, 1,
        "a dead job past the audit retention goes too"
    );
    app.stop().await;
}

#[tokio::test]
async fn losing_every_key_rebuilds_the_deny_list_within_5_seconds_without_a_command() {
    let app = TestApp::spawn().await;
    let token = app.mint("wes");
    let claims = app.services.verifier.verify(&token, now_unix()).unwrap();
    let applier = app.services.applier();
    applier
        .apply(
            &Job::Revoke(RevokeToken::new(
                claims.token_id.clone(),
                claims.sub,
                claims.exp,
            )),
            now_unix(),
        )
        .await
        .unwrap();
    assert_answer(&app.check(&token).await, "revoked");

    let mut redis = app.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix))
        .query(&mut redis)
        .unwrap();
    let _: () = redis.del(&keys).unwrap();
    let lost = std::time::Instant::now();
    // Even before the rebuild, the missing marker sends checks to Postgres.
    assert_answer(&app.check(&token).await, "revoked");
    let key = format!("{}jti:{}", app.prefix, claims.token_id);
    eventually(Duration::from_secs(5), "deny-list rebuilt in redis", || {
        let present: bool = redis.exists(&key).unwrap();
        async move { present }
    })
    .await;
    assert!(lost.elapsed() < Duration::from_secs(5));
    assert_answer(&app.check(&token).await, "revoked");
    app.stop().await;
}

/// An app without a worker whose Postgres holds `n` live revocations
/// (`r-1`...), of 100 subjects, that Redis lacks; and the `now` they are live at.
async fn app_with_revocations(n: u64) -> (TestApp, i64) {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let now = now_unix();
    exec(
        &app,
        &format!(
            "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'r-' || g, 'u' || (g % 100), {now} + 3600, {now}, 't' from generate_series(1, {n}) g"
        ),
    )
    .await;
    (app, now)
}

#[tokio::test]
async fn a_rebuild_streams_revocations_and_watermarks_in_batches() {
    let (app, now) = app_with_revocations(12).await;
    exec(
        &app,
        &format!(
            "insert into subject_watermarks (subject, not_before, updated_at)
         select 'w-' || g, {now}, {now} from generate_series(1, 7) g"
        ),
    )
    .await;
    let maintenance = Maintenance {
        batch: 5,
        ..app.services.maintenance(app.services.deny_patient.clone())
    };
    let batches = Batches::default();
    let report = maintenance.rebuild(now, &batches).await.unwrap();
    assert_eq!((report.tokens, report.subjects), (12, 7), "{report:?}");
    assert_eq!(batches.of("revocations into redis"), [5, 5, 2]);
    assert_eq!(batches.of("watermarks into redis"), [5, 2]);
    let mut redis = app.redis();
    for key in ["jti:r-1", "jti:r-12", "sub:w-1", "sub:w-7"] {
        let there: bool = redis.exists(format!("{}{key}", app.prefix)).unwrap();
        assert!(there, "{key} rebuilt");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehydrate_streams_entries_and_reports_the_count() {
    rehydrate(120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 100k rows through the CLI; .ci/run runs it"]
async fn rehydrate_streams_100k_entries_and_reports_the_count() {
    rehydrate(100_000).await;
}

/// `revokd rehydrate` of `n` revocations.
async fn rehydrate(n: u64) {
    let (app, _) = app_with_revocations(n).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .args(["--jwt-secret", SECRET, "--key-prefix", &app.prefix])
        .args([
            "--redis-url",
            &app.services.config.redis_url,
            "--database-url",
            &app.db.url,
            "rehydrate",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tokens"], n, "{report}");
    assert_eq!(report["restored"], n);
    // The counters the write scripts keep agree (no keyspace scan needed).
    let (tokens, _, _) = app
        .services
        .deny_fast
        .revocation_counts(now_unix())
        .await
        .unwrap();
    assert_eq!(tokens, n);
    app.stop().await;
}

#[tokio::test]
async fn two_schedulers_push_exactly_one_cleanup_job_per_tick() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--cleanup-cron", "* * * * * *"],
        ..Default::default()
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let a = tokio::spawn(revokd::scheduler::run(
        app.services.producer.clone(),
        app.services.config.cleanup_cron.clone(),
        stop.clone(),
    ));
    let b = tokio::spawn(revokd::scheduler::run(
        app.services.producer.clone(),
        app.services.config.cleanup_cron.clone(),
        stop.clone(),
    ));
    let mut redis = app.redis();
    let tick_keys = format!("{}queue:jobs:idempotency:cleanup:*", app.prefix);
    eventually(Duration::from_secs(10), "three ticks", || {
        let ticks: Vec<String> = redis::cmd("KEYS")
            .arg(&tick_keys)
            .query(&mut redis)
            .unwrap();
        async move { ticks.len() >= 3 }
    })
    .await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    let ticks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}queue:jobs:idempotency:cleanup:*", app.prefix))
        .query(&mut redis)
        .unwrap();
    let payloads: Vec<String> = redis
        .hvals(format!("{}queue:jobs:data", app.prefix))
        .unwrap();
    let cleanups = payloads
        .iter()
        .filter(|p| p.contains(r#""kind":"cleanup""#))
        .count();
    assert_eq!(
        cleanups,
        ticks.len(),
        "one cleanup job per tick, not one per scheduler"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tick_that_finds_redis_down_is_pushed_once_redis_is_back() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    // The scheduler's producer reaches Redis through a proxy the test cuts.
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let producer = revokd_jobs::Producer::connect(
        &format!("redis://127.0.0.1:{}", proxy.port),
        &app.prefix,
        "scheduler",
    )
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(revokd::scheduler::run(
        producer,
        "*/4 * * * * *".to_owned(),
        stop.clone(),
    ));
    // Redis goes away 0.5 s before a tick and comes back 1.5 s after it.
    let now_ms = revokd_jobs::now_unix_ms();
    let tick = (now_ms / 1000 / 4 + 1) * 4 + 4;
    let cut_at = tick * 1000 - 500;
    tokio::time::sleep(Duration::from_millis((cut_at - now_ms) as u64)).await;
    proxy.set_enabled(false);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    proxy.set_enabled(true);

    let mut redis = app.redis();
    let key = format!("{}queue:jobs:idempotency:cleanup:{tick}", app.prefix);
    eventually(
        Duration::from_secs(3),
        "the tick pushed after the outage",
        || {
            let pushed: bool = redis.exists(&key).unwrap();
            async move { pushed }
        },
    )
    .await;
    stop.cancel();
    scheduler.await.unwrap().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_cut_short_by_data_loss_does_not_set_the_marker() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let deny = &app.services.deny_patient;
    let mut redis = app.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix))
        .query(&mut redis)
        .unwrap();
    let _: () = redis.del(&keys).unwrap();
    deny.begin_rebuild("cut").await.unwrap();
    // Redis loses its data mid-rebuild.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix))
        .query(&mut redis)
        .unwrap();
    let _: () = redis.del(&keys).unwrap();
    // (The app's own marker watch may rebuild meanwhile; what matters is that
    // this rebuild refuses to vouch for data it did not see survive.)
    assert!(
        !deny.finish_rebuild("cut", "server").await.unwrap(),
        "no marker over partial data"
    );
    deny.begin_rebuild("whole").await.unwrap();
    assert!(deny.finish_rebuild("whole", "server").await.unwrap());
    assert!(deny.marker_present().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn the_last_cleanup_is_kept_with_when_it_finished_for_metrics() {
    let app = TestApp::spawn().await;
    let before = now_unix();
    let job = Job::Cleanup(revokd_jobs::Cleanup {
        meta: revokd_jobs::JobMeta::now(),
    });
    app.services.producer.push(&job).await.unwrap();
    let mut redis = app.redis();
    let key = format!("{}cleanup:last", app.prefix);
    eventually(Duration::from_secs(10), "the cleanup's report", || {
        let stored: Option<String> = redis.get(&key).unwrap();
        async move { stored.is_some() }
    })
    .await;
    let stored: String = redis.get(&key).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let finished_at = stored["finished_at"].as_i64().expect("finished_at");
    assert!((before..=now_unix()).contains(&finished_at), "{stored}");
    assert!(
        stored["jobs_vacuumed"].is_u64(),
        "the counts beside it: {stored}"
    );
    // Every process's /metrics shows it, so a stopped scheduler shows as
    // the gauge's age.
    let text = app.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("revokd_last_cleanup_timestamp_seconds ")),
        "{text}"
    );
    app.stop().await;
}
