//! `subject_watermarks`: per subject, the time before which every token is
//! revoked. A watermark is only ever raised (the statements are shared with
//! issuer watermarks, see [`super::watermarks`]).

use revokd_jobs::RevokeSubject;

use super::{
    Db,
    watermarks::{Raise, Scope},
};

impl Db {
    /// Raises a subject's watermark (never lowers it) and logs the request.
    pub async fn apply_revoke_all(&self, job: &RevokeSubject, now: i64) -> sqlx::Result<()> {
        self.record_revoke_all(job, now, true).await
    }

    /// Raises a watermark; `in_redis` false marks it for the resync.
    pub async fn record_revoke_all(
        &self,
        job: &RevokeSubject,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<()> {
        let raise = Raise {
            meta: &job.meta,
            key: &job.subject,
            not_before: job.not_before,
            reason: job.reason.as_deref(),
        };
        self.record_watermark(Scope::Subject, raise, now, in_redis)
            .await
    }

    /// A subject's watermark, if any.
    pub async fn watermark(&self, subject: &str) -> sqlx::Result<Option<i64>> {
        self.watermark_of(Scope::Subject, subject).await
    }

    /// Watermarks after `after` in subject order.
    pub async fn watermarks_page(
        &self,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, i64)>> {
        self.watermark_page(Scope::Subject, after, limit).await
    }

    /// Deletes up to `batch` watermarks older than `cutoff` (every token
    /// issued before them has expired).
    pub async fn delete_outdated_watermarks(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        self.delete_outdated(Scope::Subject, cutoff, batch).await
    }
}
