//! Poison input and poison jobs: refused at the edge with 400, or set aside
//! in the dead set at once by the worker, never starving the revocations
//! behind them; store outages handed back to the queue instead of holding
//! worker slots.

use std::time::{Duration, Instant};

use redis::Commands;
use revokd::worker::{
    ApplyError,
    failure::{Verdict, classify},
};
use revokd_jobs::{Job, RegisterRefresh, RevokeSubject, RevokeToken, RotatedFrom, now_unix};
use serde_json::json;

use crate::helpers::{Options, Proxy, TestApp, TestDb, assert_answer, eventually};

const KEYS: &[&str] = &["--api-keys", "app:poison-key"];

fn opts() -> Options<'static> {
    Options {
        extra: KEYS,
        ..Default::default()
    }
}

/// `revokd_jobs_dead_total{cause}` (or `revokd_jobs_requeued_total` with
/// `None`) in this process. Tests run in parallel and only ever add, so
/// compare a difference with at least what this test caused.
fn counter(name: &str, cause: Option<&str>) -> u64 {
    let series = match cause {
        Some(cause) => format!("{name}{{cause=\"{cause}\"}} "),
        None => format!("{name} "),
    };
    revokd::instruments::handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
        .fetch_one(app.db.db.pool())
        .await
        .unwrap()
}

fn dead_set(app: &TestApp) -> usize {
    app.redis()
        .scard(format!("{}queue:jobs:dead", app.prefix))
        .unwrap()
}

#[tokio::test]
async fn sixty_four_poison_requests_are_each_400_and_nothing_is_queued() {
    let app = TestApp::spawn_with(opts()).await;
    let mut statuses = Vec::new();
    for i in 0..64 {
        let (path, body) = match i % 4 {
            0 => (
                "/v1/revocations".to_owned(),
                json!({ "jti": format!("p{i}"), "exp": now_unix() + 600, "reason": "a\0b" }),
            ),
            1 => (
                "/v1/subjects/sam/revoke-all".to_owned(),
                json!({ "reason": format!("line{i}\nbreak") }),
            ),
            2 => {
                let token = app.mint("sam");
                let body = json!({ "token": token, "rotated_from": token });
                ("/v1/refresh-tokens".to_owned(), body)
            }
            _ => {
                let body = json!({ "token": app.mint("sam"), "rotated_from": app.mint("eve") });
                ("/v1/refresh-tokens?wait=true".to_owned(), body)
            }
        };
        let (status, answer) = app.post_json(&path, "poison-key", &body).await;
        assert_eq!(answer["error"], "invalid_request", "{path}: {answer}");
        statuses.push(status);
    }
    assert!(statuses.iter().all(|&s| s == 400), "{statuses:?}");
    // A token revoked with its reason would be accepted: only the reason is
    // refused.
    let (status, _) = app
        .post_json(
            "/v1/revocations",
            "poison-key",
            &json!({ "token": app.mint("sam"), "reason": "bad\u{7}bell" }),
        )
        .await;
    assert_eq!(status, 400);

    let queued: usize = app
        .redis()
        .hlen(format!("{}queue:jobs:data", app.prefix))
        .unwrap();
    assert_eq!(queued, 0, "nothing reached the queue");
    for table in ["revocation_audit", "revoked_tokens", "refresh_tokens"] {
        assert_eq!(count(&app, table).await, 0, "nothing written to {table}");
    }
    app.stop().await;
}

