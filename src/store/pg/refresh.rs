//! The refresh-token registry in Postgres: `refresh_tokens` and
//! `refresh_families`. States only move forward (active → rotated →
//! revoked), so jobs commute and repeat safely. The Redis half is
//! [`crate::store::redis::registry`].

use revokd_jobs::RegisterRefresh;

use super::Db;
use crate::store::{
    TtlPolicy,
    redis::registry::{RefreshEntry, State},
};

/// A registry row as Postgres has it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshRow {
    /// token_id.
    pub token_id: String,
    /// Family.
    pub family_id: String,
    /// Subject.
    pub subject: Option<String>,
    /// Expiry.
    pub expires_at: i64,
    /// 0 active, 1 rotated, 2 revoked (family revocation folded in).
    pub state: i16,
}

impl RefreshRow {
    /// As a Redis entry.
    pub fn entry(&self) -> RefreshEntry {
        RefreshEntry {
            sub: self.subject.clone(),
            family: self.family_id.clone(),
            exp: self.expires_at,
            state: State::from_rank(i64::from(self.state)),
        }
    }

    /// The Redis registry entries of `rows` written as of `now`, with their
    /// TTLs; rows already past their expiry get none.
    pub fn redis_entries(
        rows: &[RefreshRow],
        ttl: &TtlPolicy,
        now: i64,
    ) -> Vec<(String, RefreshEntry, i64)> {
        rows.iter()
            .filter_map(|r| {
                Some((
                    r.token_id.clone(),
                    r.entry(),
                    ttl.refresh(r.expires_at, now)?,
                ))
            })
            .collect()
    }
}

impl Db {
    /// Registers a refresh token (and, for a rotation, marks the old one
    /// rotated) and logs the request; returns the new token's state (revoked
    /// when its family already is).
    /// `in_redis` false marks the rows for the resync (written straight to
    /// Postgres while Redis was unreachable).
    pub async fn register_refresh(
        &self,
        job: &RegisterRefresh,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<State> {
        let (old_id, old_exp) = match &job.rotated_from {
            Some(old) => (Some(old.token_id.as_str()), Some(old.expires_at)),
            None => (None, None),
        };
        let state: i16 = sqlx::query_scalar(
            "with fam as (
                 insert into refresh_families (family_id, subject, expires_at)
                 values ($2, $3, $4)
                 on conflict (family_id) do update
                     set expires_at = greatest(refresh_families.expires_at, excluded.expires_at)
                 returning revoked_at
             ), audit as (
                 insert into revocation_audit
                     (job_id, kind, token_id, subject, expires_at, reason, requested_by, requested_at, applied_at)
                 values ($1, case when $6::text is null then 'refresh_register' else 'refresh_rotate' end,
                         $5, $3, $4, $2, $8, $9, $10)
                 on conflict (job_id) do nothing
             ), old as (
                 insert into refresh_tokens (token_id, family_id, subject, expires_at, state, registered_at, in_redis)
                 select $6::text, $2, $3, $7, 1, $10, $11 where $6::text is not null
                 on conflict (token_id) do update
                     set state = greatest(refresh_tokens.state, 1),
                         in_redis = case when refresh_tokens.state < 1 then excluded.in_redis
                                         else refresh_tokens.in_redis or excluded.in_redis end
             )
             insert into refresh_tokens (token_id, family_id, subject, expires_at, state, registered_at, in_redis)
             values ($5, $2, $3, $4, case when (select revoked_at from fam) is null then 0 else 2 end, $10, $11)
             on conflict (token_id) do update
                 set state = greatest(refresh_tokens.state, excluded.state),
                     in_redis = case when excluded.state > refresh_tokens.state then excluded.in_redis
                                     else refresh_tokens.in_redis or excluded.in_redis end
             returning state",
        )
        .bind(&job.meta.job_id)
        .bind(&job.family_id)
        .bind(&job.subject)
        .bind(job.expires_at)
        .bind(&job.token_id)
        .bind(old_id)
        .bind(old_exp)
        .bind(&job.meta.requested_by)
        .bind(job.meta.requested_at)
        .bind(now)
        .bind(in_redis)
        .fetch_one(self.pool())
        .await?;
        Ok(State::from_rank(i64::from(state)))
    }

