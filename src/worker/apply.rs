//! Applying jobs to both stores. Redis first, so a revocation is effective
//! for checks even while Postgres is down; then Postgres, the durable record.
//! Every step is idempotent: delivery is at-least-once.

use std::time::Duration;

use revokd_jobs::{Job, RegisterRefresh, RevokeSubject, RevokeToken, now_unix};
use tokio_util::sync::CancellationToken;

use super::{
    batch::RevokeBatcher,
    failure::{self, Verdict},
};
use crate::{
    instruments,
    store::{
        pg::Db,
        redis::{DenyEntry, DenyList, deny_ttl, watermark_ttl},
        refresh::{RefreshEntry, State},
    },
    worker::maintenance::{CleanupReport, Maintenance, MaintenanceError, Quiet},
    write::limits,
};

/// How long one delivery retries a transient failure in its worker slot
/// before the job is handed back to the queue (see [`super::failure`]).
const IN_SLOT: Duration = Duration::from_secs(2);

/// Why a job was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The payload can never apply; retrying is pointless.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// Redis failed; worth retrying.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Postgres failed: retried or not as [`super::failure::classify`] says.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

impl From<MaintenanceError> for ApplyError {
    fn from(e: MaintenanceError) -> Self {
        match e {
            MaintenanceError::Redis(e) => ApplyError::Redis(e),
            MaintenanceError::Postgres(e) => ApplyError::Postgres(e),
            MaintenanceError::Interrupted => ApplyError::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "redis lost its data during the rebuild",
            ))),
        }
    }
}

/// What applying a job did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A token is on the deny-list (or, already expired, only in Postgres).
    Revoked {
        /// Whether a Redis key was written.
        in_redis: bool,
    },
    /// A subject watermark was raised (or was already higher).
    SubjectRevoked,
    /// A refresh token was registered (or rotated); its stored state.
    Registered(State),
    /// A refresh-token family was revoked.
    FamilyRevoked,
    /// Maintenance ran.
    Cleaned(CleanupReport),
}

/// Applies jobs to Redis and Postgres.
#[derive(Clone)]
pub struct Applier {
    deny: DenyList,
    db: Db,
    revokes: RevokeBatcher,
    leeway: i64,
    max_lifetime: i64,
    done_channel: String,
    maintenance: Option<Maintenance>,
}

impl Applier {
    /// An applier over the given stores.
    pub fn new(deny: DenyList, db: Db, prefix: &str, leeway: i64, max_lifetime: i64) -> Self {
        Self {
            deny,
            revokes: RevokeBatcher::new(db.clone()),
            db,
            leeway,
            max_lifetime,
            done_channel: done_channel(prefix),
            maintenance: None,
        }
    }

