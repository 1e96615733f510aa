//! The write API: endpoints, API keys, `?wait=true`, the degraded path while
//! Redis is down, Postgres outages, and bad input.

use std::time::Duration;

use redis::Commands;
use revokd_jobs::now_unix;
use serde_json::{Value, json};

use crate::helpers::{Options, PrivateRedis, Proxy, SECRET, TestApp, assert_answer, eventually};

const KEYS: &[&str] = &[
    "--api-keys",
    "billing:bk-123,ops:ok-456",
    "--wait-timeout",
    "1s",
];

fn opts() -> Options<'static> {
    Options {
        extra: KEYS,
        ..Default::default()
    }
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post_json(path, "bk-123", &body).await
}

#[tokio::test]
async fn each_write_endpoint_reaches_both_stores_and_records_the_key_name() {
    let app = TestApp::spawn_with(opts()).await;
    let mut redis = app.redis();

    let token = app.mint("pia");
    let (status, body) = post(
        &app,
        "/v1/revocations",
        json!({ "token": token, "reason": "logout" }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["token_id"], app.token_id(&token));
    assert!(body["job_id"].is_string());
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    // Redis is written first, Postgres right after.
    let row = app.wait_for_row(&app.token_id(&token)).await;
    assert_eq!(
        (row.requested_by.as_str(), row.reason.as_deref()),
        ("billing", Some("logout"))
    );
    let exists: bool = redis
        .exists(format!("{}jti:{}", app.prefix, row.token_id))
        .unwrap();
    assert!(exists);

    let exp = now_unix() + 300;
    let (status, _) = post(
        &app,
        "/v1/revocations",
        json!({ "jti": "by-jti", "sub": "pia", "exp": exp }),
    )
    .await;
    assert_eq!(status, 202);
    app.wait_for_row("by-jti").await;
    // Postgres holds it as soon as it is accepted; Redis once the worker ran.
    let key = format!("{}jti:by-jti", app.prefix);
    crate::helpers::eventually(Duration::from_secs(5), "the worker wrote redis", || {
        let exists: bool = redis.exists(&key).unwrap();
        async move { exists }
    })
    .await;
    let ttl: i64 = redis.ttl(&key).unwrap();
    assert!((320..=330).contains(&ttl), "{ttl}");

    let weird = "ünï/cødé \"quoted\" '; drop table revoked_tokens; --";
    let path = format!("/v1/subjects/{}/revoke-all", urlencode(weird));
    let (status, body) = post(&app, &path, json!({ "reason": "password_change" })).await;
    assert_eq!(status, 202, "{body}");
    let not_before = body["not_before"].as_i64().unwrap();
    eventually(Duration::from_secs(5), "watermark applied", || async {
        app.db.db.watermark(weird).await.unwrap() == Some(not_before)
    })
    .await;
    let key = format!("{}sub:{weird}", app.prefix);
    eventually(Duration::from_secs(5), "watermark in redis", || {
        let in_redis: Option<i64> = redis.get(&key).unwrap();
        async move { in_redis == Some(not_before) }
    })
    .await;
    let by: String =
        sqlx::query_scalar("select requested_by from revocation_audit where subject = $1")
            .bind(weird)
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert_eq!(by, "billing");

    let other = app.mint("quinn");
    let response = app
        .http
        .post(app.url("/revoke"))
        .bearer_auth("ok-456")
        .form(&[("token", other.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{}");
    app.wait_for_reason(&other, "revoked", Duration::from_secs(5))
        .await;
    app.wait_for_row(&app.token_id(&other)).await;
    let response = app
        .http
        .post(app.url("/revoke"))
        .bearer_auth("ok-456")
        .form(&[("token", "junk")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "RFC 7009: unparseable tokens are 200 too"
    );

    let stats = app.stats("ok-456").await;
    assert_eq!(stats["postgres"]["revoked_tokens"], 3, "{stats}");
    assert_eq!(stats["redis"]["revoked_tokens"], 3, "{stats}");
    assert_eq!(stats["redis"]["revoked_subjects"], 1, "{stats}");
    assert_eq!(stats["queue"]["pending"], 0, "{stats}");
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn protected_endpoints_answer_401_with_the_json_shape() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts()
    })
    .await;
    let requests = [
        ("POST", "/v1/revocations"),
        ("POST", "/v1/subjects/x/revoke-all"),
        ("POST", "/revoke"),
        ("GET", "/v1/stats"),
    ];
    let basic_bad = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "billing:nope")
    );
    for (method, path) in requests {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer"),
            Some("bk-123"),
            Some(basic_bad.as_str()),
            Some("Basic !!!"),
        ] {
            let mut request = app
                .http
                .request(method.parse().unwrap(), app.url(path))
                .body("{}");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {auth:?}");
            let body: Value = response.json().await.unwrap();
            // RFC 6749 5.2 for the OAuth endpoint.
            let code = if path == "/revoke" {
                "invalid_client"
            } else {
                "unauthorized"
            };
            assert_eq!(body["error"], code, "{method} {path} with {auth:?}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn wait_true_answers_after_the_check_sees_the_revocation() {
    let app = TestApp::spawn_with(opts()).await;
    let token = app.mint("rae");
    let (status, body) = post(&app, "/v1/revocations?wait=true", json!({ "token": token })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.check(&token).await.1["reason"],
        "revoked",
        "visible as soon as wait returns"
    );
    let (status, _) = post(&app, "/v1/subjects/rae/revoke-all?wait=true", json!({})).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn wait_true_without_a_worker_times_out_with_504_and_the_job_id() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..opts()
    })
    .await;
    let token = app.mint("sam");
    let started = std::time::Instant::now();
    let (status, body) = post(&app, "/v1/revocations?wait=true", json!({ "token": token })).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the configured timeout"
    );
    assert_eq!(body["error"], "timeout");
    assert!(body["job_id"].is_string());
    app.stop().await;
}

