//! Poison input: refused at the edge with 400 before anything is queued.

use redis::Commands;
use revokd_jobs::now_unix;
use serde_json::json;

use crate::helpers::{Options, TestApp};

const KEYS: &[&str] = &["--api-keys", "app:poison-key"];

fn opts() -> Options<'static> {
    Options {
        extra: KEYS,
        ..Default::default()
    }
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
        .fetch_one(app.db.db.pool())
        .await
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
}