    /// Lets this applier run cleanup jobs.
    pub fn with_maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = Some(maintenance);
        self
    }

    /// Applies `job` once, as of `now`.
    pub async fn apply(&self, job: &Job, now: i64) -> Result<Applied, ApplyError> {
        let applied = match job {
            Job::Revoke(job) => self.revoke(job, now).await?,
            Job::RevokeAll(job) => self.revoke_all(job, now).await?,
            Job::RegisterRefresh(job) => self.register_refresh(job, now).await?,
            Job::RevokeFamily(job) => {
                let reason = informational_reason(job.reason.as_deref());
                let reason = reason.as_deref().unwrap_or("revoked");
                let by = requester(&job.requested_by);
                let ids = FamilyRequest {
                    job_id: &job.job_id,
                    by: &by,
                    at: job.requested_at,
                };
                self.revoke_family(&job.family_id, reason, ids, now).await?;
                Applied::FamilyRevoked
            }
            Job::Cleanup(_) => match &self.maintenance {
                Some(m) => {
                    let report = m.cleanup(now, &Quiet).await?;
                    tracing::info!(
                        tokens_deleted = report.tokens_deleted,
                        subjects_deleted = report.subjects_deleted,
                        audit_deleted = report.audit_deleted,
                        jobs_vacuumed = report.jobs_vacuumed,
                        redis_restored = report.redis_restored,
                        "cleanup done"
                    );
                    self.deny.store_cleanup_report(&report).await;
                    Applied::Cleaned(report)
                }
                None => {
                    return Err(ApplyError::Invalid(
                        "this worker cannot run maintenance".into(),
                    ));
                }
            },
            Job::Unknown => return Err(ApplyError::Invalid("unknown job kind".into())),
        };
        instruments::job_applied(match job {
            Job::Revoke(_) => "revoke",
            Job::RevokeAll(_) => "revoke_all",
            Job::RegisterRefresh(_) => "register_refresh",
            Job::RevokeFamily(_) => "revoke_family",
            Job::Cleanup(_) | Job::Unknown => "cleanup",
        });
        if let Some(job_id) = job.job_id() {
            self.deny.publish(&self.done_channel, job_id).await;
        }
        Ok(applied)
    }

    /// Applies `job`, retrying transient failures a few times within
    /// [`IN_SLOT`] (a blip of a store) unless `stop` fires; a deterministic
    /// failure returns at once.
    pub async fn apply_with_retry(
        &self,
        job: &Job,
        stop: &CancellationToken,
    ) -> Result<Applied, ApplyError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.apply(job, now_unix()).await {
                Err(error)
                    if failure::classify(&error) == Verdict::Transient
                        && started.elapsed() + delay < IN_SLOT
                        && !stop.is_cancelled() =>
                {
                    instruments::job_retried();
                    tracing::debug!(job_id = job.job_id(), %error, retry_in = ?delay, "job not applied; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => {}
                    }
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    async fn revoke(&self, job: &RevokeToken, now: i64) -> Result<Applied, ApplyError> {
        // Only the token_id must be usable; subject and reason are
        // informational on a revocation, so unusable ones are dropped rather
        // than losing the revocation.
        limits::token_id(&job.token_id).map_err(ApplyError::Invalid)?;
        let job = &RevokeToken {
            subject: job.subject.clone().filter(|s| limits::subject(s).is_ok()),
            reason: informational_reason(job.reason.as_deref()),
            requested_by: requester(&job.requested_by),
            ..job.clone()
        };
        let expires_at = capped_expiry(job, self.max_lifetime);
        let ttl = deny_ttl(expires_at, now, self.leeway, self.max_lifetime);
        if let Some(ttl) = ttl {
            let entry = DenyEntry {
                sub: job.subject.clone(),
                exp: expires_at,
                revoked_at: job.requested_at,
                reason: job.reason.clone(),
            };
            self.deny.deny(&job.token_id, &entry, ttl).await?;
        }
        // Revoking a refresh token revokes its whole family.
        if let Some(family) = self.revokes.apply_revoke(job, expires_at, now).await? {
            let job_id = format!("{}:family", job.job_id);
            let ids = FamilyRequest {
                job_id: &job_id,
                by: &job.requested_by,
                at: job.requested_at,
            };
            self.revoke_family(&family, "revoked", ids, now).await?;
        }
        Ok(Applied::Revoked {
            in_redis: ttl.is_some(),
        })
    }

    async fn revoke_all(&self, job: &RevokeSubject, now: i64) -> Result<Applied, ApplyError> {
        limits::subject(&job.subject).map_err(ApplyError::Invalid)?;
        let job = &RevokeSubject {
            reason: informational_reason(job.reason.as_deref()),
            requested_by: requester(&job.requested_by),
            ..job.clone()
        };
        let ttl = watermark_ttl(self.leeway, self.max_lifetime);
        self.deny
            .raise_watermark(&job.subject, job.not_before, ttl)
            .await?;
        self.db.apply_revoke_all(job, now).await?;
        // Sign out everywhere covers refresh-token families too.
        for family in self.db.live_families_of(&job.subject).await? {
            let job_id = format!("{}:{family}", job.job_id);
            let ids = FamilyRequest {
                job_id: &job_id,
                by: &job.requested_by,
                at: job.requested_at,
            };
            self.revoke_family(&family, "subject_revoked", ids, now)
                .await?;
        }
        Ok(Applied::SubjectRevoked)
    }
}

/// Who asked for a family revocation, for the audit log.
#[derive(Clone, Copy)]
pub struct FamilyRequest<'a> {
    /// Audit key (a repeat adds nothing).
    pub job_id: &'a str,
    /// Requested by.
    pub by: &'a str,
    /// Requested at.
    pub at: i64,
}

