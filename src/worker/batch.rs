//! Group commit of revocations into Postgres.
//!
//! Every revoke job a worker runs hands its row to one batching task, which
//! writes whatever has gathered meanwhile in one statement and one commit
//! ([`Db::apply_revokes`]) and then answers each job. A job still completes
//! only once its own row is committed, so delivery stays at-least-once; what
//! changes is that a backlog costs Postgres one transaction per batch instead
//! of one per job.
//!
//! When a batch fails, its rows are applied one by one (concurrently), so each
//! job gets its own answer: one row that cannot be written fails alone, and an
//! outage fails every job with its own error, to be retried like any other.

use std::sync::{Arc, OnceLock};

use revokd_jobs::RevokeToken;
use tokio::sync::{mpsc, oneshot};

use crate::store::pg::{Db, RevokeRow};

/// Largest number of rows written in one statement.
const MAX_BATCH: usize = 512;
/// Rows that may wait for the batching task before senders wait too.
const QUEUE: usize = 4 * MAX_BATCH;

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
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

impl RevokeBatcher {
    /// A batcher writing to `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            queue: Arc::new(OnceLock::new()),
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
            tokio::spawn(run(self.db.clone(), rx));
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
        self.db.apply_revoke(job, expires_at, now).await
    }
}

/// The batching task: waits for a row, takes every row queued behind it (up
/// to [`MAX_BATCH`]), writes them, answers, repeats until every sender is gone.
async fn run(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&db, std::mem::take(&mut batch)).await;
        batch.reserve(MAX_BATCH);
    }
}

async fn write(db: &Db, batch: Vec<Pending>) {
    if batch.len() > 1 {
        let rows: Vec<RevokeRow<'_>> = batch
            .iter()
            .map(|p| RevokeRow::of(&p.job, p.expires_at, p.now))
            .collect();
        match db.apply_revokes(&rows).await {
            Ok(families) if families.len() == batch.len() => {
                for (pending, family) in batch.into_iter().zip(families) {
                    let _ = pending.reply.send(Ok(family));
                }
                return;
            }
            Ok(families) => tracing::warn!(
                rows = batch.len(),
                answers = families.len(),
                "batched revocations answered for the wrong number of rows; writing them one by one"
            ),
            Err(error) => tracing::debug!(
                %error,
                rows = batch.len(),
                "batched revocations failed; writing them one by one"
            ),
        }
    }
    let one_by_one = batch.into_iter().map(|p| async move {
        let result = db.apply_revoke(&p.job, p.expires_at, p.now).await;
        let _ = p.reply.send(result);
    });
    futures::future::join_all(one_by_one).await;
}
