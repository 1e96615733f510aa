//! A 2xx is a promise: a revocation answered 2xx is refused by every API
//! process, whatever Redis does next — refuses writes, restarts empty, or
//! both while Postgres is down — and ends up in Postgres and in Redis.

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::json;

use crate::helpers::{
    Node, NodeOptions, PrivateRedis, Proxy, TestDb, check_reason, eventually, free_port, healthy,
    in_both_stores, mint, mint_issued_ago, proxied, serve, spool_dir, unique_prefix,
};

fn token_id(node: &Node, token: &str) -> String {
    node.services
        .verifier
        .verify_signature(token)
        .unwrap()
        .token_id
}

/// How Redis refuses writes while it still serves reads.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// `maxmemory` reached with the default `noeviction` policy: `OOM`.
    OutOfMemory,
    /// Demoted to a replica of a primary that is gone: `READONLY`.
    ReadOnlyReplica,
}

/// The command that makes Redis refuse writes, and the one that undoes it.
fn commands(how: Refusal) -> [Vec<String>; 2] {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match how {
        Refusal::OutOfMemory => [
            words(&["CONFIG", "SET", "maxmemory", "1"]),
            words(&["CONFIG", "SET", "maxmemory", "0"]),
        ],
        Refusal::ReadOnlyReplica => [
            words(&["REPLICAOF", "127.0.0.1", &free_port().to_string()]),
            words(&["REPLICAOF", "NO", "ONE"]),
        ],
    }
}

fn run(redis: &mut redis::Connection, command: &[String]) {
    redis::cmd(&command[0])
        .arg(&command[1..])
        .query::<()>(redis)
        .unwrap();
}

/// Options of a node on `db` directly: `node(worker, replica)`.
fn options<'a>(
    prefix: &'a str,
    redis: &'a str,
    db: &'a TestDb,
) -> impl Fn(bool, bool) -> NodeOptions<'a> {
    move |worker, replica| NodeOptions {
        prefix,
        redis_url: redis,
        db_url: &db.url,
        worker,
        replica,
        extra: &[],
    }
}

/// Waits until the deny-list is complete in Redis (the marker is set).
async fn marker_set(node: &Node) {
    let deny = node.services.deny_fast.clone();
    eventually(Duration::from_secs(10), "marker set", || {
        let deny = deny.clone();
        async move { deny.marker_present().await.unwrap_or(false) }
    })
    .await;
}

