//! The statements both watermark tables share: `subject_watermarks`
//! ([`super::subjects`]) and `issuer_watermarks` ([`super::issuers`]) have
//! the same shape, keyed by subject or by issuer. A watermark is only ever
//! raised. Their SQL is built from the [`Scope`]'s constant names only
//! (every value is bound).

use revokd_jobs::JobMeta;
use sqlx::AssertSqlSafe;

use super::Db;
pub use crate::store::Scope;

/// One request to raise a watermark.
#[derive(Debug, Clone, Copy)]
pub struct Raise<'a> {
    /// Id, requester and time of the request (the audit row's key).
    pub meta: &'a JobMeta,
    /// The subject or issuer.
    pub key: &'a str,
    /// Tokens issued strictly before this are revoked.
    pub not_before: i64,
    /// Why.
    pub reason: Option<&'a str>,
}

impl Db {
    /// Raises a watermark (never lowers it) and logs the request;
    /// `in_redis` false marks it for the resync.
    pub async fn record_watermark(
        &self,
        scope: Scope,
        raise: Raise<'_>,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<()> {
        let (table, column, kind) = (scope.table(), scope.column(), scope.job_kind());
        let sql = format!(
            "with audit as (
                 insert into revocation_audit
                     (job_id, kind, {column}, not_before, reason, requested_by, requested_at, applied_at)
                 values ($1, '{kind}', $2, $3, $4, $5, $6, $7)
                 on conflict (job_id) do nothing
             )
             insert into {table} ({column}, not_before, reason, updated_at, in_redis)
             values ($2, $3, $4, $7, $8)
             on conflict ({column}) do update
                 set not_before = excluded.not_before,
                     reason = case when excluded.not_before > {table}.not_before
                                   then excluded.reason else {table}.reason end,
                     updated_at = case when excluded.not_before > {table}.not_before
                                       then excluded.updated_at else {table}.updated_at end,
                     -- the same watermark written to Redis (a worker after the
                     -- write path recorded it as pending) is in Redis now
                     in_redis = case when excluded.not_before > {table}.not_before
                                     then excluded.in_redis
                                     else {table}.in_redis or excluded.in_redis end
                 where {table}.not_before <= excluded.not_before"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&raise.meta.job_id)
            .bind(raise.key)
            .bind(raise.not_before)
            .bind(raise.reason)
            .bind(&raise.meta.requested_by)
            .bind(raise.meta.requested_at)
            .bind(now)
            .bind(in_redis)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One watermark, if any.
    pub async fn watermark_of(&self, scope: Scope, key: &str) -> sqlx::Result<Option<i64>> {
        let (table, column) = (scope.table(), scope.column());
        let sql = format!("select not_before from {table} where {column} = $1");
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Watermarks after `after` in key order.
    pub async fn watermark_page(
        &self,
        scope: Scope,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, i64)>> {
        let (table, column) = (scope.table(), scope.column());
        let sql = format!(
            "select {column}, not_before from {table} where {column} > $1 order by {column} limit $2"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Deletes up to `batch` watermarks older than `cutoff` (every token
    /// issued before them has expired).
    pub async fn delete_outdated(
        &self,
        scope: Scope,
        cutoff: i64,
        batch: i64,
    ) -> sqlx::Result<u64> {
        let (table, column) = (scope.table(), scope.column());
        let sql = format!(
            "delete from {table} where {column} in
                 (select {column} from {table} where not_before < $1 limit $2)"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(cutoff)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Watermarks written while the queue was down and not yet in Redis.
    pub async fn pending_of(&self, scope: Scope, limit: i64) -> sqlx::Result<Vec<(String, i64)>> {
        let (table, column) = (scope.table(), scope.column());
        // In the order of the table's index of pending rows (on `column`):
        // without it, while statistics lag a mass revocation, the planner
        // guesses a scan of the table finds `limit` rows at once.
        let sql = format!(
            "select {column}, not_before from {table} where not in_redis
             order by {column} limit $1"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Marks watermarks as present in Redis; only rows still holding the
    /// copied values (a row raised meanwhile stays pending).
    pub async fn mark_watermarks_in_redis(
        &self,
        scope: Scope,
        marks: &[(String, i64)],
    ) -> sqlx::Result<()> {
        let (table, column) = (scope.table(), scope.column());
        let (keys, nbs): (Vec<&str>, Vec<i64>) =
            marks.iter().map(|(k, n)| (k.as_str(), *n)).unzip();
        let sql = format!(
            "update {table} w set in_redis = true
             from unnest($1::text[], $2::bigint[]) as u(id, nb)
             where w.{column} = u.id and w.not_before = u.nb"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(keys)
            .bind(nbs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
