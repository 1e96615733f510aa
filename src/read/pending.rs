//! Revocations that Redis may not hold yet, known to every API process.
//!
//! A revocation is made durable before it is queued: written to Postgres
//! marked `in_redis = false` (or to the local spool when Postgres is down).
//! It stays marked until a worker or the resync has written it into Redis.
//! While Redis refuses writes (`OOM`, `READONLY`, `MISCONF`, `NOREPLICAS`),
//! restarts, or loses the queue, such rows are all that records it — and
//! Redis and the replicas following it would answer "active".
//!
//! So every API process keeps this overlay: the marked rows, read from
//! Postgres every [`POLL_EVERY`], and the revocations this process accepted
//! (refused here from the moment they are recorded, queued or not). A bulk
//! revocation's rows, recorded as queued while their chunk's job is in the
//! queue, are not read: a large one would fill the overlay and send every
//! check to Postgres while a worker is about to write them anyway. They
//! count once their push fails (the API marks them pending), once a
//! worker's resync finds the queue no longer holds their job (15 s after
//! they were recorded; it marks them pending), or once they are queued for
//! longer than [`QUEUED_GRACE_SECS`] (their job lost, or no worker
//! running). A check consults it before the replica and Redis. A
//! row leaves the overlay only once the replica has been proven current
//! after the row left Postgres's pending set (so the event that wrote it to
//! Redis is in the replica). With more than [`LIMIT`] pending rows the
//! overlay stops listing them and sends every check to Postgres instead.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use revokd_jobs::{Job, now_unix, now_unix_ms};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    read::replica::Replica,
    store::{TtlPolicy, pg::Db, resync::QUEUED_GRACE_SECS},
};

/// How often pending rows are read from Postgres.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Most pending rows listed; beyond, checks go to Postgres.
const LIMIT: i64 = 10_000;
/// Longest a poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Pending rows read from Postgres, by key.
#[derive(Debug, Default)]
struct Polled {
    /// token_id → expires_at.
    tokens: HashMap<String, i64>,
    /// subject → not_before.
    subjects: HashMap<String, i64>,
    /// issuer → not_before.
    issuers: HashMap<String, i64>,
    /// Refresh tokens whose registry row (state) Redis may lack.
    refresh: HashMap<String, i64>,
}

impl Polled {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty()
            && self.subjects.is_empty()
            && self.issuers.is_empty()
            && self.refresh.is_empty()
    }
}

fn raise(map: &mut HashMap<String, i64>, key: &str, value: i64) {
    let e = map.entry(key.to_owned()).or_insert(value);
    *e = (*e).max(value);
}

/// What the overlay says about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Found {
    /// Its id is revoked.
    pub denied: bool,
    /// Its subject's pending watermark.
    pub not_before: Option<i64>,
    /// Its issuer's pending watermark.
    pub issuer_not_before: Option<i64>,
}

impl Found {
    /// Merges a store's answer with this one: denied by either, the higher
    /// of each watermark (`None` orders below any value).
    pub fn merge(self, other: Found) -> Found {
        Found {
            denied: self.denied || other.denied,
            not_before: self.not_before.max(other.not_before),
            issuer_not_before: self.issuer_not_before.max(other.issuer_not_before),
        }
    }
}

/// What a check must do about pending revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Merge this with whatever store answers.
    Merge(Found),
    /// Too many pending rows to list: only Postgres can answer (merged with
    /// this process's own entries).
    PostgresOnly(Found),
}

/// A revocation this process accepted without the queue.
#[derive(Debug, Clone, Copy)]
struct Local {
    /// expires_at of a token, not_before of a subject.
    value: i64,
    added_ms: i64,
    /// When it was known to be in Postgres (as pending) — from then on the
    /// poll lists it; `None` while only the spool holds it.
    in_postgres_ms: Option<i64>,
}