impl Applier {
    async fn register_refresh(
        &self,
        job: &RegisterRefresh,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        limits::token_id(&job.token_id).map_err(ApplyError::Invalid)?;
        limits::token_id(&job.family_id).map_err(ApplyError::Invalid)?;
        if let Some(old) = &job.rotated_from {
            limits::token_id(&old.token_id).map_err(ApplyError::Invalid)?;
            // Refused before anything is written (Postgres would refuse it
            // too: an upsert touching one row twice).
            if old.token_id == job.token_id {
                return Err(ApplyError::Invalid(
                    "a token cannot be rotated from itself".into(),
                ));
            }
        }
        if let Some(sub) = &job.subject {
            limits::subject(sub).map_err(ApplyError::Invalid)?;
        }
        let cap = job.requested_at.saturating_add(self.max_lifetime);
        let expires_at = job.expires_at.min(cap);
        let entry = |exp: i64, state| RefreshEntry {
            sub: job.subject.clone(),
            family: job.family_id.clone(),
            exp,
            state,
        };
        let mut entries = Vec::new();
        if let Some(ttl) = deny_ttl(expires_at, now, 0, self.max_lifetime) {
            entries.push((job.token_id.clone(), entry(expires_at, State::Active), ttl));
        }
        if let Some(old) = &job.rotated_from {
            let old_exp = old.expires_at.min(cap);
            if let Some(ttl) = deny_ttl(old_exp, now, 0, self.max_lifetime) {
                entries.push((old.token_id.clone(), entry(old_exp, State::Rotated), ttl));
            }
        }
        self.deny.set_refresh_entries(&entries).await?;
        let job = RegisterRefresh {
            expires_at,
            requested_by: requester(&job.requested_by),
            ..job.clone()
        };
        let state = self.db.register_refresh(&job, now, true).await?;
        if state == State::Revoked {
            // The family was revoked while Redis did not know: tell it now.
            self.deny
                .mark_family_revoked(&job.family_id, "revoked", self.family_ttl())
                .await?;
        }
        Ok(Applied::Registered(state))
    }

    fn family_ttl(&self) -> i64 {
        watermark_ttl(self.leeway, self.max_lifetime)
    }

    /// Revokes a family: the Redis marker first (every member reads as
    /// revoked at once), then Postgres, then each member's entry.
    pub async fn revoke_family(
        &self,
        family: &str,
        reason: &str,
        request: FamilyRequest<'_>,
        now: i64,
    ) -> Result<(), ApplyError> {
        limits::token_id(family).map_err(ApplyError::Invalid)?;
        self.deny
            .mark_family_revoked(family, reason, self.family_ttl())
            .await?;
        let expires_at = now.saturating_add(self.max_lifetime);
        let members = self
            .db
            .revoke_family(
                family,
                reason,
                request.job_id,
                request.by,
                request.at,
                expires_at,
                now,
                true,
            )
            .await?;
        let entries: Vec<_> = members
            .iter()
            .filter_map(|m| {
                Some((
                    m.token_id.clone(),
                    m.entry(),
                    deny_ttl(m.expires_at, now, 0, self.max_lifetime)?,
                ))
            })
            .collect();
        self.deny.set_refresh_entries(&entries).await?;
        // Every member is revoked as a token too, so a check without the
        // refresh hint (or a gateway) refuses it as well.
        let denied: Vec<_> = members
            .iter()
            .filter_map(|m| {
                let entry = DenyEntry {
                    sub: m.subject.clone(),
                    exp: m.expires_at,
                    revoked_at: request.at,
                    reason: Some(reason.to_owned()),
                };
                Some((
                    m.token_id.clone(),
                    entry,
                    deny_ttl(m.expires_at, now, self.leeway, self.max_lifetime)?,
                ))
            })
            .collect();
        self.deny.deny_many(&denied).await?;
        self.db
            .revoke_members(&members, reason, request.by, request.at, true)
            .await?;
        Ok(())
    }
}

/// A reason as stored: an unusable one is dropped, it is informational and
/// must not cost the revocation.
fn informational_reason(reason: Option<&str>) -> Option<String> {
    reason
        .filter(|r| limits::reason(Some(r)).is_ok())
        .map(str::to_owned)
}

/// Who asked, as stored: informational too, so control characters (a NUL
/// byte cannot be stored in Postgres text) are dropped, not the job.
fn requester(by: &str) -> String {
    by.replace(char::is_control, "")
}

/// A revocation's expiry as stored: an `exp` beyond the maximum lifetime is
/// not trusted but capped, relative to the request so that re-applying gives
/// the same row.
pub fn capped_expiry(job: &RevokeToken, max_lifetime: i64) -> i64 {
    job.expires_at
        .min(job.requested_at.saturating_add(max_lifetime))
}

/// The pub/sub channel announcing applied jobs, one per deployment:
/// `{prefix}done`, the message being the job's id. Each API process holds
/// one subscription to it for all its waiters (see [`crate::write::completion`]);
/// nobody subscribed means the publish costs Redis next to nothing.
pub fn done_channel(prefix: &str) -> String {
    format!("{prefix}done")
}