/// Read-your-writes: the process that accepted a revocation refuses the
/// token from its answer on, with no worker running (nothing else brings
/// it to this process but the overlay's poll every 250 ms, which twenty
/// back-to-back revocations cannot all wait for). Written ahead: Redis
/// holds each one right after the 202, before any worker has run (its row
/// still pending; nothing else writes Redis here), so every other
/// process's replica has it from the stream. A worker then applies every
/// job; the audit covers both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accepting_process_refuses_a_revocation_at_once_before_any_worker_runs() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        replica: true,
        ..opts()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let token = app.mint(&format!("ryw-{i}"));
        assert_answer(&app.check(&token).await, "active");
        let (status, body) = post(&app, "/v1/revocations", json!({ "token": token })).await;
        assert_eq!(status, 202, "{body}");
        assert_answer(&app.check(&token).await, "revoked");
        let id = app.token_id(&token);
        written_ahead(format!("{}jti:{id}", app.prefix)).await;
        let pending: Option<bool> =
            sqlx::query_scalar("select in_redis from revoked_tokens where token_id = $1")
                .bind(&id)
                .fetch_one(app.db.db.pool())
                .await
                .unwrap();
        assert_eq!(pending, Some(false), "no worker has marked it yet");
        ids.push(id);
    }
    let earlier = app.mint_issued_ago("ryw-all", 1);
    let (status, body) = post(&app, "/v1/subjects/ryw-all/revoke-all", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_answer(&app.check(&earlier).await, "subject_revoked");
    written_ahead(format!("{}sub:ryw-all", app.prefix)).await;

    app.tasks.spawn_worker(&app.services, &app.shutdown);
    crate::helpers::in_both_stores(&app.db, &crate::helpers::redis_url(), &app.prefix, &ids).await;
    assert_answer(&app.check(&earlier).await, "subject_revoked");
    app.stop().await;
}

/// Waits (a second at most) for the API's write-ahead of `key` into Redis.
async fn written_ahead(key: String) {
    let url = crate::helpers::redis_url();
    eventually(
        Duration::from_secs(1),
        &format!("{key} written ahead"),
        || {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let present = conn.exists::<_, bool>(&key).unwrap();
            async move { present }
        },
    )
    .await;
}

