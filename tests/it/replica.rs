//! The local replica: follows every change, survives a cut stream without a
//! gap, declines when it cannot prove it is current, and agrees with Redis
//! and Postgres whatever the order of jobs.

use std::{sync::Arc, time::Duration};

use proptest::prelude::*;
use redis::Commands;
use revokd::{read::checker::LookupStats, read::replica::Replica};
use revokd_jobs::{Job, RevokeSubject, RevokeToken, now_unix};

use crate::helpers::{Options, Proxy, TestApp, assert_answer, eventually};

async fn fresh(replica: &Arc<Replica>) {
    crate::helpers::wait_current(replica).await;
}

/// Waits (10 s at most) until `replica` denies `token_id`.
async fn denied_by(replica: &Arc<Replica>, token_id: &str, what: &str) {
    let (r, id) = (Arc::clone(replica), token_id.to_owned());
    eventually(Duration::from_secs(10), what, move || {
        let seen = r.lookup(&id, None, now_unix()) == Some((true, None));
        async move { seen }
    })
    .await;
}

#[tokio::test]
async fn revocations_and_revoke_alls_reach_the_replica_and_checks_use_it() {
    let app = TestApp::spawn_with(Options {
        replica: true,
        ..Default::default()
    })
    .await;
    let replica = crate::helpers::current_replica(&app).await;
    let now = now_unix();
    let token = app.mint("xena");
    let older_token = revokd::token::Minter::new(&app.services.config.key_settings())
        .unwrap()
        .mint("yuri", 600, true, now - 5)
        .unwrap();
    let claims = app.services.verifier.verify(&token, now).unwrap();
    let applier = app.services.applier();
    // Out of order: the revoke-all with the later watermark first.
    applier
        .apply(&Job::RevokeAll(RevokeSubject::new("yuri", now)), now)
        .await
        .unwrap();
    applier
        .apply(&Job::RevokeAll(RevokeSubject::new("yuri", now - 100)), now)
        .await
        .unwrap();
    applier
        .apply(
            &Job::Revoke(RevokeToken::new(
                claims.token_id.clone(),
                claims.sub.clone(),
                claims.exp,
            )),
            now,
        )
        .await
        .unwrap();
    // An entry that has already ended never shows.
    applier
        .apply(
            &Job::Revoke(RevokeToken::new("gone", None, now - 3_600)),
            now,
        )
        .await
        .unwrap();

    let r = Arc::clone(&replica);
    let id = claims.token_id.clone();
    eventually(Duration::from_secs(5), "events in the replica", move || {
        let seen = r.lookup(&id, Some("yuri"), now_unix()) == Some((true, Some(now)));
        async move { seen }
    })
    .await;
    assert_eq!(
        replica.lookup("gone", None, now_unix()),
        Some((false, None))
    );
    let before = LookupStats::get(&app.checker_stats.stats().replica);
    assert_answer(&app.check(&token).await, "revoked");
    assert_answer(&app.check(&older_token).await, "subject_revoked");
    assert_eq!(
        app.check(&app.mint("yuri")).await.1["active"],
        true,
        "same second as the watermark"
    );
    assert_eq!(
        LookupStats::get(&app.checker_stats.stats().replica),
        before + 3,
        "answered by the replica"
    );
    // Expiry: the entry drops out once its time has passed.
    assert_eq!(
        replica.lookup(&claims.token_id, None, claims.exp + 3_600),
        Some((false, None))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cut_stream_connection_resumes_without_losing_an_event() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let app = TestApp::spawn_with(Options {
        replica: true,
        worker: false,
        redis_url: Some(via_proxy),
        ..Default::default()
    })
    .await;
    let replica = crate::helpers::current_replica(&app).await;
    // Writes go to Redis directly, not through the proxy the replica uses.
    let direct = app.services.config.as_ref().clone();
    let direct = revokd::app::Services::with_db(
        revokd::config::Config {
            redis_url: crate::helpers::redis_url(),
            ..direct
        },
        app.db.db.clone(),
    )
    .unwrap();
    let applier = direct.applier();
    let now = now_unix();
    applier
        .apply(
            &Job::Revoke(RevokeToken::new("first", None, now + 600)),
            now,
        )
        .await
        .unwrap();
    denied_by(&replica, "first", "first event").await;

    proxy.set_enabled(false);
    applier
        .apply(
            &Job::Revoke(RevokeToken::new("while-cut", None, now + 600)),
            now,
        )
        .await
        .unwrap();
    let r = Arc::clone(&replica);
    eventually(
        Duration::from_secs(5),
        "a replica that cannot read the stream stops answering",
        move || {
            let stale = !r.is_fresh();
            async move { stale }
        },
    )
    .await;
    proxy.set_enabled(true);
    denied_by(&replica, "while-cut", "event made while cut").await;
    app.stop().await;
}

#[tokio::test]
async fn a_replica_that_cannot_prove_freshness_leaves_checks_to_redis() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let app = TestApp::spawn_with(Options {
        replica: true,
        redis_url: Some(format!("redis://127.0.0.1:{}", proxy.port)),
        ..Default::default()
    })
    .await;
    let replica = crate::helpers::current_replica(&app).await;
    let token = app.mint("zed");
    assert_answer(&app.check(&token).await, "active");
    let stats = app.checker_stats.stats();
    assert!(LookupStats::get(&stats.replica) >= 1);

    // Stream (and Redis) gone: after the lag bound, checks go elsewhere and
    // still answer correctly from Postgres.
    proxy.set_enabled(false);
    let claims = app.services.verifier.verify(&token, now_unix()).unwrap();
    let job = RevokeToken::new(claims.token_id, claims.sub, claims.exp);
    app.db
        .db
        .apply_revoke(&job, job.expires_at, now_unix())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the replica stale", move || {
        let stale = !replica.is_fresh();
        async move { stale }
    })
    .await;
    let before = LookupStats::get(&stats.replica);
    assert_answer(&app.check(&token).await, "revoked");
    assert_eq!(
        LookupStats::get(&stats.replica),
        before,
        "the stale replica did not answer"
    );
    proxy.set_enabled(true);
    app.stop().await;
}

