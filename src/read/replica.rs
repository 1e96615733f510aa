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

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use redis::{Client, aio::MultiplexedConnection};
use revokd_jobs::now_unix;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_128;

use crate::{
    store::{
        pg::Db,
        redis::{DenyList, Snapshot},
    },
    write::resync::Resync,
};

/// Stream entries read per request.
const READ_COUNT: usize = 1_000;
/// How long one read blocks when there is nothing new.
const BLOCK_MS: u64 = 100;
/// On (re)connect, events are replayed from this far before the snapshot:
/// replaying is harmless, missing one is not.
const REPLAY_MS: u64 = 60_000;

/// In-memory deny-list. Keys are 128-bit hashes of token ids and subjects:
/// 16 bytes instead of a string, no collision in practice.
#[derive(Debug)]
pub struct Replica {
    /// token hash → unix time the entry ends.
    tokens: DashMap<u128, i64>,
    /// subject hash → (not_before, unix time the watermark ends).
    subjects: DashMap<u128, (i64, i64)>,
    /// refresh token hash → (family hash, state rank, unix time it ends).
    refresh: DashMap<u128, (u128, u8, i64)>,
    /// revoked family hash → unix time the marker ends.
    families: DashMap<u128, i64>,
    loaded: AtomicBool,
    /// Unix milliseconds at which the replica was last proven current.
    current_at_ms: AtomicI64,
    max_lag_ms: i64,
}

