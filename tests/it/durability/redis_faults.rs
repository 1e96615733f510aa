//! Redis refuses writes (out of memory, a read-only replica), goes down, or
//! loses an entry: what was answered 2xx is still refused everywhere.

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::json;

use super::{all_say, marker_set, token_id};
use crate::helpers::{
    Node, NodeOptions, PrivateRedis, TestDb, eventually, free_port, in_both_stores, mint,
    mint_issued_ago, unique_prefix,
};

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
    let (logout, reset, bulk) = (mint("ann"), mint_issued_ago("bob", 1), mint("cy"));
    let three = [logout.as_str(), reset.as_str(), bulk.as_str()];
    let five = Duration::from_secs(5);
    all_say(&[&a, &b, &reader], &three, "active", five, "before").await;

    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let [refuse, restore] = commands(how);
    run(&mut conn, &refuse);
    let refused: redis::RedisResult<()> = conn.set("probe", 1);
    assert!(refused.is_err(), "{how:?}: redis still takes writes");
    // A bulk revocation first, most likely before `b` has learnt that Redis
    // refuses writes: recorded as queued, its push fails and turns the
    // chunk's rows pending before the answer (known already: recorded
    // pending). Either way no row may stay queued.
    let items = json!([{ "token": bulk }]);
    let (status, body) = b.post("/v1/revocations:batch", &items).await;
    assert!((200..300).contains(&status), "{how:?}: {status} {body}");
    let state: Option<bool> =
        sqlx::query_scalar("select in_redis from revoked_tokens where token_id = $1")
            .bind(token_id(&a, &bulk))
            .fetch_one(db.db.pool())
            .await
            .unwrap();
    assert_eq!(state, Some(false), "{how:?}: pending, not queued");
    let (status, body) = a.post("/v1/revocations", &json!({ "token": logout })).await;
    assert!((200..300).contains(&status), "{how:?}: {status} {body}");
    let accepted = Instant::now();
    let (status, body) = b.post("/v1/subjects/bob/revoke-all", &json!({})).await;
    assert!((200..300).contains(&status), "{how:?}: {status} {body}");
    let not_before = body["not_before"].as_i64().unwrap();
    // Within a second, on both processes (replica and redis read mode).
    let within = Duration::from_secs(1).saturating_sub(accepted.elapsed());
    let (logout, reset, bulk) = ([logout.as_str()], [reset.as_str()], [bulk.as_str()]);
    let all = [&a, &b, &reader];
    all_say(&all, &logout, "revoked", within, "redis refusing writes").await;
    all_say(
        &all,
        &bulk,
        "revoked",
        within,
        "bulk, redis refusing writes",
    )
    .await;
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
    all_say(&all, &bulk, "revoked", Duration::ZERO, "bulk later").await;

    run(&mut conn, &restore);
    let (id, bulk_id) = (token_id(&a, logout[0]), token_id(&a, bulk[0]));
    let (jti_key, sub_key) = (format!("{prefix}jti:{id}"), format!("{prefix}sub:bob"));
    let bulk_key = format!("{prefix}jti:{bulk_id}");
    eventually(Duration::from_secs(10), "all three in redis", || {
        let token: bool = conn.exists(&jti_key).unwrap();
        let bulk: bool = conn.exists(&bulk_key).unwrap();
        let mark: Option<i64> = conn.get(&sub_key).unwrap();
        async move { token && bulk && mark == Some(not_before) }
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "postgres marks them in redis",
        || async {
            db.db
                .pending_revocations(0, i64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    // The audit: Postgres, Redis (above), every API process — a new one too.
    assert!(db.db.revoked_token(&id).await.unwrap().is_some());
    assert!(db.db.revoked_token(&bulk_id).await.unwrap().is_some());
    assert_eq!(db.db.watermark("bob").await.unwrap(), Some(not_before));
    let c = Node::start(node(false, true)).await;
    let all = [&a, &b, &reader, &c];
    all_say(&all, &logout, "revoked", five, "after").await;
    all_say(&all, &bulk, "revoked", five, "after").await;
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
    // ... and every API process refuses both, one started afterwards too.
    let c = Node::start(node(false, true)).await;
    all_say(
        &[&a, &b, &c],
        &[first.as_str(), second[0]],
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
    // The audit: in both stores, and refused by this process and by one
    // started afterwards.
    in_both_stores(&db, &redis, &prefix, &[token_id(&a, &token)]).await;
    let b = Node::start(NodeOptions {
        prefix: &prefix,
        redis_url: &redis,
        db_url: &db.url,
        worker: false,
        replica: true,
        extra: &[],
    })
    .await;
    all_say(
        &[&a, &b],
        &[token.as_str()],
        "revoked",
        Duration::from_secs(5),
        "after",
    )
    .await;
}
