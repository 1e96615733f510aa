//! The core pipeline: producer → queue → worker → Redis + Postgres → check.

use std::time::Duration;

use redis::Commands;
use revokd::{store::redis::DenyEntry, worker::Applied};
use revokd_jobs::{Job, RevokeSubject, RevokeToken, now_unix};

use crate::helpers::{Options, TestApp, assert_answer};

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
        .revoke(RevokeToken::new(app.token_id(&token), Some("alice".into()), exp).reason("logout"))
        .await
        .unwrap();

    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    // Redis is written first, Postgres right after.
    let row = app.wait_for_row(&app.token_id(&token)).await;
    assert_eq!(row.subject.as_deref(), Some("alice"));
    assert_eq!(row.reason.as_deref(), Some("logout"));
    assert_eq!(row.requested_by, "test");
    app.stop().await;
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
    // The cap counts from when the revocation was asked, which may be a
    // second after `now` on a loaded machine.
    let asked = long.meta.requested_at;
    applier.apply(&Job::Revoke(long), now).await.unwrap();
    let ttl: i64 = redis.ttl(format!("{}jti:long", app.prefix)).unwrap();
    assert!(
        (86_398..=86_400).contains(&ttl),
        "ttl {ttl} should be capped at one day"
    );
    let row = app.db.db.revoked_token("long").await.unwrap().unwrap();
    assert!(
        row.expires_at <= asked + 86_400,
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
    app.stop().await;
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

    assert_answer(&app.check(&older).await, "subject_revoked");
    assert_eq!(
        app.check(&same_second).await.1["active"],
        true,
        "same second as the watermark stays active"
    );
    assert_answer(&app.check(&newer).await, "active");
    assert_answer(&app.check(&other_subject).await, "active");
    app.stop().await;
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
    app.stop().await;
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
    app.stop().await;
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
    assert_eq!(printed["token_id"], app.token_id(&token));
    // --wait returned, so the revocation is already visible.
    assert_answer(&app.check(&token).await, "revoked");

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

    // Issued a second before the watermark revoke-all sets now.
    let older = app.mint_issued_ago("hank", 1);
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
    assert_answer(&app.check(&older).await, "subject_revoked");
    // Issued in the watermark's second or later: active.
    let newer = app.mint("hank");
    assert_answer(&app.check(&newer).await, "active");
    app.stop().await;
}

