//! The write path shared by the HTTP API and the CLI: push the job to the
//! queue (optionally waiting until it is applied); when the queue (Redis) is
//! unreachable, write the revocation to Postgres directly, marked for the
//! resync to Redis. An accepted revocation is never lost.

use std::{sync::Arc, time::Duration};

use revokd_jobs::{Job, Producer, RevokeSubject, RevokeToken, now_unix};

use crate::{
    check::Checker, completion::Completion, replica::Replica, store::pg::Db,
    worker::apply::capped_expiry,
};

/// What became of a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// In the queue; a worker applies it within milliseconds.
    Queued,
    /// Applied to both stores (the caller waited).
    Applied,
    /// In the queue but not applied within the wait timeout.
    TimedOut,
    /// Queue unreachable: written to Postgres directly; checks see it through
    /// the Postgres fallback, Redis gets it when it is back.
    Degraded,
}

/// Neither the queue nor Postgres took the job.
#[derive(Debug, thiserror::Error)]
#[error("neither the queue (Redis) nor Postgres is reachable")]
pub struct Unavailable;

/// Submits revocations.
pub struct Submitter {
    /// Queue client.
    pub producer: Producer,
    /// Owner of Redis's breaker, shared with the read path.
    pub checker: Arc<Checker>,
    /// Postgres, for the degraded path.
    pub db: Db,
    /// For completion subscriptions.
    pub redis_url: String,
    /// Key prefix.
    pub prefix: String,
    /// How long a waiter waits.
    pub wait_timeout: Duration,
    /// Maximum token lifetime in seconds.
    pub max_lifetime: i64,
}

impl Submitter {
    /// Submits a revocation of one token.
    pub async fn revoke(&self, job: RevokeToken, wait: bool) -> Result<Submitted, Unavailable> {
        self.submit(Job::Revoke(job), wait).await
    }

    /// Submits any job (refresh-token registrations and family revocations).
    pub async fn job(&self, job: Job, wait: bool) -> Result<Submitted, Unavailable> {
        self.submit(job, wait).await
    }

    /// Submits a revoke-all of a subject.
    pub async fn revoke_all(
        &self,
        job: RevokeSubject,
        wait: bool,
    ) -> Result<Submitted, Unavailable> {
        self.submit(Job::RevokeAll(job), wait).await
    }

    async fn submit(&self, job: Job, wait: bool) -> Result<Submitted, Unavailable> {
        if self.checker.redis_health().is_up() {
            match self.push(&job, wait).await {
                Ok(submitted) => return Ok(submitted),
                Err(error) => {
                    tracing::warn!(job_id = job.job_id(), %error, "queue unreachable; writing to postgres directly");
                    self.checker.redis_failed();
                }
            }
        }
        self.write_direct(&job).await
    }

    async fn push(&self, job: &Job, wait: bool) -> anyhow::Result<Submitted> {
        let job_id = job.job_id().unwrap_or_default();
        // Subscribe before pushing, so the completion cannot be missed.
        let waiter = match wait {
            true => Some(Completion::subscribe(&self.redis_url, &self.prefix, job_id).await?),
            false => None,
        };
        self.producer.push(job).await?;
        let Some(waiter) = waiter else {
            return Ok(Submitted::Queued);
        };
        if !waiter.wait(self.wait_timeout).await {
            return Ok(Submitted::TimedOut);
        }
        // "Visible to checks" includes this process's replica.
        if let Some(replica) = self.checker.replica() {
            replica
                .wait_current_since(Replica::now_ms(), Duration::from_secs(1))
                .await;
        }
        Ok(Submitted::Applied)
    }

    /// A revocation straight into Postgres; a refresh token takes its family
    /// with it.
    async fn revoke_direct(&self, job: &RevokeToken, now: i64) -> sqlx::Result<()> {
        let expires_at = capped_expiry(job, self.max_lifetime);
        if let Some(family) = self.db.record_revoke(job, expires_at, now, false).await? {
            let job_id = format!("{}:family", job.job_id);
            let until = now.saturating_add(self.max_lifetime);
            let by = &job.requested_by;
            self.db
                .revoke_family(
                    &family,
                    "revoked",
                    &job_id,
                    by,
                    job.requested_at,
                    until,
                    now,
                    false,
                )
                .await?;
        }
        Ok(())
    }

    async fn write_direct(&self, job: &Job) -> Result<Submitted, Unavailable> {
        let now = now_unix();
        let written = match job {
            Job::Revoke(j) => self.revoke_direct(j, now).await,
            Job::RevokeAll(j) => self.db.record_revoke_all(j, now, false).await,
            Job::RegisterRefresh(j) => self.db.register_refresh(j, now, false).await.map(|_| ()),
            Job::RevokeFamily(j) => {
                let reason = j.reason.as_deref().unwrap_or("revoked");
                let expires_at = now.saturating_add(self.max_lifetime);
                let (id, by, at) = (&j.job_id, &j.requested_by, j.requested_at);
                self.db
                    .revoke_family(&j.family_id, reason, id, by, at, expires_at, now, false)
                    .await
                    .map(|_| ())
            }
            Job::Cleanup(_) | Job::Unknown => return Err(Unavailable),
        };
        match written {
            Ok(()) => Ok(Submitted::Degraded),
            Err(error) => {
                tracing::error!(job_id = job.job_id(), %error, "revocation refused: queue and postgres both unreachable");
                Err(Unavailable)
            }
        }
    }
}
