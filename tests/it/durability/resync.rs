//! The resync pass, which copies pending Postgres rows into Redis: it ends
//! under write load and pages through what is pending.

use std::time::Duration;

use redis::Commands;

use crate::helpers::{TestDb, eventually, unique_prefix};

/// The services `serve` builds, on `db` and `prefix`.
fn services_on(db: &TestDb, prefix: &str, redis: &str) -> revokd::app::Services {
    let config = crate::helpers::test_config(prefix, redis, &db.url, &[]);
    revokd::app::Services::with_db(config, db.db.clone()).unwrap()
}

#[tokio::test]
async fn a_resync_pass_ends_while_revocations_keep_arriving() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let _guard = crate::helpers::PrefixGuard {
        url: crate::helpers::redis_url(),
        prefix: prefix.clone(),
    };
    let services = services_on(&db, &prefix, &crate::helpers::redis_url());
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
    let services = services_on(&db, &prefix, &redis);
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

/// A chunk's rows, recorded with a record of the chunk, are left to its job
/// for a minute; a pass turns those of a chunk queued for longer (its job
/// lost with the queue) pending, copies them and marks them in Redis, never
/// a younger chunk's. The lost job, delivered late after all, finds no
/// record and writes its rows itself.
#[tokio::test]
async fn a_resync_pass_copies_a_chunks_rows_only_once_its_job_is_overdue() {
    let (db, prefix, guard) = crate::helpers::own_deployment().await;
    let redis = crate::helpers::redis_url();
    let services = services_on(&db, &prefix, &redis);
    let resync = services.resync(services.deny_patient.clone());
    let now = revokd_jobs::now_unix();
    let grace = revokd::store::resync::QUEUED_GRACE_SECS;
    let mut chunks = Vec::new();
    for (id, queued_at) in [("overdue", now - grace - 5), ("young", now - 1)] {
        let items = (0..3)
            .map(|i| revokd_jobs::RevokeItem::new(format!("{id}-{i}"), None, now + 600))
            .collect();
        let chunk = revokd_jobs::RevokeBatch::new(items);
        let tokens = chunk.tokens();
        let rows: Vec<_> = tokens
            .iter()
            .map(|t| revokd::store::pg::RevokeRow {
                in_redis: None,
                ..revokd::store::pg::RevokeRow::of(t, t.expires_at, now)
            })
            .collect();
        db.db
            .record_chunk(&chunk.meta.job_id, &rows, queued_at)
            .await
            .unwrap();
        chunks.push(chunk);
    }
    assert_eq!(
        resync.run_once().await.unwrap(),
        3,
        "only the overdue chunk"
    );
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let there = |conn: &mut redis::Connection, id: &str| -> bool {
        conn.exists(format!("{prefix}jti:{id}")).unwrap()
    };
    assert!(there(&mut conn, "overdue-0") && there(&mut conn, "overdue-2"));
    assert!(!there(&mut conn, "young-0"), "left to its job");
    let states = || async {
        let rows: Vec<(String, Option<bool>)> =
            sqlx::query_as("select token_id, in_redis from revoked_tokens order by token_id")
                .fetch_all(db.db.pool())
                .await
                .unwrap();
        let records: Vec<String> = sqlx::query_scalar("select job_id from queued_chunks")
            .fetch_all(db.db.pool())
            .await
            .unwrap();
        (rows, records)
    };
    let (rows, records) = states().await;
    let want: Vec<(String, Option<bool>)> = ["overdue", "young"]
        .iter()
        .flat_map(|id| {
            (0..3).map(move |i| (format!("{id}-{i}"), (*id == "overdue").then_some(true)))
        })
        .collect();
    assert_eq!(rows, want);
    assert_eq!(
        records,
        [chunks[1].meta.job_id.clone()],
        "the young chunk's record stays"
    );
    assert_eq!(resync.run_once().await.unwrap(), 0);

    // The overdue job runs after all: no record, so it writes every row;
    // the young one's job finds its record and leaves its rows as they are.
    let applier = services.applier();
    for chunk in &chunks {
        let job = revokd_jobs::Job::RevokeBatch(chunk.clone());
        applier.apply(&job, revokd_jobs::now_unix()).await.unwrap();
    }
    assert!(there(&mut conn, "young-1"));
    let (rows, records) = states().await;
    assert_eq!(rows, want, "the young chunk's rows stay as recorded");
    assert!(records.is_empty(), "{records:?}");
    let applied: Vec<String> = sqlx::query_scalar(
        "select job_id from revocation_audit where token_id like 'overdue-%' order by job_id",
    )
    .fetch_all(db.db.pool())
    .await
    .unwrap();
    assert_eq!(
        applied.len(),
        3,
        "one audit row an item, however often written"
    );
    guard.clean();
}

/// Writing the same revocation again merges its `in_redis` state: in Redis
/// if either write says so; else pending over queued (a job that cannot be
/// pushed, or a spool replay, turns queued rows pending); queued only if
/// both are.
#[tokio::test]
async fn rewrites_merge_in_redis_over_pending_over_queued() {
    let db = TestDb::create().await;
    let now = revokd_jobs::now_unix();
    let job = revokd_jobs::RevokeToken::new("merge", None, now + 600);
    let row = |in_redis| revokd::store::pg::RevokeRow {
        in_redis,
        ..revokd::store::pg::RevokeRow::of(&job, job.expires_at, now)
    };
    let steps = [
        (None, None),
        (Some(false), Some(false)),
        (None, Some(false)),
        (Some(true), Some(true)),
        (None, Some(true)),
        (Some(false), Some(true)),
    ];
    for (write, want) in steps {
        db.db.apply_revokes(&[row(write)]).await.unwrap();
        let state: Option<bool> =
            sqlx::query_scalar("select in_redis from revoked_tokens where token_id = 'merge'")
                .fetch_one(db.db.pool())
                .await
                .unwrap();
        assert_eq!(state, want, "after writing {write:?}");
    }
}

/// The same with different expiries: the longer write's state counts for
/// the longer life, but a queued write never hides a pending row (Redis
/// lacks the token altogether), and a row in Redis with the longer life
/// stays so.
#[tokio::test]
async fn rewrites_with_other_expiries_never_hide_a_pending_row_as_queued() {
    let db = TestDb::create().await;
    let now = revokd_jobs::now_unix();
    let (short, long) = (now + 600, now + 1_200);
    let cases = [
        ((Some(false), short), (None, long), Some(false)),
        ((Some(true), short), (None, long), None),
        ((None, short), (None, long), None),
        ((None, short), (Some(false), long), Some(false)),
        ((Some(false), short), (Some(true), long), Some(true)),
        ((None, long), (Some(false), short), Some(false)),
        ((None, long), (Some(true), short), None),
        ((Some(false), long), (None, short), Some(false)),
        ((Some(true), long), (Some(false), short), Some(true)),
    ];
    for (i, (first, then, want)) in cases.into_iter().enumerate() {
        let id = format!("other-{i}");
        for (in_redis, exp) in [first, then] {
            let job = revokd_jobs::RevokeToken::new(id.clone(), None, exp);
            let row = revokd::store::pg::RevokeRow {
                in_redis,
                ..revokd::store::pg::RevokeRow::of(&job, exp, now)
            };
            db.db.apply_revokes(&[row]).await.unwrap();
        }
        let (state, exp): (Option<bool>, i64) =
            sqlx::query_as("select in_redis, expires_at from revoked_tokens where token_id = $1")
                .bind(&id)
                .fetch_one(db.db.pool())
                .await
                .unwrap();
        assert_eq!((state, exp), (want, long), "{first:?} then {then:?}");
    }
}
