//! The write path shared by the HTTP API and the CLI.
//!
//! A revocation is made durable before anything is answered: recorded in
//! Postgres as pending for Redis (`in_redis = false`), or — Postgres
//! unreachable — appended to the local [`Spool`]. Only then is it pushed to
//! the queue, whose worker writes it into Redis (and marks the row as there,
//! or for a bulk chunk deletes the chunk's record);
//! the queue alone is not durable (Redis may restart empty). Not queued
//! (Redis down or refusing writes), it is still enforced: by this process at
//! once, by every API process through Postgres's pending rows (see
//! [`crate::read::pending`]), and copied into Redis by the resync once Redis takes
//! writes. Neither Postgres nor the spool taking it: refused (503).

use std::{sync::Arc, time::Duration};

use revokd_jobs::{Job, Producer, RevokeBatch, RevokeSubject, RevokeToken, now_unix};
use tokio::time::Instant;

use crate::{
    instruments::PROPAGATION,
    read::checker::Checker,
    store::pg::{RevokeRow, batch::RevokeBatcher},
    store::{TtlPolicy, pg::Db, redis::DenyGroup},
    write::completion::{Completion, Completions, Outcome, TooManyWaiters},
    write::spool::Spool,
    write::validate::{self, InputError},
};

/// Longest the write path waits for Postgres before spooling.
const PG_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What became of a submitted job (every variant but `TimedOut` is a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Durable and in the queue; a worker applies it within milliseconds.
    Queued,
    /// Applied to both stores (the caller waited).
    Applied,
    /// Durable and queued, but not applied within the wait timeout.
    TimedOut,
    /// Queue unreachable: recorded in Postgres only; enforced through
    /// Postgres, copied into Redis once it takes writes.
    Degraded,
    /// Postgres and the queue unreachable: only the local spool holds it;
    /// this process enforces it, Postgres and Redis get it when they return.
    Spooled,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// It could be made durable nowhere.
    #[error("neither Postgres nor the local spool can record the revocation")]
    Unavailable,
    /// A field cannot be stored: nothing was recorded.
    #[error(transparent)]
    Invalid(#[from] InputError),
    /// Postgres refused its content (it can never be stored).
    #[error("the revocation cannot be stored: {0}")]
    Rejected(String),
    /// A wait was asked for while `REVOKD_MAX_WAITERS` requests wait:
    /// nothing was recorded, the caller may retry.
    #[error(transparent)]
    TooManyWaiters(#[from] TooManyWaiters),
}

/// Where a job was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    Postgres,
    Spool,
}

/// Submits revocations.
pub struct Submitter {
    /// Queue client.
    pub producer: Producer,
    /// Owner of the breakers and the pending overlay, shared with the read path.
    pub checker: Arc<Checker>,
    /// Postgres, the durable record.
    pub db: Db,
    /// Group commit of revocations recorded as pending (one transaction for
    /// the requests that arrive while the previous one commits).
    pub revokes: RevokeBatcher,
    /// Where revocations go while Postgres is unreachable.
    pub spool: Arc<Spool>,
    /// The process's completion subscriber (`?wait=true`), with its bound.
    pub completions: Completions,
    /// How long a waiter waits.
    pub wait_timeout: Duration,
    /// Maximum token lifetime in seconds.
    pub ttl: TtlPolicy,
    /// The deny-list, for writing single revocations ahead of their job.
    pub denies: DenyGroup,
}

impl Submitter {
    /// Submits a revocation of one token.
    pub async fn revoke(&self, job: RevokeToken, wait: bool) -> Result<Submitted, SubmitError> {
        self.submit(Job::Revoke(job), wait).await
    }

    /// Submits a chunk of a bulk revocation (at most
    /// [`revokd_jobs::MAX_BATCH_ITEMS`] items): recorded in Postgres in one
    /// statement, queued as one job, degraded as a single revocation is.
    pub async fn revoke_batch(
        &self,
        job: RevokeBatch,
        wait: bool,
    ) -> Result<Submitted, SubmitError> {
        self.submit(Job::RevokeBatch(job), wait).await
    }

    /// Submits any job (refresh-token registrations and family revocations).
    pub async fn job(&self, job: Job, wait: bool) -> Result<Submitted, SubmitError> {
        self.submit(job, wait).await
    }

    /// Submits a revoke-all of a subject.
    pub async fn revoke_all(
        &self,
        job: RevokeSubject,
        wait: bool,
    ) -> Result<Submitted, SubmitError> {
        self.submit(Job::RevokeAll(job), wait).await
    }

    async fn submit(&self, job: Job, wait: bool) -> Result<Submitted, SubmitError> {
        let job = validate::request(&job)?;
        tracing::debug!(target: PROPAGATION, job_id = job.job_id(), "received");
        // Admitted before anything is recorded: a refused wait leaves no trace.
        let _place = wait.then(|| self.completions.admit()).transpose()?;
        // A chunk about to be pushed is recorded as queued, not pending.
        let queued = self.checker.redis_health().is_up();
        let durable = self.make_durable(&job, queued).await?;
        tracing::debug!(target: PROPAGATION, job_id = job.job_id(), ?durable, "recorded");
        // A single revocation recorded in Postgres: this process refuses it
        // from now on (read-your-writes), and it is written ahead into Redis
        // below, so the others refuse it once their replica has read it.
        // Not a bulk chunk's items: the queue brings those everywhere alike.
        let single = durable == Durable::Postgres
            && matches!(
                job,
                Job::Revoke(_) | Job::RevokeAll(_) | Job::RevokeIssuer(_)
            );
        if single {
            self.checker.pending().add_accepted(&job, self.ttl);
        }
        if self.checker.redis_health().is_up() {
            if single {
                self.write_ahead(&job);
            }
            match self.push(&job, wait).await {
                Ok(submitted) => {
                    if durable == Durable::Spool {
                        // Until the spool is replayed, Postgres lacks it.
                        self.checker.pending().add_local(&job, false, self.ttl);
                    }
                    return Ok(submitted);
                }
                Err(error) => {
                    tracing::warn!(job_id = job.job_id(), %error, "queue refused the job; enforcing it from postgres until redis takes writes");
                    self.checker.redis_failed();
                }
            }
        }
        let durable = if queued {
            self.unqueue(&job, durable).await
        } else {
            durable
        };
        let in_postgres = durable == Durable::Postgres;
        self.checker
            .pending()
            .add_local(&job, in_postgres, self.ttl);
        crate::instruments::write_degraded(if in_postgres { "postgres" } else { "spool" });
        Ok(if in_postgres {
            Submitted::Degraded
        } else {
            Submitted::Spooled
        })
    }

    /// Records `job` in Postgres as pending for Redis (a chunk as queued
    /// when `queued`), or in the spool.
    async fn make_durable(&self, job: &Job, queued: bool) -> Result<Durable, SubmitError> {
        if self.checker.pg_health().is_up() {
            let recording = Recording {
                revokes: Some(&self.revokes),
                queued,
            };
            let write = record_pending(&self.db, recording, job, now_unix(), self.ttl);
            match tokio::time::timeout(PG_WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => return Ok(Durable::Postgres),
                Ok(Err(error)) if is_permanent(&error) => {
                    tracing::warn!(job_id = job.job_id(), %error, "postgres refused the revocation's content");
                    return Err(SubmitError::Rejected(short(&error)));
                }
                Ok(Err(error)) => {
                    tracing::warn!(job_id = job.job_id(), %error, "postgres unreachable; spooling the revocation");
                    self.checker.postgres_failed();
                }
                Err(_) => {
                    tracing::warn!(
                        job_id = job.job_id(),
                        "postgres too slow; spooling the revocation"
                    );
                    self.checker.postgres_failed();
                }
            }
        }
        self.spool(job).await.map(|()| Durable::Spool)
    }

    /// Writes a single revocation into Redis as its worker will, while its
    /// job is pushed: a worker busy with a backlog (a bulk revocation's
    /// chunks ahead of it in the queue) no longer delays it for the other
    /// API processes. Only once Postgres holds it, as the worker's own
    /// write: a replica loaded from Postgres has it either way. In a task
    /// of its own, which the answer does not wait for (awaited, it cost
    /// every POST a round trip: +0.3 ms idle). Best effort: failing, its
    /// job (or the resync) writes it; Redis refusing the write (`OOM`,
    /// `READONLY`, …) opens the breaker, as a refused push does.
    fn write_ahead(&self, job: &Job) {
        let (denies, checker, ttl) = (self.denies.clone(), Arc::clone(&self.checker), self.ttl);
        let job = job.clone();
        tokio::spawn(async move {
            match denies.write_revocation(&job, &ttl, now_unix()).await {
                Ok(true) => {
                    tracing::debug!(target: PROPAGATION, job_id = job.job_id(), "written ahead");
                }
                // An expired token, which needs no entry.
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(job_id = job.job_id(), %error, "not written ahead into redis");
                    if error.code().is_some() {
                        checker.redis_failed();
                    }
                }
            }
        });
    }

    async fn spool(&self, job: &Job) -> Result<(), SubmitError> {
        let (spool, owned) = (Arc::clone(&self.spool), job.clone());
        match tokio::task::spawn_blocking(move || spool.append(&owned)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(job_id = job.job_id(), %error, dir = %self.spool.dir().display(), "revocation refused: postgres unreachable and the spool cannot be written");
                Err(SubmitError::Unavailable)
            }
            Err(_) => Err(SubmitError::Unavailable),
        }
    }

    /// A chunk recorded as queued whose job was not pushed: its rows turn
    /// pending, so that the overlay of every process lists them and the
    /// resync copies them. Postgres refusing that, the spool holds the job
    /// too (its replay records the rows as pending); failing both, the
    /// resync still copies the chunk's rows once it finds the queue does not
    /// hold its job (15 s after the record, see [`crate::store::resync`]).
    async fn unqueue(&self, job: &Job, durable: Durable) -> Durable {
        let (Job::RevokeBatch(chunk), Durable::Postgres) = (job, durable) else {
            return durable;
        };
        let ids: Vec<&str> = chunk.items.iter().map(|i| i.token_id.as_str()).collect();
        match tokio::time::timeout(
            PG_WRITE_TIMEOUT,
            self.db.mark_pending(&chunk.meta.job_id, &ids),
        )
        .await
        {
            Ok(Ok(_)) => Durable::Postgres,
            failed => {
                if let Ok(Err(error)) = failed {
                    tracing::warn!(job_id = job.job_id(), %error, "cannot mark the chunk's rows pending; spooling it too");
                }
                match self.spool(job).await {
                    Ok(()) => Durable::Spool,
                    Err(_) => Durable::Postgres,
                }
            }
        }
    }

    async fn push(&self, job: &Job, wait: bool) -> anyhow::Result<Submitted> {
        let job_id = job.job_id().unwrap_or_default();
        // Subscribe before pushing, so the completion cannot be missed.
        let waiter = match wait {
            true => Some(self.completions.subscribe(job_id).await?),
            false => None,
        };
        match job {
            // Under the task id its job id gives, so that the resync can
            // tell a chunk whose job the queue lost (see `store::resync`).
            Job::RevokeBatch(_) => self.producer.push_as_job_task(job).await?,
            _ => self.producer.push(job).await?,
        };
        tracing::debug!(target: PROPAGATION, job_id, "queued and wake published");
        let Some(waiter) = waiter else {
            return Ok(Submitted::Queued);
        };
        if !self.wait_applied(job, waiter).await {
            return Ok(Submitted::TimedOut);
        }
        // "Visible to checks" includes this process's replica.
        if let Some(replica) = self.checker.replica() {
            replica
                .wait_current_since(Instant::now(), Duration::from_secs(1))
                .await;
        }
        Ok(Submitted::Applied)
    }

    /// Waits until `job` is applied or the wait timeout passes. A dropped
    /// subscription (Redis restarting) is not a timeout: it is renewed, and
    /// Postgres tells whether the job was applied meanwhile.
    async fn wait_applied(&self, job: &Job, waiter: Completion) -> bool {
        let deadline = Instant::now() + self.wait_timeout;
        let job_id = job.job_id().unwrap_or_default();
        let mut waiter = Some(waiter);
        loop {
            if let Some(w) = waiter.take() {
                match w.wait_until(deadline).await {
                    Outcome::Applied => return true,
                    Outcome::TimedOut => return self.applied(job).await,
                    Outcome::Dropped => {}
                }
            }
            if Instant::now() >= deadline {
                return self.applied(job).await;
            }
            tokio::time::sleep_until((Instant::now() + Duration::from_millis(100)).min(deadline))
                .await;
            // Subscribe first, then look: an application in between is seen
            // by one or the other.
            waiter = self.completions.subscribe(job_id).await.ok();
            if self.applied(job).await {
                return true;
            }
        }
    }

    async fn applied(&self, job: &Job) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), self.db.applied(job)).await,
            Ok(Ok(true))
        )
    }
}

