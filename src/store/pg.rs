//! The Postgres record: revoked tokens, subject watermarks and the audit log.
//! Every statement is idempotent so that a job applied twice changes nothing.

use std::{str::FromStr, time::Duration};

use revokd_jobs::{RevokeSubject, RevokeToken};
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Handle on the Postgres record.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

/// A revocation as stored in Postgres.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedRow {
    /// jti or sha256:<hex>.
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
    /// The job, the audit row's key.
    pub job_id: &'a str,
    /// jti or sha256:<hex>.
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
    /// Whether Redis holds it already (a worker wrote it there first);
    /// false records it as pending for Redis (the write path).
    pub in_redis: bool,
}

impl<'a> RevokeRow<'a> {
    /// The row of a revoke job.
    pub fn of(job: &'a RevokeToken, expires_at: i64, now: i64) -> Self {
        Self {
            job_id: &job.job_id,
            token_id: &job.token_id,
            subject: job.subject.as_deref(),
            expires_at,
            reason: job.reason.as_deref(),
            requested_by: &job.requested_by,
            requested_at: job.requested_at,
            applied_at: now,
            in_redis: true,
        }
    }
}

impl Db {
    /// A pool that connects on first use, so the service can start while
    /// Postgres is down; at most 16 connections (a process of every role).
    pub fn connect_lazy(url: &str) -> Result<Self, sqlx::Error> {
        Self::connect_lazy_sized(url, 16)
    }