/// One batched statement merges its rows as applying them one by one
/// would: per token the longest expiry and the earliest revocation, the
/// first row's subject, reason and requester; one audit row per job, a
/// repeated job (at-least-once delivery) adding nothing; each row answered
/// with its token's refresh family, in order.
#[tokio::test]
async fn a_batch_of_revocations_merges_like_applying_them_one_by_one() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let db = &app.db.db;
    let now = now_unix();
    sqlx::query(
        "insert into refresh_families (family_id, subject, expires_at) values ('fam-1', 'gina', $1)",
    )
    .bind(now + 3600)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "insert into refresh_tokens (token_id, family_id, subject, expires_at, state, registered_at)
         values ('rt-1', 'fam-1', 'gina', $1, 0, $1 - 3600)",
    )
    .bind(now + 3600)
    .execute(db.pool())
    .await
    .unwrap();
    // An earlier revocation of "b" that the batch must extend, not shorten.
    let mut earlier = RevokeToken::new("b", Some("hank".into()), now + 900).reason("first");
    earlier.meta.requested_at = now - 100;
    db.apply_revoke(&earlier, now + 900, now).await.unwrap();

    let row = |job_id: &'static str, token_id: &'static str, exp: i64, at: i64, reason| {
        revokd::store::pg::RevokeRow {
            job_id,
            token_id,
            subject: Some("gina"),
            expires_at: exp,
            reason: Some(reason),
            requested_by: job_id,
            requested_at: at,
            applied_at: now,
            in_redis: Some(true),
        }
    };
    let rows = [
        row("j1", "a", now + 100, now - 5, "one"),
        row("j2", "a", now + 300, now - 9, "two"),
        row("j3", "b", now + 50, now - 1, "three"),
        row("j1", "a", now + 100, now - 5, "one"),
        row("j4", "rt-1", now + 600, now, "four"),
        row("j5", "a", now + 200, now - 2, "five"),
    ];
    let families = db.apply_revokes(&rows).await.unwrap();
    assert_eq!(
        families,
        [None, None, None, None, Some("fam-1".to_owned()), None]
    );

    type Row = (String, Option<String>, i64, i64, Option<String>, String);
    let tokens: Vec<Row> = sqlx::query_as(
        "select token_id, subject, expires_at, revoked_at, reason, requested_by
         from revoked_tokens order by token_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let t = |id: &str, sub: &str, exp: i64, at: i64, reason: &str, by: &str| {
        (
            id.to_owned(),
            Some(sub.to_owned()),
            exp,
            at,
            Some(reason.to_owned()),
            by.to_owned(),
        )
    };
    assert_eq!(
        tokens,
        [
            t("a", "gina", now + 300, now - 9, "one", "j1"),
            t("b", "hank", now + 900, now - 100, "first", ""),
            t("rt-1", "gina", now + 600, now, "four", "j4"),
        ]
    );
    let audit: Vec<String> = sqlx::query_scalar(
        "select job_id from revocation_audit where kind = 'revoke' order by job_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut expected = vec![earlier.meta.job_id.clone()];
    expected.extend(["j1", "j2", "j3", "j4", "j5"].map(String::from));
    expected.sort();
    assert_eq!(audit, expected);
    app.stop().await;
}

/// Revocations applied concurrently (as a worker runs them) are grouped
/// into shared commits and reach both stores exactly as sequential ones.
#[tokio::test]
async fn concurrent_revocations_reach_both_stores_as_sequential_ones_do() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let applier = app.services.applier();
    let now = now_unix();
    // 40 tokens, each revoked three times with different lives and times,
    // and every job delivered twice.
    let mut jobs = Vec::new();
    for i in 0..40 {
        for k in 0..3_i64 {
            let mut job = RevokeToken::new(
                format!("tok-{i}"),
                Some(format!("user-{i}")),
                now + 100 * (k + 1),
            );
            job.meta.requested_at = now - 10 + k;
            jobs.push(Job::Revoke(job));
        }
    }
    let twice: Vec<&Job> = jobs.iter().chain(jobs.iter()).collect();
    let results = futures::future::join_all(twice.iter().map(|job| applier.apply(job, now))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let tokens: Vec<(String, i64, i64)> = sqlx::query_as(
        "select token_id, expires_at, revoked_at from revoked_tokens order by token_id",
    )
    .fetch_all(app.db.db.pool())
    .await
    .unwrap();
    assert_eq!(tokens.len(), 40);
    for (_, expires_at, revoked_at) in &tokens {
        assert_eq!((*expires_at, *revoked_at), (now + 300, now - 10));
    }
    let audit: i64 = sqlx::query_scalar("select count(*) from revocation_audit")
        .fetch_one(app.db.db.pool())
        .await
        .unwrap();
    assert_eq!(audit, 120, "one audit row per job, none per repeat");
    let mut redis = app.redis();
    for i in 0..40 {
        let ttl: i64 = redis.ttl(format!("{}jti:tok-{i}", app.prefix)).unwrap();
        assert!(
            ttl > 300,
            "tok-{i}: ttl {ttl} is the longest life plus leeway"
        );
        let value: String = redis.get(format!("{}jti:tok-{i}", app.prefix)).unwrap();
        let entry: DenyEntry = serde_json::from_str(&value).unwrap();
        assert_eq!(entry.sub.as_deref(), Some(format!("user-{i}").as_str()));
    }
    // The writes were grouped into shared script calls (up to 128 entries
    // each): every key is counted once, however many calls extended it.
    let (tokens, subjects, _) = app.services.deny_fast.revocation_counts(now).await.unwrap();
    assert_eq!((tokens, subjects), (40, 0));
    app.stop().await;
}