impl crate::read::refresh::RecordJob for Submitter {
    fn record(&self, job: Job) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.job(job, false)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// Whether Postgres refused the content itself (asking again cannot help).
fn is_permanent(error: &sqlx::Error) -> bool {
    crate::store::error::refused_by_postgres(error).is_some()
}

fn short(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => e.message().to_owned(),
        other => other.to_string(),
    }
}

/// How [`record_pending`] records.
#[derive(Clone, Copy, Default)]
pub struct Recording<'a> {
    /// The group commit single revocations go through, if any.
    pub revokes: Option<&'a RevokeBatcher>,
    /// The job is about to be pushed: a chunk's rows are recorded as queued
    /// (`in_redis` null, with a record of the chunk), which neither the
    /// overlay nor the resync reads while its job is in the queue (for a
    /// minute at most; see [`crate::store::resync`]).
    pub queued: bool,
}

/// Records `job` in Postgres as pending for Redis (`in_redis = false`; a
/// chunk as queued when `recording.queued`), through the group commit when
/// given; a refresh token takes its family with it. Idempotent: the spool
/// replays through it too.
pub async fn record_pending(
    db: &Db,
    recording: Recording<'_>,
    job: &Job,
    now: i64,
    ttl: TtlPolicy,
) -> sqlx::Result<()> {
    // A family's members are revoked as tokens too, pending like the rest,
    // so every check (with the refresh hint or not) refuses them.
    let family = |family: String, reason: String, job_id: String, by: String, at: i64| async move {
        let until = now.saturating_add(ttl.max_lifetime);
        let members = db
            .revoke_family(&family, &reason, &job_id, &by, at, until, now, false)
            .await?;
        db.revoke_members(&members, &reason, &by, at, false).await
    };
    // A revoked refresh token takes its family, audited as `{job_id}:family`.
    let family_of = |j: &RevokeToken, id: String| {
        let job_id = format!("{}:family", j.meta.job_id);
        let (by, at) = (j.meta.requested_by.clone(), j.meta.requested_at);
        family(id, "revoked".into(), job_id, by, at)
    };
    match job {
        Job::Revoke(j) => {
            let expires_at = ttl.capped_expiry(j);
            let family_id = match recording.revokes {
                Some(batcher) => batcher.apply_revoke(j, expires_at, now).await?,
                None => db.record_revoke(j, expires_at, now, false).await?,
            };
            match family_id {
                Some(id) => family_of(j, id).await,
                None => Ok(()),
            }
        }
        Job::RevokeBatch(j) => {
            // One statement for the whole chunk, not the group commit: the
            // chunk is a batch already.
            let tokens = j.tokens();
            let expiries: Vec<i64> = tokens.iter().map(|t| ttl.capped_expiry(t)).collect();
            let rows: Vec<RevokeRow<'_>> = tokens
                .iter()
                .zip(&expiries)
                .map(|(t, exp)| RevokeRow {
                    in_redis: (!recording.queued).then_some(false),
                    ..RevokeRow::of(t, *exp, now)
                })
                .collect();
            let families = db
                .record_chunk(&j.meta.job_id, &rows, now, recording.queued)
                .await?;
            for (t, id) in tokens.iter().zip(families) {
                if let Some(id) = id {
                    family_of(t, id).await?;
                }
            }
            Ok(())
        }
        Job::RevokeAll(j) => db.record_revoke_all(j, now, false).await,
        Job::RevokeIssuer(j) => db.record_revoke_issuer(j, now, false).await,
        Job::RegisterRefresh(j) => db.register_refresh(j, now, false).await.map(|_| ()),
        Job::RevokeFamily(j) => {
            let reason = j.reason.clone().unwrap_or_else(|| "revoked".into());
            let (id, by) = (j.meta.job_id.clone(), j.meta.requested_by.clone());
            family(j.family_id.clone(), reason, id, by, j.meta.requested_at).await
        }
        // Maintenance is not a revocation: nothing to record.
        Job::Cleanup(_) | Job::Unknown => Ok(()),
    }
}

