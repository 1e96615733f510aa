//! Applying jobs to both stores. Redis first, so a revocation is effective
//! for checks even while Postgres is down; then Postgres, the durable record.
//! Every step is idempotent: delivery is at-least-once. One file per job
//! kind; this one holds the dispatch, the in-slot retry and the job is
//! validated once, on arrival ([`validate::job`]).

mod cleanup;
mod register_refresh;
mod revoke;
mod revoke_all;
mod revoke_batch;
mod revoke_family;
mod revoke_issuer;

pub use revoke_family::FamilyRequest;

use std::{sync::Arc, time::Duration};

use backon::Retryable as _;
use revokd_jobs::{Job, now_unix};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::failure::{self, Verdict};
use crate::{
    instruments, retry,
    store::{
        StoreError, Stores, TtlPolicy,
        pg::batch::RevokeBatcher,
        redis::{DenyGroup, DenyList, State},
    },
    worker::maintenance::{CleanupReport, Maintenance},
    write::validate::{self, InputError},
};

/// How long one delivery retries a transient failure in its worker slot
/// before the job is handed back to the queue (see [`super::failure`]).
const IN_SLOT: Duration = Duration::from_secs(2);

/// The longest one attempt at a job may take; a slower one fails (and runs
/// again, announcing its entries again). So a job that writes Redis and
/// then Postgres commits within this of its announcement, or is announced
/// again later: what a replica's load replays (`REPLAY_MS` in
/// `read::replica::snapshot`) covers it.
pub const ATTEMPT: Duration = Duration::from_secs(10);

/// Chunks of a bulk revocation (`revoke_batch`, 1,000 items each) applied
/// at once by one process. Each holds a Postgres connection for a
/// thousand-row statement; unbounded, 64 of them took every connection of
/// the pool and single revocations, the API's among them, queued behind
/// them for hundreds of milliseconds. Measured with `bench/batch_path.sh`
/// (1 M items posted 4 requests at a time, one process with every role):
/// with 2, all applied after 40.5 s and a single revocation posted meanwhile
/// seen after 50 ms (p50); with 4, 38.0 s and 115 ms.
const BULK_IN_FLIGHT: usize = 2;

/// Why a job was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The payload can never apply; retrying is pointless.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// A store failed: retried or not as [`super::failure::classify`] says.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<InputError> for ApplyError {
    fn from(e: InputError) -> Self {
        ApplyError::Invalid(e.to_string())
    }
}

impl From<redis::RedisError> for ApplyError {
    fn from(e: redis::RedisError) -> Self {
        ApplyError::Store(e.into())
    }
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        ApplyError::Store(e.into())
    }
}

/// What applying a job did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A token is on the deny-list (or, already expired, only in Postgres).
    Revoked {
        /// Whether a Redis key was written.
        in_redis: bool,
    },
    /// A chunk of tokens is on the deny-list and in Postgres.
    BatchRevoked {
        /// Items applied.
        tokens: usize,
        /// Items with a Redis key (the others had expired).
        in_redis: usize,
    },
    /// A subject watermark was raised (or was already higher).
    SubjectRevoked,
    /// An issuer watermark was raised (or was already higher).
    IssuerRevoked,
    /// A refresh token was registered (or rotated); its stored state.
    Registered(State),
    /// A refresh-token family was revoked.
    FamilyRevoked,
    /// Maintenance ran.
    Cleaned(CleanupReport),
}

/// Applies jobs to Redis and Postgres.
#[derive(Clone)]
pub struct Applier {
    stores: Stores,
    revokes: RevokeBatcher,
    /// Single revocations' deny-list writes, grouped into one script call
    /// per group (see [`crate::store::group`]).
    denies: DenyGroup,
    /// Slots for [`BULK_IN_FLIGHT`] chunks.
    bulk: Arc<Semaphore>,
    /// The deny-list on a connection of its own for chunks: a reply to a
    /// single revocation's write (or to the API's push, on the same
    /// connection in a process with both roles) queued on a multiplexed
    /// connection behind a chunk's thousand pipelined writes waited for all
    /// of them. Measured with `bench/batch_path.sh` at 20,000 items/s,
    /// three runs each, interleaved: a single revocation seen after p99
    /// 40.7 / 39.3 / 52.9 ms against 77.6 / 64.7 / 67.0 ms on one
    /// connection.
    bulk_deny: DenyList,
    ttl: TtlPolicy,
    done_channel: String,
    maintenance: Option<Maintenance>,
}