/// Waits until every node gives `want` for every token.
async fn all_say(nodes: &[&Node], tokens: &[&str], want: &str, deadline: Duration, what: &str) {
    let started = Instant::now();
    for (node, token) in nodes
        .iter()
        .flat_map(|n| tokens.iter().map(move |t| (n, *t)))
    {
        loop {
            let got = node.reason(token).await;
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: {} says {got:?}, not {want:?}, after {:?}",
                node.addr,
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn redis_writes_refused(how: Refusal) {
    let mut private = PrivateRedis::start();
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let redis = private.url();
    let node = options(&prefix, &redis, &db);
    let a = Node::start(node(true, true)).await;
    let b = Node::start(node(false, false)).await;
    // Only ever reads: nothing it does meets a refused write.
    let reader = Node::start(node(false, true)).await;
    marker_set(&a).await;
    // The revoke-all's watermark must be later than the token's iat.
    let (logout, reset) = (mint("ann"), mint_issued_ago("bob", 1));
    let both = [logout.as_str(), reset.as_str()];
    let five = Duration::from_secs(5);
    all_say(&[&a, &b, &reader], &both, "active", five, "before").await;

    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let [refuse, restore] = commands(how);
    run(&mut conn, &refuse);
    let refused: redis::RedisResult<()> = conn.set("probe", 1);
    assert!(refused.is_err(), "{how:?}: redis still takes writes");
    let (status, body) = a.post("/v1/revocations", &json!({ "token": logout })).await;
    assert!((200..300).contains(&status), "{how:?}: {status} {body}");
    let accepted = Instant::now();
    let (status, body) = b.post("/v1/subjects/bob/revoke-all", &json!({})).await;
    assert!((200..300).contains(&status), "{how:?}: {status} {body}");
    let not_before = body["not_before"].as_i64().unwrap();
    // Within a second, on both processes (replica and redis read mode).
    let within = Duration::from_secs(1).saturating_sub(accepted.elapsed());
    let (logout, reset) = ([logout.as_str()], [reset.as_str()]);
    let all = [&a, &b, &reader];
    all_say(&all, &logout, "revoked", within, "redis refusing writes").await;
    let one = Duration::from_secs(1);
    all_say(&all, &reset, "subject_revoked", one, "revoke-all").await;
    // The reader learns that Redis refuses writes, and says so.
    eventually(Duration::from_secs(3), "the reader's readyz", || async {
        let ready = reader.readyz().await;
        ready["redis_writes"] == "refused" && ready["replica"] == "stale"
    })
    .await;
    // Still so a while later (no stale "current" replica takes over): the
    // wait is the point, an absence over time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    all_say(&all, &logout, "revoked", Duration::ZERO, "later").await;
    all_say(&all, &reset, "subject_revoked", Duration::ZERO, "later").await;

    run(&mut conn, &restore);
    let id = token_id(&a, logout[0]);
    let (jti_key, sub_key) = (format!("{prefix}jti:{id}"), format!("{prefix}sub:bob"));
    eventually(Duration::from_secs(10), "both in redis", || {
        let token: bool = conn.exists(&jti_key).unwrap();
        let mark: Option<i64> = conn.get(&sub_key).unwrap();
        async move { token && mark == Some(not_before) }
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "postgres marks them in redis",
        || async { db.db.pending_revocations(0, 10).await.unwrap().is_empty() },
    )
    .await;
    // The audit: Postgres, Redis (above), every API process — a new one too.
    assert!(db.db.revoked_token(&id).await.unwrap().is_some());
    assert_eq!(db.db.watermark("bob").await.unwrap(), Some(not_before));
    let c = Node::start(node(false, true)).await;
    let all = [&a, &b, &reader, &c];
    all_say(&all, &logout, "revoked", five, "after").await;
    all_say(&all, &reset, "subject_revoked", five, "after").await;
    eventually(five, "every readyz back to normal", || async {
        let mut normal = true;
        for node in all {
            normal &= node.readyz().await["redis_writes"] == "ok";
        }
        normal
    })
    .await;
    drop((a, b, reader, c));
    private.kill();
}

#[tokio::test]
async fn accepted_while_redis_is_out_of_memory_every_process_refuses_it() {
    redis_writes_refused(Refusal::OutOfMemory).await;
}

#[tokio::test]
async fn accepted_while_redis_is_a_read_only_replica_every_process_refuses_it() {
    redis_writes_refused(Refusal::ReadOnlyReplica).await;
}

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
    let check = format!("http://127.0.0.1:{port}/v1/check");
    for token in &tokens {
        let started = Instant::now();
        loop {
            let reason = check_reason(&http, &check, token).await;
            if reason == "revoked" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "still {reason}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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

/// Waits until a `?wait=true` request has recorded its revocation in `db`
/// and listens for its completion on `redis`.
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

async fn post_and_wait(api: &Node, token: &str) -> tokio::task::JoinHandle<(u16, Duration)> {
    let (http, url) = (api.http.clone(), api.url("/v1/revocations?wait=true"));
    let body = json!({ "token": token });
    tokio::spawn(async move {
        let started = Instant::now();
        let response = http
            .post(url)
            .bearer_auth("test-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), started.elapsed())
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
    proxy.set_enabled(true);
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 200, "applied after {took:?}");
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
    let waiting = post_and_wait(&api, &token).await;
    until_waiting(&db, &redis, &prefix).await;
    // The queue (and the job in it) is lost.
    private.kill();
    // A while without Redis: the wait is the point.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "the crash ended the wait");
    private.restart();
    proxy.set_enabled(true);
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 200, "answered after {took:?}");
    assert!(took > Duration::from_secs(1), "{took:?}");
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

#[tokio::test]
async fn revocations_accepted_while_redis_is_down_never_read_active_as_it_returns() {
    let mut private = PrivateRedis::start();
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let redis = private.url();
    let node = options(&prefix, &redis, &db);
    let a = Node::start(node(true, true)).await;
    let b = Node::start(node(false, false)).await;
    marker_set(&a).await;
    let tokens: Vec<String> = (0..10).map(|i| mint(&format!("down{i}"))).collect();
    let ids: Vec<&str> = tokens.iter().map(String::as_str).collect();
    all_say(&[&a, &b], &ids, "active", Duration::from_secs(5), "before").await;
    private.kill();
    for token in &tokens {
        let (status, body) = a.post("/v1/revocations", &json!({ "token": token })).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["degraded"], true, "{body}");
    }
    all_say(
        &[&a, &b],
        &ids,
        "revoked",
        Duration::from_secs(1),
        "redis down",
    )
    .await;
    private.restart();
    // Every check on both processes while Redis comes back and is refilled.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        all_say(
            &[&a, &b],
            &ids,
            "revoked",
            Duration::ZERO,
            "redis returning",
        )
        .await;
    }
    in_both_stores(
        &db,
        &redis,
        &prefix,
        &tokens.iter().map(|t| token_id(&a, t)).collect::<Vec<_>>(),
    )
    .await;
}

/// `/v1/check` with the refresh-token hint: its reason, or `active`.
async fn refresh_reason(node: &Node, token: &str) -> String {
    let body = json!({ "token": token, "token_type_hint": "refresh_token" });
    let response = node
        .http
        .post(node.url("/v1/check"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    match (&body["active"], &body["reason"]) {
        (serde_json::Value::Bool(true), _) => "active".into(),
        (_, reason) => reason.as_str().unwrap_or("?").to_owned(),
    }
}

#[tokio::test]
async fn a_refresh_family_revoked_while_redis_refuses_writes_is_refused_everywhere() {
    let private = PrivateRedis::start();
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let redis = private.url();
    let node = options(&prefix, &redis, &db);
    let a = Node::start(node(true, true)).await;
    let b = Node::start(node(false, true)).await;
    marker_set(&a).await;
    let (first, second) = (mint("fam"), mint("fam"));
    let (status, _) = a
        .post("/v1/refresh-tokens?wait=true", &json!({ "token": first }))
        .await;
    assert_eq!(status, 200);
    let rotation = json!({ "token": second, "rotated_from": first });
    let (status, _) = a.post("/v1/refresh-tokens?wait=true", &rotation).await;
    assert_eq!(status, 200);
    let fresh = Duration::from_secs(5);
    all_say(&[&a, &b], &[&second], "active", fresh, "before").await;
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let [refuse, restore] = commands(Refusal::OutOfMemory);
    run(&mut conn, &refuse);
    // Revoking the first token revokes its family: the second one too.
    let (status, body) = a.post("/v1/revocations", &json!({ "token": first })).await;
    assert_eq!(status, 202, "{body}");
    let second = [second.as_str()];
    all_say(
        &[&a, &b],
        &second,
        "revoked",
        Duration::from_secs(1),
        "family",
    )
    .await;
    for node in [&a, &b] {
        assert_eq!(refresh_reason(node, second[0]).await, "revoked");
    }
    // The audit: once Redis takes writes, both tokens are in both stores.
    run(&mut conn, &restore);
    let ids = [token_id(&a, &first), token_id(&a, second[0])];
    in_both_stores(&db, &redis, &prefix, &ids).await;
    all_say(
        &[&a, &b],
        &second,
        "revoked",
        Duration::from_secs(5),
        "after",
    )
    .await;
}

#[tokio::test]
async fn a_marker_set_on_another_server_rebuilds_what_this_one_lost() {
    let private = PrivateRedis::start();
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let redis = private.url();
    let a = Node::start(NodeOptions {
        prefix: &prefix,
        redis_url: &redis,
        db_url: &db.url,
        worker: true,
        replica: false,
        extra: &[],
    })
    .await;
    marker_set(&a).await;
    let token = mint("snapshot");
    let (status, _) = a
        .post("/v1/revocations?wait=true", &json!({ "token": token }))
        .await;
    assert_eq!(status, 200);
    // As after a failover to a replica that had not received the entry, or
    // a restart from an older snapshot: the marker came along, the entry
    // did not.
    let key = format!("{prefix}jti:{}", token_id(&a, &token));
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = conn.del(&key).unwrap();
    let _: () = conn
        .set(format!("{prefix}marker"), "another-server")
        .unwrap();
    eventually(Duration::from_secs(5), "the lost entry rebuilt", || {
        let back: bool = conn.exists(&key).unwrap();
        async move { back }
    })
    .await;
    assert_eq!(a.reason(&token).await, "revoked");
}

#[tokio::test]
async fn a_resync_pass_ends_while_revocations_keep_arriving() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let _guard = crate::helpers::PrefixGuard {
        url: crate::helpers::redis_url(),
        prefix: prefix.clone(),
    };
    let config = crate::helpers::test_config(&prefix, &crate::helpers::redis_url(), &db.url, &[]);
    let services = revokd::app::Services::with_db(config, db.db.clone()).unwrap();
    let resync = services.resync(services.deny_patient.clone());
    // Accepted revocations keep becoming pending, as under write load.
    let writer = {
        let db = db.db.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let job = revokd_jobs::RevokeToken::new(
                    format!("load-{i}"),
                    None,
                    revokd_jobs::now_unix() + 600,
                );
                let now = revokd_jobs::now_unix();
                db.record_revoke(&job, job.expires_at, now, false)
                    .await
                    .unwrap();
            }
        })
    };
    eventually(Duration::from_secs(5), "revocations arriving", || async {
        let rows: i64 = sqlx::query_scalar("select count(*) from revoked_tokens")
            .fetch_one(db.db.pool())
            .await
            .unwrap();
        rows >= 50
    })
    .await;
    for _ in 0..3 {
        let pass = tokio::time::timeout(Duration::from_secs(5), resync.run_once()).await;
        assert!(matches!(pass, Ok(Ok(_))), "a pass did not end: {pass:?}");
    }
    writer.abort();
}

#[tokio::test]
async fn a_resync_pass_copies_every_pending_row_page_by_page() {
    let (db, prefix, guard) = crate::helpers::own_deployment().await;
    let redis = crate::helpers::redis_url();
    let config = crate::helpers::test_config(&prefix, &redis, &db.url, &[]);
    let services = revokd::app::Services::with_db(config, db.db.clone()).unwrap();
    let resync = revokd::store::resync::Resync {
        batch: 5,
        ..services.resync(services.deny_patient.clone())
    };
    let now = revokd_jobs::now_unix();
    for i in 0..12 {
        let job = revokd_jobs::RevokeToken::new(format!("pending-{i}"), None, now + 600);
        db.db
            .record_revoke(&job, job.expires_at, now, false)
            .await
            .unwrap();
    }
    assert_eq!(resync.run_once().await.unwrap(), 12, "three pages of 5");
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..12 {
        let there: bool = conn.exists(format!("{prefix}jti:pending-{i}")).unwrap();
        assert!(there, "pending-{i} copied into redis");
    }
    assert_eq!(resync.run_once().await.unwrap(), 0, "nothing left pending");
    guard.clean();
}
