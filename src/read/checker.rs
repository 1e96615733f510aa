//! The read path: verify a token, then ask the stores whether it is revoked —
//! Redis first, Postgres when Redis is down, "unavailable" when neither answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    config::FailMode,
    instruments,
    read::health::Health,
    read::pending::{Cover, Found, Pending},
    read::replica::Replica,
    read::verify_cache::{Lookup, VerifyCache},
    store::resync::Resync,
    token::{Reason, Unverified, VerifiedToken, Verifier},
};

/// Longest a Postgres fallback lookup may take before the check gives up.
pub(crate) const PG_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// The answer to "is this token still good?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and not revoked (shared with the verify cache).
    Active(Arc<VerifiedToken>),
    /// Not valid, or revoked; the reason says which.
    Inactive(Reason),
    /// No store could answer and the fail mode is closed.
    Unavailable,
    /// The token's issuer's keys have not loaded yet (whatever the fail
    /// mode: an unverified token is never active).
    KeysUnavailable,
}

impl Verdict {
    /// The verdict on a token that failed verification.
    pub fn unverified(unverified: Unverified) -> Self {
        match unverified {
            Unverified::NoKeys => Self::KeysUnavailable,
            other => Self::Inactive(other.reason()),
        }
    }
}

/// Which store answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Redis deny-list.
    Redis,
    /// The Postgres record (Redis down).
    Postgres,
    /// The in-process replica.
    Replica,
    /// A revocation this process accepted, or read as pending from
    /// Postgres, while no store could answer.
    Pending,
}

impl Source {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Postgres => "postgres",
            Source::Replica => "replica",
            Source::Pending => "pending",
        }
    }
}

/// Why a lookup failed: no store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no store can answer")]
pub struct Unavailable;

/// Counters of where lookups went.
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Lookups answered by the local replica.
    pub replica: AtomicU64,
    /// Lookups answered by Redis.
    pub redis: AtomicU64,
    /// Lookups answered by Postgres.
    pub postgres: AtomicU64,
    /// Redis attempts that failed.
    pub redis_failures: AtomicU64,
    /// Redis answers passed over because its marker was missing.
    pub incomplete: AtomicU64,
    /// Lookups no store answered.
    pub unavailable: AtomicU64,
    /// Tokens found in the verify cache (signature not checked again).
    pub verify_cache_hits: AtomicU64,
    /// Tokens verified in full through the verify cache.
    pub verify_cache_misses: AtomicU64,
}

impl LookupStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Verifies tokens and looks them up; one per process, shared by requests.
pub struct Checker {
    stats: LookupStats,
    replica: Option<Arc<Replica>>,
    pending: Arc<Pending>,
    resync: Resync,
    verifier: Arc<Verifier>,
    verify_cache: Option<VerifyCache>,
    redis_health: Arc<Health>,
    pg_health: Arc<Health>,
    fail_mode: FailMode,
}

impl Checker {
    /// A checker over the given stores. `resync` runs before Redis is trusted
    /// again after an outage, so writes made meanwhile are in it first.
    pub fn new(verifier: Arc<Verifier>, resync: Resync, fail_mode: FailMode) -> Self {
        Self {
            resync,
            verifier,
            verify_cache: None,
            replica: None,
            pending: Pending::new(),
            stats: LookupStats::default(),
            redis_health: Health::new("redis"),
            pg_health: Health::new("postgres"),
            fail_mode,
        }
    }

