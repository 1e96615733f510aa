//! Resync: revocations written straight to Postgres while the queue (Redis)
//! was unreachable are pushed into Redis once it answers again.

use std::time::Duration;

use revokd_jobs::now_unix;
use tokio_util::sync::CancellationToken;

use crate::store::{
    pg::Db,
    redis::{DenyEntry, DenyList, deny_ttl, watermark_ttl},
};

/// Rows moved per round trip batch.
const BATCH: i64 = 500;
/// How often the worker role looks for pending rows.
const EVERY: Duration = Duration::from_secs(1);

/// What it takes to copy pending rows into Redis.
#[derive(Clone)]
pub struct Resync {
    /// Destination.
    pub deny: DenyList,
    /// Source.
    pub db: Db,
    /// Leeway in seconds.
    pub leeway: i64,
    /// Maximum token lifetime in seconds.
    pub max_lifetime: i64,
}

/// Why a resync pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Postgres failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

impl Resync {
    /// Copies every pending row into Redis; returns how many.
    pub async fn run_once(&self) -> Result<u64, ResyncError> {
        let mut moved = 0;
        loop {
            moved += self.resync_families().await?;
            let tokens = self.db.pending_tokens(BATCH).await?;
            let subjects = self.db.pending_watermarks(BATCH).await?;
            if tokens.is_empty() && subjects.is_empty() {
                return Ok(moved);
            }
            let now = now_unix();
            for row in &tokens {
                if let Some(ttl) = deny_ttl(row.expires_at, now, self.leeway, self.max_lifetime) {
                    let entry = DenyEntry {
                        sub: row.subject.clone(),
                        exp: row.expires_at,
                        revoked_at: row.revoked_at,
                        reason: row.reason.clone(),
                    };
                    self.deny.deny(&row.token_id, &entry, ttl).await?;
                }
            }
            let ttl = watermark_ttl(self.leeway, self.max_lifetime);
            for (subject, not_before) in &subjects {
                self.deny.raise_watermark(subject, *not_before, ttl).await?;
            }
            let token_ids: Vec<String> = tokens.into_iter().map(|r| r.token_id).collect();
            let subject_ids: Vec<String> = subjects.into_iter().map(|(s, _)| s).collect();
            self.db.mark_in_redis(&token_ids, &subject_ids).await?;
            moved += (token_ids.len() + subject_ids.len()) as u64;
        }
    }

    /// Family revocations decided while Redis was down (reuse detected from
    /// Postgres) get their Redis marker.
    async fn resync_families(&self) -> Result<u64, ResyncError> {
        let families = self.db.pending_families(BATCH).await?;
        let ttl = watermark_ttl(self.leeway, self.max_lifetime);
        for (family, reason) in &families {
            self.deny.mark_family_revoked(family, reason, ttl).await?;
        }
        let ids: Vec<String> = families.into_iter().map(|(f, _)| f).collect();
        self.db.mark_families_in_redis(&ids).await?;
        Ok(ids.len() as u64)
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
