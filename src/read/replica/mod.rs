//! The local replica: the deny-list and subject watermarks in process memory,
//! so a check costs a hash lookup instead of a Redis round trip.
//!
//! Loaded at start (from Redis, or Postgres when Redis's marker is missing),
//! then kept current from the `{prefix}events` stream that the deny-list's
//! Lua scripts append to atomically with every change, read from the last
//! seen id so a reconnect leaves no gap. A reply from the stream that
//! returned fewer entries than asked proves the replica was current when the
//! request was sent; when no such proof is younger than
//! `REVOKD_REPLICA_MAX_LAG` (stream broken, lagging, not loaded) the replica
//! declines and checks fall back to Redis and Postgres.
//!
//! - this file: [`Replica`], the in-memory maps, their lookups, and how an
//!   [`Event`] changes them.
//! - `freshness`: whether the replica may answer, on the monotonic clock.
//! - `event`: [`Event`], one change on the stream, and its parsing.
//! - `follower`: [`Follower`], the task that reads the stream, reconnects,
//!   and resyncs before the replica claims to be current.
//! - `snapshot`: the load, streamed from Postgres (`COPY`, resumable) or,
//!   while Postgres is down, from Redis.
//! - `table`: the token table's compact keys and times.

mod event;
mod follower;
mod freshness;
mod snapshot;
mod table;

#[cfg(test)]
mod tests;

use std::{hash::BuildHasher as _, sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_128;

pub use event::Event;
pub use follower::Follower;
use freshness::Freshness;
pub use snapshot::{COPY_BLOCKS, LoadProgress};
pub use table::TokenKey;
use table::{TokenTable, secs};

/// In-memory deny-list. Token ids are kept as 96-bit hashes with `u32`
/// ends (see `table`), the other maps' keys as 128-bit hashes: no
/// collision in practice.
#[derive(Debug)]
pub struct Replica {
    /// token key → unix second the entry ends.
    tokens: TokenTable,
    /// subject hash → (not_before, unix time the watermark ends).
    subjects: DashMap<u128, (i64, i64)>,
    /// refresh token hash → (family hash, state rank, unix time it ends).
    refresh: DashMap<u128, (u128, u8, i64)>,
    /// revoked family hash → unix time the marker ends.
    families: DashMap<u128, i64>,
    /// issuer hash → (not_before, unix time the watermark ends).
    issuers: DashMap<u128, (i64, i64)>,
    freshness: Freshness,
}

/// What the replica knows about a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Not in the replica (never registered, or registered while Redis was
    /// down): ask Redis, then Postgres.
    Missing,
    /// Registered and usable.
    Active,
    /// Rotated: a presentation is reuse (handled through Redis).
    Rotated,
    /// Revoked, itself or with its family.
    Revoked,
}

impl Replica {
    /// An empty replica that declines until loaded and proven current.
    pub fn new(max_lag: Duration) -> Arc<Self> {
        Arc::new(Self {
            tokens: TokenTable::default(),
            subjects: DashMap::new(),
            refresh: DashMap::new(),
            families: DashMap::new(),
            issuers: DashMap::new(),
            freshness: Freshness::new(max_lag),
        })
    }

    /// Whether the replica may answer now.
    pub fn is_fresh(&self) -> bool {
        self.freshness.is_fresh()
    }

    /// `(denied, not_before)` like a Redis lookup, or `None` when the replica
    /// cannot prove it is current.
    pub fn lookup(
        &self,
        token_id: &str,
        subject: Option<&str>,
        now: i64,
    ) -> Option<(bool, Option<i64>)> {
        if !self.is_fresh() {
            return None;
        }
        let denied = self.denies(token_id, now);
        let not_before = subject.and_then(|s| {
            self.subjects
                .get(&xxh3_128(s.as_bytes()))
                .and_then(|e| (e.1 > now).then_some(e.0))
        });
        Some((denied, not_before))
    }

    /// `issuer`'s watermark as of `now`; the caller has checked freshness
    /// (through [`lookup`](Self::lookup)).
    pub fn issuer_not_before(&self, issuer: &str, now: i64) -> Option<i64> {
        self.issuers
            .get(&xxh3_128(issuer.as_bytes()))
            .and_then(|e| (e.1 > now).then_some(e.0))
    }

    /// Whether `token_id` is on the deny-list as of `now`; the caller has
    /// checked freshness (through [`lookup`](Self::lookup)).
    pub fn denies(&self, token_id: &str, now: i64) -> bool {
        self.tokens
            .get(&TokenKey::of(token_id.as_bytes()))
            .is_some_and(|until| i64::from(*until) > now)
    }