    /// [`connect_lazy`](Self::connect_lazy) with at most `max_connections`.
    pub fn connect_lazy_sized(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

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
        sqlx::query_scalar(
            "with audit as (
                 insert into revocation_audit
                     (job_id, kind, token_id, subject, expires_at, reason, requested_by, requested_at, applied_at)
                 values ($1, 'revoke', $2, $3, $4, $5, $6, $7, $8)
                 on conflict (job_id) do nothing
             )
             insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by, in_redis)
             values ($2, $3, $4, $7, $5, $6, $9)
             on conflict (token_id) do update
                 set expires_at = greatest(revoked_tokens.expires_at, excluded.expires_at),
                     revoked_at = least(revoked_tokens.revoked_at, excluded.revoked_at),
                     -- a longer life written straight to Postgres must reach Redis too
                     -- Redis holds the row's expiry only if the write that
                     -- reached it was for that expiry (or a longer one)
                     in_redis = case when excluded.expires_at > revoked_tokens.expires_at
                                     then excluded.in_redis
                                     when excluded.expires_at = revoked_tokens.expires_at
                                     then revoked_tokens.in_redis or excluded.in_redis
                                     else revoked_tokens.in_redis end
             returning (select family_id from refresh_tokens where token_id = $2)",
        )
        .bind(&job.job_id)
        .bind(&job.token_id)
        .bind(&job.subject)
        .bind(expires_at)
        .bind(&job.reason)
        .bind(&job.requested_by)
        .bind(job.requested_at)
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
    pub async fn apply_revokes<'r>(
        &self,
        rows: &[RevokeRow<'r>],
    ) -> sqlx::Result<Vec<Option<String>>> {
        let column = |f: fn(RevokeRow<'r>) -> Option<&'r str>| {
            rows.iter().map(|r| f(*r)).collect::<Vec<_>>()
        };
        let numbers = |f: fn(RevokeRow<'r>) -> i64| rows.iter().map(|r| f(*r)).collect::<Vec<_>>();
        let flags: Vec<bool> = rows.iter().map(|r| r.in_redis).collect();
        let families: Vec<(i64, Option<String>)> = sqlx::query_as(
            "with input as (
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                                      $6::text[], $7::int8[], $8::int8[], $9::bool[])
                     with ordinality as t(job_id, token_id, subject, expires_at, reason,
                                          requested_by, requested_at, applied_at, in_redis, n)
             ),
             audit as (
                 insert into revocation_audit
                     (job_id, kind, token_id, subject, expires_at, reason, requested_by, requested_at, applied_at)
                 select job_id, 'revoke', token_id, subject, expires_at, reason, requested_by, requested_at, applied_at
                 from input
                 order by job_id
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
                 on conflict (token_id) do update
                     set expires_at = greatest(revoked_tokens.expires_at, excluded.expires_at),
                         revoked_at = least(revoked_tokens.revoked_at, excluded.revoked_at),
                         in_redis = case when excluded.expires_at > revoked_tokens.expires_at
                                         then excluded.in_redis
                                         when excluded.expires_at = revoked_tokens.expires_at
                                         then revoked_tokens.in_redis or excluded.in_redis
                                         else revoked_tokens.in_redis end
             )
             select input.n, refresh_tokens.family_id
             from input left join refresh_tokens using (token_id)
             order by input.n",
        )
        .bind(column(|r| Some(r.job_id)))
        .bind(column(|r| Some(r.token_id)))
        .bind(column(|r| r.subject))
        .bind(numbers(|r| r.expires_at))
        .bind(column(|r| r.reason))
        .bind(column(|r| Some(r.requested_by)))
        .bind(numbers(|r| r.requested_at))
        .bind(numbers(|r| r.applied_at))
        .bind(flags)
        .fetch_all(&self.pool)
        .await?;
        Ok(families.into_iter().map(|(_, family)| family).collect())
    }

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
        .bind(&job.job_id)
        .bind(&job.subject)
        .bind(job.not_before)
        .bind(&job.reason)
        .bind(&job.requested_by)
        .bind(job.requested_at)
        .bind(now)
        .bind(in_redis)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One round trip: is `token_id` revoked, and what is `subject`'s watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
    ) -> sqlx::Result<(bool, Option<i64>)> {
        sqlx::query_as(
            "select exists(select 1 from revoked_tokens where token_id = $1 or token_id = $3),
                    (select not_before from subject_watermarks where subject = $2)",
        )
        .bind(token_id)
        .bind(subject)
        .bind(twin)
        .fetch_one(&self.pool)
        .await
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

    /// A subject's watermark, if any.
    pub async fn watermark(&self, subject: &str) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("select not_before from subject_watermarks where subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
    }

    /// Revocations written while the queue was down and not yet in Redis.
    pub async fn pending_tokens(&self, limit: i64) -> sqlx::Result<Vec<RevokedRow>> {
        sqlx::query_as(
            "select token_id, subject, expires_at, revoked_at, reason, requested_by
             from revoked_tokens where not in_redis limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Watermarks written while the queue was down and not yet in Redis.
    pub async fn pending_watermarks(&self, limit: i64) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "select subject, not_before from subject_watermarks where not in_redis limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Revocations not yet in Redis, as `(kind, key, value)`: `("t",
    /// token_id, expires_at)` for tokens still live at `cutoff`, `("s",
    /// subject, not_before)` for watermarks, `("r", token_id, expires_at)`
    /// for refresh tokens whose registry state Redis may lack. At most `limit + 1` rows, so the
    /// caller can tell there were more.
    pub async fn pending_revocations(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, String, i64)>> {
        sqlx::query_as(
            "(select 't', token_id, expires_at from revoked_tokens
                  where not in_redis and expires_at >= $1)
             union all
             (select 's', subject, not_before from subject_watermarks where not in_redis)
             union all
             (select 'r', token_id, expires_at from refresh_tokens
                  where not in_redis and expires_at >= $1)
             limit $2",
        )
        .bind(cutoff)
        .bind(limit.saturating_add(1))
        .fetch_all(&self.pool)
        .await
    }

    /// Whether `job` has been applied to both stores: its rows are in
    /// Postgres and marked as written to Redis (by a worker or the resync).
    pub async fn applied(&self, job: &revokd_jobs::Job) -> sqlx::Result<bool> {
        use revokd_jobs::Job;
        let query = match job {
            Job::Revoke(j) => sqlx::query_scalar(
                "select coalesce((select in_redis from revoked_tokens where token_id = $1), false)",
            )
            .bind(&j.token_id),
            Job::RevokeAll(j) => sqlx::query_scalar(
                "select coalesce((select in_redis and not_before >= $2
                                  from subject_watermarks where subject = $1), false)",
            )
            .bind(&j.subject)
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

    /// Live counts for `/v1/stats`: revoked tokens not yet expired, watermarks,
    /// and how many of each still wait for Redis.
    pub async fn counts(&self, now: i64) -> sqlx::Result<(i64, i64, i64)> {
        sqlx::query_as(
            "select (select count(*) from revoked_tokens where expires_at > $1),
                    (select count(*) from subject_watermarks),
                    (select count(*) from revoked_tokens where not in_redis)
                      + (select count(*) from subject_watermarks where not in_redis)",
        )
        .bind(now)
        .fetch_one(&self.pool)
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

    /// Deletes up to `batch` audit rows requested before `cutoff`.
    pub async fn delete_old_audit(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "delete from revocation_audit where id in
                 (select id from revocation_audit where requested_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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

    /// How many live revocations and watermarks a rebuild will stream.
    pub async fn rebuild_size(&self, cutoff: i64) -> sqlx::Result<(i64, i64)> {
        sqlx::query_as(
            "select (select count(*) from revoked_tokens where expires_at >= $1),
                    (select count(*) from subject_watermarks)",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await
    }

    /// Round trip to check Postgres answers.
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// Creates the database named in `url` if it does not exist, then applies
/// the migrations. Safe to run from many processes at once.
pub async fn prepare(url: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| crate::config::redact::url_error("DATABASE_URL", url, e))?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if PgConnection::connect_with(&options).await.is_err() {
        let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
            .await
            .context("cannot reach Postgres")?;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        if !exists {
            let create = format!("create database \"{}\"", name.replace('"', "\"\""));
            match sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another process created it between our check and our create.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(e).context("cannot create database"),
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("cannot connect to the database")?;
    crate::MIGRATOR
        .run(&pool)
        .await
        .context("migrations failed")?;
    pool.close().await;
    Ok(())
}