/// One change read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A token on the deny-list until `until`.
    Token { id: String, until: i64 },
    /// A subject watermark.
    Subject {
        id: String,
        not_before: i64,
        until: i64,
    },
    /// A refresh-token registry entry (state rank 0 active, 1 rotated, 2 revoked).
    Refresh {
        id: String,
        family: String,
        state: u8,
        until: i64,
    },
    /// A revoked refresh-token family.
    Family { id: String, until: i64 },
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

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Replica {
    /// An empty replica that declines until loaded and proven current.
    pub fn new(max_lag: Duration) -> Arc<Self> {
        Arc::new(Self {
            tokens: DashMap::new(),
            subjects: DashMap::new(),
            refresh: DashMap::new(),
            families: DashMap::new(),
            loaded: AtomicBool::new(false),
            current_at_ms: AtomicI64::new(0),
            max_lag_ms: i64::try_from(max_lag.as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// Whether the replica may answer now.
    pub fn is_fresh(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
            && unix_ms().saturating_sub(self.current_at_ms.load(Ordering::Acquire))
                <= self.max_lag_ms
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

    /// Whether `token_id` is on the deny-list as of `now`; the caller has
    /// checked freshness (through [`lookup`](Self::lookup)).
    pub fn denies(&self, token_id: &str, now: i64) -> bool {
        self.tokens
            .get(&xxh3_128(token_id.as_bytes()))
            .is_some_and(|until| *until > now)
    }

    /// Marks the replica loaded and proven current now, as the follower does
    /// after a snapshot. For benchmarks and tests that fill it with `apply`.
    #[doc(hidden)]
    pub fn mark_current(&self) {
        self.loaded.store(true, Ordering::Release);
        self.proven_current_at(unix_ms());
    }

    /// Waits (up to `timeout`) until the replica has been proven current as
    /// of `since_ms` (unix milliseconds), so a change applied before then is
    /// visible to checks it answers. Returns at once when it is not fresh
    /// (checks then bypass it anyway).
    pub async fn wait_current_since(&self, since_ms: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.is_fresh()
            && self.current_at_ms.load(Ordering::Acquire) < since_ms
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms() -> i64 {
        unix_ms()
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
            Event::Token { id, until } => {
                let mut entry = self.tokens.entry(xxh3_128(id.as_bytes())).or_insert(*until);
                *entry = (*entry).max(*until);
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
        self.tokens.retain(|_, until| *until > now);
        self.subjects.retain(|_, (_, until)| *until > now);
        self.refresh.retain(|_, (_, _, until)| *until > now);
        self.families.retain(|_, until| *until > now);
    }

    /// Entries held: (tokens, subjects).
    pub fn len(&self) -> (usize, usize) {
        (self.tokens.len(), self.subjects.len())
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.subjects.is_empty()
    }

    fn proven_current_at(&self, ms: i64) {
        self.current_at_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn invalidate(&self) {
        self.current_at_ms.store(0, Ordering::Release);
    }
}

/// What the follower needs.
#[derive(Clone)]
pub struct Follower {
    /// The replica to fill.
    pub replica: Arc<Replica>,
    /// Redis URL (the follower uses a dedicated connection: XREAD BLOCK
    /// would stall a shared one).
    pub redis_url: String,
    /// The deny-list (key names, snapshot reads).
    pub deny: DenyList,
    /// Postgres, for a snapshot while Redis's deny-list is incomplete.
    pub db: Db,
    /// Copies revocations written to Postgres during a Redis outage into
    /// Redis (and so into the stream) before the replica claims to be current.
    pub resync: Resync,
    /// Leeway in seconds.
    pub leeway: i64,
    /// Maximum token lifetime in seconds.
    pub max_lifetime: i64,
}

impl Follower {
    /// Loads and follows until `stop` fires, reconnecting forever.
    pub async fn run(self, stop: CancellationToken) {
        let sweeper = {
            let replica = Arc::clone(&self.replica);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(10)) => replica.sweep(now_unix()),
                        () = stop.cancelled() => return,
                    }
                }
            })
        };
        let mut last_id: Option<String> = None;
        loop {
            let outcome = tokio::select! {
                outcome = self.follow(&mut last_id) => outcome,
                () = stop.cancelled() => break,
            };
            self.replica.invalidate();
            if let Err(error) = outcome {
                tracing::debug!(%error, "replica stream interrupted; checks use redis/postgres until it resumes");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = stop.cancelled() => break,
            }
        }
        sweeper.abort();
        let _ = sweeper.await;
    }

    /// One connection's life: (re)load if needed, then read the stream.
    async fn follow(&self, last_id: &mut Option<String>) -> anyhow::Result<()> {
        let client = Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let stream = self.deny.events_key();
        if let Err(error) = self.resync.run_once().await {
            tracing::debug!(%error, "resync before following failed");
        }
        if self
            .stream_trimmed_past(&mut conn, &stream, last_id.as_deref())
            .await?
        {
            *last_id = Some(self.load(&mut conn, &stream).await?);
        }
        loop {
            let id = last_id.clone().unwrap_or_else(|| "0-0".into());
            let sent_ms = unix_ms();
            let reply: redis::streams::StreamReadReply = tokio::time::timeout(
                Duration::from_millis(BLOCK_MS + 2_000),
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&id)
                    .query_async(&mut conn),
            )
            .await??;
            let mut read = 0;
            for key in reply.keys {
                for entry in key.ids {
                    read += 1;
                    if let Some(event) = parse(&entry.map) {
                        self.replica.apply(&event);
                    }
                    *last_id = Some(entry.id);
                }
            }
            if read < READ_COUNT {
                self.replica.proven_current_at(sent_ms);
            } else if self
                .stream_trimmed_past(&mut conn, &stream, last_id.as_deref())
                .await?
            {
                // We fell further behind than the stream keeps: start over.
                *last_id = Some(self.load(&mut conn, &stream).await?);
            }
        }
    }

    /// True when entries after `last_id` were trimmed away (a gap).
    async fn stream_trimmed_past(
        &self,
        conn: &mut MultiplexedConnection,
        stream: &str,
        last_id: Option<&str>,
    ) -> redis::RedisResult<bool> {
        let Some(last) = last_id else { return Ok(true) };
        let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        // Conservative: the first kept entry being newer than ours may mean
        // nothing was lost, but a reload is cheaper than a doubt.
        Ok(first.ids.first().is_some_and(|e| id_lt(last, &e.id)))
    }

    /// Loads a snapshot; returns the stream id to follow from.
    async fn load(&self, conn: &mut MultiplexedConnection, stream: &str) -> anyhow::Result<String> {
        // Note where the stream is *before* the snapshot, minus a replay
        // window, so nothing applied meanwhile is missed.
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        let from_ms = last
            .ids
            .first()
            .and_then(|e| e.id.split('-').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| u64::try_from(unix_ms()).unwrap_or_default())
            .saturating_sub(REPLAY_MS);
        let now = now_unix();
        let started = std::time::Instant::now();
        let snapshot = if self.deny.marker_present().await.unwrap_or(false) {
            self.deny.snapshot().await?
        } else {
            self.snapshot_from_postgres(now).await?
        };
        let (n_tokens, n_subjects, n_refresh) = (
            snapshot.tokens.len(),
            snapshot.subjects.len(),
            snapshot.refresh.len(),
        );
        for (id, until) in snapshot.tokens {
            self.replica.apply(&Event::Token { id, until });
        }
        for (id, not_before, until) in snapshot.subjects {
            self.replica.apply(&Event::Subject {
                id,
                not_before,
                until,
            });
        }
        for (id, family, state, until) in snapshot.refresh {
            self.replica.apply(&Event::Refresh {
                id,
                family,
                state,
                until,
            });
        }
        for (id, until) in snapshot.families {
            self.replica.apply(&Event::Family { id, until });
        }
        self.replica.loaded.store(true, Ordering::Release);
        tracing::info!(
            tokens = n_tokens,
            subjects = n_subjects,
            refresh = n_refresh,
            took = ?started.elapsed(),
            "replica loaded"
        );
        Ok(format!("{from_ms}-0"))
    }

    async fn snapshot_from_postgres(&self, now: i64) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let cap = now.saturating_add(self.max_lifetime);
        let mut after = String::new();
        loop {
            let page = self
                .db
                .live_tokens_page(&after, now - self.leeway, 10_000)
                .await?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.token_id);
            snapshot.tokens.extend(page.into_iter().map(|r| {
                (
                    r.token_id,
                    r.expires_at.saturating_add(self.leeway).min(cap),
                )
            }));
        }
        let until = cap.saturating_add(self.leeway);
        let mut after = String::new();
        loop {
            let page = self.db.watermarks_page(&after, 10_000).await?;
            let Some((last, _)) = page.last() else { break };
            after.clone_from(last);
            snapshot
                .subjects
                .extend(page.into_iter().map(|(s, nb)| (s, nb, until)));
        }
        let mut after = String::new();
        loop {
            let page = self
                .db
                .refresh_page(&after, now - self.leeway, 10_000)
                .await?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.token_id);
            snapshot.refresh.extend(page.into_iter().map(|r| {
                let until = r.expires_at.saturating_add(self.leeway).min(cap);
                (
                    r.token_id,
                    r.family_id,
                    u8::try_from(r.state).unwrap_or(2),
                    until,
                )
            }));
        }
        let mut after = String::new();
        loop {
            let page = self.db.revoked_families_page(&after, 10_000).await?;
            let Some((last, _)) = page.last() else { break };
            after.clone_from(last);
            snapshot
                .families
                .extend(page.into_iter().map(|(f, _)| (f, until)));
        }
        Ok(snapshot)
    }
}

