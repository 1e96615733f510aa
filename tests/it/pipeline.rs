//! The core pipeline: producer → queue → worker → Redis + Postgres → check.

use std::time::Duration;

use redis::Commands;
use revokd::{store::redis::DenyEntry, worker::Applied};
use revokd_jobs::{Job, RevokeSubject, RevokeToken, now_unix};

use crate::helpers::{Options, TestApp};

fn jti_of(app: &TestApp, token: &str) -> String {
    app.services
        .verifier
        .verify(token, now_unix())
        .expect("valid")
        .token_id
}

#[tokio::test]
async fn revoke_job_pushed_through_the_queue_makes_check_answer_revoked() {
    let app = TestApp::spawn().await;
    let token = app.mint("alice");
    let (status, body) = app.check(&token).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["sub"], "alice");

    let producer = app.producer().await;
    let exp = now_unix() + 900;
    producer
        .revoke(RevokeToken::new(jti_of(&app, &token), Some("alice".into()), exp).reason("logout"))
        .await
        .unwrap();

    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    // Redis is written first, Postgres right after.
    let row = app.wait_for_row(&jti_of(&app, &token)).await;
    assert_eq!(row.subject.as_deref(), Some("alice"));
    assert_eq!(row.reason.as_deref(), Some("logout"));
    assert_eq!(row.requested_by, "test");
}

#[tokio::test]
async fn deny_list_ttl_runs_to_expiry_plus_leeway_capped_at_max_lifetime() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--max-token-lifetime", "1d"],
        ..Default::default()
    })
    .await;
    let applier = app.services.applier();
    let now = now_unix();
    let mut redis = app.redis();

    let short = RevokeToken::new("short", Some("bob".into()), now + 600);
    applier.apply(&Job::Revoke(short), now).await.unwrap();
    let ttl: i64 = redis.ttl(format!("{}jti:short", app.prefix)).unwrap();
    assert!(
        (628..=630).contains(&ttl),
        "ttl {ttl} should be 600 + 30 s leeway"
    );
    let stored: String = redis.get(format!("{}jti:short", app.prefix)).unwrap();
    let entry: DenyEntry = serde_json::from_str(&stored).unwrap();
    assert_eq!((entry.sub.as_deref(), entry.exp), (Some("bob"), now + 600));

    let long = RevokeToken::new("long", None, now + 10 * 86_400);
    applier.apply(&Job::Revoke(long), now).await.unwrap();
    let ttl: i64 = redis.ttl(format!("{}jti:long", app.prefix)).unwrap();
    assert!(
        (86_398..=86_400).contains(&ttl),
        "ttl {ttl} should be capped at one day"
    );
    let row = app.db.db.revoked_token("long").await.unwrap().unwrap();
    assert!(
        row.expires_at <= now + 86_400,
        "exp beyond the max lifetime is capped in postgres too"
    );

    let expired = RevokeToken::new("expired", None, now - 3_600);
    let applied = applier.apply(&Job::Revoke(expired), now).await.unwrap();
    assert_eq!(applied, Applied::Revoked { in_redis: false });
    let exists: bool = redis.exists(format!("{}jti:expired", app.prefix)).unwrap();
    assert!(!exists, "an expired token gets no redis key");
    assert!(
        app.db.db.revoked_token("expired").await.unwrap().is_some(),
        "but a postgres row"
    );
}

#[tokio::test]
async fn revoke_all_revokes_older_tokens_and_keeps_newer_ones() {
    let app = TestApp::spawn().await;
    let applier = app.services.applier();
    let now = now_unix();
    let old = app.services.config.key_settings();
    let minter = revokd::token::Minter::new(&old).unwrap();
    let older = minter.mint("carol", 900, true, now - 10).unwrap();
    let same_second = minter.mint("carol", 900, true, now).unwrap();
    let newer = minter.mint("carol", 900, true, now + 1).unwrap();
    let other_subject = minter.mint("dave", 900, true, now - 10).unwrap();

    applier
        .apply(&Job::RevokeAll(RevokeSubject::new("carol", now)), now)
        .await
        .unwrap();

    assert_eq!(app.check(&older).await.1["reason"], "subject_revoked");
    assert_eq!(
        app.check(&same_second).await.1["active"],
        true,
        "same second as the watermark stays active"
    );
    assert_eq!(app.check(&newer).await.1["active"], true);
    assert_eq!(app.check(&other_subject).await.1["active"], true);
}