/// Replays the spool into Postgres once; a job Postgres can never store is
/// logged and skipped so it cannot block the rest. Tells `checker`'s
/// overlay which local entries Postgres now holds.
pub async fn replay_spool(
    spool: &Spool,
    db: &Db,
    checker: Option<&Checker>,
    ttl: TtlPolicy,
) -> sqlx::Result<crate::write::spool::Replayed> {
    let started_ms = revokd_jobs::now_unix_ms();
    let replayed = spool
        .replay(|job| async move {
            match record_pending(db, Recording::default(), &job, now_unix(), ttl).await {
                Err(error) if is_permanent(&error) => {
                    tracing::error!(job_id = job.job_id(), %error, "spooled job Postgres can never store; skipped");
                    Ok(())
                }
                other => other,
            }
        })
        .await?;
    if let Some(checker) = checker {
        checker.pending().spool_replayed(started_ms);
    }
    if replayed.jobs > 0 {
        tracing::info!(
            jobs = replayed.jobs,
            files = replayed.files,
            "spooled revocations recorded in postgres"
        );
    }
    Ok(replayed)
}

/// Replays the spool every second until `stop` fires.
pub async fn keep_replaying(
    spool: Arc<Spool>,
    db: Db,
    checker: Option<Arc<Checker>>,
    ttl: TtlPolicy,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(error) = replay_spool(&spool, &db, checker.as_deref(), ttl).await {
            tracing::debug!(%error, "spool replay failed; will retry");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}
