//! The refresh-token registry: `{prefix}rt:{token_id}` entries and
//! `{prefix}rtf:{family}` revoked-family markers in Redis; `refresh_tokens`
//! and `refresh_families` in Postgres. States only move forward
//! (active → rotated → revoked), so jobs commute and repeat safely.

use std::sync::LazyLock;

use redis::Script;
use revokd_jobs::RegisterRefresh;
use serde::{Deserialize, Serialize};

use super::{
    pg::Db,
    redis::{DenyList, EVENTS_MAXLEN},
};

/// A refresh token's state, ordered: a state is only ever raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Registered, usable.
    Active = 0,
    /// Replaced by a newer token of its family; presenting it is reuse.
    Rotated = 1,
    /// Revoked with its family.
    Revoked = 2,
}

impl State {
    fn from_rank(rank: i64) -> Self {
        match rank {
            0 => State::Active,
            1 => State::Rotated,
            _ => State::Revoked,
        }
    }
}

/// What the registry knows about one refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshEntry {
    /// Subject, if any.
    #[serde(default)]
    pub sub: Option<String>,
    /// Family id.
    pub family: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// State, with the family's revocation already folded in.
    pub state: State,
}

/// Writes an entry, raising its state (never lowering it) and forcing
/// `revoked` when the family is marked revoked; its end only moves later.
/// An entry already as it would be written, ending as late or later, is left
/// alone (no write, no event), so a rebuild rewrites nothing unchanged.
/// KEYS[1] entry, KEYS[2] family marker, KEYS[3] event stream; ARGV[1]
/// subject ('' for none), ARGV[2] family, ARGV[3] exp, ARGV[4] state rank,
/// ARGV[5] unix time the entry ends, ARGV[6] token_id, ARGV[7] stream MAXLEN.
/// Returns the state rank stored.
static SET_ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local names = {[0] = 'active', [1] = 'rotated', [2] = 'revoked'}
local ranks = {active = 0, rotated = 1, revoked = 2}
local rank = tonumber(ARGV[4])
local cur = redis.call('GET', KEYS[1])
local old = nil
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' then old = decoded end
  if old and ranks[old.state] and ranks[old.state] > rank then rank = ranks[old.state] end
end
-- a revoked family revokes its active members; a rotated one stays
-- rotated, so presenting it again is still told apart as reuse
if rank == 0 and redis.call('EXISTS', KEYS[2]) == 1 then rank = 2 end
local want = tonumber(ARGV[5])
local ends = redis.call('EXPIRETIME', KEYS[1])
if old and ends >= want and old.state == names[rank] and old.family == ARGV[2]
  and old.exp == tonumber(ARGV[3])
  and (old.sub == ARGV[1] or (ARGV[1] == '' and (old.sub == nil or old.sub == cjson.null))) then
  return rank
end
if ends > want then want = ends end
local entry = {family = ARGV[2], exp = tonumber(ARGV[3]), state = names[rank]}
if ARGV[1] ~= '' then entry.sub = ARGV[1] else entry.sub = cjson.null end
redis.call('SET', KEYS[1], cjson.encode(entry), 'EXAT', want)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'k', 'r', 'id', ARGV[6], 'fam', ARGV[2],
  'st', rank, 'until', want)
return rank",
    )
});

/// Marks a family revoked (SET NX) and, for the first caller, appends the
/// event replicas follow. KEYS[1] family marker, KEYS[2] event stream;
/// ARGV[1] reason, ARGV[2] TTL, ARGV[3] family, ARGV[4] stream MAXLEN,
/// ARGV[5] unix time the marker ends. Returns 1 for the first caller.
static MARK_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'f', 'id', ARGV[3], 'until', ARGV[5])
return 1",
    )
});

/// Reads an entry, whether its family is marked revoked and whether the
/// marker is present (Redis holds the whole registry), in one round trip.
/// KEYS[1] entry, KEYS[2] marker; ARGV[1] family marker prefix.
static READ_ENTRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local complete = redis.call('EXISTS', KEYS[2])
local cur = redis.call('GET', KEYS[1])
if not cur then return {false, false, complete} end
local ok, entry = pcall(cjson.decode, cur)
if not ok then return {cur, false, complete} end
return {cur, redis.call('GET', ARGV[1] .. entry.family), complete}",
    )
});

/// What Redis knows about one refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefreshLookup {
    /// The registry entry, with its family's revocation folded in.
    pub entry: Option<RefreshEntry>,
    /// The marker is present: Redis holds the whole registry, so a miss
    /// means "never registered" (unless the token is pending in Postgres).
    pub complete: bool,
}

