//! `revoke`: one token onto the deny-list until it expires, then into
//! Postgres (group-committed); a refresh token takes its family with it.

use revokd_jobs::RevokeToken;

use super::{Applied, Applier, ApplyError, FamilyRequest};

impl Applier {
    pub(super) async fn revoke(&self, job: &RevokeToken, now: i64) -> Result<Applied, ApplyError> {
        let expires_at = self.ttl.capped_expiry(job);
        let in_redis = self.denies.deny_token(job, &self.ttl, now).await?;
        if in_redis {
            tracing::debug!(target: crate::instruments::PROPAGATION, job_id = job.meta.job_id, "deny-list written");
        }
        // Revoking a refresh token revokes its whole family.
        if let Some(family) = self.revokes.apply_revoke(job, expires_at, now).await? {
            self.revoke_family_of(job, &family, now).await?;
        }
        Ok(Applied::Revoked { in_redis })
    }

    /// Revokes `family`, the family of the refresh token `job` revoked,
    /// audited under `{job_id}:family`.
    pub(super) async fn revoke_family_of(
        &self,
        job: &RevokeToken,
        family: &str,
        now: i64,
    ) -> Result<(), ApplyError> {
        let job_id = format!("{}:family", job.meta.job_id);
        let ids = FamilyRequest {
            job_id: &job_id,
            by: &job.meta.requested_by,
            at: job.meta.requested_at,
        };
        self.revoke_family(family, "revoked", ids, now).await
    }
}
