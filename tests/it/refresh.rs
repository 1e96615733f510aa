//! Refresh tokens: registry, rotation, reuse detection, revocation of
//! families, rebuild after Redis data loss.

use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, assert_answer, eventually};

const KEYS: &[&str] = &["--api-keys", "auth:ak-1"];

async fn write(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post_json(path, "ak-1", &body).await
}

/// Registers a refresh token for `sub` and rotates it: (old, new).
async fn rotated_pair(app: &TestApp, sub: &str) -> (String, String) {
    let (old, new) = (app.mint(sub), app.mint(sub));
    let (status, _) = write(app, "/v1/refresh-tokens?wait=true", json!({ "token": old })).await;
    assert_eq!(status, 200);
    let rotation = json!({ "token": new, "rotated_from": old });
    let (status, _) = write(app, "/v1/refresh-tokens?wait=true", rotation).await;
    assert_eq!(status, 200);
    (old, new)
}

fn state_in_redis(app: &TestApp, token: &str) -> Option<String> {
    let value: Option<String> = app
        .redis()
        .get(format!("{}rt:{}", app.prefix, app.token_id(token)))
        .unwrap();
    value.map(|v| {
        serde_json::from_str::<Value>(&v).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test]
async fn rotation_then_reuse_revokes_the_whole_family() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let first = app.mint("rita");
    let (status, body) = write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": first }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["family_id"],
        app.token_id(&first),
        "the first token names the family"
    );
    assert_eq!(app.check_refresh(&first).await["active"], true);

    let second = app.mint("rita");
    let (status, body) = write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": second, "rotated_from": first }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["family_id"], app.token_id(&first));
    assert_eq!(state_in_redis(&app, &first).as_deref(), Some("rotated"));
    assert_eq!(app.check_refresh(&second).await["active"], true);
    let third = app.mint("rita");
    let (status, _) = write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": third, "rotated_from": second }),
    )
    .await;
    assert_eq!(status, 200);

    // The first token, rotated long ago, presented again: reuse.
    assert_eq!(app.check_refresh(&first).await["reason"], "reused");
    for member in [&first, &second, &third] {
        assert_eq!(app.check_refresh(member).await["active"], false);
    }
    assert_eq!(app.check_refresh(&third).await["reason"], "revoked");
    let family = app.token_id(&first);
    eventually(
        Duration::from_secs(5),
        "family revoked in postgres",
        || async {
            let revoked: Option<i64> =
                sqlx::query_scalar("select revoked_at from refresh_families where family_id = $1")
                    .bind(&family)
                    .fetch_one(app.db.db.pool())
                    .await
                    .unwrap();
            revoked.is_some()
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the live member revoked in redis",
        || async { state_in_redis(&app, &third).as_deref() == Some("revoked") },
    )
    .await;
    // Rotated members stay rotated: presenting one again is reuse every time.
    assert_eq!(state_in_redis(&app, &second).as_deref(), Some("rotated"));
    assert_eq!(app.check_refresh(&first).await["reason"], "reused");
    assert_eq!(app.check_refresh(&second).await["reason"], "reused");
    // Every member is deny-listed too: a check without the hint refuses it.
    for member in [&first, &second, &third] {
        assert_answer(&app.check(member).await, "revoked");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_presentations_of_a_rotated_token_record_one_reuse() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let (old, new) = rotated_pair(&app, "sven").await;

    let mut presentations = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (http, url, body) = (
            app.http.clone(),
            app.url("/v1/check"),
            json!({ "token": old, "token_type_hint": "refresh_token" }),
        );
        presentations.spawn(async move {
            let answer: Value = http
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["reason"].as_str().unwrap().to_owned()
        });
    }
    while let Some(reason) = presentations.join_next().await {
        let reason = reason.unwrap();
        assert_eq!(reason, "reused");
    }
    assert_eq!(
        app.check_refresh(&new).await["reason"],
        "revoked",
        "the family ends fully revoked"
    );
    eventually(Duration::from_secs(5), "reuse recorded", || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from revocation_audit where kind = 'refresh_reuse'",
        )
        .fetch_one(app.db.db.pool())
        .await
        .unwrap();
        n == 1
    })
    .await;
    // No second event a while later: an absence, so the wait is the point.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: i64 =
        sqlx::query_scalar("select count(*) from revocation_audit where kind = 'refresh_reuse'")
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert_eq!(n, 1, "exactly one reuse event");
    app.stop().await;
}

#[tokio::test]
async fn unregistered_refresh_tokens_and_access_tokens_are_unknown() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let access = app.mint("tom");
    assert_eq!(
        app.check(&access).await.1["active"],
        true,
        "fine as an access token"
    );
    assert_eq!(app.check_refresh(&access).await["reason"], "unknown");
    let form = [
        ("token", access.as_str()),
        ("token_type_hint", "refresh_token"),
    ];
    let introspected: Value = app
        .http
        .post(app.url("/introspect"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // RFC 7662 2.1: the hint is only a hint; unregistered as a refresh
    // token, it is looked up as the access token it is.
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["token_type"], "Bearer", "{introspected}");
    write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": access }),
    )
    .await;
    let introspected: Value = app
        .http
        .post(app.url("/introspect"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["token_type"], "refresh_token");
    assert_eq!(app.check_refresh("garbage").await["reason"], "malformed");
    app.stop().await;
}