impl Applier {
    /// An applier over the given stores.
    pub fn new(stores: Stores, ttl: TtlPolicy) -> Self {
        Self {
            done_channel: stores.deny.keys().done_channel(),
            revokes: RevokeBatcher::new(stores.db.clone()),
            denies: stores.deny.grouped(),
            bulk: Arc::new(Semaphore::new(BULK_IN_FLIGHT)),
            bulk_deny: stores.deny.clone(),
            stores,
            ttl,
            maintenance: None,
        }
    }

    /// Writes the deny-list entries of `revoke_batch` chunks through `deny`
    /// (another connection to the same Redis) instead of the stores' one.
    pub fn with_bulk_deny(mut self, deny: DenyList) -> Self {
        self.bulk_deny = deny;
        self
    }

    /// Lets this applier run cleanup jobs.
    pub fn with_maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = Some(maintenance);
        self
    }

    /// Applies `job` once, as of `now`.
    pub async fn apply(&self, job: &Job, now: i64) -> Result<Applied, ApplyError> {
        let job = &validate::job(job)?;
        let applied = match job {
            Job::Revoke(job) => self.revoke(job, now).await?,
            Job::RevokeAll(job) => self.revoke_all(job, now).await?,
            Job::RevokeIssuer(job) => self.revoke_issuer(job, now).await?,
            Job::RevokeBatch(job) => self.revoke_batch(job, now).await?,
            Job::RegisterRefresh(job) => self.register_refresh(job, now).await?,
            Job::RevokeFamily(job) => {
                let reason = job.reason.as_deref().unwrap_or("revoked");
                let ids = FamilyRequest {
                    job_id: &job.meta.job_id,
                    by: &job.meta.requested_by,
                    at: job.meta.requested_at,
                };
                self.revoke_family(&job.family_id, reason, ids, now).await?;
                Applied::FamilyRevoked
            }
            Job::Cleanup(_) => self.cleanup(now).await?,
            Job::Unknown => return Err(InputError::UnknownKind.into()),
        };
        // An unknown kind was refused above.
        instruments::job_applied(job.kind());
        if let Some(job_id) = job.job_id() {
            self.stores.deny.publish(&self.done_channel, job_id).await;
        }
        Ok(applied)
    }

    /// Applies `job`, retrying transient failures a few times within
    /// [`IN_SLOT`] (a blip of a store) unless `stop` fires; a deterministic
    /// failure returns at once.
    pub async fn apply_with_retry(
        &self,
        job: &Job,
        stop: &CancellationToken,
    ) -> Result<Applied, ApplyError> {
        // A chunk waits for its slot before its attempts are timed: a wait
        // behind other chunks is no slow store. (The semaphore is never
        // closed.)
        let _slot = match job {
            Job::RevokeBatch(_) => Some(self.bulk.acquire().await),
            _ => None,
        };
        let started = tokio::time::Instant::now();
        // A cleanup writes nothing a replica loads, and may take minutes.
        let limit = if matches!(job, Job::Cleanup(_)) {
            Duration::MAX
        } else {
            ATTEMPT
        };
        let attempt = || async {
            match tokio::time::timeout(limit, self.apply(job, now_unix())).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ApplyError::Store(StoreError::TimedOut(ATTEMPT))),
            }
        };
        attempt
            .retry(retry::doubling(Duration::from_millis(100), IN_SLOT))
            .sleep(retry::stoppable(stop))
            .when(|error| failure::classify(error) == Verdict::Transient && !stop.is_cancelled())
            .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d < IN_SLOT))
            .notify(|error, delay| {
                instruments::job_retried();
                if let ApplyError::Store(StoreError::Postgres(error)) = error {
                    self.stores.db.failed(error);
                }
                tracing::debug!(job_id = job.job_id(), %error, retry_in = ?delay, "job not applied; retrying");
            })
            .await
    }
}
