//! Maintenance: the cleanup job (purge expired rows in bounded batches,
//! vacuum the queue, re-check Redis against Postgres) and the rebuild of the
//! deny-list from Postgres after Redis lost its data (marker gone).

use std::time::Duration;

use revokd_jobs::now_unix;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::store::{Scope, StoreError, Stores, TtlPolicy, pg::RefreshRow, redis::DenyEntry};

/// Rows per delete statement or per pipelined Redis batch, unless set.
pub const BATCH: i64 = 5_000;
/// How often workers look for the marker.
const MARKER_EVERY: Duration = Duration::from_millis(500);

/// Progress reporting (a terminal progress bar in the CLI, nothing elsewhere).
pub trait Progress: Send + Sync {
    /// A new phase with an expected total, if known.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// `n` more items done.
    fn advance(&self, _n: u64) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// What a cleanup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CleanupReport {
    /// Expired revocations deleted from Postgres.
    pub tokens_deleted: u64,
    /// Outdated watermarks deleted from Postgres.
    pub subjects_deleted: u64,
    /// Audit rows past retention deleted.
    pub audit_deleted: u64,
    /// Finished and dead queue jobs vacuumed from Redis.
    pub jobs_vacuumed: u64,
    /// Live revocations and watermarks that were missing in Redis and were
    /// written back.
    pub redis_restored: u64,
    /// Expired refresh tokens and families deleted from the registry.
    #[serde(default)]
    pub refresh_deleted: u64,
    /// Outdated issuer watermarks deleted from Postgres.
    #[serde(default)]
    pub issuers_deleted: u64,
}

/// The last cleanup as kept in Redis for every process's `/metrics`: its
/// counts and when it finished.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct LastCleanup {
    /// Unix seconds; 0 in a report stored before this field existed.
    #[serde(default)]
    pub finished_at: i64,
    #[serde(flatten)]
    pub report: CleanupReport,
}

