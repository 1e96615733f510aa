//! Resync: revocations written straight to Postgres while the queue (Redis)
//! was unreachable are pushed into Redis once it answers again, and so are
//! the rows of a chunk whose job the queue lost (known after
//! [`PUSH_GRACE_SECS`]), or which has not run within [`QUEUED_GRACE_SECS`].

use std::time::Duration;

use revokd_jobs::now_unix;
use tokio_util::sync::CancellationToken;

use crate::store::{Scope, StoreError, Stores, TtlPolicy, pg::RefreshRow, redis::DenyEntry};

/// Rows moved per round trip batch, unless set.
pub const BATCH: i64 = 500;
/// How often the worker role looks for pending rows.
const EVERY: Duration = Duration::from_secs(1);
/// How long a chunk's rows are left to its job before the resync turns
/// them pending and copies them (a job lost with the queue, say in a
/// failover): longer than a worker takes to reach a job behind a large
/// backlog.
pub const QUEUED_GRACE_SECS: i64 = 60;
/// How long a chunk's record waits before the resync asks the queue
/// whether its job is still there: longer than the API's push of it can
/// take (a 5 s response timeout, one retry). A push slower still only costs
/// a second write of the chunk's rows.
pub const PUSH_GRACE_SECS: i64 = 15;
/// Waiting chunks whose job is looked for in the queue per pass, oldest
/// first (a backlog of a million items is 1,000 chunks).
const CHUNKS_CHECKED: i64 = 1_024;
/// Lost chunks turned pending per pass (a pass a second), up to 1,000 rows
/// each.
const LOST_CHUNKS: usize = 16;

/// What it takes to copy pending rows into Redis.
#[derive(Clone)]
pub struct Resync {
    /// Source (Postgres) and destination (the deny-list).
    pub stores: Stores,
    /// Lifetimes of what is written.
    pub ttl: TtlPolicy,
    /// Rows moved per round trip ([`BATCH`]; tests prove the paging with a
    /// handful of rows).
    pub batch: i64,
}

impl Resync {
    /// Copies the pending rows into Redis; returns how many. A pass ends
    /// with the first batch that comes back short: rows keep becoming
    /// pending under write load (each accepted revocation is, until its
    /// worker has run), and a pass that waited for none would never end.
    pub async fn run_once(&self) -> Result<u64, StoreError> {
        let mut moved = 0;
        // Lost chunks' rows turn pending first, and are copied below with
        // the rest.
        self.unqueue_lost_chunks(now_unix()).await?;
        loop {
            // Each batch is written as of the clock when it starts.
            let now = now_unix();
            let (families, refresh, issuers) = (
                self.resync_families(now).await?,
                self.resync_refresh(now).await?,
                self.resync_issuers(now).await?,
            );
            moved += families + refresh + issuers;
            let tokens = self.stores.db.pending_tokens(self.batch).await?;
            let subjects = self.stores.db.pending_watermarks(self.batch).await?;
            let last = [
                families,
                refresh,
                issuers,
                tokens.len() as u64,
                subjects.len() as u64,
            ]
            .iter()
            .all(|&n| n < self.batch as u64);
            if tokens.is_empty() && subjects.is_empty() {
                if last {
                    return Ok(moved);
                }
                // Only families, refresh entries or issuers filled a batch.
                continue;
            }
            let entries: Vec<(String, DenyEntry, i64)> = tokens
                .iter()
                .filter_map(|row| {
                    let ttl = self.ttl.deny(row.expires_at, now)?;
                    let entry = DenyEntry {
                        sub: row.subject.clone(),
                        exp: row.expires_at,
                        revoked_at: row.revoked_at,
                        reason: row.reason.clone(),
                    };
                    Some((row.token_id.clone(), entry, ttl))
                })
                .collect();
            self.stores.deny.deny_many(&entries, now).await?;
            self.stores
                .deny
                .raise_many(&subjects, self.ttl.watermark(), now)
                .await?;
            let copied: Vec<(String, i64)> = tokens
                .into_iter()
                .map(|r| (r.token_id, r.expires_at))
                .collect();
            self.stores.db.mark_in_redis(&copied, &subjects).await?;
            moved += (copied.len() + subjects.len()) as u64;
            if last {
                return Ok(moved);
            }
        }
    }