#[derive(Debug, Clone)]
enum Op {
    Revoke { token: u8, exp_offset: i64 },
    RevokeAll { subject: u8, nb_offset: i64 },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        // Expiries a few seconds either side of the leeway's edge (now − 30
        // s) would end while the test runs: its `now` is fixed, the stores'
        // clocks are not.
        (0u8..4, prop_oneof![-100i64..-35, -25i64..600])
            .prop_map(|(token, exp_offset)| Op::Revoke { token, exp_offset }),
        (0u8..3, -50i64..5).prop_map(|(subject, nb_offset)| Op::RevokeAll { subject, nb_offset }),
    ];
    prop::collection::vec(op, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any interleaving, with duplicates and out-of-order watermarks, leaves
    /// the replica, Redis and Postgres agreeing.
    #[test]
    fn any_order_of_jobs_leaves_replica_redis_and_postgres_agreeing(ops in ops(), dup in 0usize..12) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(agree(ops, dup));
    }
}

async fn agree(mut ops: Vec<Op>, dup: usize) {
    let app = TestApp::spawn_with(Options {
        replica: true,
        worker: false,
        ..Default::default()
    })
    .await;
    let replica = crate::helpers::current_replica(&app).await;
    if let Some(op) = ops.get(dup % ops.len()).cloned() {
        ops.push(op);
    }
    let now = now_unix();
    let applier = app.services.applier();
    let mut jobs = Vec::new();
    for op in &ops {
        jobs.push(match *op {
            Op::Revoke { token, exp_offset } => Job::Revoke(RevokeToken::new(
                format!("t{token}"),
                None,
                now + exp_offset,
            )),
            Op::RevokeAll { subject, nb_offset } => {
                Job::RevokeAll(RevokeSubject::new(format!("s{subject}"), now + nb_offset))
            }
        });
    }
    // Duplicates are the same job (same job_id) delivered twice.
    jobs.push(jobs[dup % jobs.len()].clone());
    // A last revocation: events apply in order, so once the replica has it,
    // it has every job before it.
    jobs.push(Job::Revoke(RevokeToken::new("last", None, now + 600)));
    for job in &jobs {
        applier.apply(job, now).await.unwrap();
    }
    let r = Arc::clone(&replica);
    eventually(Duration::from_secs(5), "the last event", move || {
        let seen = r.lookup("last", None, now) == Some((true, None));
        async move { seen }
    })
    .await;
    fresh(&replica).await;
    let mut redis = app.redis();
    let leeway = app.services.config.leeway();
    for t in 0..4 {
        let id = format!("t{t}");
        let in_redis: bool = redis.exists(format!("{}jti:{id}", app.prefix)).unwrap();
        let row = app.db.db.revoked_token(&id).await.unwrap();
        let live_in_pg = row.as_ref().is_some_and(|r| r.expires_at + leeway > now);
        let in_replica = replica.lookup(&id, None, now).unwrap().0;
        assert_eq!(
            (in_redis, in_replica),
            (live_in_pg, live_in_pg),
            "token {id}: redis, replica vs postgres"
        );
        let expected = ops
            .iter()
            .any(|op| matches!(op, Op::Revoke { token, .. } if *token == t));
        assert_eq!(
            row.is_some(),
            expected,
            "every revocation recorded in postgres"
        );
    }
    for s in 0..3 {
        let id = format!("s{s}");
        let in_redis: Option<i64> = redis.get(format!("{}sub:{id}", app.prefix)).unwrap();
        let in_pg = app.db.db.watermark(&id).await.unwrap();
        let in_replica = replica.lookup("none", Some(&id), now).unwrap().1;
        let highest = ops
            .iter()
            .filter_map(|op| match op {
                Op::RevokeAll { subject, nb_offset } if *subject == s => Some(now + nb_offset),
                _ => None,
            })
            .max();
        assert_eq!(
            (in_redis, in_pg, in_replica),
            (highest, highest, highest),
            "subject {id}"
        );
    }
    app.stop().await;
}

