//! Issuer watermarks (`POST /v1/issuers/{iss}/revoke-all`, `revokd
//! revoke-all --issuer`, job `revoke_issuer`): every token of that issuer
//! issued before the watermark is `issuer_revoked`, in Redis, Postgres and
//! the replica; only ever raised; covered by cleanup, rebuild and resync.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use redis::Commands;
use revokd::{read::checker::LookupStats, store::Scope, worker::maintenance::Quiet};
use revokd_jobs::{Job, RevokeIssuer, RevokeSubject, now_unix};
use serde_json::{Value, json};

use crate::helpers::{Options, SECRET, TestApp, assert_answer, eventually};
use crate::identity::{percent_encode, revokd};

const IDP: &str = "https://idp.example.com/tenant-a";
const OTHER: &str = "https://idp.example.com/tenant-b";

/// A token signed with the test secret, issued at `iat` by `iss` (none
/// when `None`).
fn token(iss: Option<&str>, sub: &str, iat: i64) -> String {
    let mut claims = json!({ "sub": sub, "iat": iat, "exp": iat + 900 });
    if let Some(iss) = iss {
        claims["iss"] = json!(iss);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn revoke_issuer(iss: &str, not_before: i64) -> Job {
    Job::RevokeIssuer(RevokeIssuer::new(iss, not_before))
}

/// An app whose jobs the test applies itself.
async fn without_worker() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await
}

fn redis_watermark(app: &TestApp, iss: &str) -> Option<i64> {
    app.redis().get(format!("{}iss:{iss}", app.prefix)).unwrap()
}

#[tokio::test]
async fn revoke_all_of_an_issuer_refuses_its_older_tokens_only_and_is_audited() {
    let app = TestApp::spawn_with(Options {
        extra: &["--api-keys", "ops:ok-456"],
        ..Default::default()
    })
    .await;
    let now = now_unix();
    let older = token(Some(IDP), "ann", now - 10);
    let newer = token(Some(IDP), "ann", now + 1);
    let other_issuer = token(Some(OTHER), "ann", now - 10);
    let no_issuer = token(None, "ann", now - 10);
    for t in [&older, &newer, &other_issuer, &no_issuer] {
        assert_answer(&app.check(t).await, "active");
    }

    let path = format!("/v1/issuers/{}/revoke-all?wait=true", percent_encode(IDP));
    let (status, body) = app
        .post_json(&path, "ok-456", &json!({ "reason": "key_leak" }))
        .await;
    assert_eq!(status, 200, "{body}");
    let not_before = body["not_before"].as_i64().unwrap();
    assert!(not_before >= now, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_owned();

    // Through the API.
    assert_answer(&app.check(&older).await, "issuer_revoked");
    if now + 1 >= not_before {
        assert_answer(&app.check(&newer).await, "active");
    }
    assert_answer(&app.check(&other_issuer).await, "active");
    assert_answer(&app.check(&no_issuer).await, "active");
    // In Redis.
    assert_eq!(redis_watermark(&app, IDP), Some(not_before));
    let mut redis = app.redis();
    let ttl: i64 = redis.ttl(format!("{}iss:{IDP}", app.prefix)).unwrap();
    assert!(ttl > 30 * 86_400 - 5, "max lifetime + leeway, got {ttl}");
    // In Postgres: the watermark, marked as in Redis, and the audit row.
    let (nb, reason, in_redis): (i64, Option<String>, bool) = sqlx::query_as(
        "select not_before, reason, in_redis from issuer_watermarks where issuer = $1",
    )
    .bind(IDP)
    .fetch_one(app.db.db.pool())
    .await
    .unwrap();
    assert_eq!(
        (nb, reason.as_deref(), in_redis),
        (not_before, Some("key_leak"), true)
    );
    let (kind, issuer, by, audited_nb): (String, Option<String>, String, Option<i64>) =
        sqlx::query_as(
            "select kind, issuer, requested_by, not_before from revocation_audit where job_id = $1",
        )
        .bind(&job_id)
        .fetch_one(app.db.db.pool())
        .await
        .unwrap();
    assert_eq!(
        (kind.as_str(), issuer.as_deref(), by.as_str(), audited_nb),
        ("revoke_issuer", Some(IDP), "ops", Some(not_before))
    );
    // Counted in both stores' stats, none still waiting for Redis.
    let stats = app.stats("ok-456").await;
    assert_eq!(stats["redis"]["revoked_issuers"], 1, "{stats}");
    assert_eq!(stats["postgres"]["revoked_issuers"], 1, "{stats}");
    assert_eq!(stats["postgres"]["pending_redis"], 0, "{stats}");
    app.stop().await;
}

#[tokio::test]
async fn the_issuer_endpoint_checks_its_key_and_input() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--api-keys", "ops:ok-456"],
        ..Default::default()
    })
    .await;
    let path = "/v1/issuers/x/revoke-all";
    let (status, body) = app.post_json(path, "wrong", &json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    for (path, body, code) in [
        (path, json!({ "reason": 5 }), "invalid_request"),
        (path, json!({ "reason": "line\nbreak" }), "invalid_request"),
        (
            "/v1/issuers/x/revoke-all?wait=maybe",
            json!({}),
            "invalid_request",
        ),
        ("/v1/issuers/%FF/revoke-all", json!({}), "invalid_request"),
    ] {
        let (status, answer) = app.post_json(path, "ok-456", &body).await;
        assert_eq!(status, 400, "{path} {body} -> {answer}");
        assert_eq!(answer["error"], code, "{path} {body} -> {answer}");
        assert!(answer["message"].is_string());
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from issuer_watermarks")
            .fetch_one(app.db.db.pool())
            .await
            .unwrap(),
        0,
        "nothing recorded for refused input"
    );
    // An issuer revokd cannot store verbatim is hashed, as a check hashes it.
    let long = format!("https://idp.example.com/{}", "t".repeat(300));
    let path = format!("/v1/issuers/{}/revoke-all", percent_encode(&long));
    let (status, body) = app.post_json(&path, "ok-456", &json!({})).await;
    assert_eq!(status, 202, "{body}");
    let stored = app
        .db
        .db
        .issuer_watermark(&revokd_jobs::issuer_id(&long))
        .await
        .unwrap();
    assert_eq!(stored, body["not_before"].as_i64());
    app.stop().await;
}