// The CLI runs as a blocking child process: the server needs its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_revocations_go_to_postgres_and_reach_redis_when_it_returns() {
    let mut redis_server = PrivateRedis::start();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis_server.url()),
        ..opts()
    })
    .await;
    let over_http = app.mint("tia");
    let over_cli = app.mint("tia");
    redis_server.kill();

    let (status, body) = post(&app, "/v1/revocations", json!({ "token": over_http })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["degraded"], true);
    assert_eq!(
        app.check(&over_http).await.1["reason"],
        "revoked",
        "effective at once via postgres"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .args([
            "--jwt-secret",
            SECRET,
            "--key-prefix",
            &app.prefix,
            "--redis-url",
            &redis_server.url(),
        ])
        .args([
            "--database-url",
            &app.db.url,
            "revoke",
            "--token",
            &over_cli,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("degraded"));
    assert_answer(&app.check(&over_cli).await, "revoked");

    redis_server.restart();
    let back = std::time::Instant::now();
    let keys = [app.token_id(&over_http), app.token_id(&over_cli)];
    let url = redis_server.url();
    let prefix = app.prefix.clone();
    eventually(Duration::from_secs(5), "both revocations in redis", || {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let present = keys
            .iter()
            .all(|k| conn.exists::<_, bool>(format!("{prefix}jti:{k}")).unwrap());
        async move { present }
    })
    .await;
    assert!(back.elapsed() < Duration::from_secs(5));
    assert_answer(&app.check(&over_http).await, "revoked");
    app.stop().await;
}

#[tokio::test]
async fn with_postgres_down_revocations_are_accepted_and_applied_when_it_returns() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = crate::helpers::TestDb::create().await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let app = TestApp::spawn_with(Options {
        db_url: Some(via_proxy),
        ..opts()
    })
    .await;
    proxy.set_enabled(false);

    let token = app.mint("uma");
    let (status, body) = post(&app, "/v1/revocations", json!({ "token": token })).await;
    assert_eq!(status, 202, "{body}");
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    // The worker had time to try: an absence, so the wait is the point.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = app.token_id(&token);
    assert!(
        db.db.revoked_token(&id).await.unwrap().is_none(),
        "postgres was down"
    );

    proxy.set_enabled(true);
    eventually(
        Duration::from_secs(15),
        "applied to postgres after it returns",
        || async { db.db.revoked_token(&id).await.unwrap().is_some() },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_the_json_error_shape_and_never_a_500() {
    let app = TestApp::spawn_with(opts()).await;
    let long = "x".repeat(300);
    let far = now_unix() + 400 * 86_400;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/v1/revocations", json!({}), 400, "invalid_request"),
        (
            "/v1/revocations",
            json!({ "token": "garbage" }),
            400,
            "invalid_token",
        ),
        (
            "/v1/revocations",
            json!({ "token": app.mint("v"), "jti": "x", "exp": 1 }),
            400,
            "invalid_request",
        ),
        (
            "/v1/revocations",
            json!({ "jti": "x" }),
            400,
            "invalid_request",
        ),
        (
            "/v1/revocations",
            json!({ "jti": "x", "exp": "soon" }),
            400,
            "invalid_request",
        ),
        // Ids revokd cannot store verbatim are hashed, not refused.
        ("/v1/revocations", json!({ "jti": long, "exp": 1 }), 202, ""),
        (
            "/v1/revocations",
            json!({ "jti": "", "exp": 1 }),
            400,
            "invalid_request",
        ),
        (
            "/v1/revocations",
            json!({ "jti": "x", "exp": 1, "sub": ["a"] }),
            400,
            "invalid_request",
        ),
        (
            "/v1/revocations",
            json!({ "jti": "x", "exp": 1, "reason": long }),
            400,
            "invalid_request",
        ),
        (
            "/v1/revocations",
            json!({ "jti": "far", "exp": far, "extra": "ignored" }),
            202,
            "",
        ),
        (
            "/v1/revocations?wait=maybe",
            json!({ "jti": "x", "exp": 1 }),
            400,
            "invalid_request",
        ),
        (
            &format!("/v1/subjects/{long}/revoke-all") as &str,
            json!({}),
            202,
            "",
        ),
        (
            "/v1/subjects/ok/revoke-all",
            json!({ "reason": 5 }),
            400,
            "invalid_request",
        ),
    ]
    .into_iter()
    .map(|(p, b, s, c)| (Box::leak(p.to_owned().into_boxed_str()) as &str, b, s, c))
    .collect();
    for (path, body, status, code) in cases {
        let (got, answer) = post(&app, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body} -> {answer}");
        if status >= 400 {
            assert_eq!(answer["error"], code, "{path} {body}");
            assert!(answer["message"].is_string());
        }
    }
    let big = json!({ "token": "x".repeat(17 * 1024) });
    assert_eq!(post(&app, "/v1/revocations", big).await.0, 413);
    let response = app
        .http
        .post(app.url("/v1/revocations"))
        .bearer_auth("bk-123")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    eventually(Duration::from_secs(5), "far exp capped", || async {
        app.db
            .db
            .revoked_token("far")
            .await
            .unwrap()
            .is_some_and(|r| r.expires_at <= now_unix() + 30 * 86_400)
    })
    .await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn wait_true_answers_after_the_local_replica_sees_the_revocation() {
    let app = TestApp::spawn_with(Options {
        replica: true,
        ..opts()
    })
    .await;
    crate::helpers::current_replica(&app).await;
    for _ in 0..5 {
        let token = app.mint("rex");
        let (status, _) = post(&app, "/v1/revocations?wait=true", json!({ "token": token })).await;
        assert_eq!(status, 200);
        assert_eq!(
            app.check(&token).await.1["reason"],
            "revoked",
            "visible through the replica at once"
        );
    }
    assert!(revokd::read::checker::LookupStats::get(&app.checker_stats.stats().replica) >= 5);
    app.stop().await;
}

#[tokio::test]
async fn check_keys_are_checked_before_the_body() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--check-keys", "gw:k"],
        ..Default::default()
    })
    .await;
    let response = app
        .http
        .post(app.url("/v1/check"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .post(app.url("/introspect"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}
