//! `revoked_tokens`: one row per revoked token id, with the audit row of
//! the job that revoked it (a bulk revocation's chunk: one for the chunk).
//! Upserts keep the longest expiry and the earliest revocation, so a job
//! applied twice, or two jobs in any order, converge.

use revokd_jobs::RevokeToken;

use super::Db;

/// A revocation as stored in Postgres.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedRow {
    /// jti or `sha256:<hex>`.
    pub token_id: String,
    /// Subject, if any.
    pub subject: Option<String>,
    /// Expiry (unix seconds).
    pub expires_at: i64,
    /// When revoked (unix seconds).
    pub revoked_at: i64,
    /// Why.
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: String,
}

/// One revocation for [`Db::apply_revokes`].
#[derive(Debug, Clone, Copy)]
pub struct RevokeRow<'a> {
    /// The job, the audit row's key (the rows of a chunk share its one
    /// audit row, keyed by the chunk's job id).
    pub job_id: &'a str,
    /// jti or `sha256:<hex>`.
    pub token_id: &'a str,
    /// Subject, if any.
    pub subject: Option<&'a str>,
    /// Expiry after capping (unix seconds).
    pub expires_at: i64,
    /// Why.
    pub reason: Option<&'a str>,
    /// Who asked.
    pub requested_by: &'a str,
    /// When asked (unix seconds): the revocation time.
    pub requested_at: i64,
    /// When applied (unix seconds).
    pub applied_at: i64,
    /// Whether Redis holds it already (`Some(true)`: a worker wrote it
    /// there first); `Some(false)` records it as pending for Redis (the
    /// write path without the queue), `None` as brought by its chunk (the
    /// write path of a chunk whose job is about to be pushed, with its
    /// record in `queued_chunks`: no overlay or resync reads the row while
    /// the record is young, and the worker leaves it null; see
    /// `migrations/20261204000001_chunk_records.sql`).
    pub in_redis: Option<bool>,
}

impl<'a> RevokeRow<'a> {
    /// The row of a revoke job.
    pub fn of(job: &'a RevokeToken, expires_at: i64, now: i64) -> Self {
        Self {
            job_id: &job.meta.job_id,
            token_id: &job.token_id,
            subject: job.subject.as_deref(),
            expires_at,
            reason: job.reason.as_deref(),
            requested_by: &job.meta.requested_by,
            requested_at: job.meta.requested_at,
            applied_at: now,
            in_redis: Some(true),
        }
    }
}

/// The upsert both revocation writes end with: one row per token, the
/// longest expiry and the earliest revocation win; `in_redis` says whether
/// Redis holds the row's (longest) expiry — true only if the write that
/// reached Redis was for that expiry or a longer one — and a chunk's write
/// (null: its job brings it to Redis, or has) never hides a pending row
/// (false): in Redis wins, then pending, then a chunk's.
macro_rules! on_conflict_merge {
    () => {
        "on conflict (token_id) do update
             set expires_at = greatest(revoked_tokens.expires_at, excluded.expires_at),
                 revoked_at = least(revoked_tokens.revoked_at, excluded.revoked_at),
                 in_redis = case when excluded.expires_at > revoked_tokens.expires_at
                                 then coalesce(excluded.in_redis,
                                               nullif(revoked_tokens.in_redis, true))
                                 when excluded.expires_at = revoked_tokens.expires_at
                                 then coalesce(revoked_tokens.in_redis or excluded.in_redis,
                                               revoked_tokens.in_redis and excluded.in_redis)
                                 else coalesce(revoked_tokens.in_redis,
                                               nullif(excluded.in_redis, true)) end"
    };
}

/// What a write of revocations does with a chunk's record in
/// `queued_chunks`.
#[derive(Clone, Copy)]
enum ChunkRecord<'a> {
    /// Nothing: not a chunk, or one recorded pending.
    None,
    /// Inserts the record of chunk `.0`, queued at `.1` (unix seconds).
    Record(&'a str, i64),
}

/// The audit rows a write of revocations adds.
#[derive(Clone, Copy)]
enum Audit<'a> {
    /// One per row, keyed by the row's job id (`revoke`).
    EachRow,
    /// One for chunk `.0`, listing its token ids (`revoke_batch`).
    Chunk(&'a str),
}

impl<'a> Audit<'a> {
    fn chunk(self) -> Option<&'a str> {
        match self {
            Audit::EachRow => None,
            Audit::Chunk(job_id) => Some(job_id),
        }
    }
}

impl Db {
    /// Records a revocation and its audit row in one statement.
    /// `expires_at` is the token's expiry after capping.
    /// Returns the refresh-token family of the token, if it is a registered
    /// refresh token (whose family must then be revoked too).
    pub async fn apply_revoke(
        &self,
        job: &RevokeToken,
        expires_at: i64,
        now: i64,
    ) -> sqlx::Result<Option<String>> {
        self.record_revoke(job, expires_at, now, true).await
    }

