//! The resync pass, which copies pending Postgres rows into Redis: it ends
//! under write load and pages through what is pending.

use std::time::Duration;

use redis::Commands;

use crate::helpers::{TestDb, eventually, unique_prefix};

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
