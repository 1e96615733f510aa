//! Redis, the fast store: the deny-list (`{prefix}jti:{token_id}` entries,
//! `{prefix}sub:{subject}` watermarks), the refresh-token registry
//! (`{prefix}rt:`, `{prefix}rtf:`), the keys that coordinate processes (the
//! marker, rebuilds, leases, the last cleanup's report) and the snapshot a
//! replica loads. Every write runs one of the Lua `scripts`, so repeated or
//! reordered jobs converge on the same state.
//!
//! One [`DenyList`] handle serves all of them; each file adds the methods of
//! one concern: [`denylist`], [`registry`], [`coordination`], [`snapshot`].
//! The apalis-redis queue's keys are not here but in [`super::queue`].

pub mod coordination;
pub mod denylist;
pub mod registry;
mod scripts;
pub mod snapshot;
#[cfg(test)]
mod tests;

use redis::aio::ConnectionManager;

pub use denylist::{DenyEntry, Lookup, Written};
pub use registry::{RefreshEntry, RefreshLookup, State};
pub use snapshot::Snapshot;

/// Most recent revocation events kept in `{prefix}events` (approximate trim).
pub const EVENTS_MAXLEN: u64 = 100_000;

/// Key layout and operations of the deny-list under one prefix.
#[derive(Clone)]
pub struct DenyList {
    pub(in crate::store) conn: ConnectionManager,
    pub(in crate::store) prefix: String,
}

impl DenyList {
    /// The deny-list under `prefix` on `conn`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    /// `{prefix}jti:{token_id}`.
    pub fn jti_key(&self, token_id: &str) -> String {
        format!("{}jti:{token_id}", self.prefix)
    }

    /// `{prefix}sub:{subject}`.
    pub fn sub_key(&self, subject: &str) -> String {
        format!("{}sub:{subject}", self.prefix)
    }

    /// `{prefix}rt:{token_id}`.
    pub fn rt_key(&self, token_id: &str) -> String {
        format!("{}rt:{token_id}", self.prefix)
    }

    /// `{prefix}rtf:{family}`: present once the family is revoked.
    pub fn rtf_key(&self, family: &str) -> String {
        format!("{}rtf:{family}", self.prefix)
    }

    /// `{prefix}events`: the stream of applied revocations replicas follow.
    pub fn events_key(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `{prefix}marker`: present while Redis holds the whole deny-list.
    pub fn marker_key(&self) -> String {
        format!("{}marker", self.prefix)
    }

    /// `{prefix}count:{kind}`: how many `{kind}:` keys end in each minute.
    fn count_key(&self, kind: &str) -> String {
        format!("{}count:{kind}", self.prefix)
    }

    /// A write Redis must accept (`{prefix}writable`, expiring): fails
    /// while Redis answers but refuses writes (`OOM`, `READONLY`, `MISCONF`,
    /// `NOREPLICAS`).
    pub async fn probe_write(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("{}writable", self.prefix))
            .arg(revokd_jobs::now_unix())
            .arg("PX")
            .arg(10_000)
            .query_async::<()>(&mut conn)
            .await
    }

    /// Round trip to check Redis answers.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    /// All keys starting with `start`, in SCAN batches.
    pub(in crate::store) async fn scan_batches(
        &self,
        start: &str,
    ) -> redis::RedisResult<Vec<Vec<String>>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(start));
        let mut cursor = 0u64;
        let mut batches = Vec::new();
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, 2000).await?;
            if !keys.is_empty() {
                batches.push(keys);
            }
            if next == 0 {
                return Ok(batches);
            }
            cursor = next;
        }
    }
}

/// One SCAN call: the next cursor and the keys matching `pattern`.
async fn scan_page(
    conn: &mut ConnectionManager,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

/// `s` with SCAN's glob characters escaped, to match it literally.
pub(in crate::store) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Seconds a deny-list entry lives: until the token's expiry plus leeway,
/// capped at the maximum token lifetime. `None` for a token that checks
/// already call expired (past `exp` + leeway): it gets no Redis key.
pub fn deny_ttl(expires_at: i64, now: i64, leeway: i64, max_lifetime: i64) -> Option<i64> {
    let ttl = expires_at
        .saturating_add(leeway)
        .saturating_sub(now)
        .min(max_lifetime);
    (ttl > 0).then_some(ttl)
}

/// Seconds a watermark lives: once every token issued before it has expired.
pub fn watermark_ttl(leeway: i64, max_lifetime: i64) -> i64 {
    max_lifetime.saturating_add(leeway).max(1)
}
