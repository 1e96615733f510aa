//! The deny-list proper: entries under `{prefix}jti:{token_id}`, subject
//! watermarks under `{prefix}sub:{subject}` and issuer watermarks under
//! `{prefix}iss:{issuer}`, read in one round trip and
//! written only through the converging `REVOKE_MANY` and `RAISE` scripts,
//! which also keep the per-minute counts behind [`DenyList::revocation_counts`].

use revokd_jobs::{Job, RevokeToken};
use serde::{Deserialize, Serialize};

use super::{
    DenyList, EVENTS_MAXLEN, scan_page,
    scripts::{COUNT, RAISE, REVOKE_MANY},
};
use crate::store::{
    Scope, TtlPolicy,
    group::{Group, Queued},
};

/// Most entries one REVOKE_MANY call writes: ~0.8 ms of Redis, so a call
/// never holds up other clients' commands (checks, among them) for long.
const GROUP_MAX: usize = 128;
/// Grouped calls in flight at once.
const GROUP_IN_FLIGHT: usize = 4;

/// One grouped deny-list write: token_id, entry, the unix time it ends.
type Denial = (String, DenyEntry, i64);

/// Deny-list writes of concurrent jobs gathered into one script call each
/// (see [`crate::store::group`]), made by [`DenyList::grouped`]. Cheap to
/// clone.
#[derive(Clone)]
pub struct DenyGroup {
    deny: DenyList,
    group: Group<Denial, redis::RedisResult<()>>,
}

impl DenyGroup {
    /// [`DenyList::deny`], written together with the entries other jobs
    /// hand in meanwhile.
    pub async fn deny(
        &self,
        token_id: &str,
        entry: &DenyEntry,
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<()> {
        let ends = now.saturating_add(ttl_secs);
        let denial = (token_id.to_owned(), entry.clone(), ends);
        match self.group.submit(denial).await {
            Some(outcome) => outcome,
            // The group's task is gone (runtime shutting down).
            None => self.deny.deny(token_id, entry, ttl_secs, now).await,
        }
    }

    /// Puts the token `job` revokes on the deny-list until it expires (as
    /// capped by `ttl`); nothing once it has expired. Returns whether an
    /// entry was written.
    pub async fn deny_token(
        &self,
        job: &RevokeToken,
        ttl: &TtlPolicy,
        now: i64,
    ) -> redis::RedisResult<bool> {
        let expires_at = ttl.capped_expiry(job);
        let Some(ttl_secs) = ttl.deny(expires_at, now) else {
            return Ok(false);
        };
        let entry = DenyEntry {
            sub: job.subject.clone(),
            exp: expires_at,
            revoked_at: job.meta.requested_at,
            reason: job.reason.clone(),
        };
        self.deny(&job.token_id, &entry, ttl_secs, now).await?;
        Ok(true)
    }

    /// What a single revocation puts in Redis, as its job's worker does: a
    /// token's entry ([`DenyGroup::deny_token`]), a subject's or an
    /// issuer's watermark. Other jobs write nothing. Returns whether
    /// anything was written.
    pub async fn write_revocation(
        &self,
        job: &Job,
        ttl: &TtlPolicy,
        now: i64,
    ) -> redis::RedisResult<bool> {
        let (scope, key, not_before) = match job {
            Job::Revoke(job) => return self.deny_token(job, ttl, now).await,
            Job::RevokeAll(job) => (Scope::Subject, &job.subject, job.not_before),
            Job::RevokeIssuer(job) => (Scope::Issuer, &job.issuer, job.not_before),
            _ => return Ok(false),
        };
        self.deny
            .raise_mark(scope, key, not_before, ttl.watermark(), now)
            .await?;
        Ok(true)
    }
}

/// What a pipelined write did: keys created (were missing) and touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Keys that did not exist.
    pub created: u64,
    /// Keys created, extended or raised.
    pub changed: u64,
}

impl Written {
    fn add(&mut self, code: i64) {
        self.created += u64::from(code == 2);
        self.changed += u64::from(code > 0);
    }
}

/// The value stored under `{prefix}jti:{token_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyEntry {
    /// The token's subject, if any.
    pub sub: Option<String>,
    /// The token's expiry (unix seconds).
    pub exp: i64,
    /// When it was revoked (unix seconds).
    pub revoked_at: i64,
    /// Why.
    pub reason: Option<String>,
}

