//! Postgres cut: alone, then with Redis restarting empty, a process killed
//! before it returns, or a `?wait=true` request's subscription or Redis
//! itself lost meanwhile.

use std::time::{Duration, Instant};

use revokd::store::redis::DenyList;
use serde_json::json;

use super::{all_say, marker_set, token_id};
use crate::helpers::{
    Node, NodeOptions, PrivateRedis, Proxy, TestDb, eventually, free_port, healthy, in_both_stores,
    mint, proxied, serve, spool_dir, unique_prefix,
};

#[tokio::test]
async fn double_fault_postgres_cut_then_redis_restarts_empty_loses_nothing() {
    let mut private = PrivateRedis::start();
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let prefix = unique_prefix();
    let redis = private.url();
    let via_proxy = proxied(&db, &proxy);
    let a = Node::start(NodeOptions {
        prefix: &prefix,
        redis_url: &redis,
        db_url: &via_proxy,
        worker: true,
        replica: true,
        extra: &[],
    })
    .await;
    marker_set(&a).await;
    let tokens: Vec<String> = (0..30).map(|i| mint(&format!("user{i}"))).collect();

    proxy.set_enabled(false);
    for token in &tokens {
        let (status, body) = a.post("/v1/revocations", &json!({ "token": token })).await;
        assert!((200..300).contains(&status), "{status} {body}");
    }
    let ids: Vec<&str> = tokens.iter().map(String::as_str).collect();
    all_say(
        &[&a],
        &ids,
        "revoked",
        Duration::from_secs(2),
        "accepting process",
    )
    .await;
    // The queue, the deny-list and the stream are gone; Postgres is still cut.
    private.restart();
    // Checks made once the node has met the empty Redis, not before: the
    // wait is the point (no state of the node says it has met it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    all_say(
        &[&a],
        &ids,
        "revoked",
        Duration::ZERO,
        "redis empty, postgres cut",
    )
    .await;
    proxy.set_enabled(true);

    let fresh = Node::start(NodeOptions {
        prefix: &prefix,
        redis_url: &redis,
        db_url: &db.url,
        worker: false,
        replica: true,
        extra: &[],
    })
    .await;
    all_say(
        &[&fresh, &a],
        &ids,
        "revoked",
        Duration::from_secs(15),
        "after",
    )
    .await;
    let ids: Vec<String> = tokens.iter().map(|t| token_id(&a, t)).collect();
    in_both_stores(&db, &redis, &prefix, &ids).await;
    drop((a, fresh));
    let _ = std::fs::remove_dir_all(spool_dir(&prefix));
}

#[tokio::test]
async fn a_process_killed_before_postgres_returns_replays_its_spool_when_restarted() {
    let mut private = PrivateRedis::start();
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let prefix = unique_prefix();
    let redis = private.url();
    let via_proxy = proxied(&db, &proxy);
    let port = free_port();
    let http = reqwest::Client::new();
    let mut first = serve(&prefix, &redis, &via_proxy, port, "api,worker", &[], None);
    healthy(&http, port).await;
    let tokens: Vec<String> = (0..20).map(|i| mint(&format!("spooled{i}"))).collect();

    proxy.set_enabled(false);
    for token in &tokens {
        let response = http
            .post(format!("http://127.0.0.1:{port}/v1/revocations"))
            .bearer_auth("test-key")
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    // Killed -9 with the revocations only in its spool and the queue; then
    // the queue goes too.
    first.kill();
    let spooled: usize = std::fs::read_dir(spool_dir(&prefix))
        .expect("a spool was written")
        .map(|file| {
            std::fs::read_to_string(file.unwrap().path())
                .unwrap()
                .lines()
                .count()
                - 1
        })
        .sum();
    assert_eq!(
        spooled,
        tokens.len(),
        "every accepted revocation is in the spool"
    );
    private.restart();
    proxy.set_enabled(true);

    let _second = serve(&prefix, &redis, &via_proxy, port, "api,worker", &[], None);
    healthy(&http, port).await;
    crate::helpers::enforced_everywhere(&http, &[port], &tokens).await;
    let verifier = revokd::token::Verifier::new(
        &crate::helpers::test_config(&prefix, &redis, &db.url, &[]).key_settings(),
    )
    .unwrap();
    let ids: Vec<String> = tokens
        .iter()
        .map(|t| verifier.verify_signature(t).unwrap().token_id)
        .collect();
    in_both_stores(&db, &redis, &prefix, &ids).await;
    let leftovers = std::fs::read_dir(spool_dir(&prefix))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "the replayed spool file is deleted");
    let _ = std::fs::remove_dir_all(spool_dir(&prefix));
}

