//! `subject_watermarks`: per subject, the time before which every token is
//! revoked. A watermark is only ever raised.

use revokd_jobs::RevokeSubject;

use super::Db;

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
        sqlx::query(
            "with audit as (
                 insert into revocation_audit
                     (job_id, kind, subject, not_before, reason, requested_by, requested_at, applied_at)
                 values ($1, 'revoke_all', $2, $3, $4, $5, $6, $7)
                 on conflict (job_id) do nothing
             )
             insert into subject_watermarks (subject, not_before, reason, updated_at, in_redis)
             values ($2, $3, $4, $7, $8)
             on conflict (subject) do update
                 set not_before = excluded.not_before,
                     reason = case when excluded.not_before > subject_watermarks.not_before
                                   then excluded.reason else subject_watermarks.reason end,
                     updated_at = case when excluded.not_before > subject_watermarks.not_before
                                       then excluded.updated_at else subject_watermarks.updated_at end,
                     -- the same watermark written to Redis (a worker after the
                     -- write path recorded it as pending) is in Redis now
                     in_redis = case when excluded.not_before > subject_watermarks.not_before
                                     then excluded.in_redis
                                     else subject_watermarks.in_redis or excluded.in_redis end
                 where subject_watermarks.not_before <= excluded.not_before",
        )
        .bind(&job.meta.job_id)
        .bind(&job.subject)
        .bind(job.not_before)
        .bind(&job.reason)
        .bind(&job.meta.requested_by)
        .bind(job.meta.requested_at)
        .bind(now)
        .bind(in_redis)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A subject's watermark, if any.
    pub async fn watermark(&self, subject: &str) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("select not_before from subject_watermarks where subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
    }

    /// Watermarks after `after` in subject order.
    pub async fn watermarks_page(
        &self,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "select subject, not_before from subject_watermarks where subject > $1 order by subject limit $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes up to `batch` watermarks older than `cutoff` (every token
    /// issued before them has expired).
    pub async fn delete_outdated_watermarks(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "delete from subject_watermarks where subject in
                 (select subject from subject_watermarks where not_before < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
