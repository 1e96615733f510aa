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
//! without the queue. A check consults it before the replica and Redis. A
//! row leaves the overlay only once the replica has been proven current
//! after the row left Postgres's pending set (so the event that wrote it to
//! Redis is in the replica). With more than [`LIMIT`] pending rows the
//! overlay stops listing them and sends every check to Postgres instead.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use revokd_jobs::{Job, now_unix};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{replica::Replica, store::pg::Db};

/// How often pending rows are read from Postgres.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Most pending rows listed; beyond, checks go to Postgres.
const LIMIT: i64 = 10_000;
/// Longest a poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Pending revocations by key.
#[derive(Debug, Default, Clone)]
struct Entries {
    /// token_id → expires_at.
    tokens: HashMap<String, i64>,
    /// subject → not_before.
    subjects: HashMap<String, i64>,
}

impl Entries {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.subjects.is_empty()
    }

    fn add_token(&mut self, id: &str, exp: i64) {
        let e = self.tokens.entry(id.to_owned()).or_insert(exp);
        *e = (*e).max(exp);
    }

    fn add_subject(&mut self, subject: &str, not_before: i64) {
        let e = self
            .subjects
            .entry(subject.to_owned())
            .or_insert(not_before);
        *e = (*e).max(not_before);
    }

    fn union(&mut self, other: &Entries) {
        other.tokens.iter().for_each(|(k, v)| self.add_token(k, *v));
        other
            .subjects
            .iter()
            .for_each(|(k, v)| self.add_subject(k, *v));
    }

    /// Adds what `token_id`/`twin`/`subject` have here to `found`.
    fn cover(&self, token_id: &str, twin: Option<&str>, subject: Option<&str>, found: &mut Found) {
        found.denied |=
            self.tokens.contains_key(token_id) || twin.is_some_and(|t| self.tokens.contains_key(t));
        if let Some(nb) = subject.and_then(|s| self.subjects.get(s)) {
            found.not_before = Some(found.not_before.map_or(*nb, |cur| cur.max(*nb)));
        }
    }
}

/// What the overlay says about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Found {
    /// Its id is revoked.
    pub denied: bool,
    /// Its subject's pending watermark.
    pub not_before: Option<i64>,
}

impl Found {
    /// Merges a store's answer with this one.
    pub fn merge(self, denied: bool, not_before: Option<i64>) -> (bool, Option<i64>) {
        let nb = match (self.not_before, not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        (self.denied || denied, nb)
    }
}

/// What a check must do about pending revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Merge this with whatever store answers.
    Merge(Found),
    /// Too many pending rows to list: only Postgres can answer.
    PostgresOnly,
}

/// A revocation this process accepted without the queue.
#[derive(Debug, Clone)]
struct Local {
    entries: Entries,
    added_ms: i64,
    /// When it was known to be in Postgres (as pending) — from then on the
    /// poll lists it; `None` while only the spool holds it.
    in_postgres_ms: Option<i64>,
}

/// The overlay of one process.
#[derive(Debug, Default)]
pub struct Pending {
    /// Rows read from Postgres.
    polled: RwLock<Arc<Entries>>,
    /// Revocations accepted here without the queue.
    local: RwLock<Vec<Local>>,
    /// Anything in either (fast path: one atomic load).
    nonempty: AtomicBool,
    /// More pending rows than [`LIMIT`].
    overflow: AtomicBool,
    /// Wakes the poller (a revocation was just written without the queue).
    wake: Notify,
}

fn unix_ms() -> i64 {
    Replica::now_ms()
}

impl Pending {
    /// An empty overlay.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// What the overlay holds for a token (its id, its ECDSA twin's id, its
    /// subject).
    pub fn cover(&self, token_id: &str, twin: Option<&str>, subject: Option<&str>) -> Cover {
        if self.overflow.load(Ordering::Acquire) {
            return Cover::PostgresOnly;
        }
        let mut found = Found::default();
        if !self.nonempty.load(Ordering::Acquire) {
            return Cover::Merge(found);
        }
        let polled = Arc::clone(&self.polled.read().unwrap_or_else(|e| e.into_inner()));
        polled.cover(token_id, twin, subject, &mut found);
        for local in self.local.read().unwrap_or_else(|e| e.into_inner()).iter() {
            local.entries.cover(token_id, twin, subject, &mut found);
        }
        Cover::Merge(found)
    }

