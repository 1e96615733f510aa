//! Bulk revocation: `POST /v1/revocations:batch` (JSON array and NDJSON,
//! per-item results, limits, replays, one job per chunk, the degraded path)
//! and `Producer::revoke_many`.

use std::{sync::Arc, time::Duration};

use redis::Commands;
use revokd_jobs::{RevokeItem, now_unix};
use serde_json::{Value, json};

use crate::helpers::{
    Options, PrivateRedis, TestApp, assert_answer, eventually, in_both_stores, redis_url,
};

const BATCH: &str = "/v1/revocations:batch";

fn opts() -> Options<'static> {
    Options {
        extra: &["--api-keys", "billing:bk-123", "--wait-timeout", "5s"],
        ..Default::default()
    }
}

/// POSTs a raw body with a content type and the write key.
async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    app.post_body(path, "bk-123", content_type, body).await
}

fn ndjson(items: &[Value]) -> Vec<u8> {
    let lines: Vec<String> = items.iter().map(Value::to_string).collect();
    (lines.join("\n") + "\n").into_bytes()
}

async fn rows_like(app: &TestApp, pattern: &str) -> i64 {
    sqlx::query_scalar("select count(*) from revoked_tokens where token_id like $1")
        .bind(pattern)
        .fetch_one(app.db.db.pool())
        .await
        .unwrap()
}