/// An API node on `db` directly and a worker node whose Postgres is behind
/// `proxy`: the API records a revocation, the worker cannot finish it
/// until the proxy is enabled again.
async fn api_and_stalled_worker(
    db: &TestDb,
    proxy: &Proxy,
    prefix: &str,
    redis: &str,
) -> (Node, Node) {
    let via_proxy = proxied(db, proxy);
    let api = Node::start(NodeOptions {
        prefix,
        redis_url: redis,
        db_url: &db.url,
        worker: false,
        replica: true,
        extra: &["--wait-timeout", "20s"],
    })
    .await;
    let worker = Node::start(NodeOptions {
        prefix,
        redis_url: redis,
        db_url: &via_proxy,
        worker: true,
        replica: false,
        extra: &[],
    })
    .await;
    marker_set(&api).await;
    proxy.set_enabled(false);
    (api, worker)
}

/// Waits until a `?wait=true` request has recorded its revocation in `db`,
/// queued it on `redis` and listens for its completion there. (Killing
/// Redis before the job is queued is another case: the request is then
/// answered at once, durable in Postgres, as degraded.)
async fn until_waiting(db: &TestDb, redis: &str, prefix: &str) {
    eventually(
        Duration::from_secs(5),
        "the revocation recorded",
        || async {
            let rows: i64 = sqlx::query_scalar("select count(*) from revoked_tokens")
                .fetch_one(db.db.pool())
                .await
                .unwrap();
            rows > 0
        },
    )
    .await;
    let target = revokd_jobs::RedisTarget::url(redis).unwrap();
    let deny = DenyList::new(revokd::store::fast_redis(&target), prefix);
    let queue = revokd_jobs::queue_config(prefix);
    eventually(Duration::from_secs(5), "the job queued", || {
        let (deny, queue) = (deny.clone(), queue.clone());
        async move {
            deny.queue_depth(&queue)
                .await
                .is_ok_and(|d| d.pending + d.running > 0)
        }
    })
    .await;
    subscribed(redis, prefix).await;
}

/// Waits until something listens for completions on `redis`.
async fn subscribed(redis: &str, prefix: &str) {
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    let channel = format!("{prefix}done");
    eventually(Duration::from_secs(5), "the wait subscribed", || {
        let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query(&mut conn)
            .unwrap();
        async move { numsub.first().is_some_and(|(_, n)| *n > 0) }
    })
    .await;
}

/// Posts a `?wait=true` revocation; the status and when the answer came.
async fn post_and_wait(api: &Node, token: &str) -> tokio::task::JoinHandle<(u16, Instant)> {
    let (http, url) = (api.http.clone(), api.url("/v1/revocations?wait=true"));
    let body = json!({ "token": token });
    tokio::spawn(async move {
        let response = http
            .post(url)
            .bearer_auth("test-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), Instant::now())
    })
}

#[tokio::test]
async fn wait_survives_its_subscription_being_killed() {
    let private = PrivateRedis::start();
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let prefix = unique_prefix();
    let (api, worker) = api_and_stalled_worker(&db, &proxy, &prefix, &private.url()).await;
    let token = mint("waiter");
    let waiting = post_and_wait(&api, &token).await;
    until_waiting(&db, &private.url(), &prefix).await;
    let mut conn = redis::Client::open(private.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .query(&mut conn)
        .unwrap();
    assert!(killed > 0, "no subscription to kill");
    subscribed(&private.url(), &prefix).await;
    assert!(
        !waiting.is_finished(),
        "a dropped subscription ended the wait"
    );
    // The job can apply only once its worker reaches Postgres again: an
    // answer before that would not be the worker's.
    let enabled = Instant::now();
    proxy.set_enabled(true);
    let (status, answered) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(answered >= enabled, "answered before the job could apply");
    all_say(
        &[&api, &worker],
        &[&token],
        "revoked",
        Duration::ZERO,
        "after",
    )
    .await;
    let id = token_id(&api, &token);
    in_both_stores(&db, &private.url(), &prefix, &[id]).await;
}

#[tokio::test]
async fn wait_racing_a_redis_crash_answers_once_applied_not_with_an_early_504() {
    let mut private = PrivateRedis::start();
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let prefix = unique_prefix();
    let redis = private.url();
    let (api, worker) = api_and_stalled_worker(&db, &proxy, &prefix, &redis).await;
    let token = mint("crash");
    let posted = Instant::now();
    let waiting = post_and_wait(&api, &token).await;
    until_waiting(&db, &redis, &prefix).await;
    // The queue (and the job in it) is lost.
    private.kill();
    // A while without Redis: the wait is the point.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "the crash ended the wait");
    private.restart();
    let enabled = Instant::now();
    proxy.set_enabled(true);
    let (status, answered) = waiting.await.unwrap();
    assert_eq!(status, 200, "answered after {:?}", answered - posted);
    assert!(answered >= enabled, "answered before the job could apply");
    all_say(
        &[&api, &worker],
        &[&token],
        "revoked",
        Duration::from_secs(5),
        "after",
    )
    .await;
    let id = token_id(&api, &token);
    in_both_stores(&db, &redis, &prefix, &[id]).await;
}