#[tokio::test]
async fn an_older_issuer_watermark_arriving_later_does_not_move_it_back() {
    let app = without_worker().await;
    let applier = app.services.applier();
    let now = now_unix();
    applier.apply(&revoke_issuer(IDP, now), now).await.unwrap();
    applier
        .apply(&revoke_issuer(IDP, now - 100), now)
        .await
        .unwrap();
    assert_eq!(redis_watermark(&app, IDP), Some(now));
    assert_eq!(app.db.db.issuer_watermark(IDP).await.unwrap(), Some(now));
    // Issued between the two: revoked only if the later one holds.
    assert_answer(
        &app.check(&token(Some(IDP), "bo", now - 50)).await,
        "issuer_revoked",
    );
    // The pending-for-Redis path raises it alike.
    let lower = RevokeIssuer::new(IDP, now - 200);
    app.db
        .db
        .record_revoke_issuer(&lower, now, false)
        .await
        .unwrap();
    assert_eq!(app.db.db.issuer_watermark(IDP).await.unwrap(), Some(now));
    app.stop().await;
}

#[tokio::test]
async fn subject_revocation_takes_precedence_over_the_issuers() {
    let app = without_worker().await;
    let applier = app.services.applier();
    let now = now_unix();
    applier.apply(&revoke_issuer(IDP, now), now).await.unwrap();
    applier
        .apply(&Job::RevokeAll(RevokeSubject::new("cy", now)), now)
        .await
        .unwrap();
    assert_answer(
        &app.check(&token(Some(IDP), "cy", now - 5)).await,
        "subject_revoked",
    );
    assert_answer(
        &app.check(&token(Some(IDP), "dee", now - 5)).await,
        "issuer_revoked",
    );
    app.stop().await;
}

