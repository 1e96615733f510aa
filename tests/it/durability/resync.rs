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

/// Records a chunk of three items (`{name}-0` to `-2`) as the API does
/// before pushing it, as of `queued_at`.
async fn record_chunk(db: &TestDb, name: &str, queued_at: i64) -> revokd_jobs::RevokeBatch {
    record_chunk_of(db, name, 3, queued_at).await
}

/// [`record_chunk`] of `n` items.
async fn record_chunk_of(
    db: &TestDb,
    name: &str,
    n: usize,
    queued_at: i64,
) -> revokd_jobs::RevokeBatch {
    let exp = revokd_jobs::now_unix() + 600;
    let items = (0..n)
        .map(|i| revokd_jobs::RevokeItem::new(format!("{name}-{i}"), None, exp))
        .collect();
    let chunk = revokd_jobs::RevokeBatch::new(items);
    let tokens = chunk.tokens();
    let rows: Vec<_> = tokens
        .iter()
        .map(|t| revokd::store::pg::RevokeRow {
            in_redis: None,
            ..revokd::store::pg::RevokeRow::of(t, t.expires_at, queued_at)
        })
        .collect();
    db.db
        .record_chunk(&chunk.meta.job_id, &rows, queued_at, true)
        .await
        .unwrap();
    chunk
}