/// The `revoke_batch` jobs in the queue's data hash (finished ones stay
/// until cleanup vacuums them).
fn batch_jobs(app: &TestApp) -> usize {
    let payloads: Vec<String> = app
        .redis()
        .hvals(format!("{}queue:jobs:data", app.prefix))
        .unwrap();
    payloads
        .iter()
        .filter(|p| p.contains(r#""kind":"revoke_batch""#))
        .count()
}

#[tokio::test]
async fn a_batch_with_bad_items_answers_each_item_and_enforces_the_good_ones() {
    let app = TestApp::spawn_with(opts()).await;
    let (good, other) = (app.mint("ana"), app.mint("ben"));
    let exp = now_unix() + 600;
    let items = json!([
        { "token": good, "reason": "logout" },
        { "token": "not.a.jwt" },
        { "jti": "batch-jti-1", "sub": "ana", "exp": exp },
        { "jti": "batch-jti-2" },
        42,
        { "jti": "batch-jti-3", "exp": exp, "reason": "bad\nreason" },
        { "token": other, "jti": "both" },
        { "token": other },
    ]);
    let (status, body) = app.post_json(BATCH, "bk-123", &items).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(body["job_ids"].as_array().map(Vec::len), Some(1), "{body}");
    let results = body["results"].as_array().unwrap();
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "invalid_token",
            "ok",
            "invalid_request",
            "invalid_request",
            "invalid_request",
            "invalid_request",
            "ok"
        ]
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{r}");
        if r.get("error").is_some() {
            assert!(
                r["message"].is_string() && r.get("token_id").is_none(),
                "{r}"
            );
        }
    }
    assert_eq!(results[0]["token_id"], app.token_id(&good));
    assert_eq!(results[2]["token_id"], "batch-jti-1");
    // No item's input is echoed (the bad token above included).
    assert!(!body.to_string().contains("not.a.jwt"), "{body}");

    for token in [&good, &other] {
        app.wait_for_reason(token, "revoked", Duration::from_secs(5))
            .await;
    }
    let row = app.wait_for_row(&app.token_id(&good)).await;
    assert_eq!(
        (row.requested_by.as_str(), row.reason.as_deref()),
        ("billing", Some("logout"))
    );
    let mut redis = app.redis();
    for id in [
        app.token_id(&good),
        app.token_id(&other),
        "batch-jti-1".into(),
    ] {
        let key = format!("{}jti:{id}", app.prefix);
        eventually(Duration::from_secs(5), "the worker wrote redis", || {
            let exists: bool = redis.exists(&key).unwrap();
            async move { exists }
        })
        .await;
    }
    assert!(
        app.db
            .db
            .revoked_token("batch-jti-3")
            .await
            .unwrap()
            .is_none()
    );
    let applied = r#"revokd_jobs_applied_total{kind="revoke_batch"} 1"#;
    eventually(Duration::from_secs(5), "one batch job applied", || async {
        app.metrics().await.contains(applied)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn ndjson_batches_are_chunked_and_replays_give_the_same_ids_and_rows() {
    let app = TestApp::spawn_with(opts()).await;
    let exp = now_unix() + 600;
    let mut items: Vec<Value> = (0..2_500)
        .map(|i| json!({ "jti": format!("nd-{i:05}"), "sub": format!("user-{}", i % 7), "exp": exp }))
        .collect();
    // The same token twice in one batch, and an item already revoked.
    items.push(json!({ "jti": "nd-00000", "exp": exp + 60 }));
    let mut body = ndjson(&items);
    body.extend_from_slice(b"{not json\n\n");
    let (status, first) = post_raw(
        &app,
        &format!("{BATCH}?wait=true"),
        "application/x-ndjson",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{}", first["message"]);
    assert_eq!(
        (first["accepted"].as_u64(), first["rejected"].as_u64()),
        (Some(2_501), Some(1))
    );
    assert_eq!(first["results"][2_501]["error"], "invalid_request");
    assert_eq!(
        first["job_ids"].as_array().map(Vec::len),
        Some(3),
        "1,000 items a chunk"
    );
    // Waited: both stores hold every item.
    assert_eq!(rows_like(&app, "nd-%").await, 2_500);
    // None pending, no chunk waiting for its worker.
    let pending: i64 = sqlx::query_scalar(
        "select (select count(*) from revoked_tokens where token_id like 'nd-%' and not in_redis)
                + (select count(*) from queued_chunks)",
    )
    .fetch_one(app.db.db.pool())
    .await
    .unwrap();
    assert_eq!(pending, 0);
    // One audit row a chunk (a request), none an item: its token ids in
    // order, the duplicate included.
    let (audit, single) = chunk_audit(&app).await;
    let mut job_ids: Vec<String> = first["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    job_ids.sort();
    assert_eq!(
        audit.iter().map(|a| a.0.clone()).collect::<Vec<_>>(),
        job_ids
    );
    let audited: Vec<&String> = audit.iter().flat_map(|a| &a.3).collect();
    assert_eq!(audited.len(), 2_501, "every item, in its chunk");
    assert_eq!(
        audit.iter().map(|a| a.3.len()).max(),
        Some(1_000),
        "1,000 ids a chunk"
    );
    assert!(audit.iter().all(|a| a.1 == "billing"), "{audit:?}");
    assert_eq!(single, 0, "no audit row an item");
    let mut redis = app.redis();
    let ttl: i64 = redis.ttl(format!("{}jti:nd-00000", app.prefix)).unwrap();
    assert!(ttl > 600, "the later expiry of the duplicate wins: {ttl}");
    let present: bool = redis.exists(format!("{}jti:nd-02499", app.prefix)).unwrap();
    assert!(present);
    assert_eq!(batch_jobs(&app), 3);

    let (status, again) = post_raw(
        &app,
        &format!("{BATCH}?wait=true"),
        "application/x-ndjson; charset=utf-8",
        body,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["results"], first["results"],
        "the same ids, item by item"
    );
    assert_eq!(rows_like(&app, "nd-%").await, 2_500, "no duplicate rows");

    // The same items as a JSON array.
    let (status, array) = app
        .post_json(BATCH, "bk-123", &Value::Array(items[..10].to_vec()))
        .await;
    assert_eq!(status, 202, "{array}");
    assert_eq!(array["results"][3]["token_id"], "nd-00003");
    assert_eq!(batch_jobs(&app), 7);
    app.stop().await;
}

#[tokio::test]
async fn batch_limits_are_refused_with_json_errors() {
    let app = TestApp::spawn_with(opts()).await;
    let exp = now_unix() + 600;
    let (status, body) = app.post_json(BATCH, "bk-123", &json!([])).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = post_raw(&app, BATCH, "application/x-ndjson", b"\n \n".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = app
        .post_json(BATCH, "bk-123", &json!({ "jti": "x", "exp": exp }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = post_raw(&app, BATCH, "application/json", b"[{\"jti\":".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    let over: Vec<Value> = (0..10_001)
        .map(|i| json!({ "jti": format!("o{i}"), "exp": exp }))
        .collect();
    let (status, body) = app.post_json(BATCH, "bk-123", &Value::Array(over)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_many_items")),
        "{body}"
    );
    assert_eq!(
        rows_like(&app, "o%").await,
        0,
        "nothing of a refused batch is recorded"
    );

    let huge = vec![b' '; 10 * 1024 * 1024 + 1];
    let (status, body) = post_raw(&app, BATCH, "application/json", huge).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // The single path keeps its 16 KiB limit.
    let (status, _) = post_raw(
        &app,
        "/v1/revocations",
        "application/json",
        vec![b' '; 17 * 1024],
    )
    .await;
    assert_eq!(status, 413);

    // Every item bad: 400 with the per-item results.
    let (status, body) = app
        .post_json(BATCH, "bk-123", &json!([{ "token": "junk" }, {}]))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert_eq!(body["results"][0]["error"], "invalid_token");
    assert_eq!(body["accepted"], 0);

    let response = app
        .http
        .post(app.url(BATCH))
        .json(&json!([{ "jti": "x", "exp": exp }]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .post(app.url(BATCH))
        .bearer_auth("wrong")
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(batch_jobs(&app), 0);
    app.stop().await;
}

#[tokio::test]
async fn producer_revoke_many_pushes_one_job_per_chunk_and_every_item_applies() {
    let app = TestApp::spawn().await;
    let producer = app.producer().await;
    let exp = now_unix() + 600;
    let items = (0..2_001)
        .map(|i| RevokeItem::new(format!("pm-{i}"), Some("zoe".into()), exp).reason("bulk"));
    let ids = producer.revoke_many(items).await.unwrap();
    assert_eq!(ids.len(), 3, "1,000 items a job");
    assert!(producer.revoke_many(Vec::new()).await.unwrap().is_empty());
    eventually(
        Duration::from_secs(10),
        "every item in postgres",
        || async { rows_like(&app, "pm-%").await == 2_001 },
    )
    .await;
    let mut redis = app.redis();
    for id in ["pm-0", "pm-1000", "pm-2000"] {
        let present: bool = redis.exists(format!("{}jti:{id}", app.prefix)).unwrap();
        assert!(present, "{id}");
    }
    let row = app.db.db.revoked_token("pm-2000").await.unwrap().unwrap();
    assert_eq!(
        (
            row.requested_by.as_str(),
            row.reason.as_deref(),
            row.subject.as_deref()
        ),
        ("test", Some("bulk"), Some("zoe"))
    );
    assert_eq!(batch_jobs(&app), 3);
    // Chunks the API did not record: the worker writes each one's audit
    // row, with the reason its items share.
    let (audit, single) = chunk_audit(&app).await;
    let mut ids = ids;
    ids.sort();
    assert_eq!(audit.iter().map(|a| a.0.clone()).collect::<Vec<_>>(), ids);
    assert!(
        audit
            .iter()
            .all(|a| (a.1.as_str(), a.2.as_deref()) == ("test", Some("bulk"))),
        "{audit:?}"
    );
    let sizes: Vec<usize> = audit.iter().map(|a| a.3.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 2_001);
    assert_eq!(single, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_batch_is_recorded_in_postgres_and_reaches_redis_when_it_returns() {
    let mut redis_server = PrivateRedis::start();
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis_server.url()),
        ..opts()
    })
    .await;
    let token = app.mint("cy");
    redis_server.kill();
    let exp = now_unix() + 600;
    let items = json!([{ "token": token }, { "jti": "down-1", "exp": exp }, { "jti": "" }]);
    let (status, body) = app.post_json(BATCH, "bk-123", &items).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["degraded"].as_bool(), body["accepted"].as_u64()),
        (Some(true), Some(2))
    );
    assert_answer(&app.check(&token).await, "revoked");
    assert!(
        app.db.db.revoked_token("down-1").await.unwrap().is_some(),
        "durable in postgres"
    );
    // Recorded as queued or not, the chunk's job was not pushed: its rows
    // are pending (every overlay lists them, the resync copies them).
    let state: Option<bool> =
        sqlx::query_scalar("select in_redis from revoked_tokens where token_id = 'down-1'")
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
    assert_eq!(state, Some(false), "pending, not queued");
    assert_eq!(chunk_records(&app).await, 0, "no chunk left to a job");
    let (audit, _) = chunk_audit(&app).await;
    assert_eq!(
        audit.iter().map(|a| a.3.clone()).collect::<Vec<_>>(),
        [vec![app.token_id(&token), "down-1".to_owned()]],
        "the chunk's audit row, its ids in order"
    );

    redis_server.restart();
    // The audit: both accepted items in Postgres and, once the resync ran,
    // in Redis; the token refused by the API with Redis back.
    let ids = [app.token_id(&token), "down-1".to_owned()];
    in_both_stores(&app.db, &redis_server.url(), &app.prefix, &ids).await;
    assert_answer(&app.check(&token).await, "revoked");
    app.stop().await;
}

/// Rows of `revoked_tokens` whose id starts with `prefix`, by `in_redis`:
/// (true, false, null).
async fn in_redis_states(app: &TestApp, pattern: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "select count(*) filter (where in_redis), count(*) filter (where not in_redis),
                count(*) filter (where in_redis is null)
         from revoked_tokens where token_id like $1",
    )
    .bind(pattern)
    .fetch_one(app.db.db.pool())
    .await
    .unwrap()
}

/// The audit rows of bulk chunks: (job_id, requested_by, reason,
/// token_ids), by job id; and how many audit rows name a token of their
/// own (`revoke`, one per item before chunks had one row).
async fn chunk_audit(app: &TestApp) -> (Vec<(String, String, Option<String>, Vec<String>)>, i64) {
    let pool = app.db.db.pool();
    let chunks = sqlx::query_as(
        "select job_id, requested_by, reason, token_ids from revocation_audit
         where kind = 'revoke_batch' order by job_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let single: i64 =
        sqlx::query_scalar("select count(*) from revocation_audit where kind = 'revoke'")
            .fetch_one(pool)
            .await
            .unwrap();
    (chunks, single)
}

/// Chunks recorded by the API whose worker has not written them yet.
async fn chunk_records(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from queued_chunks")
        .fetch_one(app.db.db.pool())
        .await
        .unwrap()
}

/// A bulk revocation larger than the overlay's 10,000 rows, waiting in the
/// queue: its rows are queued, not pending, so no API process lists them
/// (before, they filled the overlay and sent every check to Postgres until
/// a worker had written them). A worker then applies every one; the audit
/// covers Postgres, Redis and the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_revocation_in_the_queue_is_queued_not_pending_and_every_item_applies() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        replica: true,
        ..opts()
    })
    .await;
    let token = app.mint("bulk");
    let exp = now_unix() + 600;
    for half in 0..2 {
        let mut items: Vec<Value> = (0..6_000)
            .map(|i| json!({ "jti": format!("q-{half}-{i:04}"), "exp": exp }))
            .collect();
        if half == 0 {
            items.push(json!({ "token": token }));
        }
        let (status, body) = app.post_json(BATCH, "bk-123", &json!(items)).await;
        assert_eq!(status, 202, "{}", body["message"]);
        assert_eq!(body["degraded"], Value::Null, "{}", body["message"]);
    }
    let id = app.token_id(&token);
    let all = 12_001;
    let states = in_redis_states(&app, "q-%").await;
    assert_eq!(states, (0, 0, 12_000), "(in redis, pending, queued)");
    assert_eq!(chunk_records(&app).await, 13, "7 and 6 chunks of 1,000");
    // Several polls of the overlay (every 250 ms): the wait is the point,
    // an absence over time.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (tokens, _, overflow) = app.checker_stats.pending().len();
    assert_eq!(
        (tokens, overflow),
        (0, false),
        "nothing listed, no overflow"
    );
    let db = &app.db.db;
    let now = now_unix();
    assert!(
        db.pending_revocations(0, now - 60, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once queued for longer than the grace, they count as pending.
    let old = db.pending_revocations(0, now + 1, 20_000).await.unwrap();
    assert_eq!(old.len(), all);

    app.tasks.spawn_worker(&app.services, &app.shutdown);
    eventually(Duration::from_secs(30), "every chunk applied", || async {
        chunk_records(&app).await == 0
    })
    .await;
    // The worker wrote Redis and left the rows as the API recorded them:
    // one Postgres write a row.
    assert_eq!(in_redis_states(&app, "%").await, (0, 0, all as i64));
    let ids = [id, "q-0-0000".to_owned(), "q-1-5999".to_owned()];
    in_both_stores(&app.db, &redis_url(), &app.prefix, &ids).await;
    let mut redis = app.redis();
    let keys = redis
        .scan_match::<_, String>(format!("{}jti:*", app.prefix))
        .unwrap()
        .count();
    assert_eq!(keys, all, "one deny-list key per item");
    // Announced a group of entries at a time: a few stream entries a
    // chunk, not one an item; the API's replica has every item from them.
    let events: u64 = redis.xlen(format!("{}events", app.prefix)).unwrap();
    assert!(events < 200, "{events} stream entries for {all} tokens");
    let replica = Arc::clone(app.services.replica.as_ref().unwrap());
    let every_item = || {
        (0..2).all(|half| {
            (0..6_000).all(|i| {
                let id = format!("q-{half}-{i:04}");
                replica.lookup(&id, None, now_unix()).is_some_and(|d| d.0)
            })
        })
    };
    eventually(
        Duration::from_secs(5),
        "every item in the replica",
        || async { every_item() },
    )
    .await;
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    app.stop().await;
}

/// A chunk whose job the queue loses after the 202 — a failover to a
/// replica that lacked the push, say: the API pushed it under the task id
/// its job id gives, so a worker's resync finds the queue no longer holds
/// it and copies its rows from Postgres well within the minute after which
/// any chunk still waiting would be. The audit covers Postgres, Redis and
/// the API process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_job_the_queue_lost_is_copied_before_the_minutes_grace() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        replica: true,
        ..opts()
    })
    .await;
    let token = app.mint("lost");
    let exp = now_unix() + 600;
    let mut items: Vec<Value> = (0..40)
        .map(|i| json!({ "jti": format!("lost-{i:02}"), "exp": exp }))
        .collect();
    items.push(json!({ "token": token }));
    let (status, body) = app.post_json(BATCH, "bk-123", &json!(items)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["degraded"], Value::Null, "{body}");
    let job_id = body["job_ids"][0].as_str().unwrap().to_owned();
    assert_eq!(chunk_records(&app).await, 1);

    let mut redis = app.redis();
    let data = format!("{}queue:jobs:data", app.prefix);
    let task = revokd_jobs::task_id_of(&job_id).unwrap();
    let held: bool = redis.hexists(&data, &task).unwrap();
    assert!(held, "pushed under the task id its job id gives");
    // The queue loses the job; the deny-list (its rebuild marker) stays.
    let active = format!("{}queue:jobs:active", app.prefix);
    let _: () = redis.del(&[&data, &active]).unwrap();

    let started = tokio::time::Instant::now();
    app.tasks.spawn_worker(&app.services, &app.shutdown);
    app.tasks.spawn_resync(&app.services, &app.shutdown);
    let grace = revokd::store::resync::QUEUED_GRACE_SECS as u64;
    eventually(
        Duration::from_secs(grace - 10),
        "the lost chunk's rows copied into redis",
        || async {
            let pending: i64 = sqlx::query_scalar(
                "select count(*) from revoked_tokens where in_redis is not true",
            )
            .fetch_one(app.db.db.pool())
            .await
            .unwrap();
            pending == 0 && chunk_records(&app).await == 0
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(grace));
    let ids = [
        app.token_id(&token),
        "lost-00".to_owned(),
        "lost-39".to_owned(),
    ];
    in_both_stores(&app.db, &redis_url(), &app.prefix, &ids).await;
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    app.stop().await;
}