/// A load cut halfway (Postgres gone between two `COPY` ranges) resumes at
/// the first range it had not finished instead of starting over; what
/// changed meanwhile reaches the replica from the stream.
#[tokio::test]
async fn a_load_cut_halfway_resumes_where_it_stopped() {
    use std::sync::Mutex;
    let app = TestApp::spawn_with(Options {
        extra: &["--api-keys", "ops:ops-key"],
        ..Default::default()
    })
    .await;
    let now = now_unix();
    // 20,000 revocations only Postgres holds (a few hundred heap blocks),
    // a thousand of them over.
    sqlx::query(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'bulk-' || g, null, case when g % 20 = 0 then $1 - 3600 else $1 + 600 end, $1, 'test'
         from generate_series(1, 20000) g",
    )
    .bind(now)
    .execute(app.db.db.pool())
    .await
    .unwrap();

    // A second API process, reading Postgres through a proxy the test cuts
    // after the load's third range.
    let proxy = Arc::new(Proxy::start("127.0.0.1:5432").await);
    let services = revokd::app::Services::with_db(
        app.services.config.as_ref().clone(),
        revokd::store::pg::Db::connect_lazy(&crate::helpers::proxied(&app.db, &proxy)).unwrap(),
    )
    .unwrap();
    let replica = Arc::clone(services.replica.as_ref().unwrap());
    let mut follower = services.follower().unwrap();
    follower.copy_blocks = 16;
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (seen, cut) = (Arc::clone(&ranges), Arc::clone(&proxy));
    follower.after_copy = Some(Arc::new(move |next_block| {
        let mut seen = seen.lock().unwrap();
        seen.push(next_block);
        if seen.len() == 3 {
            cut.set_enabled(false);
            let back = Arc::clone(&cut);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                back.set_enabled(true);
            });
        }
    }));
    let stop = tokio_util::sync::CancellationToken::new();
    let following = tokio::spawn(follower.run(stop.clone()));

    // Revoked through the first API while the second's load is cut.
    let token = app.mint("carol");
    let (status, _) = app
        .post_json(
            "/v1/revocations",
            "ops-key",
            &serde_json::json!({ "token": token }),
        )
        .await;
    assert_eq!(status, 202);
    let token_id = app.token_id(&token);

    tokio::time::timeout(Duration::from_secs(30), async {
        while !replica.is_fresh() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replica loads once Postgres is back");
    let ranges = ranges.lock().unwrap().clone();
    assert!(ranges.len() > 4, "several ranges: {ranges:?}");
    assert!(
        ranges.windows(2).all(|w| w[0] < w[1]),
        "each range read once, none again after the cut: {ranges:?}"
    );
    let now = now_unix();
    for g in 1..=20_000 {
        let want = g % 20 != 0;
        assert_eq!(
            replica.lookup(&format!("bulk-{g}"), None, now),
            Some((want, None)),
            "bulk-{g}"
        );
    }
    denied_by(&replica, &token_id, "the revocation made during the cut").await;
    // The audit: in both stores, refused by the first API.
    crate::helpers::in_both_stores(
        &app.db,
        &crate::helpers::redis_url(),
        &app.prefix,
        &[token_id],
    )
    .await;
    app.wait_for_reason(&token, "revoked", Duration::from_secs(5))
        .await;
    stop.cancel();
    following.await.unwrap();
    app.stop().await;
}

/// Entries Redis holds that Postgres lacks (their job wrote Redis, then
/// found Postgres down) reach a replica loaded from Postgres: the load
/// replays the minute of stream before it; when the stream no longer holds
/// that minute, it loads from Redis instead. A job applied again announces
/// its entry again; a rebuild does not (tests/it/identity.rs).
#[tokio::test]
async fn entries_only_redis_holds_reach_a_replica_loaded_from_postgres() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let now = now_unix();
    // Redis only: the deny-list writes of jobs whose Postgres write failed.
    let deny = app.services.deny_fast.clone();
    let entry = revokd::store::redis::DenyEntry {
        sub: None,
        exp: now + 600,
        revoked_at: now,
        reason: None,
    };
    deny.deny("redis-only", &entry, 600, now).await.unwrap();
    let replica_of = |app: &TestApp| {
        let services =
            revokd::app::Services::with_db(app.services.config.as_ref().clone(), app.db.db.clone())
                .unwrap();
        let replica = Arc::clone(services.replica.as_ref().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let following = tokio::spawn(services.follower().unwrap().run(stop.clone()));
        (replica, stop, following)
    };
    let (replica, stop, following) = replica_of(&app);
    fresh(&replica).await;
    assert_eq!(
        replica.lookup("redis-only", None, now_unix()),
        Some((true, None)),
        "replayed from the stream"
    );

    // The applier announces an entry Redis already holds, once per attempt.
    let mut redis = app.redis();
    let events = format!("{}events", app.prefix);
    let before: u64 = redis.xlen(&events).unwrap();
    app.services
        .applier()
        .apply(
            &Job::Revoke(RevokeToken::new("redis-only", None, now + 600)),
            now,
        )
        .await
        .unwrap();
    assert_eq!(redis.xlen::<_, u64>(&events).unwrap(), before + 1);

    // A second entry whose announcements are gone from the stream: a new
    // replica loads Redis itself.
    deny.deny("redis-only-2", &entry, 600, now).await.unwrap();
    let ids: redis::streams::StreamRangeReply = redis.xrange_all(&events).unwrap();
    let gone: Vec<&str> = ids.ids.iter().map(|e| e.id.as_str()).collect();
    let _: u64 = redis.xdel(&events, &gone).unwrap();
    let (second, stop2, following2) = replica_of(&app);
    fresh(&second).await;
    for id in ["redis-only", "redis-only-2"] {
        assert_eq!(
            second.lookup(id, None, now_unix()),
            Some((true, None)),
            "{id}"
        );
    }
    denied_by(&replica, "redis-only-2", "followed by the first replica").await;
    crate::helpers::in_both_stores(
        &app.db,
        &crate::helpers::redis_url(),
        &app.prefix,
        &["redis-only".to_owned()],
    )
    .await;
    for (stop, following) in [(stop, following), (stop2, following2)] {
        stop.cancel();
        following.await.unwrap();
    }
    app.stop().await;
}

/// A load cancelled in the middle of a `COPY` (a format error, a follower
/// told to stop) leaves its connection unread; the pool must not hand it to
/// the next query, which would read the leftovers as its own answer.
#[tokio::test]
async fn a_copy_cancelled_midway_leaves_the_pool_usable() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::Poll;

    let test_db = testkit::TestDb::create().await;
    // ~8 MB of COPY data: more than the socket buffers hold, so the stream
    // is still coming when it is dropped.
    let n: i64 = 200_000;
    sqlx::query(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, requested_by)
         select 'bulk-' || g, null, 4000000000, 0, 'test' from generate_series(1, $1) g",
    )
    .bind(n)
    .execute(test_db.db.pool())
    .await
    .unwrap();
    // One connection: the query after the copy gets the same one back,
    // unless the snapshot closed it.
    let db = revokd::store::pg::Db::connect_lazy_sized(&test_db.url, 1).unwrap();
    let mut snapshot = db.token_snapshot().await.unwrap();
    let (_, blocks) = snapshot.extent().await.unwrap();
    let rows = AtomicU64::new(0);
    let mut copy = Box::pin(snapshot.copy_live_tokens(0, blocks, 0, |_, _| {
        rows.fetch_add(1, Ordering::Relaxed);
    }));
    // Started (the statement sent, the server streaming), then dropped
    // unread: what a cancelled load or a parse error leaves behind.
    if let Poll::Ready(done) = futures::poll!(copy.as_mut()) {
        panic!("the copy ended at its first poll: {done:?}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(copy);
    let read = rows.load(Ordering::Relaxed);
    assert!(
        read < n as u64,
        "the copy was read to the end ({read} rows)"
    );
    drop(snapshot);

    for k in [7i64, 8, 9] {
        let (got,): (i64,) = sqlx::query_as("select $1::bigint")
            .bind(k)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(got, k);
    }
    let (count,): (i64,) = sqlx::query_as("select count(*) from revoked_tokens")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, n);
}