/// A chunk's rows, recorded with a record of the chunk, are left to its
/// job: a pass turns a chunk's rows pending, copies them and marks them in
/// Redis only once its job is lost — after 15 s if the queue no longer
/// holds it, after a minute whatever it holds — never a younger chunk's or
/// one whose job is still queued. A lost job, delivered late after all,
/// finds no record and writes its rows itself.
#[tokio::test]
async fn a_resync_pass_copies_a_chunks_rows_only_once_its_job_is_lost() {
    let (db, prefix, guard) = crate::helpers::own_deployment().await;
    let redis = crate::helpers::redis_url();
    let services = services_on(&db, &prefix, &redis);
    let resync = services.resync(services.deny_patient.clone());
    let now = revokd_jobs::now_unix();
    let (grace, push) = (
        revokd::store::resync::QUEUED_GRACE_SECS,
        revokd::store::resync::PUSH_GRACE_SECS,
    );
    // (name, recorded how long ago, its job in the queue)
    let cases = [
        ("overdue", grace + 5, true),
        ("lost", push + 5, false),
        ("queued", push + 5, true),
        ("young", push - 5, false),
    ];
    let mut chunks = Vec::new();
    for (id, age, pushed) in cases {
        let chunk = record_chunk(&db, id, now - age).await;
        if pushed {
            let job = revokd_jobs::Job::RevokeBatch(chunk.clone());
            services.producer.push_as_job_task(&job).await.unwrap();
        }
        chunks.push(chunk);
    }
    assert_eq!(
        resync.run_once().await.unwrap(),
        6,
        "the overdue and the lost chunk"
    );
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let there = |conn: &mut redis::Connection, id: &str| -> bool {
        conn.exists(format!("{prefix}jti:{id}")).unwrap()
    };
    for (id, _, _) in cases {
        let copied = matches!(id, "overdue" | "lost");
        for i in 0..3 {
            assert_eq!(there(&mut conn, &format!("{id}-{i}")), copied, "{id}-{i}");
        }
    }
    let states = || async {
        let rows: Vec<(String, Option<bool>)> =
            sqlx::query_as("select token_id, in_redis from revoked_tokens order by token_id")
                .fetch_all(db.db.pool())
                .await
                .unwrap();
        let mut records: Vec<String> = sqlx::query_scalar("select job_id from queued_chunks")
            .fetch_all(db.db.pool())
            .await
            .unwrap();
        records.sort();
        (rows, records)
    };
    let (rows, records) = states().await;
    let mut want: Vec<(String, Option<bool>)> = cases
        .iter()
        .flat_map(|(id, _, _)| {
            let copied = matches!(*id, "overdue" | "lost");
            (0..3).map(move |i| (format!("{id}-{i}"), copied.then_some(true)))
        })
        .collect();
    want.sort();
    assert_eq!(rows, want);
    let mut left = vec![chunks[2].meta.job_id.clone(), chunks[3].meta.job_id.clone()];
    left.sort();
    assert_eq!(
        records, left,
        "the queued and the young chunk's records stay"
    );
    assert_eq!(resync.run_once().await.unwrap(), 0);

    // Every job runs after all: the lost ones find no record and write
    // every row; the others find theirs and leave their rows as they are.
    let applier = services.applier();
    for chunk in &chunks {
        let job = revokd_jobs::Job::RevokeBatch(chunk.clone());
        applier.apply(&job, revokd_jobs::now_unix()).await.unwrap();
    }
    assert!(there(&mut conn, "young-1") && there(&mut conn, "queued-2"));
    let (rows, records) = states().await;
    assert_eq!(rows, want, "the others' rows stay as recorded");
    assert!(records.is_empty(), "{records:?}");
    let audited: Vec<(String, Vec<String>)> = sqlx::query_as(
        "select job_id, token_ids from revocation_audit
         where token_id like 'overdue-%' or 'overdue-0' = any(token_ids)",
    )
    .fetch_all(db.db.pool())
    .await
    .unwrap();
    let overdue = chunks[0].tokens();
    assert_eq!(
        audited,
        [(
            chunks[0].meta.job_id.clone(),
            overdue.iter().map(|t| t.token_id.clone()).collect()
        )],
        "one audit row the chunk, however often written"
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

/// A chunk whose push failed: the API turns its rows pending and deletes
/// its record in one statement, so the resync copies them at once — not as
/// a lost chunk later — and a worker that gets the job after all (the push
/// only seemed to fail) writes every row itself.
#[tokio::test]
async fn a_chunk_whose_push_failed_is_pending_at_once_and_has_no_record() {
    let (db, prefix, guard) = crate::helpers::own_deployment().await;
    let redis = crate::helpers::redis_url();
    let services = services_on(&db, &prefix, &redis);
    let chunk = record_chunk(&db, "unpushed", revokd_jobs::now_unix()).await;
    let ids: Vec<&str> = chunk.items.iter().map(|i| i.token_id.as_str()).collect();
    assert_eq!(
        db.db.mark_pending(&chunk.meta.job_id, &ids).await.unwrap(),
        3
    );
    let records: i64 = sqlx::query_scalar("select count(*) from queued_chunks")
        .fetch_one(db.db.pool())
        .await
        .unwrap();
    assert_eq!(records, 0);
    let pending: i64 =
        sqlx::query_scalar("select count(*) from revoked_tokens where in_redis = false")
            .fetch_one(db.db.pool())
            .await
            .unwrap();
    assert_eq!(pending, 3);
    let resync = services.resync(services.deny_patient.clone());
    assert_eq!(resync.run_once().await.unwrap(), 3, "copied at once");
    let applier = services.applier();
    let job = revokd_jobs::Job::RevokeBatch(chunk.clone());
    applier.apply(&job, revokd_jobs::now_unix()).await.unwrap();
    let in_redis: i64 = sqlx::query_scalar("select count(*) from revoked_tokens where in_redis")
        .fetch_one(db.db.pool())
        .await
        .unwrap();
    assert_eq!(in_redis, 3);
    guard.clean();
}

/// Makes `db`'s own table and index statistics visible to its next query.
async fn flush_stats(db: &revokd::store::pg::Db) {
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("select 1").execute(db.pool()).await.unwrap();
}

/// Sequential scans of `revoked_tokens` and scans of its index of pending
/// rows, as Postgres counts them, once `db`'s own statistics are flushed.
async fn table_scans(db: &revokd::store::pg::Db) -> (i64, i64) {
    flush_stats(db).await;
    sqlx::query_as(
        "select t.seq_scan, i.idx_scan
         from pg_stat_user_tables t, pg_stat_user_indexes i
         where t.relname = 'revoked_tokens' and i.indexrelname = 'revoked_tokens_pending'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// A bulk chunk's rows stay `in_redis` null, so after a bulk revocation the
/// column is mostly null. The lookups of pending rows that run all the
/// time — the resync's (every second) and the overlay's (every 250 ms in
/// every API process) — still read the index of pending rows, never the
/// whole table: `not in_redis` was estimated as true of every null row, and
/// each poll scanned the table (~300 ms at 1.2 M rows). This holds both
/// right after the bulk load, before Postgres has statistics of the new
/// rows (it guesses nulls rare: the overlay's lookup of overdue chunks'
/// rows became a sort of every null row, ~1 s a poll at 600,000 rows,
/// with no chunk overdue), and once it has them.
#[tokio::test]
async fn lookups_of_pending_rows_read_their_index_when_most_rows_came_in_chunks() {
    let db = TestDb::create().await;
    let now = revokd_jobs::now_unix();
    // 20 chunks of 1,000 rows, recorded and then written by their job
    // (which deletes the record and leaves the rows null), two still
    // queued, and one queued for longer than its grace (its job lost).
    for c in 0..20 {
        record_chunk_of(&db, &format!("bulk-{c}"), 1_000, now).await;
    }
    sqlx::query("delete from queued_chunks")
        .execute(db.db.pool())
        .await
        .unwrap();
    for c in 0..2 {
        record_chunk_of(&db, &format!("queued-{c}"), 100, now).await;
    }
    let overdue = now - revokd::store::resync::QUEUED_GRACE_SECS - 5;
    record_chunk_of(&db, "overdue", 3, overdue).await;
    for i in 0..5 {
        let job = revokd_jobs::RevokeToken::new(format!("pending-{i}"), None, now + 600);
        db.db
            .record_revoke(&job, now + 600, now, false)
            .await
            .unwrap();
    }
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("analyze revoked_tokens")
                .execute(db.db.pool())
                .await
                .unwrap();
        }
        // One connection, so that every statement's counts are its own;
        // more runs than Postgres plans a prepared statement for its values
        // (5).
        let one = revokd::store::pg::Db::connect_lazy_sized(&db.url, 1).unwrap();
        let before = table_scans(&one).await;
        let read_before = rows_read(&one, "revoked_tokens").await;
        for _ in 0..8 {
            assert_eq!(one.pending_tokens(100).await.unwrap().len(), 5);
            let listed = one
                .pending_revocations(now, overdue + 5, 10_000)
                .await
                .unwrap();
            assert_eq!(listed.len(), 5 + 3);
        }
        let after = table_scans(&one).await;
        let read = rows_read(&one, "revoked_tokens").await - read_before;
        assert_eq!(
            after.0 - before.0,
            0,
            "no scan of the whole table (analyzed: {analyzed})"
        );
        assert!(
            after.1 - before.1 >= 16,
            "analyzed: {analyzed}: {before:?} → {after:?}"
        );
        // 16 lookups of 5 or 8 rows each: a few hundred index entries at
        // most, not the 20,000 null rows.
        assert!(read < 1_000, "{read} rows read (analyzed: {analyzed})");
    }
}

/// Rows of `table` read so far (by sequential scans, and entries read from
/// any of its indexes), as Postgres counts them once `db`'s own statistics
/// are flushed.
async fn rows_read(db: &revokd::store::pg::Db, table: &str) -> i64 {
    flush_stats(db).await;
    sqlx::query_scalar(
        "select t.seq_tup_read + coalesce((select sum(idx_tup_read)::bigint
                                           from pg_stat_user_indexes i where i.relid = t.relid), 0)
         from pg_stat_user_tables t where t.relname = $1",
    )
    .bind(table)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// The resync's lookups of watermarks and refresh-token rows not yet in
/// Redis (every second) read their indexes of pending rows, also right
/// after a mass revocation filled a table, before Postgres has statistics
/// of it: with a bare `limit`, the planner guessed a scan of the table would
/// find the rows at once and read all 20,000 to find 3.
#[tokio::test]
async fn lookups_of_pending_marks_and_refresh_rows_read_their_index_after_a_mass_write() {
    let db = TestDb::create().await;
    // 20,000 rows in Redis and 3 pending in each table.
    let tables = [
        (
            "subject_watermarks",
            "subject, not_before, in_redis, updated_at",
            "1, in_redis, 1",
        ),
        (
            "issuer_watermarks",
            "issuer, not_before, in_redis, updated_at",
            "1, in_redis, 1",
        ),
        (
            "refresh_families",
            "family_id, expires_at, in_redis",
            "4102444800, in_redis",
        ),
        (
            "refresh_tokens",
            "token_id, family_id, expires_at, state, registered_at, in_redis",
            "'family', 4102444800, 0, 1, in_redis",
        ),
    ];
    for (table, columns, values) in tables {
        let fill = format!(
            "insert into {table} ({columns})
             select 'row-' || i, {values} from generate_series(1, 20003) i,
                  lateral (select i <= 20000 as in_redis) r"
        );
        sqlx::query(sqlx::AssertSqlSafe(fill))
            .execute(db.db.pool())
            .await
            .unwrap();
    }
    let one = revokd::store::pg::Db::connect_lazy_sized(&db.url, 1).unwrap();
    let mut before = Vec::new();
    for (table, ..) in tables {
        before.push(rows_read(&one, table).await);
    }
    for _ in 0..8 {
        assert_eq!(one.pending_watermarks(100).await.unwrap().len(), 3);
        let issuers = one
            .pending_of(revokd::store::Scope::Issuer, 100)
            .await
            .unwrap();
        assert_eq!(issuers.len(), 3);
        assert_eq!(one.pending_families(100).await.unwrap().len(), 3);
        assert_eq!(one.pending_refresh(100).await.unwrap().len(), 3);
    }
    for ((table, ..), before) in tables.into_iter().zip(before) {
        // 8 lookups of 3 rows (the refresh rows' families by key).
        let read = rows_read(&one, table).await - before;
        assert!(read < 1_000, "{table}: {read} rows read");
    }
}

/// A token in two chunks whose jobs are both overdue (a batch posted twice
/// gets new job ids) is listed once: duplicates would count toward the
/// overlay's limit and overflow it early.
#[tokio::test]
async fn a_token_in_two_overdue_chunks_is_listed_once() {
    let db = TestDb::create().await;
    let now = revokd_jobs::now_unix();
    let old = now - revokd::store::resync::QUEUED_GRACE_SECS - 5;
    record_chunk_of(&db, "twice", 2, old).await;
    record_chunk_of(&db, "twice", 2, old).await;
    let listed = db
        .db
        .pending_revocations(now, now - revokd::store::resync::QUEUED_GRACE_SECS, 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["twice-0", "twice-1"]);
}