    /// Revokes a family and every member, logs the request under `job_id`
    /// (so a repeat adds nothing); returns the members. `in_redis` false
    /// marks the family for the resync to Redis.
    #[allow(clippy::too_many_arguments)]
    pub async fn revoke_family(
        &self,
        family: &str,
        reason: &str,
        job_id: &str,
        requested_by: &str,
        requested_at: i64,
        expires_at: i64,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<Vec<RefreshRow>> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "insert into refresh_families (family_id, expires_at, revoked_at, revoked_reason, in_redis)
             values ($1, $2, $3, $4, $5)
             on conflict (family_id) do update
                 set revoked_at = coalesce(refresh_families.revoked_at, excluded.revoked_at),
                     revoked_reason = coalesce(refresh_families.revoked_reason, excluded.revoked_reason),
                     in_redis = refresh_families.in_redis and excluded.in_redis",
        )
        .bind(family)
        .bind(expires_at)
        .bind(now)
        .bind(reason)
        .bind(in_redis)
        .execute(&mut *tx)
        .await?;
        let members: Vec<RefreshRow> = sqlx::query_as(
            "update refresh_tokens set state = case when state = 0 then 2 else state end where family_id = $1
             returning token_id, family_id, subject, expires_at, state",
        )
        .bind(family)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "insert into revocation_audit (job_id, kind, subject, reason, requested_by, requested_at, applied_at)
             values ($1, $2, (select subject from refresh_families where family_id = $3), $3, $4, $5, $6)
             on conflict (job_id) do nothing",
        )
        .bind(job_id)
        .bind(if reason == "reused" { "refresh_reuse" } else { "family_revoke" })
        .bind(family)
        .bind(requested_by)
        .bind(requested_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(members)
    }

    /// Flips a family to revoked (for `reason`) unless it already is; true
    /// only for the one call that flipped it, however many race — the
    /// decider of "first presentation of a reused token" when Redis cannot
    /// be asked. `in_redis` false marks the family for the resync to Redis.
    pub async fn claim_family_revocation(
        &self,
        family: &str,
        reason: &str,
        expires_at: i64,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<bool> {
        let flipped: Option<i32> = sqlx::query_scalar(
            "insert into refresh_families (family_id, expires_at, revoked_at, revoked_reason, in_redis)
             values ($1, $2, $3, $4, $5)
             on conflict (family_id) do update
                 set revoked_at = excluded.revoked_at,
                     revoked_reason = excluded.revoked_reason,
                     in_redis = excluded.in_redis
                 where refresh_families.revoked_at is null
             returning 1",
        )
        .bind(family)
        .bind(expires_at)
        .bind(now)
        .bind(reason)
        .bind(in_redis)
        .fetch_optional(self.pool())
        .await?;
        Ok(flipped.is_some())
    }

    /// Records a revoked family's members as revoked tokens.
    pub async fn revoke_members(
        &self,
        members: &[RefreshRow],
        reason: &str,
        requested_by: &str,
        revoked_at: i64,
        in_redis: bool,
    ) -> sqlx::Result<()> {
        let ids: Vec<&str> = members.iter().map(|m| m.token_id.as_str()).collect();
        let subjects: Vec<Option<&str>> = members.iter().map(|m| m.subject.as_deref()).collect();
        let exps: Vec<i64> = members.iter().map(|m| m.expires_at).collect();
        sqlx::query(
            "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by, in_redis)
             select u.id, u.sub, u.exp, $4, $5, $6, $7
             from unnest($1::text[], $2::text[], $3::bigint[]) as u(id, sub, exp)
             -- key order, as the worker's batches lock revoked_tokens rows
             order by u.id
             on conflict (token_id) do update set in_redis = true
                 -- the members' deny-list entries the worker has just written
                 where excluded.in_redis and not revoked_tokens.in_redis
                       and excluded.expires_at >= revoked_tokens.expires_at",
        )
        .bind(ids)
        .bind(subjects)
        .bind(exps)
        .bind(revoked_at)
        .bind(reason)
        .bind(requested_by)
        .bind(in_redis)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The registry row of `token_id`, with its family's revocation folded in.
    pub async fn refresh_row(&self, token_id: &str) -> sqlx::Result<Option<RefreshRow>> {
        sqlx::query_as(
            "select t.token_id, t.family_id, t.subject, t.expires_at,
                    case when f.revoked_at is not null and t.state = 0 then 2::smallint else t.state end as state
             from refresh_tokens t left join refresh_families f using (family_id)
             where t.token_id = $1",
        )
        .bind(token_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Families of `subject` not yet revoked.
    pub async fn live_families_of(&self, subject: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "select family_id from refresh_families where subject = $1 and revoked_at is null",
        )
        .bind(subject)
        .fetch_all(self.pool())
        .await
    }

    /// Registry rows after `after` in token_id order, live at `cutoff`
    /// (rebuild).
    pub async fn refresh_page(
        &self,
        after: &str,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<RefreshRow>> {
        sqlx::query_as(
            "select t.token_id, t.family_id, t.subject, t.expires_at,
                    case when f.revoked_at is not null and t.state = 0 then 2::smallint else t.state end as state
             from refresh_tokens t left join refresh_families f using (family_id)
             where t.token_id > $1 and t.expires_at >= $2 order by t.token_id limit $3",
        )
        .bind(after)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Revoked families after `after` (rebuild of the family markers), with
    /// their reason.
    pub async fn revoked_families_page(
        &self,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<(String, String)>> {
        sqlx::query_as(
            "select family_id, coalesce(revoked_reason, 'revoked') from refresh_families
             where revoked_at is not null and family_id > $1 order by family_id limit $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Revoked families whose revocation has not reached Redis.
    pub async fn pending_families(&self, limit: i64) -> sqlx::Result<Vec<(String, String)>> {
        sqlx::query_as(
            "select family_id, coalesce(revoked_reason, 'revoked') from refresh_families
             where not in_redis
             -- the order of its index of pending rows (see pending_tokens)
             order by family_id limit $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Members of a family.
    pub async fn family_members(&self, family: &str) -> sqlx::Result<Vec<RefreshRow>> {
        sqlx::query_as(
            "select token_id, family_id, subject, expires_at, state from refresh_tokens where family_id = $1",
        )
        .bind(family)
        .fetch_all(self.pool())
        .await
    }

    /// Registry rows written while Redis was unreachable, family state folded in.
    pub async fn pending_refresh(&self, limit: i64) -> sqlx::Result<Vec<RefreshRow>> {
        sqlx::query_as(
            "select t.token_id, t.family_id, t.subject, t.expires_at,
                    case when f.revoked_at is not null and t.state = 0 then 2::smallint else t.state end as state
             from refresh_tokens t left join refresh_families f using (family_id)
             where not t.in_redis
             -- the order of its index of pending rows (see pending_tokens)
             order by t.token_id limit $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Marks registry rows as present in Redis, if still in the copied state.
    pub async fn mark_refresh_in_redis(&self, rows: &[(String, i16)]) -> sqlx::Result<()> {
        let (ids, states): (Vec<&str>, Vec<i16>) =
            rows.iter().map(|(i, s)| (i.as_str(), *s)).unzip();
        sqlx::query(
            "update refresh_tokens r set in_redis = true
             from unnest($1::text[], $2::smallint[]) as u(id, state)
             where r.token_id = u.id and r.state <= u.state",
        )
        .bind(ids)
        .bind(states)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks families as present in Redis.
    pub async fn mark_families_in_redis(&self, families: &[String]) -> sqlx::Result<()> {
        sqlx::query("update refresh_families set in_redis = true where family_id = any($1)")
            .bind(families)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes up to `batch` expired registry rows, then families none of
    /// whose members can still be presented.
    pub async fn delete_expired_refresh(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        let tokens = sqlx::query(
            "delete from refresh_tokens where token_id in
                 (select token_id from refresh_tokens where expires_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(self.pool())
        .await?
        .rows_affected();
        let families = sqlx::query(
            "delete from refresh_families where family_id in
                 (select family_id from refresh_families where expires_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(tokens + families)
    }
}
