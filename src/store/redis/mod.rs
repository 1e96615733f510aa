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

use revokd_jobs::RedisConn;

use super::Keys;

pub use denylist::{DenyEntry, DenyGroup, Lookup, Written};
pub use registry::{RefreshEntry, RefreshLookup, State};
pub use snapshot::Snapshot;

/// Most recent revocation events kept in `{prefix}events` (approximate
/// trim): ~37 MB of Redis, and at the ~7,000 revocations/s one Redis core
/// writes, 140 s of history, so a replica's load can replay the minute
/// before it (see `read::replica::snapshot`).
pub const EVENTS_MAXLEN: u64 = 1_000_000;

/// Key layout and operations of the deny-list under one prefix.
#[derive(Clone)]
pub struct DenyList {
    pub(in crate::store) conn: RedisConn,
    pub(in crate::store) keys: Keys,
    /// The generation of the primary whose completeness marker was checked
    /// to be its own (see [`DenyList::lookup`]).
    pub(in crate::store) validated: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whether a write that changes nothing is announced on the events
    /// stream all the same ([`DenyList::announcing_repeats`]).
    pub(in crate::store) repeats: bool,
}

impl DenyList {
    /// The deny-list under `prefix` on `conn` (a `ConnectionManager`, or a
    /// [`RedisConn`] that follows a Sentinel-managed primary).
    pub fn new(conn: impl Into<RedisConn>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            keys: Keys::new(prefix),
            validated: std::sync::Arc::default(),
            repeats: false,
        }
    }

    /// This handle, announcing on the events stream the entries its writes
    /// find already there as well, as the job applier needs: the worker
    /// writes Redis before Postgres, so an entry may be in Redis only while
    /// its job waits for Postgres, and a replica that loaded from Postgres
    /// meanwhile learns it from the job's next attempt. A rebuild or resync
    /// from Postgres (whose rows a replica's load reads) has no need to.
    #[must_use]
    pub fn announcing_repeats(mut self) -> Self {
        self.repeats = true;
        self
    }

    /// The scripts' announce-repeats argument.
    pub(in crate::store) fn repeats_arg(&self) -> u8 {
        u8::from(self.repeats)
    }

    /// The key and channel names this handle uses.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A write Redis must accept (`{prefix}writable`, expiring): fails
    /// while Redis answers but refuses writes (`OOM`, `READONLY`, `MISCONF`,
    /// `NOREPLICAS`). The value is the writer's clock, `now`, for whoever
    /// looks.
    pub async fn probe_write(&self, now: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.keys.writable())
            .arg(now)
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
    conn: &mut RedisConn,
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
