//! What Postgres holds and Redis may lack: rows written while Redis or the
//! queue was unreachable (`in_redis` false), found and marked by the resync;
//! chunks whose job has not run (`queued_chunks`); and whether a job has
//! reached both stores.

use super::{Db, RevokedRow};

impl Db {
    /// Revocations written while the queue was down and not yet in Redis
    /// (and the rows of lost chunks, once
    /// [`unqueue_chunks`](Self::unqueue_chunks) has turned them pending).
    pub async fn pending_tokens(&self, limit: i64) -> sqlx::Result<Vec<RevokedRow>> {
        sqlx::query_as(
            "select token_id, subject, expires_at, revoked_at, reason, requested_by
             from revoked_tokens where in_redis is false
             -- the order of the index of pending rows: without it, while
             -- statistics lag a bulk load, the planner guesses a scan of the
             -- table finds `limit` rows at once (it finds 5 in 600,000)
             order by expires_at limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Chunks recorded before `queued_before` (unix seconds) and not yet
    /// written into Redis by their job: at most `limit`, oldest first, as
    /// `(job_id, queued_at)`.
    pub async fn chunks_queued_before(
        &self,
        queued_before: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "select job_id, queued_at from queued_chunks where queued_at < $1
             order by queued_at limit $2",
        )
        .bind(queued_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Chunks whose job is lost — the queue no longer holds it, or it has
    /// not run within a minute, say no worker running: they lose their
    /// record and their rows turn pending, for the resync to copy. Returns
    /// how many rows turned. A chunk a worker finished meanwhile has no
    /// record left and is not touched; a job that does run later finds no
    /// record and writes its rows as a `revokd-jobs` chunk's.
    pub async fn unqueue_chunks(&self, job_ids: &[&str]) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "with lost as (delete from queued_chunks where job_id = any($1) returning token_ids)
             update revoked_tokens set in_redis = false
             -- one array of keys: read by key, never by a join that could
             -- scan the table
             where token_id = any(array(select unnest(token_ids) from lost))
                   and in_redis is null",
        )
        .bind(job_ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Turns a chunk's rows (`in_redis` null) pending and deletes its
    /// record: its job could not be pushed, so only the overlay and the
    /// resync can bring them to every check. Rows a worker marked meanwhile
    /// stay as they are.
    pub async fn mark_pending(&self, job_id: &str, token_ids: &[&str]) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "with gone as (delete from queued_chunks where job_id = $2)
             update revoked_tokens set in_redis = false
             where token_id = any($1) and in_redis is null",
        )
        .bind(token_ids)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Watermarks written while the queue was down and not yet in Redis.
    pub async fn pending_watermarks(&self, limit: i64) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            // in the order of its index of pending rows (see pending_tokens)
            "select subject, not_before from subject_watermarks where not in_redis
             order by subject limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Revocations not yet in Redis, as `(kind, key, value)`: `("t",
    /// token_id, expires_at)` for tokens still live at `cutoff` (pending, or
    /// of a chunk queued before `queued_before` and not yet written, see
    /// [`unqueue_chunks`](Self::unqueue_chunks)), `("s",
    /// subject, not_before)` and `("i", issuer, not_before)` for watermarks, `("r", token_id, expires_at)`
    /// for refresh tokens whose registry state Redis may lack. At most `limit + 1` rows, so the
    /// caller can tell there were more.
    pub async fn pending_revocations(
        &self,
        cutoff: i64,
        queued_before: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, String, i64)>> {
        sqlx::query_as(
            "(select 't', token_id, expires_at from revoked_tokens
                  where in_redis is false and expires_at >= $1
                  order by expires_at) -- by the index, as pending_tokens
             union all
             -- the overdue chunks' rows by key, from one array of their
             -- ids (a token in two chunks once): never a join, which the
             -- planner turned into a sort of every null row while its
             -- statistics lagged a bulk load (nulls guessed rare)
             (select 't', token_id, expires_at from revoked_tokens
                  where token_id = any(array(select unnest(token_ids) from queued_chunks
                                             where queued_at < $3))
                        and in_redis is null and expires_at >= $1)
             union all
             (select 's', subject, not_before from subject_watermarks where not in_redis)
             union all
             (select 'i', issuer, not_before from issuer_watermarks where not in_redis)
             union all
             (select 'r', token_id, expires_at from refresh_tokens
                  where not in_redis and expires_at >= $1)
             limit $2",
        )
        .bind(cutoff)
        .bind(limit.saturating_add(1))
        .bind(queued_before)
        .fetch_all(&self.pool)
        .await
    }

    /// Whether `job` has been applied to both stores: its rows are in
    /// Postgres and marked as written to Redis (by a worker or the resync);
    /// a chunk's, none pending and its record deleted by its worker.
    pub async fn applied(&self, job: &revokd_jobs::Job) -> sqlx::Result<bool> {
        use revokd_jobs::Job;
        let query = match job {
            Job::Revoke(j) => sqlx::query_scalar(
                "select coalesce((select in_redis from revoked_tokens where token_id = $1), false)",
            )
            .bind(&j.token_id),
            // No record of the chunk waits for a worker, and every item's
            // row is in Postgres and not pending (a batch of none is
            // applied): in Redis, or brought there by this chunk's job.
            Job::RevokeBatch(j) => sqlx::query_scalar(
                "select not exists (select 1 from queued_chunks where job_id = $2)
                        and coalesce(bool_and(r.token_id is not null and r.in_redis is not false), true)
                 from unnest($1::text[]) as u(id) left join revoked_tokens r on r.token_id = u.id",
            )
            .bind(
                j.items
                    .iter()
                    .map(|i| i.token_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(&j.meta.job_id),
            Job::RevokeAll(j) => sqlx::query_scalar(
                "select coalesce((select in_redis and not_before >= $2
                                  from subject_watermarks where subject = $1), false)",
            )
            .bind(&j.subject)
            .bind(j.not_before),
            Job::RevokeIssuer(j) => sqlx::query_scalar(
                "select coalesce((select in_redis and not_before >= $2
                                  from issuer_watermarks where issuer = $1), false)",
            )
            .bind(&j.issuer)
            .bind(j.not_before),
            Job::RegisterRefresh(j) => sqlx::query_scalar(
                "select coalesce((select in_redis from refresh_tokens where token_id = $1), false)",
            )
            .bind(&j.token_id),
            Job::RevokeFamily(j) => sqlx::query_scalar(
                "select coalesce((select in_redis and revoked_at is not null
                                  from refresh_families where family_id = $1), false)",
            )
            .bind(&j.family_id),
            Job::Cleanup(_) | Job::Unknown => return Ok(false),
        };
        query.fetch_one(&self.pool).await
    }

    /// Marks tokens and watermarks as present in Redis.
    /// Only rows still holding the copied values are marked: a row changed
    /// meanwhile stays pending for the next pass.
    pub async fn mark_in_redis(
        &self,
        tokens: &[(String, i64)],
        subjects: &[(String, i64)],
    ) -> sqlx::Result<()> {
        let (token_ids, exps): (Vec<&str>, Vec<i64>) =
            tokens.iter().map(|(i, e)| (i.as_str(), *e)).unzip();
        let (subject_ids, nbs): (Vec<&str>, Vec<i64>) =
            subjects.iter().map(|(i, n)| (i.as_str(), *n)).unzip();
        sqlx::query(
            "with t as (
                 update revoked_tokens r set in_redis = true
                 from unnest($1::text[], $2::bigint[]) as u(id, exp)
                 where r.token_id = u.id and r.expires_at = u.exp
             )
             update subject_watermarks w set in_redis = true
             from unnest($3::text[], $4::bigint[]) as u(id, nb)
             where w.subject = u.id and w.not_before = u.nb",
        )
        .bind(token_ids)
        .bind(exps)
        .bind(subject_ids)
        .bind(nbs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