/// The overlay of one process. Reads take no lock: an atomic count of local
/// entries, then (only when there are some) a sharded map lookup, and one
/// [`ArcSwap`] load of the polled rows.
#[derive(Debug, Default)]
pub struct Pending {
    /// Rows read from Postgres.
    polled: ArcSwap<Polled>,
    /// Tokens accepted here without the queue.
    local_tokens: DashMap<String, Local>,
    /// Watermarks accepted here without the queue.
    local_subjects: DashMap<String, Local>,
    /// Issuer watermarks accepted here without the queue.
    local_issuers: DashMap<String, Local>,
    /// Refresh tokens registered or rotated here without the queue.
    local_refresh: DashMap<String, Local>,
    /// Entries in the four local maps.
    local_count: AtomicUsize,
    /// More pending rows than [`LIMIT`].
    overflow: AtomicBool,
    /// The first poll has been read: until then only Postgres knows.
    loaded: AtomicBool,
    /// Wakes the poller (a revocation was just written without the queue).
    wake: Notify,
}

impl Pending {
    /// An empty overlay that sends checks to Postgres until its first poll
    /// (see [`follow`](Self::follow)) has been read.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether the first poll has been read (checks may use Redis and the
    /// replica from then on).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Marks the first poll read, for tests that never poll.
    #[cfg(test)]
    fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// What the overlay holds for a token (its id, its ECDSA twin's id, its
    /// subject, its issuer).
    pub fn cover(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
        issuer: Option<&str>,
    ) -> Cover {
        let mut found = Found::default();
        let local = |map: &DashMap<String, Local>, key: Option<&str>| {
            key.and_then(|k| map.get(k).map(|l| l.value))
        };
        if self.local_count.load(Ordering::Acquire) > 0 {
            found.denied = self.local_tokens.contains_key(token_id)
                || twin.is_some_and(|t| self.local_tokens.contains_key(t));
            found.not_before = local(&self.local_subjects, subject);
            found.issuer_not_before = local(&self.local_issuers, issuer);
        }
        if self.overflow.load(Ordering::Acquire) || !self.loaded.load(Ordering::Acquire) {
            return Cover::PostgresOnly(found);
        }
        let polled = self.polled.load();
        if !polled.is_empty() {
            found.denied |= polled.tokens.contains_key(token_id)
                || twin.is_some_and(|t| polled.tokens.contains_key(t));
            let polled_of = |map: &HashMap<String, i64>, key: Option<&str>| {
                key.and_then(|k| map.get(k).copied())
            };
            found = found.merge(Found {
                denied: false,
                not_before: polled_of(&polled.subjects, subject),
                issuer_not_before: polled_of(&polled.issuers, issuer),
            });
        }
        Cover::Merge(found)
    }

    /// Whether Redis (and the replica) may lack the registry state of the
    /// refresh token `token_id`: then only Postgres can tell it.
    pub fn refresh_pending(&self, token_id: &str) -> bool {
        self.overflow.load(Ordering::Acquire)
            || !self.loaded.load(Ordering::Acquire)
            || (self.local_count.load(Ordering::Acquire) > 0
                && self.local_refresh.contains_key(token_id))
            || self.polled.load().refresh.contains_key(token_id)
    }

    /// Entries held: (tokens, watermarks of subjects and issuers), and
    /// whether the pending set overflowed.
    pub fn len(&self) -> (usize, usize, bool) {
        let polled = self.polled.load();
        (
            polled.tokens.len() + self.local_tokens.len(),
            polled.subjects.len()
                + self.local_subjects.len()
                + polled.issuers.len()
                + self.local_issuers.len(),
            self.overflow.load(Ordering::Acquire),
        )
    }