#[tokio::test]
async fn the_replica_loads_and_follows_issuer_watermarks() {
    let app = without_worker().await;
    let applier = app.services.applier();
    let now = now_unix();
    // Before the replica loads, its event gone: only the snapshot has it.
    applier.apply(&revoke_issuer(IDP, now), now).await.unwrap();
    let _: () = app.redis().del(format!("{}events", app.prefix)).unwrap();
    let follower = app.services.follower().unwrap();
    let stop = app.shutdown.clone();
    let following = tokio::spawn(follower.run(stop));
    let replica = crate::helpers::current_replica(&app).await;
    assert_eq!(replica.issuer_not_before(IDP, now_unix()), Some(now));
    // After: from the event stream, the lower one changing nothing.
    applier
        .apply(&revoke_issuer(OTHER, now - 20), now)
        .await
        .unwrap();
    applier
        .apply(&revoke_issuer(OTHER, now - 30), now)
        .await
        .unwrap();
    let r = Arc::clone(&replica);
    eventually(
        Duration::from_secs(5),
        "the event in the replica",
        move || {
            let seen = r.issuer_not_before(OTHER, now_unix()) == Some(now - 20);
            async move { seen }
        },
    )
    .await;
    let before = LookupStats::get(&app.checker_stats.stats().replica);
    assert_answer(
        &app.check(&token(Some(IDP), "eve", now - 5)).await,
        "issuer_revoked",
    );
    assert_answer(
        &app.check(&token(Some(OTHER), "eve", now - 25)).await,
        "issuer_revoked",
    );
    assert_answer(
        &app.check(&token(Some(OTHER), "eve", now - 15)).await,
        "active",
    );
    assert_eq!(
        LookupStats::get(&app.checker_stats.stats().replica),
        before + 3,
        "answered by the replica"
    );
    // It ends with its lifetime.
    let end = now + app.services.ttl_policy().watermark();
    assert_eq!(replica.issuer_not_before(IDP, end + 2), None);
    app.shutdown.cancel();
    let _ = following.await;
    app.stop().await;
}

