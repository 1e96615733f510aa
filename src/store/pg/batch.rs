//! Group commit of revocations into Postgres.
//!
//! Every revoke job a worker runs hands its row to one batching task (a
//! [`Group`]), which writes whatever has gathered meanwhile in one statement
//! and one commit ([`Db::apply_revokes`]) and then answers each job. A job
//! still completes only once its own row is committed, so delivery stays
//! at-least-once; what changes is that a backlog costs Postgres one
//! transaction per batch instead of one per job.
//!
//! When Postgres refuses a batch (or it takes over 10 s), its rows are applied
//! one by one (concurrently), so one row that cannot be written fails alone
//! with its own error, which decides whether its job is set aside;
//! when Postgres cannot be reached, every job of the batch fails at once, to
//! be retried like any other.

use std::time::Duration;

use revokd_jobs::RevokeToken;

use crate::store::{
    group::{Group, Queued},
    pg::{Db, RevokeRow},
};

/// Largest number of rows written in one statement.
const MAX_BATCH: usize = 512;
/// Batches written at the same time.
const IN_FLIGHT: usize = 4;
/// Longest a batch may take before its rows are written one by one.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a job is answered: its token's refresh family, if any.
type Answer = sqlx::Result<Option<String>>;

/// One job's revocation, as handed to the batch.
struct Pending {
    job: RevokeToken,
    expires_at: i64,
    now: i64,
}

/// Hands revocations to the batching task (a [`Group`]). Cheap to clone.
#[derive(Clone)]
pub struct RevokeBatcher {
    db: Db,
    in_redis: bool,
    group: Group<Pending, Answer>,
}

impl RevokeBatcher {
    /// A batcher writing to `db`, for a worker: rows are marked as in Redis
    /// (the worker wrote Redis first).
    pub fn new(db: Db) -> Self {
        Self::marking(db, true)
    }

    /// A batcher for the write path: rows are recorded as pending for Redis.
    pub fn pending(db: Db) -> Self {
        Self::marking(db, false)
    }

    fn marking(db: Db, in_redis: bool) -> Self {
        let writer = db.clone();
        let group = Group::new(MAX_BATCH, IN_FLIGHT, move |batch| {
            let db = writer.clone();
            async move { write(&db, in_redis, batch).await }
        });
        Self {
            db,
            in_redis,
            group,
        }
    }

    /// [`Db::apply_revoke`] of one job, committed together with the jobs
    /// that arrive while the previous batch is being written.
    pub async fn apply_revoke(
        &self,
        job: &RevokeToken,
        expires_at: i64,
        now: i64,
    ) -> sqlx::Result<Option<String>> {
        let pending = Pending {
            job: job.clone(),
            expires_at,
            now,
        };
        if let Some(result) = self.group.submit(pending).await {
            return result;
        }
        // The batching task is gone (runtime shutting down): write directly.
        self.db
            .record_revoke(job, expires_at, now, self.in_redis)
            .await
    }
}

/// Writes a batch and answers each of its jobs.
async fn write(db: &Db, in_redis: bool, batch: Vec<Queued<Pending, Answer>>) {
    if batch.len() > 1 {
        let rows: Vec<RevokeRow<'_>> = batch
            .iter()
            .map(|q| RevokeRow {
                in_redis: Some(in_redis),
                ..RevokeRow::of(&q.item.job, q.item.expires_at, q.item.now)
            })
            .collect();
        match tokio::time::timeout(BATCH_TIMEOUT, db.apply_revokes(&rows)).await {
            Ok(Ok(families)) if families.len() == batch.len() => {
                batch
                    .into_iter()
                    .zip(families)
                    .for_each(|(q, family)| q.answer(Ok(family)));
                return;
            }
            Ok(Ok(families)) => tracing::warn!(
                rows = batch.len(),
                answers = families.len(),
                "batched revocations answered for the wrong number of rows; writing them one by one"
            ),
            // Postgres refused a row (or a value could not be encoded or
            // decoded): write them one by one, so only that row's job fails,
            // with its own error, and is set aside (see `crate::worker::failure`).
            Ok(Err(error)) if refused(&error) => tracing::warn!(
                %error,
                rows = batch.len(),
                "batched revocations refused; writing them one by one"
            ),
            // Postgres unreachable: every row fails the same way, and each
            // job retries (and logs) on its own.
            Ok(Err(error)) => {
                tracing::debug!(%error, rows = batch.len(), "batched revocations failed");
                batch
                    .into_iter()
                    .for_each(|q| q.answer(Err(same_failure(&error))));
                return;
            }
            Err(_) => tracing::warn!(
                rows = batch.len(),
                timeout = ?BATCH_TIMEOUT,
                "batched revocations too slow; writing them one by one"
            ),
        }
    }
    // Each job is answered as soon as its own row is written: one waiting on
    // a lock holds up no other.
    let one_by_one = batch.into_iter().map(|q| async move {
        let p = &q.item;
        let result = db
            .record_revoke(&p.job, p.expires_at, p.now, in_redis)
            .await;
        q.answer(result);
    });
    futures::future::join_all(one_by_one).await;
}

/// Whether a failed batch says something about its rows rather than about
/// reaching Postgres.
fn refused(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(_))
        || crate::store::error::refused_by_postgres(error).is_some()
}

/// An error like `error` for each job of a failed batch (`sqlx::Error` is
/// not `Clone`).
fn same_failure(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
    }
}