/// What Redis knows about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lookup {
    /// The marker is present: Redis holds the whole deny-list. When it is
    /// missing (data lost, rebuild pending) the answer must come from Postgres.
    pub complete: bool,
    /// The token_id is on the deny-list.
    pub denied: bool,
    /// The subject's revocation watermark, if any.
    pub not_before: Option<i64>,
    /// The issuer's revocation watermark, if any.
    pub issuer_not_before: Option<i64>,
}

impl DenyList {
    /// One round trip: is the deny-list complete, is `token_id` (or `twin`,
    /// another id of the same token) denied, and what is `subject`'s
    /// watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
    ) -> redis::RedisResult<Lookup> {
        self.lookup_all(token_id, twin, subject, None).await
    }

    /// [`lookup`](Self::lookup), and `issuer`'s watermark, in the same
    /// round trip.
    pub async fn lookup_all(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
        issuer: Option<&str>,
    ) -> redis::RedisResult<Lookup> {
        // A new primary (Sentinel failover) holds the marker its old
        // primary set, copied by replication, though it may lack the last
        // writes: before trusting it, check once that this server set it
        // (a foreign marker is deleted, so checks go to Postgres until the
        // rebuild). A marker set after the check is this server's own.
        let generation = self.conn.generation();
        if generation != self.validated.load(std::sync::atomic::Ordering::Acquire) {
            self.marker_current().await?;
            self.validated
                .store(generation, std::sync::atomic::Ordering::Release);
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        // marker, the token's ids, then the subject's and issuer's watermarks.
        cmd.arg(self.keys.marker()).arg(self.keys.jti(token_id));
        if let Some(twin) = twin {
            cmd.arg(self.keys.jti(twin));
        }
        if let Some(sub) = subject {
            cmd.arg(self.keys.sub(sub));
        }
        if let Some(iss) = issuer {
            cmd.arg(self.keys.iss(iss));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        let ids = 1 + usize::from(twin.is_some());
        let number = |at: usize| {
            values
                .get(at)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
        };
        let at_issuer = 1 + ids + usize::from(subject.is_some());
        Ok(Lookup {
            complete: values.first().is_some_and(Option::is_some),
            denied: values.iter().skip(1).take(ids).any(Option::is_some),
            not_before: subject.and_then(|_| number(1 + ids)),
            issuer_not_before: issuer.and_then(|_| number(at_issuer)),
        })
    }

    /// The REVOKE_MANY call for `entries`: (token_id, entry, the unix time
    /// it ends).
    fn revoke_invocation<'e>(
        &self,
        entries: impl IntoIterator<Item = (&'e str, &'e DenyEntry, i64)>,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = REVOKE_MANY.prepare_invoke();
        invocation
            .key(self.keys.events())
            .key(self.keys.count("jti"))
            .arg(EVENTS_MAXLEN)
            .arg(self.repeats_arg());
        for (token_id, entry, ends) in entries {
            let value = serde_json::to_string(entry).unwrap_or_default();
            invocation
                .key(self.keys.jti(token_id))
                .arg(value)
                .arg(token_id)
                .arg(ends);
        }
        invocation
    }

    fn raise_invocation(
        &self,
        scope: Scope,
        key: &str,
        not_before: i64,
        ttl_secs: i64,
        now: i64,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = RAISE.prepare_invoke();
        invocation
            .key(self.keys.watermark(scope, key))
            .key(self.keys.events())
            .key(self.keys.count(scope.tag()))
            .arg(not_before)
            .arg(ttl_secs)
            .arg(key)
            .arg(now.saturating_add(ttl_secs))
            .arg(EVENTS_MAXLEN)
            .arg(scope.event())
            .arg(self.repeats_arg());
        invocation
    }

    /// Puts `token_id` on the deny-list for `ttl_secs` (must be > 0) from
    /// `now`, keeping a longer TTL already there.
    pub async fn deny(
        &self,
        token_id: &str,
        entry: &DenyEntry,
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let ends = now.saturating_add(ttl_secs);
        let _: Vec<i64> = self
            .revoke_invocation([(token_id, entry, ends)])
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// [`DenyList::deny`] through a [`DenyGroup`] of this handle: writes
    /// that arrive together go to Redis in one script call.
    pub fn grouped(&self) -> DenyGroup {
        let writer = self.clone();
        let group = Group::new(
            GROUP_MAX,
            GROUP_IN_FLIGHT,
            move |queued: Vec<Queued<Denial, _>>| {
                let deny = writer.clone();
                async move {
                    let entries = queued
                        .iter()
                        .map(|q| (q.item.0.as_str(), &q.item.1, q.item.2));
                    let mut conn = deny.conn.clone();
                    let written: redis::RedisResult<Vec<i64>> = deny
                        .revoke_invocation(entries)
                        .invoke_async(&mut conn)
                        .await;
                    let outcome = written.map(|_| ());
                    for q in queued {
                        q.answer(outcome.clone());
                    }
                }
            },
        );
        DenyGroup {
            deny: self.clone(),
            group,
        }
    }

    /// Raises `subject`'s watermark to `not_before` (never lowers it), for
    /// `ttl_secs` from `now`.
    pub async fn raise_watermark(
        &self,
        subject: &str,
        not_before: i64,
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<()> {
        self.raise_mark(Scope::Subject, subject, not_before, ttl_secs, now)
            .await
    }

    /// Raises the watermark of a subject or an issuer (`scope`) to
    /// `not_before` (never lowers it), for `ttl_secs` from `now`.
    pub async fn raise_mark(
        &self,
        scope: Scope,
        key: &str,
        not_before: i64,
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .raise_invocation(scope, key, not_before, ttl_secs, now)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes many entries in one pipelined round trip (same rules as
    /// [`DenyList::deny`]): each entry ends at `now + ttl`, so TTLs the
    /// caller derived from the same `now` give the same end on every run (a
    /// rebuild rewrites nothing unchanged).
    pub async fn deny_many(
        &self,
        entries: &[(String, DenyEntry, i64)],
        now: i64,
    ) -> redis::RedisResult<Written> {
        let mut pipe = redis::pipe();
        pipe.load_script(&REVOKE_MANY).ignore();
        for chunk in entries.chunks(GROUP_MAX) {
            let chunk = chunk
                .iter()
                .map(|(id, entry, ttl)| (id.as_str(), entry, now.saturating_add(*ttl)));
            pipe.invoke_script(&self.revoke_invocation(chunk));
        }
        let mut conn = self.conn.clone();
        let codes: Vec<Vec<i64>> = pipe.query_async(&mut conn).await?;
        let mut written = Written::default();
        codes.into_iter().flatten().for_each(|c| written.add(c));
        Ok(written)
    }

    /// Raises many subject watermarks in one pipelined round trip.
    pub async fn raise_many(
        &self,
        marks: &[(String, i64)],
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<Written> {
        self.raise_marks(Scope::Subject, marks, ttl_secs, now).await
    }

    /// Raises many watermarks of subjects or issuers (`scope`) in one
    /// pipelined round trip.
    pub async fn raise_marks(
        &self,
        scope: Scope,
        marks: &[(String, i64)],
        ttl_secs: i64,
        now: i64,
    ) -> redis::RedisResult<Written> {
        let mut pipe = redis::pipe();
        pipe.load_script(&RAISE).ignore();
        for (key, not_before) in marks {
            pipe.invoke_script(&self.raise_invocation(scope, key, *not_before, ttl_secs, now));
        }
        self.run_counted(pipe).await
    }

    async fn run_counted(&self, pipe: redis::Pipeline) -> redis::RedisResult<Written> {
        let mut conn = self.conn.clone();
        let codes: Vec<i64> = pipe.query_async(&mut conn).await?;
        let mut written = Written::default();
        codes.into_iter().for_each(|c| written.add(c));
        Ok(written)
    }

    /// Deny-list entries and watermarks alive as of `now`, from the counts
    /// the write scripts keep: O(distinct minutes the keys end in), no key
    /// scan. Keys that expired within the current minute are still counted;
    /// keys written by a version that did not count, or deleted by hand or
    /// evicted, are not seen (see the README, "Counts").
    pub async fn revocation_counts(&self, now: i64) -> redis::RedisResult<(u64, u64, u64)> {
        let mut conn = self.conn.clone();
        COUNT
            .key(self.keys.count("jti"))
            .key(self.keys.count("sub"))
            .key(self.keys.count("iss"))
            .arg(now.div_euclid(60))
            .invoke_async(&mut conn)
            .await
    }

    /// Counts keys under `{prefix}{kind}` (`jti:` or `sub:`) with SCAN:
    /// costs a pass over the whole keyspace; for tools and tests, never on
    /// a request.
    pub async fn count(&self, kind: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let pattern = self.keys.pattern(kind);
        let mut cursor = 0u64;
        let mut total = 0u64;
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, 1000).await?;
            total += keys.len() as u64;
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }
}