#[tokio::test]
async fn revoking_a_refresh_token_or_its_subject_revokes_families() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let a1 = app.mint("uwe");
    let a2 = app.mint("uwe");
    write(&app, "/v1/refresh-tokens?wait=true", json!({ "token": a1 })).await;
    write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": a2, "rotated_from": a1 }),
    )
    .await;
    // Revoking the rotated first token revokes its family, the live one included.
    let (status, _) = write(&app, "/v1/revocations?wait=true", json!({ "token": a1 })).await;
    assert_eq!(status, 200);
    assert_eq!(app.check_refresh(&a2).await["reason"], "revoked");

    let b = app.mint("vic");
    write(&app, "/v1/refresh-tokens?wait=true", json!({ "token": b })).await;
    let (status, _) = write(&app, "/v1/subjects/vic/revoke-all?wait=true", json!({})).await;
    assert_eq!(status, 200);
    let families: Option<i64> =
        sqlx::query_scalar("select revoked_at from refresh_families where family_id = $1")
            .bind(app.token_id(&b))
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert!(
        families.is_some(),
        "revoke-all revoked the subject's family"
    );
    assert_eq!(app.check_refresh(&b).await["active"], false);

    let c = app.mint("wim");
    write(&app, "/v1/refresh-tokens?wait=true", json!({ "token": c })).await;
    let form = [("token", c.as_str()), ("token_type_hint", "refresh_token")];
    let response = app
        .http
        .post(app.url("/revoke"))
        .bearer_auth("ak-1")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(
        Duration::from_secs(5),
        "rfc 7009 revoked the family",
        || async { app.check_refresh(&c).await["active"] == false },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn refresh_state_is_rebuilt_from_postgres_after_redis_data_loss() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let (old, new) = rotated_pair(&app, "xia").await;
    let mut redis = app.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix))
        .query(&mut redis)
        .unwrap();
    let _: () = redis.del(&keys).unwrap();
    eventually(
        Duration::from_secs(5),
        "registry rebuilt in redis",
        || async {
            state_in_redis(&app, &old).as_deref() == Some("rotated")
                && state_in_redis(&app, &new).as_deref() == Some("active")
        },
    )
    .await;
    assert_eq!(app.check_refresh(&new).await["active"], true);
    app.stop().await;
}

#[tokio::test]
async fn the_replica_follows_refresh_registrations_and_family_revocations() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        replica: true,
        ..Default::default()
    })
    .await;
    let replica = crate::helpers::current_replica(&app).await;
    use revokd::read::replica::RefreshState;
    let now = || revokd_jobs::now_unix();
    let (old, new) = rotated_pair(&app, "yves").await;
    let (old_id, new_id) = (app.token_id(&old), app.token_id(&new));
    eventually(
        Duration::from_secs(5),
        "registrations in the replica",
        || {
            let seen = replica.lookup_refresh(&old_id, now()) == Some(RefreshState::Rotated)
                && replica.lookup_refresh(&new_id, now()) == Some(RefreshState::Active);
            async move { seen }
        },
    )
    .await;
    assert_eq!(app.check_refresh(&new).await["active"], true);
    assert_eq!(app.check_refresh(&old).await["reason"], "reused");
    eventually(
        Duration::from_secs(5),
        "family revocation in the replica",
        || {
            let seen = replica.lookup_refresh(&new_id, now()) == Some(RefreshState::Revoked);
            async move { seen }
        },
    )
    .await;
    assert_eq!(app.check_refresh(&new).await["reason"], "revoked");
    assert_eq!(
        replica.lookup_refresh("never-registered", now()),
        Some(RefreshState::Missing)
    );
    app.stop().await;
}

/// A rotated refresh token among a bulk revocation's items takes its family
/// with it, as a single revocation does: the API records the family's
/// revocation with the chunk, and the worker, which leaves the chunk's rows
/// as recorded, still writes the family into Redis. The audit covers
/// Postgres, Redis and the API.
#[tokio::test]
async fn a_refresh_token_in_a_bulk_revocation_revokes_its_family() {
    let app = TestApp::spawn_with(Options {
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let (old, new) = rotated_pair(&app, "xia").await;
    let items =
        json!([{ "token": old }, { "jti": "bulk-beside", "exp": revokd_jobs::now_unix() + 600 }]);
    let (status, body) = write(&app, "/v1/revocations:batch?wait=true", items).await;
    assert_eq!(status, 200, "{body}");
    let family = app.token_id(&old);
    let revoked: Option<i64> =
        sqlx::query_scalar("select revoked_at from refresh_families where family_id = $1")
            .bind(&family)
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert!(revoked.is_some(), "the family revoked in postgres");
    let key = format!("{}rtf:{family}", app.prefix);
    eventually(
        Duration::from_secs(5),
        "the family revoked in redis",
        || {
            let there: bool = app.redis().exists(&key).unwrap();
            async move { there }
        },
    )
    .await;
    assert_eq!(app.check_refresh(&new).await["reason"], "revoked");
    app.stop().await;
}