#[tokio::test]
async fn an_older_watermark_arriving_later_does_not_move_it_back() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let applier = app.services.applier();
    let now = now_unix();
    let newer = RevokeSubject::new("erin", now);
    let older = RevokeSubject::new("erin", now - 100);
    applier.apply(&Job::RevokeAll(newer), now).await.unwrap();
    applier.apply(&Job::RevokeAll(older), now).await.unwrap();

    let mut redis = app.redis();
    let in_redis: i64 = redis.get(format!("{}sub:erin", app.prefix)).unwrap();
    assert_eq!(in_redis, now);
    assert_eq!(app.db.db.watermark("erin").await.unwrap(), Some(now));
    let ttl: i64 = redis.ttl(format!("{}sub:erin", app.prefix)).unwrap();
    assert!(
        ttl > 30 * 86_400 - 5,
        "watermark lives max lifetime + leeway, got {ttl}"
    );
}

#[tokio::test]
async fn applying_any_job_twice_changes_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let applier = app.services.applier();
    let now = now_unix();
    let jobs = [
        Job::Revoke(RevokeToken::new("twice", Some("frank".into()), now + 300).reason("logout")),
        Job::RevokeAll(RevokeSubject::new("frank", now - 5)),
    ];
    let snapshot = |app: &TestApp| {
        let mut redis = app.redis();
        let jti: Option<String> = redis.get(format!("{}jti:twice", app.prefix)).unwrap();
        let sub: Option<String> = redis.get(format!("{}sub:frank", app.prefix)).unwrap();
        (jti, sub)
    };
    let rows = |app: &TestApp| {
        let pool = app.db.db.pool().clone();
        async move {
            let tokens: Vec<(String, i64, i64)> =
                sqlx::query_as("select token_id, expires_at, revoked_at from revoked_tokens")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let subjects: Vec<(String, i64)> =
                sqlx::query_as("select subject, not_before from subject_watermarks")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let audit: i64 = sqlx::query_scalar("select count(*) from revocation_audit")
                .fetch_one(&pool)
                .await
                .unwrap();
            (tokens, subjects, audit)
        }
    };
    for job in &jobs {
        applier.apply(job, now).await.unwrap();
    }
    let (redis_once, pg_once) = (snapshot(&app), rows(&app).await);
    for job in &jobs {
        applier.apply(job, now + 1).await.unwrap();
    }
    assert_eq!(snapshot(&app), redis_once);
    assert_eq!(rows(&app).await, pg_once);
    assert_eq!(pg_once.2, 2, "one audit row per request");
}

// The CLI runs as a blocking child process: the worker needs its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_and_revoke_all_push_jobs_that_the_worker_applies() {
    let app = TestApp::spawn().await;
    let token = app.mint("gina");
    let bin = env!("CARGO_BIN_EXE_revokd");
    let common = [
        "--jwt-secret",
        crate::helpers::SECRET,
        "--key-prefix",
        &app.prefix,
        "--redis-url",
        &app.services.config.redis_url,
        "--database-url",
        &app.db.url,
    ];
    let out = std::process::Command::new(bin)
        .args(common)
        .args(["revoke", "--token", &token, "--wait"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["token_id"], jti_of(&app, &token));
    // --wait returned, so the revocation is already visible.
    assert_eq!(app.check(&token).await.1["reason"], "revoked");

    let out = std::process::Command::new(bin)
        .args(common)
        .args(["check", "--token", &token])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "inactive exits 1");

    let out = std::process::Command::new(bin)
        .args(common)
        .args(["revoke", "--token", "garbage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid token"));

    let older = app.mint("hank");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = std::process::Command::new(bin)
        .args(common)
        .args(["revoke-all", "--sub", "hank", "--wait"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.check(&older).await.1["reason"], "subject_revoked");
    // Issued in the watermark's second or later: active.
    let newer = app.mint("hank");
    assert_eq!(app.check(&newer).await.1["active"], true);
}