    /// Answers from `replica` whenever it can prove it is current.
    pub fn with_replica(mut self, replica: Arc<Replica>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Skips the signature check of tokens that passed it before (see
    /// [`VerifyCache`]); `capacity` 0 leaves every token verified in full.
    pub fn with_verify_cache(mut self, capacity: usize) -> Self {
        self.verify_cache = VerifyCache::new(capacity);
        self
    }

    /// [`Verifier::verify_latest`], through the verify cache when there is
    /// one: a `kid` the issuer's fetched keys lack makes them fetched again
    /// (rate-limited) before the token is refused.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, Unverified> {
        match self.verify_once(token, now) {
            Err(Unverified::UnknownKid(behind)) if self.verifier.catch_up(behind).await => {
                self.verify_once(token, now).map_err(Unverified::settled)
            }
            other => other.map_err(Unverified::settled),
        }
    }

    /// One verification with the keys as they are, through the cache.
    fn verify_once(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, Unverified> {
        match &self.verify_cache {
            Some(cache) => {
                let (result, lookup) = cache.verify(&self.verifier, token, now);
                LookupStats::bump(match lookup {
                    Lookup::Hit => &self.stats.verify_cache_hits,
                    Lookup::Miss => &self.stats.verify_cache_misses,
                });
                result
            }
            None => self.verifier.attempt(token).and_then(|(verified, key)| {
                self.verifier.check_time(&verified, key, now)?;
                Ok(Arc::new(verified))
            }),
        }
    }

    /// Tokens in the verify cache now (0 when it is off).
    pub fn verify_cache_len(&self) -> usize {
        self.verify_cache.as_ref().map_or(0, VerifyCache::len)
    }

    /// The replica, if checks use one.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Revocations Redis may not hold yet (see [`Pending`]).
    pub fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// Postgres's breaker.
    pub fn pg_health(&self) -> &Arc<Health> {
        &self.pg_health
    }

    /// Opens Postgres's breaker; a probe closes it once Postgres answers.
    pub fn postgres_failed(&self) {
        let db = self.resync.stores.db.clone();
        // With several hosts, the primary may have moved.
        db.poke();
        self.pg_health.mark_down(move || {
            let db = db.clone();
            async move { db.ping().await.is_ok() }
        });
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Where lookups went.
    pub fn stats(&self) -> &LookupStats {
        &self.stats
    }

    /// Redis's breaker.
    pub fn redis_health(&self) -> &Arc<Health> {
        &self.redis_health
    }

    /// Full check of `token` as of `now`.
    pub async fn check(&self, token: &str, now: i64) -> Verdict {
        let started = std::time::Instant::now();
        let (verdict, source) = self.decide(token, now).await;
        let result = match &verdict {
            Verdict::Active(_) => "active",
            Verdict::Inactive(reason) => reason.as_str(),
            Verdict::Unavailable => "unavailable",
            Verdict::KeysUnavailable => "keys_unavailable",
        };
        instruments::check(result, source, started.elapsed().as_secs_f64());
        verdict
    }

    async fn decide(&self, token: &str, now: i64) -> (Verdict, &'static str) {
        let claims = match self.verify(token, now).await {
            Ok(claims) => claims,
            Err(unverified) => return (Verdict::unverified(unverified), "none"),
        };
        match self.revocation(&claims, now).await {
            Ok((Some(reason), source)) => (Verdict::Inactive(reason), source.as_str()),
            Ok((None, source)) => (Verdict::Active(claims), source.as_str()),
            Err(Unavailable) if self.fail_mode == FailMode::Open => {
                (Verdict::Active(claims), "none")
            }
            Err(Unavailable) => (Verdict::Unavailable, "none"),
        }
    }

    /// Whether a verified token is revoked as of `now`, and which store
    /// said so.
    pub async fn revocation(
        &self,
        claims: &VerifiedToken,
        now: i64,
    ) -> Result<(Option<Reason>, Source), Unavailable> {
        let (found, source) = self
            .lookup(
                &claims.token_id,
                claims.twin_token_id.as_deref(),
                claims.subject_id.as_deref(),
                claims.issuer_id.as_deref(),
                now,
            )
            .await?;
        Ok((decide(found, claims.iat), source))
    }

    /// Opens Redis's breaker: checks skip the replica and Redis. The probe
    /// closes it once Redis takes a write and the revocations written to
    /// Postgres meanwhile have been copied into it (or Postgres cannot be
    /// read, in which case Redis is all there is).
    pub fn redis_failed(&self) {
        let resync = self.resync.clone();
        self.redis_health.mark_down(move || {
            let resync = resync.clone();
            async move {
                // Answering is not enough: Redis must take writes again
                // (not OOM, READONLY, MISCONF, NOREPLICAS).
                if resync
                    .stores
                    .deny
                    .probe_write(revokd_jobs::now_unix())
                    .await
                    .is_err()
                {
                    return false;
                }
                match resync.run_once().await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::debug!(%error, "resync before trusting redis failed");
                        resync.stores.db.ping().await.is_err()
                    }
                }
            }
        });
    }

    /// Writes to Redis every second until `stop` fires, so that a process
    /// that only reads learns within a second that Redis refuses writes
    /// (`OOM`, `READONLY`, `MISCONF`, `NOREPLICAS`): its breaker opens, and
    /// neither its replica nor Redis answers checks until Redis takes
    /// writes again and the revocations recorded meanwhile are in it.
    pub async fn watch_redis_writes(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            if self.redis_health.is_up()
                && let Err(error) = self
                    .resync
                    .stores
                    .deny
                    .probe_write(revokd_jobs::now_unix())
                    .await
            {
                tracing::warn!(%error, "redis refuses writes; checks go to postgres until it takes them");
                self.redis_failed();
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Whether `token_id` — or `twin`, the id of a jti-less ECDSA token's
    /// other form (see `VerifiedToken::twin_token_id`) — is denied, and
    /// `sub`'s and `iss`'s watermarks: one lookup in whichever store answers, merged
    /// with the revocations Redis may not hold yet. The replica and Redis
    /// answer only while Redis's breaker is closed (it opens on a failed
    /// read or a refused write) and the pending revocations can be listed.
    async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        sub: Option<&str>,
        iss: Option<&str>,
        now: i64,
    ) -> Result<(Found, Source), Unavailable> {
        let pending = self.pending.cover(token_id, twin, sub, iss);
        // Postgres-only (pending rows not listed) as long as Postgres can
        // answer; without it, Redis's word is the best there is.
        let postgres_only = matches!(pending, Cover::PostgresOnly(_)) && self.pg_health.is_up();
        let (Cover::Merge(pending) | Cover::PostgresOnly(pending)) = pending;
        if !postgres_only && self.redis_health.is_up() {
            if let Some(replica) = &self.replica
                && let Some((denied, not_before)) = replica.lookup(token_id, sub, now)
            {
                LookupStats::bump(&self.stats.replica);
                let found = Found {
                    denied: denied || twin.is_some_and(|twin| replica.denies(twin, now)),
                    not_before,
                    issuer_not_before: iss.and_then(|iss| replica.issuer_not_before(iss, now)),
                };
                return Ok((pending.merge(found), Source::Replica));
            }
            match self
                .resync
                .stores
                .deny
                .lookup_all(token_id, twin, sub, iss)
                .await
            {
                Ok(found) if found.complete => {
                    LookupStats::bump(&self.stats.redis);
                    let found = Found {
                        denied: found.denied,
                        not_before: found.not_before,
                        issuer_not_before: found.issuer_not_before,
                    };
                    return Ok((pending.merge(found), Source::Redis));
                }
                // Redis lost its data and the rebuild has not finished: it
                // answers, but only Postgres knows the whole deny-list.
                Ok(_) => LookupStats::bump(&self.stats.incomplete),
                Err(error) => {
                    LookupStats::bump(&self.stats.redis_failures);
                    tracing::debug!(%error, "redis lookup failed");
                    self.redis_failed();
                }
            }
        }
        // Postgres holds every accepted revocation but the spooled ones,
        // which this process's overlay still lists.
        // Without Postgres a known pending revocation is still certain.
        let certain = pending.denied.then_some((pending, Source::Pending));
        if !self.pg_health.is_up() {
            LookupStats::bump(&self.stats.unavailable);
            return certain.ok_or(Unavailable);
        }
        match tokio::time::timeout(
            PG_LOOKUP_TIMEOUT,
            self.resync.stores.db.lookup_all(token_id, twin, sub, iss),
        )
        .await
        {
            Ok(Ok((denied, not_before, issuer_not_before))) => {
                LookupStats::bump(&self.stats.postgres);
                let found = Found {
                    denied,
                    not_before,
                    issuer_not_before,
                };
                Ok((pending.merge(found), Source::Postgres))
            }
            failed => {
                LookupStats::bump(&self.stats.unavailable);
                if let Ok(Err(error)) = failed {
                    tracing::debug!(%error, "postgres lookup failed");
                }
                self.postgres_failed();
                certain.ok_or(Unavailable)
            }
        }
    }
}

/// The revocation rule: on the deny-list (`revoked`), else issued strictly
/// before the subject's watermark (`subject_revoked`), else strictly before
/// the issuer's (`issuer_revoked`). A token without `iat` counts as earlier
/// than any watermark. When several hold, the first in that order names it.
pub fn decide(found: Found, iat: Option<i64>) -> Option<Reason> {
    let before =
        |not_before: Option<i64>| not_before.is_some_and(|nb| iat.is_none_or(|iat| iat < nb));
    if found.denied {
        Some(Reason::Revoked)
    } else if before(found.not_before) {
        Some(Reason::SubjectRevoked)
    } else if before(found.issuer_not_before) {
        Some(Reason::IssuerRevoked)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(denied: bool, not_before: Option<i64>, issuer_not_before: Option<i64>) -> Found {
        Found {
            denied,
            not_before,
            issuer_not_before,
        }
    }

    #[test]
    fn watermark_is_strict_and_missing_iat_counts_as_earlier() {
        let subject = |nb| found(false, nb, None);
        assert_eq!(
            decide(subject(Some(100)), Some(99)),
            Some(Reason::SubjectRevoked)
        );
        assert_eq!(decide(subject(Some(100)), Some(100)), None);
        assert_eq!(
            decide(subject(Some(100)), None),
            Some(Reason::SubjectRevoked)
        );
        assert_eq!(decide(subject(None), None), None);
        assert_eq!(
            decide(found(true, None, None), Some(1)),
            Some(Reason::Revoked)
        );
    }

    #[test]
    fn issuer_watermark_is_strict_and_comes_after_the_others() {
        let issuer = |nb| found(false, None, nb);
        assert_eq!(
            decide(issuer(Some(100)), Some(99)),
            Some(Reason::IssuerRevoked)
        );
        assert_eq!(decide(issuer(Some(100)), Some(100)), None);
        assert_eq!(decide(issuer(Some(100)), None), Some(Reason::IssuerRevoked));
        // Precedence: token id, then subject, then issuer.
        assert_eq!(
            decide(found(false, Some(100), Some(100)), Some(1)),
            Some(Reason::SubjectRevoked)
        );
        assert_eq!(
            decide(found(true, Some(100), Some(100)), Some(1)),
            Some(Reason::Revoked)
        );
        // A subject watermark the token is newer than does not hide the issuer's.
        assert_eq!(
            decide(found(false, Some(10), Some(100)), Some(50)),
            Some(Reason::IssuerRevoked)
        );
    }
}