impl CleanupReport {
    /// Every count by name, as logged and exported.
    pub fn counts(&self) -> [(&'static str, u64); 7] {
        [
            ("tokens_deleted", self.tokens_deleted),
            ("subjects_deleted", self.subjects_deleted),
            ("issuers_deleted", self.issuers_deleted),
            ("audit_deleted", self.audit_deleted),
            ("refresh_deleted", self.refresh_deleted),
            ("jobs_vacuumed", self.jobs_vacuumed),
            ("redis_restored", self.redis_restored),
        ]
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Revocations streamed from Postgres.
    pub tokens: u64,
    /// Watermarks streamed from Postgres.
    pub subjects: u64,
    /// Issuer watermarks streamed from Postgres.
    pub issuers: u64,
    /// Keys that were missing in Redis and were written.
    pub restored: u64,
    /// Refresh-token registry entries and revoked-family markers written.
    pub refresh: u64,
}

/// Maintenance over both stores.
#[derive(Clone)]
pub struct Maintenance {
    /// The deny-list and the Postgres record.
    pub stores: Stores,
    /// The queue (for vacuuming).
    pub queue: apalis_redis::Config,
    /// Lifetimes of what is written.
    pub ttl: TtlPolicy,
    /// Audit retention in seconds.
    pub audit_retention: i64,
    /// Finished-job retention in seconds.
    pub job_retention: i64,
    /// Rows per delete statement or per pipelined Redis batch ([`BATCH`];
    /// tests prove the batching with a handful of rows).
    pub batch: i64,
}

impl Maintenance {
    /// The full cleanup as of `now`.
    pub async fn cleanup(
        &self,
        now: i64,
        progress: &dyn Progress,
    ) -> Result<CleanupReport, StoreError> {
        let mut report = CleanupReport::default();
        // A revocation matters until its token fails checks as expired.
        let expired = self.ttl.expired_before(now);
        progress.phase("expired revocations", None);
        report.tokens_deleted = drain(
            || self.stores.db.delete_expired_tokens(expired, self.batch),
            self.batch,
            progress,
        )
        .await?;
        progress.phase("outdated watermarks", None);
        let outdated = self.ttl.outdated_before(now);
        let [subjects, issuers] = [Scope::Subject, Scope::Issuer].map(|scope| {
            drain(
                move || self.stores.db.delete_outdated(scope, outdated, self.batch),
                self.batch,
                progress,
            )
        });
        report.subjects_deleted = subjects.await?;
        report.issuers_deleted = issuers.await?;
        progress.phase("audit log", None);
        let old = now - self.audit_retention;
        report.audit_deleted = drain(
            || self.stores.db.delete_old_audit(old, self.batch),
            self.batch,
            progress,
        )
        .await?;
        progress.phase("refresh tokens", None);
        report.refresh_deleted = drain(
            || self.stores.db.delete_expired_refresh(expired, self.batch),
            self.batch,
            progress,
        )
        .await?;
        progress.phase("queue records", None);
        let finished = now - self.job_retention;
        // Set-aside jobs are what an operator must see: kept as long as the audit log.
        let dead = now - self.audit_retention;
        report.jobs_vacuumed = self
            .stores
            .deny
            .vacuum_jobs(&self.queue, finished, dead)
            .await?;
        report.redis_restored = self.rebuild(now, progress).await?.restored;
        // Reading the counts drops the minutes that have passed, so the
        // count hashes stay small even when nobody asks for stats.
        self.stores.deny.revocation_counts(now).await?;
        Ok(report)
    }

    /// Streams every live revocation and watermark from Postgres into Redis
    /// in pipelined batches (never one round trip per row), then sets the
    /// marker. Existing keys keep the longer TTL and the higher watermark.
    pub async fn rebuild(
        &self,
        now: i64,
        progress: &dyn Progress,
    ) -> Result<RebuildReport, StoreError> {
        let mut report = RebuildReport::default();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let server = self.stores.deny.server_id().await?;
        self.stores.deny.begin_rebuild(&id).await?;
        let cutoff = self.ttl.expired_before(now);
        let (tokens, subjects) = self.stores.db.rebuild_size(cutoff).await?;
        progress.phase("revocations into redis", u64::try_from(tokens).ok());
        let mut after = String::new();
        loop {
            let page = self
                .stores
                .db
                .live_tokens_page(&after, cutoff, self.batch)
                .await?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.token_id);
            let entries: Vec<(String, DenyEntry, i64)> = page
                .into_iter()
                .filter_map(|row| {
                    let ttl = self.ttl.deny(row.expires_at, now)?;
                    let entry = DenyEntry {
                        sub: row.subject,
                        exp: row.expires_at,
                        revoked_at: row.revoked_at,
                        reason: row.reason,
                    };
                    Some((row.token_id, entry, ttl))
                })
                .collect();
            report.tokens += entries.len() as u64;
            report.restored += self.stores.deny.deny_many(&entries, now).await?.created;
            progress.advance(entries.len() as u64);
        }
        progress.phase("watermarks into redis", u64::try_from(subjects).ok());
        let (streamed, restored) = self.rebuild_marks(Scope::Subject, now, progress).await?;
        (report.subjects, report.restored) = (streamed, report.restored + restored);
        progress.phase("issuer watermarks into redis", None);
        let (streamed, restored) = self.rebuild_marks(Scope::Issuer, now, progress).await?;
        (report.issuers, report.restored) = (streamed, report.restored + restored);
        report.refresh = self.rebuild_refresh(now, progress).await?;
        if !self.stores.deny.finish_rebuild(&id, &server).await? {
            return Err(StoreError::Interrupted);
        }
        Ok(report)
    }

    /// Writes every watermark of `scope` into Redis; returns how many were
    /// streamed and how many keys were missing.
    async fn rebuild_marks(
        &self,
        scope: Scope,
        now: i64,
        progress: &dyn Progress,
    ) -> Result<(u64, u64), StoreError> {
        let ttl = self.ttl.watermark();
        let (mut streamed, mut restored) = (0, 0);
        let mut after = String::new();
        loop {
            let db = &self.stores.db;
            let page = db.watermark_page(scope, &after, self.batch).await?;
            let Some((last, _)) = page.last() else { break };
            after.clone_from(last);
            streamed += page.len() as u64;
            let deny = &self.stores.deny;
            restored += deny.raise_marks(scope, &page, ttl, now).await?.created;
            progress.advance(page.len() as u64);
        }
        Ok((streamed, restored))
    }

    /// Writes the refresh-token registry and revoked-family markers.
    async fn rebuild_refresh(&self, now: i64, progress: &dyn Progress) -> Result<u64, StoreError> {
        progress.phase("refresh registry into redis", None);
        let mut written = 0;
        let family_ttl = self.ttl.watermark();
        let mut after = String::new();
        loop {
            let page = self
                .stores
                .db
                .revoked_families_page(&after, self.batch)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after.clone_from(last);
            for (family, reason) in &page {
                self.stores
                    .deny
                    .mark_family_revoked(family, reason, family_ttl, now)
                    .await?;
            }
            written += page.len() as u64;
        }
        let mut after = String::new();
        loop {
            let page = self
                .stores
                .db
                .refresh_page(&after, self.ttl.expired_before(now), self.batch)
                .await?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.token_id);
            let entries = RefreshRow::redis_entries(&page, &self.ttl, now);
            self.stores.deny.set_refresh_entries(&entries, now).await?;
            written += entries.len() as u64;
            progress.advance(entries.len() as u64);
        }
        Ok(written)
    }

    /// Watches the marker until `stop` fires; when it is gone (Redis
    /// restarted without persistence, FLUSHALL, keys deleted) or was set on
    /// another server (failover, restart from a snapshot) rebuilds the
    /// deny-list. A lease keeps concurrent watchers from rebuilding twice.
    pub async fn guard(self, stop: CancellationToken) {
        let holder = uuid::Uuid::new_v4().to_string();
        loop {
            if !stop.is_cancelled()
                && let Ok(false) = self.stores.deny.marker_current().await
                && let Ok(true) = self
                    .stores
                    .deny
                    .try_lease("rebuild", &holder, Duration::from_secs(60))
                    .await
            {
                let started = std::time::Instant::now();
                match self.rebuild(now_unix(), &Quiet).await {
                    Ok(report) if report.restored > 0 => tracing::warn!(
                        tokens = report.tokens,
                        subjects = report.subjects,
                        restored = report.restored,
                        took = ?started.elapsed(),
                        "redis had lost the deny-list; rebuilt it from postgres"
                    ),
                    Ok(report) => tracing::info!(
                        tokens = report.tokens,
                        subjects = report.subjects,
                        took = ?started.elapsed(),
                        "redis holds the whole deny-list (marker set)"
                    ),
                    Err(error) => tracing::warn!(%error, "rebuild failed; will retry"),
                }
                let _ = self.stores.deny.release_lease("rebuild", &holder).await;
            }
            tokio::select! {
                () = tokio::time::sleep(MARKER_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Repeats a bounded delete (of up to `size` rows) until a batch comes back short.
async fn drain<F, Fut>(mut batch: F, size: i64, progress: &dyn Progress) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = batch().await?;
        total += n;
        progress.advance(n);
        if n < size as u64 {
            return Ok(total);
        }
    }
}
