//! `revoke_all`: raise a subject's watermark (every token issued before it
//! is revoked) in Redis and Postgres, and revoke the subject's refresh
//! families — sign out everywhere.

use revokd_jobs::RevokeSubject;

use super::{Applied, Applier, ApplyError, FamilyRequest};

impl Applier {
    pub(super) async fn revoke_all(
        &self,
        job: &RevokeSubject,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        self.stores
            .deny
            .raise_watermark(&job.subject, job.not_before, self.ttl.watermark(), now)
            .await?;
        self.stores.db.apply_revoke_all(job, now).await?;
        // Sign out everywhere covers refresh-token families too.
        for family in self.stores.db.live_families_of(&job.subject).await? {
            let job_id = format!("{}:{family}", job.meta.job_id);
            let ids = FamilyRequest {
                job_id: &job_id,
                by: &job.meta.requested_by,
                at: job.meta.requested_at,
            };
            self.revoke_family(&family, "subject_revoked", ids, now)
                .await?;
        }
        Ok(Applied::SubjectRevoked)
    }
}
