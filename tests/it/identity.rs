//! Token and subject identity: ids revokd cannot store verbatim are hashed
//! (and stay revocable), hashed ids never collide with a `jti`, a future
//! `iat` or a `crit` header makes a token inactive, rebuilds leave unchanged
//! keys alone, reuse is recorded once during a Redis outage, and the CLI
//! refuses what it cannot do.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use redis::Commands;
use revokd::{read::refresh::RefreshChecker, worker::maintenance::Quiet};
use revokd_jobs::{jti_id, now_unix, subject_id};
use serde_json::{Value, json};

use crate::helpers::{Options, PrivateRedis, SECRET, TestApp, assert_answer, free_port};

const KEYS: &[&str] = &["--api-keys", "ids:ik-1"];

fn opts() -> Options<'static> {
    Options {
        extra: KEYS,
        ..Default::default()
    }
}

async fn write(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post_json(path, "ik-1", &body).await
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A token issued 10 s ago (so a watermark set now is after it).
fn token(jti: Option<&str>, sub: &str) -> String {
    let now = now_unix();
    let mut claims = json!({ "sub": sub, "iat": now - 10, "exp": now + 900 });
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    hs256(claims)
}

/// Every byte outside the RFC 3986 unreserved set as `%XX`.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[track_caller]
fn assert_active(body: &Value) {
    assert_eq!(body["active"], true, "{body}");
}

#[tokio::test]
async fn tokens_with_unstorable_jtis_are_revocable_by_token_and_by_jti() {
    let app = TestApp::spawn_with(opts()).await;
    for (kind, jti) in [
        ("300 bytes", "j".repeat(300)),
        ("control character", "ctl\u{1}jti\n".to_owned()),
    ] {
        let by_token = token(Some(&format!("{jti}-a")), "ida");
        let by_jti = token(Some(&format!("{jti}-b")), "ida");
        for t in [&by_token, &by_jti] {
            let (status, body) = app.check(t).await;
            assert_eq!(status, 200, "{kind}");
            assert_active(&body);
            assert_eq!(body["jti"].as_str().unwrap().len(), jti.len() + 2);
            assert!(
                body["token_id"]
                    .as_str()
                    .unwrap()
                    .starts_with("jti-sha256:"),
                "{kind}: {body}"
            );
        }

        let (status, body) = write(
            &app,
            "/v1/revocations?wait=true",
            json!({ "token": by_token }),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {body}");
        assert_eq!(body["token_id"], jti_id(&format!("{jti}-a")));
        assert_eq!(app.check(&by_token).await.1["reason"], "revoked", "{kind}");
        assert_active(&app.check(&by_jti).await.1);

        let (status, body) = write(
            &app,
            "/v1/revocations?wait=true",
            json!({ "jti": format!("{jti}-b"), "sub": "ida", "exp": now_unix() + 900 }),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {body}");
        assert_eq!(body["token_id"], jti_id(&format!("{jti}-b")));
        assert_eq!(app.check(&by_jti).await.1["reason"], "revoked", "{kind}");
    }
    app.stop().await;
}

#[tokio::test]
async fn revoke_all_of_a_subject_revokd_cannot_store_revokes_its_tokens() {
    let app = TestApp::spawn_with(opts()).await;
    // Two 300-byte subjects sharing their first 256 bytes: hashed, not cut.
    let long = format!("ü/ {}", "x".repeat(300));
    let sibling = format!("{long}y");
    let control = "bell\u{7}user".to_owned();
    let tokens: Vec<(&str, String)> = [long.as_str(), sibling.as_str(), control.as_str()]
        .into_iter()
        .map(|sub| (sub, token(None, sub)))
        .collect();
    for (sub, t) in &tokens {
        let body = app.check(t).await.1;
        assert_active(&body);
        assert_eq!(body["sub"], *sub, "the raw sub is shown");
    }

    for sub in [&long, &control] {
        let path = format!("/v1/subjects/{}/revoke-all?wait=true", percent_encode(sub));
        let (status, body) = write(&app, &path, json!({ "reason": "password_change" })).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.check(&tokens[0].1).await.1["reason"], "subject_revoked");
    assert_active(&app.check(&tokens[1].1).await.1);
    assert_eq!(app.check(&tokens[2].1).await.1["reason"], "subject_revoked");
    // Stored under the hashed subject, in both stores.
    let mut redis = app.redis();
    let key = format!("{}sub:{}", app.prefix, subject_id(&long));
    assert!(redis.exists::<_, bool>(&key).unwrap(), "{key}");
    let stored: i64 =
        sqlx::query_scalar("select count(*) from subject_watermarks where subject = any($1)")
            .bind(vec![subject_id(&long), subject_id(&control)])
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert_eq!(stored, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_jti_spelling_another_tokens_hashed_id_never_shares_its_revocation() {
    let app = TestApp::spawn_with(opts()).await;
    for revoke_jtiless_first in [true, false] {
        let sub = format!("collide-{revoke_jtiless_first}");
        let jtiless = token(None, &sub);
        let hashed = revokd_jobs::token_id(&jtiless, None);
        let impostor = token(Some(&hashed), &sub);
        let ids = (
            app.check(&jtiless).await.1["token_id"].clone(),
            app.check(&impostor).await.1["token_id"].clone(),
        );
        assert_eq!(ids.0, hashed);
        assert_ne!(ids.0, ids.1);

        let (first, second) = if revoke_jtiless_first {
            (&jtiless, &impostor)
        } else {
            (&impostor, &jtiless)
        };
        let (status, body) =
            write(&app, "/v1/revocations?wait=true", json!({ "token": first })).await;
        assert_eq!(status, 200, "{body}");
        assert_answer(&app.check(first).await, "revoked");
        assert_active(&app.check(second).await.1);
        let (status, _) = write(
            &app,
            "/v1/revocations?wait=true",
            json!({ "token": second }),
        )
        .await;
        assert_eq!(status, 200);
        assert_answer(&app.check(second).await, "revoked");
    }
    // Revoking by that jti names the impostor, not the jti-less token.
    let jtiless = token(None, "collide-by-jti");
    let hashed = revokd_jobs::token_id(&jtiless, None);
    let (status, body) = write(
        &app,
        "/v1/revocations?wait=true",
        json!({ "jti": hashed, "exp": now_unix() + 900 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["token_id"], hashed);
    assert_active(&app.check(&jtiless).await.1);
    app.stop().await;
}

#[tokio::test]
async fn an_iat_beyond_the_leeway_is_not_yet_valid_even_from_the_verify_cache() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let now = now_unix();
    let ahead = hs256(json!({ "sub": "clock", "iat": now + 600, "exp": now + 1800 }));
    let skewed = hs256(json!({ "sub": "clock", "iat": now + 5, "exp": now + 1800 }));
    // Twice: the second check finds the token in the verify cache.
    for _ in 0..2 {
        assert_answer(&app.check(&ahead).await, "not_yet_valid");
        assert_active(&app.check(&skewed).await.1);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_with_a_crit_header_is_malformed() {
    let app = TestApp::spawn_with(opts()).await;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = b64(json!({ "alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": true }));
    let claims = b64(json!({ "sub": "crit", "exp": now_unix() + 600 }));
    let input = format!("{header}.{claims}");
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
    let token = format!("{input}.{signature}");
    for _ in 0..2 {
        let (status, body) = app.check(&token).await;
        assert_eq!((status, &body["reason"]), (200, &json!("malformed")));
    }
    let (status, body) = write(&app, "/v1/revocations", json!({ "token": token })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_token");
    app.stop().await;
}

/// Sleeps until `offset` past the start of the next wall-clock second.
// The test is about second boundaries of the wall clock itself.
#[allow(clippy::disallowed_methods)]
async fn sleep_into_next_second(offset: Duration) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let to_next =
        Duration::from_secs(1) - Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    tokio::time::sleep(to_next + offset).await;
}

#[tokio::test]
async fn a_second_rebuild_writes_no_key_and_adds_no_event() {
    let app = TestApp::spawn_with(opts()).await;
    let now = now_unix();
    // Revocations with spread-out expiries, straight into Postgres.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'rb-' || g, 'u' || (g % 7), {now} + 60 + g * 37, {now}, 't'
         from generate_series(1, 400) g"
    )))
    .execute(app.db.db.pool())
    .await
    .unwrap();
    // Refresh registry entries and a revoked family, through the API.
    let (old, new) = (app.mint("rb"), app.mint("rb"));
    for body in [
        json!({ "token": old }),
        json!({ "token": new, "rotated_from": old }),
    ] {
        assert_eq!(
            write(&app, "/v1/refresh-tokens?wait=true", body).await.0,
            200
        );
    }
    let other = app.mint("rb2");
    write(
        &app,
        "/v1/refresh-tokens?wait=true",
        json!({ "token": other }),
    )
    .await;
    let (status, _) = write(&app, "/v1/revocations?wait=true", json!({ "token": other })).await;
    assert_eq!(status, 200);
    let (status, _) = write(&app, "/v1/subjects/rb3/revoke-all?wait=true", json!({})).await;
    assert_eq!(status, 200);

    let maintenance = app.services.maintenance(app.services.deny_patient.clone());
    // The first rebuild early in a second, the second one late in a later
    // second: a remaining TTL rounded by Redis then reads a second short of
    // a target floored to whole seconds (which rewrote the key).
    sleep_into_next_second(Duration::from_millis(10)).await;
    let first = maintenance.rebuild(now_unix(), &Quiet).await.unwrap();
    assert_eq!(first.tokens, 400 + 1, "{first:?}");
    assert_eq!(first.restored, 400, "the rows written to postgres only");
    let mut redis = app.redis();
    let events = format!("{}events", app.prefix);
    let before: u64 = redis.xlen(&events).unwrap();
    sleep_into_next_second(Duration::from_millis(800)).await;
    let second = maintenance.rebuild(now_unix(), &Quiet).await.unwrap();
    assert_eq!(second.restored, 0);
    let after: u64 = redis.xlen(&events).unwrap();
    assert_eq!(after, before, "no key rewritten, no event added");
    let cleanup = maintenance.cleanup(now_unix(), &Quiet).await.unwrap();
    assert_eq!(cleanup.redis_restored, 0);
    assert_eq!(redis.xlen::<_, u64>(&events).unwrap(), before);
    app.stop().await;
}

#[tokio::test]
async fn reuse_during_a_redis_outage_is_recorded_once_by_postgres() {
    let mut private = PrivateRedis::start();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(private.url()),
        extra: KEYS,
        ..Default::default()
    })
    .await;
    let (old, new) = (app.mint("reuser"), app.mint("reuser"));
    for body in [
        json!({ "token": old }),
        json!({ "token": new, "rotated_from": old }),
    ] {
        let (status, body) = write(&app, "/v1/refresh-tokens?wait=true", body).await;
        assert_eq!(status, 200, "{body}");
    }
    private.kill();

    let services = &app.services;
    let claims = services.verifier.verify(&old, now_unix()).unwrap();
    let entry = services
        .db
        .refresh_row(&claims.token_id)
        .await
        .unwrap()
        .unwrap()
        .entry();
    let checker = Arc::new(services.checker());
    let submitter = services.submitter(Arc::clone(&checker));
    let refresh = RefreshChecker {
        checker: &checker,
        deny: &services.deny_fast,
        db: &services.db,
        submitter: &submitter,
        fail_mode: services.config.fail_mode,
        family_ttl: services.ttl_policy().watermark(),
    };
    let presentations = (0..20).map(|_| refresh.record_reuse(&entry, &claims));
    let recorded = futures::future::join_all(presentations).await;
    assert_eq!(
        recorded.iter().filter(|first| **first).count(),
        1,
        "one presentation records the reuse"
    );
    // Later presentations answer as before, without recording it again.
    assert!(!refresh.record_reuse(&entry, &claims).await);
    let body = json!({ "token": old, "token_type_hint": "refresh_token" });
    let (_, answer) = write(&app, "/v1/check", body).await;
    assert_eq!(answer["reason"], "reused", "{answer}");
    let body = json!({ "token": new, "token_type_hint": "refresh_token" });
    let (_, answer) = write(&app, "/v1/check", body).await;
    assert_eq!(answer["reason"], "revoked", "{answer}");
    let (reason, in_redis): (Option<String>, bool) = sqlx::query_as(
        "select revoked_reason, in_redis from refresh_families where family_id = $1",
    )
    .bind(&entry.family)
    .fetch_one(app.db.db.pool())
    .await
    .unwrap();
    assert_eq!(reason.as_deref(), Some("reused"));
    assert!(!in_redis, "the resync copies the marker once Redis is back");
    app.stop().await;
}

/// Runs the built binary; (exit code, stdout, stderr).
pub(crate) fn revokd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stats_with_no_store_reachable_exits_2_with_one_line() {
    let (redis, pg) = (free_port(), free_port());
    let (code, stdout, stderr) = revokd(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{redis}"),
        "--database-url",
        &format!("postgres://postgres@127.0.0.1:{pg}/none"),
        "stats",
    ]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no store"), "{stderr}");
}

#[test]
fn mint_with_an_empty_subject_exits_2() {
    let (code, stdout, stderr) = revokd(&["--jwt-secret", SECRET, "mint", "--sub", ""]);
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (code, stdout, _) = revokd(&["--jwt-secret", SECRET, "mint", "--sub", "ok"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim().split('.').count(), 3);
}

// The CLI runs as a blocking child process: the worker needs its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revoke_and_revoke_all_hash_ids_as_the_check_does() {
    let app = TestApp::spawn().await;
    let long_jti = "c".repeat(300);
    let long_sub = "s".repeat(300);
    let by_jti = token(Some(&long_jti), "cli-user");
    let by_sub = token(None, &long_sub);
    let common = [
        "--jwt-secret",
        SECRET,
        "--key-prefix",
        &app.prefix,
        "--redis-url",
        &app.services.config.redis_url,
        "--database-url",
        &app.db.url,
    ];
    let exp = (now_unix() + 900).to_string();
    let (code, stdout, stderr) = revokd(
        &[
            &common[..],
            &["revoke", "--jti", &long_jti, "--exp", &exp, "--wait"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["token_id"], jti_id(&long_jti));
    assert_answer(&app.check(&by_jti).await, "revoked");

    let (code, _, stderr) =
        revokd(&[&common[..], &["revoke-all", "--sub", &long_sub, "--wait"]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    assert_answer(&app.check(&by_sub).await, "subject_revoked");

    let (code, _, stderr) = revokd(&[&common[..], &["revoke-all", "--sub", ""]].concat());
    assert_eq!(code, Some(2), "{stderr}");
    app.stop().await;
}
