//! Refresh tokens on the read path: a token checked with
//! `token_type_hint=refresh_token` must verify, pass the access-token rules,
//! be registered, and be neither revoked nor rotated. Presenting a rotated
//! token again is reuse: the first presentation revokes the whole family,
//! and every presentation of it answers `reused`.
//!
//! "First" is decided once: a Redis SET NX of the family marker picks one
//! winner among concurrent presentations, and Postgres confirms it (the
//! family flips to revoked there at most once). When Redis cannot be asked,
//! Postgres alone decides, so an outage does not count, log and write every
//! presentation as a new reuse, nor count again a family revoked during the
//! outage once Redis is back.

use std::time::Duration;

use futures::future::BoxFuture;
use revokd_jobs::{Job, JobMeta, RevokeFamily};

use crate::{
    config::FailMode,
    instruments,
    read::checker::{Checker, PG_LOOKUP_TIMEOUT, Unavailable, Verdict},
    read::replica::RefreshState,
    store::{
        pg::Db,
        redis::{DenyList, RefreshEntry, RefreshLookup, State},
    },
    token::{Reason, VerifiedToken},
};

/// Longest wait for Postgres to settle a reuse (as for a check's lookup).
const CLAIM_TIMEOUT: Duration = Duration::from_millis(1500);

/// Where the read path records a revocation it decided itself (reuse of a
/// rotated refresh token): the write path's submitter, behind this trait so
/// that the read path does not depend on the write path.
pub trait RecordJob: Send + Sync {
    /// Makes `job` durable and queues it, without waiting for it to apply.
    fn record(&self, job: Job) -> BoxFuture<'_, Result<(), String>>;
}

/// What a refresh check needs.
pub struct RefreshChecker<'a> {
    /// Verification and the access-token rules.
    pub checker: &'a Checker,
    /// Redis registry (fast connection).
    pub deny: &'a DenyList,
    /// Postgres registry.
    pub db: &'a Db,
    /// Records the family revocation on reuse (the write path's submitter).
    pub submitter: &'a dyn RecordJob,
    /// Fail mode when no store answers.
    pub fail_mode: FailMode,
    /// TTL of a family marker (maximum lifetime + leeway).
    pub family_ttl: i64,
}

impl RefreshChecker<'_> {
    /// Full check of a refresh token as of `now`.
    pub async fn check(&self, token: &str, now: i64) -> Verdict {
        let claims = match self.checker.verify(token, now).await {
            Ok(claims) => claims,
            Err(unverified) => return Verdict::unverified(unverified),
        };
        match self.decide(&claims, now).await {
            Ok(None) => Verdict::Active(claims),
            Ok(Some(reason)) => Verdict::Inactive(reason),
            Err(Unavailable) if self.fail_mode == FailMode::Open => Verdict::Active(claims),
            Err(Unavailable) => Verdict::Unavailable,
        }
    }

    async fn decide(
        &self,
        claims: &VerifiedToken,
        now: i64,
    ) -> Result<Option<Reason>, Unavailable> {
        // The replica settles active and revoked tokens; a rotated one (reuse
        // handling needs Redis) or one it does not hold goes to Redis, then
        // Postgres.
        // Only while Redis takes writes and holds this token's registry
        // state (not pending in Postgres) may the replica settle it.
        let pending = self.checker.pending().refresh_pending(&claims.token_id);
        let replica = self
            .checker
            .replica()
            .filter(|_| !pending && self.checker.redis_health().is_up());
        let (state, entry) = match replica.and_then(|r| r.lookup_refresh(&claims.token_id, now)) {
            Some(RefreshState::Active) => (Some(State::Active), None),
            Some(RefreshState::Revoked) => (Some(State::Revoked), None),
            _ => {
                let entry = self.entry(&claims.token_id, pending).await?;
                (entry.as_ref().map(|e| e.state), entry)
            }
        };
        // A rotated token presented again is reuse, every time: it answers
        // `reused` even once its family is revoked (and deny-listed).
        if let (Some(State::Rotated), Some(entry)) = (state, &entry) {
            self.record_reuse(entry, claims).await;
            return Ok(Some(Reason::Reused));
        }
        if let (Some(reason), _) = self.checker.revocation(claims, now).await? {
            return Ok(Some(reason));
        }
        Ok(match state {
            None => Some(Reason::Unknown),
            Some(State::Active) => None,
            Some(_) => Some(Reason::Revoked),
        })
    }

    /// Redis first. A miss is trusted while Redis holds the whole registry
    /// (the marker, read in the same round trip) and the token is not
    /// pending: a validly signed token nobody registered then costs no
    /// Postgres query. Any other miss (data lost, written while Redis was
    /// down) is settled by Postgres, and so is a token whose registry row
    /// is `pending` (Redis may hold an older state).
    async fn entry(
        &self,
        token_id: &str,
        pending: bool,
    ) -> Result<Option<RefreshEntry>, Unavailable> {
        if !pending && self.checker.redis_health().is_up() {
            match self.deny.refresh_lookup(token_id).await {
                Ok(RefreshLookup {
                    entry: Some(entry), ..
                }) => return Ok(Some(entry)),
                Ok(RefreshLookup { complete: true, .. }) => return Ok(None),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "redis refresh lookup failed");
                    self.checker.redis_failed();
                }
            }
        }
        match tokio::time::timeout(PG_LOOKUP_TIMEOUT, self.db.refresh_row(token_id)).await {
            Ok(Ok(row)) => Ok(row.map(|r| r.entry())),
            Ok(Err(error)) => {
                tracing::debug!(%error, "postgres refresh lookup failed");
                Err(Unavailable)
            }
            Err(_) => {
                tracing::debug!("postgres refresh lookup timed out");
                Err(Unavailable)
            }
        }
    }

    /// Revokes the family of a rotated token presented again. Exactly one
    /// presentation records the event (log line, counter, family revocation);
    /// true for that one.
    pub async fn record_reuse(&self, entry: &RefreshEntry, claims: &VerifiedToken) -> bool {
        let family = entry.family.as_str();
        let job = RevokeFamily {
            // One audit row per family, whichever path records it.
            meta: JobMeta {
                job_id: format!("reuse:{family}"),
                ..JobMeta::now().by("reuse-detection")
            },
            ..RevokeFamily::new(family, "reused")
        };
        let marked = if self.checker.redis_health().is_up() {
            self.deny
                .mark_family_revoked(family, "reused", self.family_ttl, revokd_jobs::now_unix())
                .await
                .inspect_err(|error| tracing::debug!(%error, "redis family marker failed"))
                .ok()
        } else {
            None
        };
        if marked == Some(false) {
            return false;
        }
        // Redis picked this presentation, or could not be asked: Postgres
        // settles it (a family revoked there during an outage is not
        // reused again). Unreachable too: record it, as the only safe choice.
        let claim = self.db.claim_family_revocation(
            family,
            "reused",
            entry.exp,
            revokd_jobs::now_unix(),
            marked.is_some(),
        );
        match tokio::time::timeout(CLAIM_TIMEOUT, claim).await {
            Ok(Ok(false)) => return false,
            Ok(Ok(true)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "postgres family claim failed"),
            Err(_) => tracing::debug!("postgres family claim timed out"),
        }
        tracing::warn!(
            subject = claims.sub.as_deref().unwrap_or(""),
            family_id = family,
            "refresh token reuse: a rotated token was presented again; family revoked"
        );
        instruments::refresh_reuse();
        if let Err(error) = self.submitter.record(Job::RevokeFamily(job)).await {
            tracing::error!(family_id = family, %error, "cannot record the family revocation");
        }
        true
    }
}
