//! The raw token is stored nowhere: not in Redis keys or values (job payloads
//! included), not in Postgres.

use std::time::Duration;

use redis::Commands;
use revokd_jobs::{RevokeToken, now_unix};

use crate::helpers::TestApp;

/// Every key and value under the prefix, whatever its type, as text.
fn dump_prefix(conn: &mut redis::Connection, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(conn)
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(&key).unwrap()],
            "hash" => conn.hgetall::<_, Vec<Vec<u8>>>(&key).unwrap(),
            "list" => conn.lrange(&key, 0, -1).unwrap(),
            "set" => conn.smembers(&key).unwrap(),
            "zset" => conn.zrange(&key, 0, -1).unwrap(),
            _ => vec![],
        };
        out.push(key);
        out.extend(
            values
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        );
    }
    out
}

// The CLI runs as a blocking child process: the worker needs its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_jti_is_tracked_by_its_hash_and_never_stored_raw() {
    let app = TestApp::spawn().await;
    let token = app.mint_with("lena", 900, false);
    let (_, body) = app.check(&token).await;
    let token_id = body["token_id"].as_str().unwrap().to_owned();
    assert!(
        token_id.starts_with("sha256:") && token_id.len() == 71,
        "{token_id}"
    );
    assert_eq!(token_id, revokd_jobs::token_id(&token, None));
    assert!(body["jti"].is_null());

    let producer = app.producer().await;
    producer
        .revoke(RevokeToken::new(
            token_id.clone(),
            Some("lena".into()),
            now_unix() + 900,
        ))
        .await
        .unwrap();
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    // The CLI path too, which receives the raw token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .args([
            "--jwt-secret",
            crate::helpers::SECRET,
            "--key-prefix",
            &app.prefix,
        ])
        .args([
            "--redis-url",
            &app.services.config.redis_url,
            "--database-url",
            &app.db.url,
        ])
        .args(["revoke", "--token", &token, "--wait"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut redis = app.redis();
    let dump = dump_prefix(&mut redis, &app.prefix);
    assert!(
        dump.iter().any(|s| s.contains(&token_id)),
        "the token_id is stored"
    );
    let signature = token.rsplit('.').next().unwrap();
    for entry in &dump {
        assert!(
            !entry.contains(&token) && !entry.contains(signature),
            "raw token found in redis: {entry:.60}"
        );
    }
    let pool = app.db.db.pool();
    let tables = ["revoked_tokens", "subject_watermarks", "revocation_audit"];
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select t::text from {table} t"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        for row in rows {
            assert!(!row.contains(signature), "raw token found in {table}");
        }
    }
    app.stop().await;
}