/// A grouped stream entry trims the stream by age: entries over two
/// minutes old go, the last minute (what a loading replica replays) stays,
/// however many tokens the groups hold.
#[tokio::test]
async fn a_grouped_entry_trims_the_stream_to_its_last_two_minutes() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut redis = app.redis();
    let events = format!("{}events", app.prefix);
    let now_ms = u64::try_from(now_unix()).unwrap() * 1000;
    // Three full stream nodes (100 entries each) from 200 s ago, then one
    // entry from 30 s ago.
    for i in 0..300 {
        let _: String = redis
            .xadd(&events, format!("{}-{i}", now_ms - 200_000), &[("k", "x")])
            .unwrap();
    }
    let recent = format!("{}-0", now_ms - 30_000);
    let _: String = redis.xadd(&events, &recent, &[("k", "x")]).unwrap();
    let now = now_unix();
    let entry = |id: &str| {
        let entry = revokd::store::redis::DenyEntry {
            sub: None,
            exp: now + 600,
            revoked_at: now,
            reason: None,
        };
        (id.to_owned(), entry, 600)
    };
    app.services
        .deny_patient
        .deny_many(&[entry("g-1"), entry("g-2")], now)
        .await
        .unwrap();
    let first: redis::streams::StreamRangeReply = redis.xrange_count(&events, "-", "+", 1).unwrap();
    assert_eq!(
        first.ids[0].id, recent,
        "the old entries are gone, the recent one stays"
    );
    assert_eq!(redis.xlen::<_, u64>(&events).unwrap(), 2);
    app.stop().await;
}