// The CLI runs as a blocking child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_a_reason_with_control_characters() {
    let app = TestApp::spawn().await;
    let common = [
        "--key-prefix",
        app.prefix.as_str(),
        "--redis-url",
        &app.services.config.redis_url,
        "--database-url",
        &app.db.url,
    ];
    let exp = (now_unix() + 600).to_string();
    let runs: [&[&str]; 2] = [
        &[
            "revoke", "--jti", "c1", "--exp", &exp, "--reason", "a\u{1}b",
        ],
        &["revoke-all", "--sub", "cli", "--reason", "line\nbreak"],
    ];
    for args in runs {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
            .args(common)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("control characters"));
    }
    assert_eq!(count(&app, "revocation_audit").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn postgres_errors_of_classes_21_22_23_are_dead_and_others_transient() {
    let db = TestDb::create().await;
    let now = now_unix();
    // An upsert touching one row twice: SQLSTATE 21000.
    let self_rotation = RegisterRefresh::new("rt-1", Some("ada".into()), now + 600).rotating(
        RotatedFrom {
            token_id: "rt-1".into(),
            expires_at: now + 600,
        },
        "rt-1",
    );
    let error = db.db.register_refresh(&self_rotation, now, true).await;
    let error = ApplyError::from(error.unwrap_err());
    assert_eq!(classify(&error), Verdict::Dead("postgres_cardinality"));
    // A NUL byte in text: SQLSTATE 22021.
    let nul = RevokeToken::new("nul", None, now + 600).reason("a\0b");
    let error = db.db.apply_revoke(&nul, nul.expires_at, now).await;
    let error = ApplyError::from(error.unwrap_err());
    assert_eq!(classify(&error), Verdict::Dead("postgres_data"));
    // A check constraint: SQLSTATE 23514.
    sqlx::query("alter table revoked_tokens add constraint no_x check (token_id <> 'x')")
        .execute(db.db.pool())
        .await
        .unwrap();
    let x = RevokeToken::new("x", None, now + 600);
    let error = db.db.apply_revoke(&x, x.expires_at, now).await;
    let error = ApplyError::from(error.unwrap_err());
    assert_eq!(classify(&error), Verdict::Dead("postgres_integrity"));
    // Anything else about the server is worth retrying: here 42P01.
    let error = sqlx::query("select * from no_such_table")
        .execute(db.db.pool())
        .await
        .unwrap_err();
    assert_eq!(classify(&ApplyError::from(error)), Verdict::Transient);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_go_to_the_dead_set_and_a_revocation_behind_them_applies_in_time() {
    revokd::instruments::handle();
    let app = TestApp::spawn_with(opts()).await;
    // Postgres refuses these rows for good (SQLSTATE 23514), whichever batch
    // they land in.
    sqlx::query(
        "alter table revoked_tokens add constraint poison check (token_id not like 'poison-%')",
    )
    .execute(app.db.db.pool())
    .await
    .unwrap();
    let (integrity, invalid) = (
        counter("revokd_jobs_dead_total", Some("postgres_integrity")),
        counter("revokd_jobs_dead_total", Some("invalid")),
    );
    let producer = app.producer().await;
    let now = now_unix();
    // More poison jobs than the worker runs at once (8) or fetches at once (32).
    let poison = 70;
    for i in 0..poison {
        let job = RevokeToken::new(format!("poison-{i}"), None, now + 600);
        producer.push(&Job::Revoke(job)).await.unwrap();
    }
    let self_rotation = RegisterRefresh::new("rt-self", Some("ada".into()), now + 600).rotating(
        RotatedFrom {
            token_id: "rt-self".into(),
            expires_at: now + 600,
        },
        "rt-self",
    );
    producer
        .push(&Job::RegisterRefresh(self_rotation))
        .await
        .unwrap();
    producer
        .push(&Job::RevokeAll(RevokeSubject::new("nul\0sub", now)))
        .await
        .unwrap();
    // Informational fields that cannot be stored are dropped, not the
    // revocation.
    let mut unstorable =
        RevokeToken::new("nul-fields", Some("s\0b".into()), now + 600).reason("re\0son");
    unstorable.requested_by = "a\0pp".into();
    producer.push(&Job::Revoke(unstorable)).await.unwrap();

    // The genuine revocation behind them, as a user sends it.
    let token = app.mint("ada");
    let started = Instant::now();
    let (status, body) = app
        .post_json(
            "/v1/revocations?wait=true",
            "poison-key",
            &json!({ "token": token, "reason": "logout" }),
        )
        .await;
    assert_eq!(status, 200, "applied within the wait timeout: {body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_answer(&app.check(&token).await, "revoked");

    let row = app.wait_for_row("nul-fields").await;
    assert_eq!(
        (row.subject, row.reason, row.requested_by.as_str()),
        (None, None, "app")
    );
    let expected = poison + 2;
    eventually(
        Duration::from_secs(5),
        "poison jobs in the dead set",
        || {
            let dead = dead_set(&app);
            async move { dead == expected }
        },
    )
    .await;
    assert!(
        counter("revokd_jobs_dead_total", Some("postgres_integrity")) - integrity >= poison as u64
    );
    assert!(counter("revokd_jobs_dead_total", Some("invalid")) - invalid >= 2);
    let refused: i64 =
        sqlx::query_scalar("select count(*) from revoked_tokens where token_id like 'poison-%'")
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert_eq!(refused, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_jobs_are_handed_back_not_held_and_apply_when_it_returns() {
    revokd::instruments::handle();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = TestDb::create().await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let app = TestApp::spawn_with(Options {
        db_url: Some(via_proxy),
        ..opts()
    })
    .await;
    proxy.set_enabled(false);
    let requeued = counter("revokd_jobs_requeued_total", None);

    let producer = app.producer().await;
    // Five times the worker's concurrency (8): if failing jobs held their
    // slots, most of these would not even reach Redis.
    let total = 40;
    let ids: Vec<String> = (0..total).map(|i| format!("outage-{i}")).collect();
    for id in &ids {
        let job = RevokeToken::new(id.clone(), None, now_unix() + 600);
        producer.push(&Job::Revoke(job)).await.unwrap();
    }
    let deny = app.services.deny_fast.clone();
    let mut redis = app.redis();
    eventually(
        Duration::from_secs(20),
        "every job taken and applied to redis while postgres is down",
        || {
            let denied = ids
                .iter()
                .filter(|id| redis.exists::<_, bool>(deny.keys().jti(id)).unwrap())
                .count();
            async move { denied == total }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "jobs handed back to the queue",
        || async { counter("revokd_jobs_requeued_total", None) - requeued >= total as u64 },
    )
    .await;
    assert!(db.db.revoked_token("outage-0").await.unwrap().is_none());
    assert_eq!(dead_set(&app), 0, "an outage kills no job");

    proxy.set_enabled(true);
    eventually(
        Duration::from_secs(40),
        "every job applied to postgres after it returns",
        || async {
            sqlx::query_scalar::<_, i64>("select count(*) from revoked_tokens")
                .fetch_one(db.db.pool())
                .await
                .unwrap_or(0)
                == total as i64
        },
    )
    .await;
    assert_eq!(dead_set(&app), 0);
    app.stop().await;
}