    /// Rows and local entries held: (tokens, subjects), and whether the
    /// pending set overflowed.
    pub fn len(&self) -> (usize, usize, bool) {
        let polled = Arc::clone(&self.polled.read().unwrap_or_else(|e| e.into_inner()));
        let local = self.local.read().unwrap_or_else(|e| e.into_inner());
        let tokens =
            polled.tokens.len() + local.iter().map(|l| l.entries.tokens.len()).sum::<usize>();
        let subjects = polled.subjects.len()
            + local
                .iter()
                .map(|l| l.entries.subjects.len())
                .sum::<usize>();
        (tokens, subjects, self.overflow.load(Ordering::Acquire))
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::Acquire) && !self.overflow.load(Ordering::Acquire)
    }

    /// Records a revocation this process accepted without the queue:
    /// enforced here at once. `in_postgres` false when only the spool
    /// holds it (kept until [`spool_replayed`](Self::spool_replayed)).
    pub fn add_local(&self, job: &Job, in_postgres: bool, max_lifetime: i64) {
        let mut entries = Entries::default();
        match job {
            Job::Revoke(j) => entries.add_token(
                &j.token_id,
                crate::worker::apply::capped_expiry(j, max_lifetime),
            ),
            Job::RevokeAll(j) => entries.add_subject(&j.subject, j.not_before),
            _ => return,
        }
        let now = unix_ms();
        self.local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Local {
                entries,
                added_ms: now,
                in_postgres_ms: in_postgres.then_some(now),
            });
        self.nonempty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The spool was replayed into Postgres by a pass that started at
    /// `started_ms`: local entries added before then are in Postgres now.
    pub fn spool_replayed(&self, started_ms: i64) {
        let now = unix_ms();
        for local in self
            .local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            if local.in_postgres_ms.is_none() && local.added_ms < started_ms {
                local.in_postgres_ms = Some(now);
            }
        }
        self.wake.notify_one();
    }

    /// Asks the poller to read Postgres now.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    fn refresh_flag(&self) {
        let polled = !self
            .polled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        let local = !self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        self.nonempty.store(polled || local, Ordering::Release);
    }

    /// Adds rows just read (new pending rows count at once).
    fn add_polled(&self, rows: &Entries) {
        if rows.is_empty() {
            return;
        }
        let mut polled = self.polled.write().unwrap_or_else(|e| e.into_inner());
        let mut merged = Entries::clone(&polled);
        merged.union(rows);
        *polled = Arc::new(merged);
        self.nonempty.store(true, Ordering::Release);
    }

    /// Replaces the polled rows with a poll that started at `started_ms`,
    /// and drops local entries that poll saw in Postgres.
    fn replace_polled(&self, rows: Entries, started_ms: i64) {
        *self.polled.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rows);
        self.local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| l.in_postgres_ms.is_none_or(|at| at >= started_ms));
        self.refresh_flag();
    }

    /// Reads Postgres's pending rows every [`POLL_EVERY`] (or when poked)
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
            let started_ms = unix_ms();
            let cutoff = now_unix() - leeway;
            match tokio::time::timeout(POLL_TIMEOUT, db.pending_revocations(cutoff, LIMIT)).await {
                Ok(Ok(rows)) => {
                    let overflow = rows.len() as i64 > LIMIT;
                    let mut entries = Entries::default();
                    for (kind, key, value) in &rows {
                        match kind.as_str() {
                            "t" => entries.add_token(key, *value),
                            _ => entries.add_subject(key, *value),
                        }
                    }
                    self.add_polled(&entries);
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
                            .wait_current_since(started_ms, Duration::from_secs(2))
                            .await;
                    }
                    self.replace_polled(entries, started_ms);
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
    use revokd_jobs::{RevokeSubject, RevokeToken};

    use super::*;

    #[test]
    fn local_entries_cover_at_once_and_stay_until_postgres_lists_them() {
        let pending = Pending::new();
        assert_eq!(
            pending.cover("t", None, Some("s")),
            Cover::Merge(Found::default())
        );
        pending.add_local(
            &Job::Revoke(RevokeToken::new("t", None, i64::MAX)),
            false,
            60,
        );
        pending.add_local(&Job::RevokeAll(RevokeSubject::new("s", 100)), true, 60);
        let found = Found {
            denied: true,
            not_before: Some(100),
        };
        assert_eq!(pending.cover("t", None, Some("s")), Cover::Merge(found));
        assert_eq!(
            pending.cover("x", Some("t"), None),
            Cover::Merge(Found {
                denied: true,
                not_before: None
            }),
            "the twin id counts"
        );
        // A poll that started later saw the watermark's row; the spooled
        // token stays until the spool is replayed.
        pending.replace_polled(Entries::default(), unix_ms() + 1);
        assert_eq!(
            pending.cover("t", None, Some("s")),
            Cover::Merge(Found {
                denied: true,
                not_before: None
            })
        );
        pending.spool_replayed(unix_ms() + 1);
        pending.replace_polled(Entries::default(), unix_ms() + 1);
        assert!(pending.is_empty());
        assert_eq!(
            pending.cover("t", None, Some("s")),
            Cover::Merge(Found::default())
        );
    }

    #[test]
    fn merge_keeps_the_highest_watermark() {
        let found = Found {
            denied: false,
            not_before: Some(5),
        };
        assert_eq!(found.merge(false, Some(9)), (false, Some(9)));
        assert_eq!(found.merge(true, None), (true, Some(5)));
        assert_eq!(Found::default().merge(false, None), (false, None));
    }
}