    /// Puts a token on the deny-list until `until`, keeping a later end
    /// already there: [`apply`](Self::apply) for a key the load computed.
    pub fn insert_token(&self, key: TokenKey, until: i64) {
        let until = secs(until);
        let mut entry = self.tokens.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Makes room for `total` tokens in all, so that a load of that many
    /// grows no shard of the table again. Growing one doubles it and frees
    /// the old half, which the allocator keeps: at 10 M entries the process
    /// held 41 B an entry after its load against 31 B with mimalloc told to
    /// return freed memory at once (`MIMALLOC_PURGE_DELAY=0`,
    /// `bench/replica_sizes.sh`) — the table's last doubling.
    pub fn reserve_tokens(&self, total: usize) {
        let shards = self.tokens.shards();
        let per_shard = total.div_ceil(shards.len().max(1));
        let hasher = self.tokens.hasher();
        for shard in shards {
            let mut shard = shard.write();
            let additional = per_shard.saturating_sub(shard.len());
            // Out of memory for it: the shard grows as the load fills it.
            let _ = shard.try_reserve(additional, |(key, _)| hasher.hash_one(key));
        }
    }

    /// Marks the replica loaded and proven current now, as the follower does
    /// after a snapshot. For benchmarks and tests that fill it with `apply`.
    #[doc(hidden)]
    pub fn mark_current(&self) {
        self.freshness.loaded();
        self.freshness.proven_at(Instant::now());
    }

    /// Waits (up to `timeout`) until the replica has been proven current by a
    /// read sent at or after `since`, so a change applied before then is
    /// visible to checks it answers. Returns at once when it is not fresh
    /// (checks then bypass it anyway).
    pub async fn wait_current_since(&self, since: Instant, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.is_fresh() && !self.freshness.proven_since(since) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A refresh token's state, or `None` when the replica cannot prove it
    /// is current.
    pub fn lookup_refresh(&self, token_id: &str, now: i64) -> Option<RefreshState> {
        if !self.is_fresh() {
            return None;
        }
        let Some(entry) = self.refresh.get(&xxh3_128(token_id.as_bytes())).map(|e| *e) else {
            return Some(RefreshState::Missing);
        };
        let (family, state, until) = entry;
        if until <= now {
            return Some(RefreshState::Missing);
        }
        let family_revoked = self.families.get(&family).is_some_and(|until| *until > now);
        Some(match (state, family_revoked) {
            (1, _) => RefreshState::Rotated,
            (_, true) | (2.., _) => RefreshState::Revoked,
            _ => RefreshState::Active,
        })
    }

    /// Applies one change; order does not matter (longest life, highest
    /// watermark win).
    pub fn apply(&self, event: &Event) {
        match event {
            Event::Token { id, until } => self.insert_token(TokenKey::of(id.as_bytes()), *until),
            Event::Tokens(tokens) => {
                for (id, until) in tokens {
                    self.insert_token(TokenKey::of(id.as_bytes()), *until);
                }
            }
            Event::Subject {
                id,
                not_before,
                until,
            } => {
                let mut entry = self
                    .subjects
                    .entry(xxh3_128(id.as_bytes()))
                    .or_insert((*not_before, *until));
                *entry = (entry.0.max(*not_before), entry.1.max(*until));
            }
            Event::Refresh {
                id,
                family,
                state,
                until,
            } => {
                let family = xxh3_128(family.as_bytes());
                let mut entry = self
                    .refresh
                    .entry(xxh3_128(id.as_bytes()))
                    .or_insert((family, *state, *until));
                *entry = (family, entry.1.max(*state), entry.2.max(*until));
            }
            Event::Issuer {
                id,
                not_before,
                until,
            } => {
                let mut entry = self
                    .issuers
                    .entry(xxh3_128(id.as_bytes()))
                    .or_insert((*not_before, *until));
                *entry = (entry.0.max(*not_before), entry.1.max(*until));
            }
            Event::Family { id, until } => {
                let mut entry = self
                    .families
                    .entry(xxh3_128(id.as_bytes()))
                    .or_insert(*until);
                *entry = (*entry).max(*until);
            }
        }
    }

    /// Drops entries that have ended.
    pub fn sweep(&self, now: i64) {
        self.tokens.retain(|_, until| i64::from(*until) > now);
        self.subjects.retain(|_, (_, until)| *until > now);
        self.refresh.retain(|_, (_, _, until)| *until > now);
        self.families.retain(|_, until| *until > now);
        self.issuers.retain(|_, (_, until)| *until > now);
    }

    /// Entries held: (tokens, subjects).
    pub fn len(&self) -> (usize, usize) {
        (self.tokens.len(), self.subjects.len())
    }

    /// Whether it holds nothing (no token, watermark or refresh entry).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
            && self.subjects.is_empty()
            && self.issuers.is_empty()
            && self.refresh.is_empty()
            && self.families.is_empty()
    }
}