#[tokio::test]
async fn a_pending_issuer_watermark_is_enforced_before_redis_has_it() {
    let app = without_worker().await;
    let now = now_unix();
    let older = token(Some(IDP), "fay", now - 10);
    assert_answer(&app.check(&older).await, "active");
    // As the write path records it while the queue is unreachable.
    let job = RevokeIssuer::new(IDP, now);
    app.db
        .db
        .record_revoke_issuer(&job, now, false)
        .await
        .unwrap();
    assert_eq!(redis_watermark(&app, IDP), None);
    app.wait_for_reason(&older, "issuer_revoked", Duration::from_secs(5))
        .await;
    // The resync copies it into Redis and marks the row.
    let resync = app.services.resync(app.services.deny_patient.clone());
    assert!(resync.run_once().await.unwrap() >= 1);
    assert_eq!(redis_watermark(&app, IDP), Some(now));
    let pending = app.db.db.pending_of(Scope::Issuer, 10).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_restores_issuer_watermarks_from_postgres() {
    let app = without_worker().await;
    let applier = app.services.applier();
    let now = now_unix();
    applier.apply(&revoke_issuer(IDP, now), now).await.unwrap();
    let _: () = app.redis().del(format!("{}iss:{IDP}", app.prefix)).unwrap();
    let older = token(Some(IDP), "gus", now - 10);
    assert_answer(&app.check(&older).await, "active");
    let maintenance = app.services.maintenance(app.services.deny_patient.clone());
    let report = maintenance.rebuild(now, &Quiet).await.unwrap();
    assert_eq!(report.issuers, 1, "{report:?}");
    assert!(report.restored >= 1, "{report:?}");
    assert_eq!(redis_watermark(&app, IDP), Some(now));
    assert_answer(&app.check(&older).await, "issuer_revoked");
    app.stop().await;
}

#[tokio::test]
async fn cleanup_drops_an_issuer_watermark_once_every_token_it_covers_has_expired() {
    let app = without_worker().await;
    let now = now_unix();
    let cutoff = app.services.ttl_policy().outdated_before(now);
    let applier = app.services.applier();
    for (iss, not_before) in [("gone", cutoff - 1), ("edge", cutoff), ("kept", now)] {
        applier
            .apply(&revoke_issuer(iss, not_before), now)
            .await
            .unwrap();
    }
    let maintenance = app.services.maintenance(app.services.deny_patient.clone());
    let report = maintenance.cleanup(now, &Quiet).await.unwrap();
    assert_eq!(report.issuers_deleted, 1, "{report:?}");
    let db = &app.db.db;
    assert_eq!(db.issuer_watermark("gone").await.unwrap(), None);
    assert_eq!(db.issuer_watermark("edge").await.unwrap(), Some(cutoff));
    assert_eq!(db.issuer_watermark("kept").await.unwrap(), Some(now));
    let again = maintenance.cleanup(now, &Quiet).await.unwrap();
    assert_eq!(again.issuers_deleted, 0, "a second run finds nothing");
    // Redis lets the key lapse by itself: it lives as long as a watermark.
    let ttl: i64 = app.redis().ttl(format!("{}iss:kept", app.prefix)).unwrap();
    assert!(
        ttl <= app.services.ttl_policy().watermark() && ttl > 0,
        "{ttl}"
    );
    app.stop().await;
}

// The CLI runs as a blocking child process: the worker needs its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_all_by_issuer_waits_and_refuses_bad_arguments() {
    let app = TestApp::spawn().await;
    let now = now_unix();
    let older = token(Some(IDP), "hal", now - 10);
    let common = [
        "--jwt-secret",
        SECRET,
        "--key-prefix",
        &app.prefix,
        "--redis-url",
        &app.services.config.redis_url,
        "--database-url",
        &app.db.url,
        "revoke-all",
    ];
    let (code, stdout, stderr) = revokd(
        &[
            &common[..],
            &["--issuer", IDP, "--reason", "key_leak", "--wait"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert!(printed["job_id"].is_string(), "{printed}");
    assert_eq!(
        app.db.db.issuer_watermark(IDP).await.unwrap(),
        printed["not_before"].as_i64()
    );
    assert_answer(&app.check(&older).await, "issuer_revoked");
    assert_answer(
        &app.check(&token(Some(OTHER), "hal", now - 10)).await,
        "active",
    );

    for bad in [
        &["--issuer", IDP, "--sub", "hal"][..],
        &[][..],
        &["--issuer", ""][..],
    ] {
        let (code, stdout, stderr) = revokd(&[&common[..], bad].concat());
        assert_eq!(code, Some(2), "{bad:?}: {stdout}{stderr}");
        assert!(!stderr.trim().is_empty(), "{bad:?}: a message");
    }

    // With the issuer pinned, a near miss is refused as the API refuses it,
    // and nothing is recorded; the issuer itself is taken.
    let pinned = [&["--jwt-issuer", IDP][..], &common[..]].concat();
    let near_miss = format!("{IDP}/");
    let (code, stdout, stderr) = revokd(&[&pinned[..], &["--issuer", &near_miss]].concat());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("no configured issuer"), "{stderr}");
    assert_eq!(app.db.db.issuer_watermark(&near_miss).await.unwrap(), None);
    let (code, _, stderr) = revokd(&[&pinned[..], &["--issuer", IDP]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    app.stop().await;
}

/// With issuers configured, an issuer none of them names is refused: its
/// tokens are refused already, and a near miss (a trailing slash) would be
/// answered 2xx while matching nothing.
#[tokio::test]
async fn an_issuer_no_configuration_trusts_is_refused() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &[
            "--api-keys",
            "ops:ok-456",
            "--jwt-issuer",
            "https://idp.example.com",
        ],
        ..Default::default()
    })
    .await;
    let path = |iss: &str| format!("/v1/issuers/{}/revoke-all", percent_encode(iss));
    let (status, body) = app
        .post_json(&path("https://idp.example.com/"), "ok-456", &json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unknown_issuer")),
        "{body}"
    );
    let (status, body) = app
        .post_json(&path("https://idp.example.com"), "ok-456", &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let recorded: Vec<String> = sqlx::query_scalar("select issuer from issuer_watermarks")
        .fetch_all(app.db.db.pool())
        .await
        .unwrap();
    assert_eq!(recorded, ["https://idp.example.com"]);
    app.stop().await;
}
