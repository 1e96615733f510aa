//! Waiting on a condition with a deadline, instead of sleeping: the probe
//! loop, a current replica, revocations in both stores.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use revokd::{read::replica::Replica, store::pg::Db};

use crate::{app::TestApp, db::TestDb};

/// Waits until `probe` returns true or the deadline passes.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The app's replica, once its follower has loaded it and proven it current.
pub async fn current_replica(app: &TestApp) -> Arc<Replica> {
    let replica = Arc::clone(app.services.replica.as_ref().expect("read mode replica"));
    wait_current(&replica).await;
    replica
}

/// Waits until `replica` may answer.
pub async fn wait_current(replica: &Arc<Replica>) {
    let r = Arc::clone(replica);
    eventually(Duration::from_secs(10), "replica current", move || {
        let fresh = r.is_fresh();
        async move { fresh }
    })
    .await;
}

/// The audit's store half: every id has its row in Postgres and its key in
/// Redis (waiting up to 10 s for the resync).
pub async fn in_both_stores(db: &TestDb, redis: &str, prefix: &str, ids: &[String]) {
    in_both_stores_at(&db.db, redis, prefix, ids).await;
}

/// [`in_both_stores`] with the Postgres record at `db` (a promoted
/// standby, say).
pub async fn in_both_stores_at(db: &Db, redis: &str, prefix: &str, ids: &[String]) {
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    for id in ids {
        let row = db.revoked_token(id).await.unwrap();
        assert!(row.is_some(), "{id} not in postgres");
        let key = format!("{prefix}jti:{id}");
        eventually(Duration::from_secs(10), "in redis", || {
            let there: bool = redis::Commands::exists(&mut conn, &key).unwrap();
            async move { there }
        })
        .await;
    }
}