impl DenyList {
    /// `{prefix}rt:{token_id}`.
    pub fn rt_key(&self, token_id: &str) -> String {
        format!("{}rt:{token_id}", self.prefix)
    }

    /// `{prefix}rtf:{family}`: present once the family is revoked.
    pub fn rtf_key(&self, family: &str) -> String {
        format!("{}rtf:{family}", self.prefix)
    }

    /// The SET_ENTRY call for an entry living `ttl` seconds from `now`.
    fn set_entry(
        &self,
        token_id: &str,
        entry: &RefreshEntry,
        ttl: i64,
        now: i64,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = SET_ENTRY.prepare_invoke();
        invocation
            .key(self.rt_key(token_id))
            .key(self.rtf_key(&entry.family))
            .key(self.events_key())
            .arg(entry.sub.as_deref().unwrap_or(""))
            .arg(&entry.family)
            .arg(entry.exp)
            .arg(entry.state as i64)
            .arg(now.saturating_add(ttl.max(1)))
            .arg(token_id)
            .arg(EVENTS_MAXLEN);
        invocation
    }

    /// Writes registry entries in one pipelined round trip; returns the
    /// states stored.
    pub async fn set_refresh_entries(
        &self,
        entries: &[(String, RefreshEntry, i64)],
    ) -> redis::RedisResult<Vec<State>> {
        self.set_refresh_entries_as_of(entries, revokd_jobs::now_unix())
            .await
    }

    /// [`DenyList::set_refresh_entries`] with TTLs computed as of `now`
    /// (each entry ends at `now + ttl`; see `DenyList::deny_many_as_of`).
    pub async fn set_refresh_entries_as_of(
        &self,
        entries: &[(String, RefreshEntry, i64)],
        now: i64,
    ) -> redis::RedisResult<Vec<State>> {
        let mut pipe = redis::pipe();
        pipe.load_script(&SET_ENTRY).ignore();
        for (token_id, entry, ttl) in entries {
            pipe.invoke_script(&self.set_entry(token_id, entry, *ttl, now));
        }
        let mut conn = self.conn.clone();
        let ranks: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(ranks.into_iter().map(State::from_rank).collect())
    }

    /// The registry entry of `token_id`, with its family's revocation folded
    /// into the state; `None` when Redis does not have it.
    pub async fn refresh_entry(&self, token_id: &str) -> redis::RedisResult<Option<RefreshEntry>> {
        Ok(self.refresh_lookup(token_id).await?.entry)
    }

    /// [`DenyList::refresh_entry`] and whether the registry is complete
    /// (the marker), in one round trip.
    pub async fn refresh_lookup(&self, token_id: &str) -> redis::RedisResult<RefreshLookup> {
        let mut conn = self.conn.clone();
        let (value, family_revoked, complete): (Option<String>, Option<String>, i64) = READ_ENTRY
            .key(self.rt_key(token_id))
            .key(self.marker_key())
            .arg(format!("{}rtf:", self.prefix))
            .invoke_async(&mut conn)
            .await?;
        let entry = value
            .and_then(|v| serde_json::from_str::<RefreshEntry>(&v).ok())
            .map(|mut entry| {
                if family_revoked.is_some() && entry.state == State::Active {
                    entry.state = State::Revoked;
                }
                entry
            });
        Ok(RefreshLookup {
            entry,
            complete: complete == 1,
        })
    }

    /// Marks a family revoked; true for the first caller only (SET NX), which
    /// makes reuse detection race-free across concurrent presentations.
    pub async fn mark_family_revoked(
        &self,
        family: &str,
        reason: &str,
        ttl: i64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let first: i64 = MARK_FAMILY
            .key(self.rtf_key(family))
            .key(self.events_key())
            .arg(reason)
            .arg(ttl.max(1))
            .arg(family)
            .arg(EVENTS_MAXLEN)
            .arg(revokd_jobs::now_unix().saturating_add(ttl.max(1)))
            .invoke_async(&mut conn)
            .await?;
        Ok(first == 1)
    }
}

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
        .bind(&job.job_id)
        .bind(&job.family_id)
        .bind(&job.subject)
        .bind(job.expires_at)
        .bind(&job.token_id)
        .bind(old_id)
        .bind(old_exp)
        .bind(&job.requested_by)
        .bind(job.requested_at)
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
             where not in_redis limit $1",
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
             where not t.in_redis limit $1",
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