/// Stream ids compare as (ms, seq).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn id_lt(a: &str, b: &str) -> bool {
    parse_id(a) < parse_id(b)
}

fn parse(map: &HashMap<String, redis::Value>) -> Option<Event> {
    let text = |k: &str| -> Option<String> { redis::from_redis_value(map.get(k)?.clone()).ok() };
    let num = |k: &str| -> Option<i64> { text(k)?.parse().ok() };
    match text("k")?.as_str() {
        "t" => Some(Event::Token {
            id: text("id")?,
            until: num("until")?,
        }),
        "s" => Some(Event::Subject {
            id: text("id")?,
            not_before: num("nb")?,
            until: num("until")?,
        }),
        "r" => Some(Event::Refresh {
            id: text("id")?,
            family: text("fam")?,
            state: u8::try_from(num("st")?).ok()?,
            until: num("until")?,
        }),
        "f" => Some(Event::Family {
            id: text("id")?,
            until: num("until")?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_in_any_order_converge() {
        let a = Replica::new(Duration::from_secs(1));
        let b = Replica::new(Duration::from_secs(1));
        let events = [
            Event::Token {
                id: "t".into(),
                until: 100,
            },
            Event::Token {
                id: "t".into(),
                until: 50,
            },
            Event::Subject {
                id: "s".into(),
                not_before: 10,
                until: 90,
            },
            Event::Subject {
                id: "s".into(),
                not_before: 5,
                until: 95,
            },
        ];
        events.iter().for_each(|e| a.apply(e));
        events.iter().rev().for_each(|e| b.apply(e));
        for r in [&a, &b] {
            r.loaded.store(true, Ordering::Release);
            r.proven_current_at(unix_ms());
            assert_eq!(r.lookup("t", Some("s"), 60), Some((true, Some(10))));
            assert_eq!(r.lookup("t", Some("s"), 100), Some((false, None)));
        }
    }

    #[test]
    fn an_unproven_replica_declines() {
        let r = Replica::new(Duration::from_secs(1));
        assert_eq!(r.lookup("t", None, 0), None);
        r.loaded.store(true, Ordering::Release);
        r.proven_current_at(unix_ms() - 5_000);
        assert_eq!(r.lookup("t", None, 0), None, "proof older than the bound");
        r.proven_current_at(unix_ms());
        assert_eq!(r.lookup("t", None, 0), Some((false, None)));
    }

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_lt("9-0", "10-0"));
        assert!(id_lt("10-4", "10-5"));
        assert!(!id_lt("10-5", "10-5"));
    }
}