    /// Whether nothing is pending.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.local_count.load(Ordering::Acquire) == 0
            && !self.overflow.load(Ordering::Acquire)
            && self.polled.load().is_empty()
    }

    /// Records a revocation (or refresh-token registration) this process
    /// accepted without the queue: enforced here at once. `in_postgres`
    /// false when only the spool holds it (kept until
    /// [`spool_replayed`](Self::spool_replayed)).
    pub fn add_local(&self, job: &Job, in_postgres: bool, ttl: TtlPolicy) {
        self.insert(job, in_postgres, ttl);
        self.wake.notify_one();
    }

    /// Records a revocation this process recorded in Postgres and is about
    /// to queue: refused here at once (read-your-writes), before a worker
    /// has written it into Redis and the replica has read it. The poller is
    /// not woken: its next poll lists the row while it is pending, and then
    /// drops this entry as it does every entry Postgres holds.
    pub fn add_accepted(&self, job: &Job, ttl: TtlPolicy) {
        self.insert(job, true, ttl);
    }

    fn insert(&self, job: &Job, in_postgres: bool, ttl: TtlPolicy) {
        let now = now_unix_ms();
        let confirmed = in_postgres.then_some(now);
        let add =
            |map: &DashMap<String, Local>, key: &str, value: i64| match map.entry(key.to_owned()) {
                dashmap::Entry::Occupied(mut held) => {
                    let held = held.get_mut();
                    held.value = held.value.max(value);
                    held.added_ms = now;
                    // Kept until every acceptance of it is known in Postgres.
                    held.in_postgres_ms = held.in_postgres_ms.and(confirmed);
                }
                dashmap::Entry::Vacant(slot) => {
                    slot.insert(Local {
                        value,
                        added_ms: now,
                        in_postgres_ms: confirmed,
                    });
                    self.local_count.fetch_add(1, Ordering::AcqRel);
                }
            };
        match job {
            Job::Revoke(j) => add(&self.local_tokens, &j.token_id, ttl.capped_expiry(j)),
            Job::RevokeBatch(j) => {
                for t in j.tokens() {
                    add(&self.local_tokens, &t.token_id, ttl.capped_expiry(&t));
                }
            }
            Job::RevokeAll(j) => add(&self.local_subjects, &j.subject, j.not_before),
            Job::RevokeIssuer(j) => add(&self.local_issuers, &j.issuer, j.not_before),
            Job::RegisterRefresh(j) => {
                add(&self.local_refresh, &j.token_id, j.expires_at);
                if let Some(old) = &j.rotated_from {
                    add(&self.local_refresh, &old.token_id, old.expires_at);
                }
            }
            Job::RevokeFamily(_) | Job::Cleanup(_) | Job::Unknown => {}
        }
    }

    fn local_maps(&self) -> [&DashMap<String, Local>; 4] {
        [
            &self.local_tokens,
            &self.local_subjects,
            &self.local_issuers,
            &self.local_refresh,
        ]
    }

    /// The spool was replayed into Postgres by a pass that started at
    /// `started_ms`: local entries added before then are in Postgres now.
    pub fn spool_replayed(&self, started_ms: i64) {
        let now = now_unix_ms();
        for map in self.local_maps() {
            for mut local in map.iter_mut() {
                if local.in_postgres_ms.is_none() && local.added_ms < started_ms {
                    local.in_postgres_ms = Some(now);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Adds rows just read (new pending rows count at once).
    fn add_polled(&self, rows: &Polled) {
        if rows.is_empty() {
            return;
        }
        let current = self.polled.load();
        let merge = |current: &HashMap<String, i64>, rows: &HashMap<String, i64>| {
            let mut merged = current.clone();
            rows.iter().for_each(|(k, v)| raise(&mut merged, k, *v));
            merged
        };
        let merged = Polled {
            tokens: merge(&current.tokens, &rows.tokens),
            subjects: merge(&current.subjects, &rows.subjects),
            issuers: merge(&current.issuers, &rows.issuers),
            refresh: merge(&current.refresh, &rows.refresh),
        };
        self.polled.store(Arc::new(merged));
    }

    /// Replaces the polled rows with a poll that started at `started_ms`,
    /// and drops local entries that poll saw in Postgres.
    fn replace_polled(&self, rows: Polled, started_ms: i64) {
        self.polled.store(Arc::new(rows));
        for map in self.local_maps() {
            map.retain(|_, local| {
                let keep = local.in_postgres_ms.is_none_or(|at| at >= started_ms);
                if !keep {
                    self.local_count.fetch_sub(1, Ordering::AcqRel);
                }
                keep
            });
        }
    }

    /// Reads Postgres's pending rows every [`POLL_EVERY`] (or when woken by a
    /// local entry)
    /// until `stop` fires. `replica`: rows leave the overlay only once it is
    /// proven current after they left Postgres's pending set.
    pub async fn follow(
        self: Arc<Self>,
        db: Db,
        replica: Option<Arc<Replica>>,
        leeway: i64,
        stop: CancellationToken,
    ) {
        loop {
            let started_ms = now_unix_ms();
            let now = now_unix();
            let (cutoff, queued_before) = (now - leeway, now - QUEUED_GRACE_SECS);
            let poll = db.pending_revocations(cutoff, queued_before, LIMIT);
            match tokio::time::timeout(POLL_TIMEOUT, poll).await {
                Ok(Ok(rows)) => {
                    // A row absent from this read left the pending set before
                    // the read returned: its Redis write (and stream event)
                    // came earlier still.
                    let read_at = tokio::time::Instant::now();
                    let overflow = rows.len() as i64 > LIMIT;
                    let mut polled = Polled::default();
                    for (kind, key, value) in &rows {
                        let map = match kind.as_str() {
                            "t" => &mut polled.tokens,
                            "s" => &mut polled.subjects,
                            "i" => &mut polled.issuers,
                            _ => &mut polled.refresh,
                        };
                        raise(map, key, *value);
                    }
                    self.add_polled(&polled);
                    if overflow != self.overflow.swap(overflow, Ordering::AcqRel) {
                        tracing::warn!(
                            overflow,
                            limit = LIMIT,
                            "pending revocations {} the overlay's limit: checks {} Postgres",
                            if overflow { "exceed" } else { "fit" },
                            if overflow {
                                "go to"
                            } else {
                                "no longer all go to"
                            }
                        );
                    }
                    if let Some(replica) = &replica {
                        replica
                            .wait_current_since(read_at, Duration::from_secs(2))
                            .await;
                    }
                    self.replace_polled(polled, started_ms);
                    self.loaded.store(true, Ordering::Release);
                    let (tokens, subjects, overflow) = self.len();
                    crate::instruments::pending_revocations(tokens, subjects, overflow);
                }
                Ok(Err(error)) => tracing::debug!(%error, "cannot read pending revocations"),
                Err(_) => tracing::debug!("reading pending revocations timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = self.wake.notified() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use revokd_jobs::{RevokeIssuer, RevokeSubject, RevokeToken};

    use super::*;

    #[test]
    fn local_entries_cover_at_once_and_stay_until_postgres_lists_them() {
        const TTL: TtlPolicy = TtlPolicy {
            leeway: 0,
            max_lifetime: 60,
        };
        let pending = Pending::new();
        assert!(
            matches!(pending.cover("t", None, None, None), Cover::PostgresOnly(_)),
            "before the first poll only Postgres knows"
        );
        pending.mark_loaded();
        assert_eq!(
            pending.cover("t", None, Some("s"), Some("i")),
            Cover::Merge(Found::default())
        );
        pending.add_local(
            &Job::Revoke(RevokeToken::new("t", None, i64::MAX)),
            false,
            TTL,
        );
        pending.add_local(&Job::RevokeAll(RevokeSubject::new("s", 100)), true, TTL);
        pending.add_local(&Job::RevokeIssuer(RevokeIssuer::new("i", 200)), true, TTL);
        let found = Found {
            denied: true,
            not_before: Some(100),
            issuer_not_before: Some(200),
        };
        assert_eq!(
            pending.cover("t", None, Some("s"), Some("i")),
            Cover::Merge(found)
        );
        assert_eq!(
            pending.cover("x", Some("t"), None, None),
            Cover::Merge(Found {
                denied: true,
                ..Found::default()
            }),
            "the twin id counts"
        );
        // A poll that started later saw the watermark's row; the spooled
        // token stays until the spool is replayed.
        pending.replace_polled(Polled::default(), now_unix_ms() + 1);
        assert_eq!(
            pending.cover("t", None, Some("s"), Some("i")),
            Cover::Merge(Found {
                denied: true,
                ..Found::default()
            })
        );
        pending.spool_replayed(now_unix_ms() + 1);
        pending.replace_polled(Polled::default(), now_unix_ms() + 1);
        assert!(pending.is_empty());
        assert_eq!(
            pending.cover("t", None, Some("s"), Some("i")),
            Cover::Merge(Found::default())
        );
    }

    #[test]
    fn merge_keeps_the_highest_watermark() {
        let found = |denied, not_before, issuer_not_before| Found {
            denied,
            not_before,
            issuer_not_before,
        };
        let held = found(false, Some(5), Some(7));
        assert_eq!(
            held.merge(found(false, Some(9), Some(3))),
            found(false, Some(9), Some(7))
        );
        assert_eq!(
            held.merge(found(true, None, None)),
            found(true, Some(5), Some(7))
        );
        assert_eq!(Found::default().merge(Found::default()), Found::default());
    }
}