    /// Chunks whose record has waited [`PUSH_GRACE_SECS`] for its worker
    /// and whose job the queue no longer holds, or that have waited
    /// [`QUEUED_GRACE_SECS`] anyway: their rows turn pending, at most
    /// [`LOST_CHUNKS`] chunks a pass, oldest first.
    async fn unqueue_lost_chunks(&self, now: i64) -> Result<(), StoreError> {
        let db = &self.stores.db;
        let waiting = db
            .chunks_queued_before(now - PUSH_GRACE_SECS, CHUNKS_CHECKED)
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let (overdue, young): (Vec<_>, Vec<_>) = waiting
            .iter()
            .partition(|(_, at)| *at < now - QUEUED_GRACE_SECS);
        let young: Vec<&str> = young.iter().map(|(id, _)| id.as_str()).collect();
        let queue = revokd_jobs::queue_config(self.stores.deny.keys().prefix());
        let not_held = self.stores.deny.jobs_not_held(&queue, &young).await?;
        let lost: Vec<&str> = overdue
            .iter()
            .map(|(id, _)| id.as_str())
            .chain(not_held)
            .take(LOST_CHUNKS)
            .collect();
        if !lost.is_empty() {
            let rows = db.unqueue_chunks(&lost).await?;
            tracing::warn!(
                chunks = lost.len(),
                rows,
                "bulk revocation chunks whose job was lost or never ran: copying their rows from postgres"
            );
        }
        Ok(())
    }

    /// Family revocations decided while Redis was down (reuse detected from
    /// Postgres) get their Redis marker.
    async fn resync_families(&self, now: i64) -> Result<u64, StoreError> {
        let families = self.stores.db.pending_families(self.batch).await?;
        let ttl = self.ttl.watermark();
        for (family, reason) in &families {
            self.stores
                .deny
                .mark_family_revoked(family, reason, ttl, now)
                .await?;
        }
        let ids: Vec<String> = families.into_iter().map(|(f, _)| f).collect();
        self.stores.db.mark_families_in_redis(&ids).await?;
        Ok(ids.len() as u64)
    }

    /// Issuer watermarks written straight to Postgres.
    async fn resync_issuers(&self, now: i64) -> Result<u64, StoreError> {
        let marks = self.stores.db.pending_of(Scope::Issuer, self.batch).await?;
        if marks.is_empty() {
            return Ok(0);
        }
        let ttl = self.ttl.watermark();
        let deny = &self.stores.deny;
        deny.raise_marks(Scope::Issuer, &marks, ttl, now).await?;
        let db = &self.stores.db;
        db.mark_watermarks_in_redis(Scope::Issuer, &marks).await?;
        Ok(marks.len() as u64)
    }

    /// Refresh-token registrations written straight to Postgres.
    async fn resync_refresh(&self, now: i64) -> Result<u64, StoreError> {
        let rows = self.stores.db.pending_refresh(self.batch).await?;
        let entries = RefreshRow::redis_entries(&rows, &self.ttl, now);
        self.stores.deny.set_refresh_entries(&entries, now).await?;
        let copied: Vec<(String, i16)> = rows.into_iter().map(|r| (r.token_id, r.state)).collect();
        self.stores.db.mark_refresh_in_redis(&copied).await?;
        Ok(copied.len() as u64)
    }

    /// Runs a pass every second until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.run_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    rows = n,
                    "revocations written during the outage are now in redis"
                ),
                Err(error) => tracing::debug!(%error, "resync pass failed; will retry"),
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