    /// Records a revocation; `in_redis` false marks it for the resync to
    /// Redis (written here directly while the queue was unreachable).
    pub async fn record_revoke(
        &self,
        job: &RevokeToken,
        expires_at: i64,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar(concat!(
            "with audit as (
                 insert into revocation_audit
                     (job_id, kind, token_id, subject, expires_at, reason, requested_by, requested_at, applied_at)
                 values ($1, 'revoke', $2, $3, $4, $5, $6, $7, $8)
                 on conflict (job_id) do nothing
             )
             insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by, in_redis)
             values ($2, $3, $4, $7, $5, $6, $9)
",
            on_conflict_merge!(),
            "
             returning (select family_id from refresh_tokens where token_id = $2)",
        ))
        .bind(&job.meta.job_id)
        .bind(&job.token_id)
        .bind(&job.subject)
        .bind(expires_at)
        .bind(&job.reason)
        .bind(&job.meta.requested_by)
        .bind(job.meta.requested_at)
        .bind(now)
        .bind(in_redis)
        .fetch_one(&self.pool)
        .await
    }

    /// [`apply_revoke`](Self::apply_revoke) of many revocations in one
    /// statement (one transaction, one commit): the worker's group commit.
    /// Returns each row's refresh-token family, in the order given. Rows
    /// naming the same token merge as applying them one by one would (the
    /// longest expiry and the earliest revocation win; the first row's
    /// subject, reason and requester stay); every row gets its audit entry.
    /// A row with `in_redis` None belongs to a chunk and is read by no
    /// resync without the chunk's record: chunks go through
    /// [`record_chunk`](Self::record_chunk).
    pub async fn apply_revokes<'r>(
        &self,
        rows: &[RevokeRow<'r>],
    ) -> sqlx::Result<Vec<Option<String>>> {
        self.write_revokes(rows, ChunkRecord::None, Audit::EachRow)
            .await
    }

    /// Records a chunk `job_id` of a bulk revocation: its rows and its one
    /// audit row (see `migrations/20261205000001_chunk_audit.sql`), in one
    /// statement. `queued`: its job is about to be pushed; the rows are
    /// recorded as queued (`in_redis` null, as the caller sets them) with
    /// the chunk's record in `queued_chunks`. The worker that writes the
    /// chunk into Redis deletes the record
    /// ([`apply_chunk`](Self::apply_chunk)) and leaves the rows as they
    /// are; see `migrations/20261204000001_chunk_records.sql`. Otherwise
    /// (no queue: rows pending) no record is written. Returns what
    /// [`apply_revokes`](Self::apply_revokes) does.
    pub async fn record_chunk<'r>(
        &self,
        job_id: &str,
        rows: &[RevokeRow<'r>],
        now: i64,
        queued: bool,
    ) -> sqlx::Result<Vec<Option<String>>> {
        let record = match queued {
            true => ChunkRecord::Record(job_id, now),
            false => ChunkRecord::None,
        };
        self.write_revokes(rows, record, Audit::Chunk(job_id)).await
    }

    /// A worker has written the chunk `job_id` (its `rows`) into Redis:
    /// deletes the chunk's record and, if there was none (a chunk pushed
    /// with `revokd-jobs`, or applied before), writes every row and the
    /// chunk's audit row as [`record_chunk`](Self::record_chunk) does. A
    /// chunk the API recorded keeps its rows (and audit row) as recorded:
    /// one statement, no second write of each row. Returns each row's
    /// refresh-token family, in the order given.
    ///
    /// The first statement sends only the token ids: a chunk the API
    /// recorded (the common case) needs nothing else, and its 1,000 rows'
    /// nine columns sent and unnested again cost Postgres ~2.5 ms a chunk
    /// against ~0.8 ms (`EXPLAIN (ANALYZE)`, 1,000 rows). Finding no record
    /// (nothing deleted), the second writes them; no other writer records
    /// the chunk meanwhile: its job is pushed only after its record.
    pub async fn apply_chunk<'r>(
        &self,
        job_id: &str,
        rows: &[RevokeRow<'r>],
    ) -> sqlx::Result<Vec<Option<String>>> {
        let ids: Vec<&str> = rows.iter().map(|r| r.token_id).collect();
        let finished: Vec<(Option<String>, bool)> = sqlx::query_as(
            "with done as (delete from queued_chunks where job_id = $1 returning job_id)
             select refresh_tokens.family_id, exists (select 1 from done)
             from unnest($2::text[]) with ordinality as t(token_id, n)
                  left join refresh_tokens using (token_id)
             order by t.n",
        )
        .bind(job_id)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        if finished.first().is_some_and(|&(_, recorded)| recorded) {
            return Ok(finished.into_iter().map(|(family, _)| family).collect());
        }
        self.write_revokes(rows, ChunkRecord::None, Audit::Chunk(job_id))
            .await
    }

    async fn write_revokes<'r>(
        &self,
        rows: &[RevokeRow<'r>],
        chunk: ChunkRecord<'_>,
        audit: Audit<'_>,
    ) -> sqlx::Result<Vec<Option<String>>> {
        let (record, at) = match chunk {
            ChunkRecord::None => (None, None),
            ChunkRecord::Record(job_id, at) => (Some(job_id), Some(at)),
        };
        let column = |f: fn(RevokeRow<'r>) -> Option<&'r str>| {
            rows.iter().map(|r| f(*r)).collect::<Vec<_>>()
        };
        let numbers = |f: fn(RevokeRow<'r>) -> i64| rows.iter().map(|r| f(*r)).collect::<Vec<_>>();
        let flags: Vec<Option<bool>> = rows.iter().map(|r| r.in_redis).collect();
        let families: Vec<(i64, Option<String>)> = sqlx::query_as(concat!(
            "with input as (
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                                      $6::text[], $7::int8[], $8::int8[], $9::bool[])
                     with ordinality as t(job_id, token_id, subject, expires_at, reason,
                                          requested_by, requested_at, applied_at, in_redis, n)
             ),
             -- an audit row per row, or one for a chunk (see
             -- migrations/20261205000001_chunk_audit.sql)
             audit as (
                 insert into revocation_audit
                     (job_id, kind, token_id, subject, expires_at, reason, requested_by, requested_at, applied_at, token_ids)
                 select job_id, 'revoke', token_id, subject, expires_at, reason, requested_by, requested_at, applied_at, null
                 from input
                 where $12::text is null
                 union all
                 select $12, 'revoke_batch', null, null, null,
                        case when count(reason) = count(*) and min(reason) = max(reason)
                             then min(reason) end,
                        min(requested_by), min(requested_at), max(applied_at),
                        array_agg(token_id order by n)
                 from input
                 where $12 is not null
                 having count(*) > 0
                 order by 1
                 on conflict (job_id) do nothing
             ),
             chunk as (
                 insert into queued_chunks (job_id, queued_at, token_ids)
                 select $10, $11, $2::text[] where $10 is not null
                 on conflict (job_id) do nothing
             ),
             merged as (
                 select distinct on (token_id) token_id, subject, reason, requested_by,
                        max(expires_at) over same_token as expires_at,
                        min(requested_at) over same_token as revoked_at,
                        bool_and(in_redis) over same_token as in_redis
                 from input
                 window same_token as (partition by token_id)
                 order by token_id, n
             ),
             upserted as (
                 insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by, in_redis)
                 select token_id, subject, expires_at, revoked_at, reason, requested_by, in_redis
                 from merged
                 -- batches lock rows in key order (audit rows too), so two of
                 -- them never wait on each other in a cycle
                 order by token_id
",
            on_conflict_merge!(),
            "
             )
             select input.n, refresh_tokens.family_id
             from input left join refresh_tokens using (token_id)
             order by input.n",
        ))
        .bind(column(|r| Some(r.job_id)))
        .bind(column(|r| Some(r.token_id)))
        .bind(column(|r| r.subject))
        .bind(numbers(|r| r.expires_at))
        .bind(column(|r| r.reason))
        .bind(column(|r| Some(r.requested_by)))
        .bind(numbers(|r| r.requested_at))
        .bind(numbers(|r| r.applied_at))
        .bind(flags)
        .bind(record)
        .bind(at)
        .bind(audit.chunk())
        .fetch_all(&self.pool)
        .await?;
        Ok(families.into_iter().map(|(_, family)| family).collect())
    }

    /// The stored revocation of `token_id`, if any.
    pub async fn revoked_token(&self, token_id: &str) -> sqlx::Result<Option<RevokedRow>> {
        sqlx::query_as(
            "select token_id, subject, expires_at, revoked_at, reason, requested_by
             from revoked_tokens where token_id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Live revocations (expiring at or after `cutoff`) after `after` in
    /// token_id order: keyset pagination for streaming the whole table.
    pub async fn live_tokens_page(
        &self,
        after: &str,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<RevokedRow>> {
        sqlx::query_as(
            "select token_id, subject, expires_at, revoked_at, reason, requested_by
             from revoked_tokens where token_id > $1 and expires_at >= $2
             order by token_id limit $3",
        )
        .bind(after)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes up to `batch` revocations that expired before `cutoff`; the
    /// expires_at index keeps each batch short.
    pub async fn delete_expired_tokens(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "delete from revoked_tokens where token_id in
                 (select token_id from revoked_tokens where expires_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
