//! Group commit of revocations into Postgres.
//!
//! Every revoke job a worker runs hands its row to one batching task, which
//! writes whatever has gathered meanwhile in one statement and one commit
//! ([`Db::apply_revokes`]) and then answers each job. A job still completes
//! only once its own row is committed, so delivery stays at-least-once; what
//! changes is that a backlog costs Postgres one transaction per batch instead
//! of one per job.
//!
//! When Postgres refuses a batch (or it takes over 10 s), its rows are applied
//! one by one (concurrently), so one row that cannot be written fails alone
//! with its own error, which decides whether its job is set aside;
//! when Postgres cannot be reached, every job of the batch fails at once, to
//! be retried like any other.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use revokd_jobs::RevokeToken;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::pg::{Db, RevokeRow};

/// Largest number of rows written in one statement.
const MAX_BATCH: usize = 512;
/// Rows that may wait for the batching task before senders wait too.
const QUEUE: usize = 4 * MAX_BATCH;
/// Batches written at the same time.
const IN_FLIGHT: usize = 4;
/// Longest a batch may take before its rows are written one by one.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

type Reply = oneshot::Sender<sqlx::Result<Option<String>>>;

struct Pending {
    job: RevokeToken,
    expires_at: i64,
    now: i64,
    reply: Reply,
}

/// Hands revocations to the batching task (started on first use, so that
/// building a worker needs no runtime). Cheap to clone.
#[derive(Clone)]
pub struct RevokeBatcher {
    db: Db,
    in_redis: bool,
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

impl RevokeBatcher {
    /// A batcher writing to `db`, for a worker: rows are marked as in Redis
    /// (the worker wrote Redis first).
    pub fn new(db: Db) -> Self {
        Self {
            db,
            in_redis: true,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// A batcher for the write path: rows are recorded as pending for Redis.
    pub fn pending(db: Db) -> Self {
        Self {
            in_redis: false,
            ..Self::new(db)
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
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.db.clone(), self.in_redis, rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            job: job.clone(),
            expires_at,
            now,
            reply,
        };
        if queue.send(pending).await.is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The batching task is gone (runtime shutting down): write directly.
        self.db
            .record_revoke(job, expires_at, now, self.in_redis)
            .await
    }
}

/// The batching task: once a write slot is free, waits for a row, takes
/// every row queued behind it (up to [`MAX_BATCH`]) and writes them in the
/// background; repeats until every sender is gone. Up to [`IN_FLIGHT`]
/// batches are written at once, so one slow batch (a row lock held
/// elsewhere) does not hold up the others.
async fn run(db: Db, in_redis: bool, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let db = db.clone();
        tokio::spawn(async move {
            write(&db, in_redis, batch).await;
            drop(slot);
        });
    }
}

async fn write(db: &Db, in_redis: bool, batch: Vec<Pending>) {
    if batch.len() > 1 {
        let rows: Vec<RevokeRow<'_>> = batch
            .iter()
            .map(|p| RevokeRow {
                in_redis,
                ..RevokeRow::of(&p.job, p.expires_at, p.now)
            })
            .collect();
        match tokio::time::timeout(BATCH_TIMEOUT, db.apply_revokes(&rows)).await {
            Ok(Ok(families)) if families.len() == batch.len() => {
                for (pending, family) in batch.into_iter().zip(families) {
                    let _ = pending.reply.send(Ok(family));
                }
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
                for pending in batch {
                    let _ = pending.reply.send(Err(same_failure(&error)));
                }
                return;
            }
            Err(_) => tracing::warn!(
                rows = batch.len(),
                timeout = ?BATCH_TIMEOUT,
                "batched revocations too slow; writing them one by one"
            ),
        }
    }
    let one_by_one = batch.into_iter().map(|p| async move {
        let result = db
            .record_revoke(&p.job, p.expires_at, p.now, in_redis)
            .await;
        let _ = p.reply.send(result);
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
