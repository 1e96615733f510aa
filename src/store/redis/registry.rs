//! The refresh-token registry in Redis: `{prefix}rt:{token_id}` entries and
//! `{prefix}rtf:{family}` revoked-family markers. States only move forward
//! (active → rotated → revoked), so jobs commute and repeat safely. The
//! Postgres half is [`crate::store::pg::refresh`].

use serde::{Deserialize, Serialize};

use super::{
    DenyList, EVENTS_MAXLEN,
    scripts::{MARK_FAMILY, READ_REFRESH_ENTRY, SET_REFRESH_ENTRY},
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
    /// The state of a stored rank (0, 1, 2; anything higher is revoked).
    pub(in crate::store) fn from_rank(rank: i64) -> Self {
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
    /// The SET_REFRESH_ENTRY call for an entry living `ttl` seconds from `now`.
    fn set_entry(
        &self,
        token_id: &str,
        entry: &RefreshEntry,
        ttl: i64,
        now: i64,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = SET_REFRESH_ENTRY.prepare_invoke();
        invocation
            .key(self.keys.rt(token_id))
            .key(self.keys.rtf(&entry.family))
            .key(self.keys.events())
            .arg(entry.sub.as_deref().unwrap_or(""))
            .arg(&entry.family)
            .arg(entry.exp)
            .arg(entry.state as i64)
            .arg(now.saturating_add(ttl.max(1)))
            .arg(token_id)
            .arg(EVENTS_MAXLEN)
            .arg(self.repeats_arg());
        invocation
    }

    /// Writes registry entries in one pipelined round trip, each ending at
    /// `now + ttl` (see [`DenyList::deny_many`]); returns the states stored.
    pub async fn set_refresh_entries(
        &self,
        entries: &[(String, RefreshEntry, i64)],
        now: i64,
    ) -> redis::RedisResult<Vec<State>> {
        let mut pipe = redis::pipe();
        pipe.load_script(&SET_REFRESH_ENTRY).ignore();
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
        let (value, family_revoked, complete): (Option<String>, Option<String>, i64) =
            READ_REFRESH_ENTRY
                .key(self.keys.rt(token_id))
                .key(self.keys.marker())
                .arg(self.keys.rtf_prefix())
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
        now: i64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let first: i64 = MARK_FAMILY
            .key(self.keys.rtf(family))
            .key(self.keys.events())
            .arg(reason)
            .arg(ttl.max(1))
            .arg(family)
            .arg(EVENTS_MAXLEN)
            .arg(now.saturating_add(ttl.max(1)))
            .arg(self.repeats_arg())
            .invoke_async(&mut conn)
            .await?;
        Ok(first == 1)
    }
}
