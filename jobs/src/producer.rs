//! The producer client: pushes jobs into revokd's apalis-redis queue (in the
//! layout its `queue` module knows).

use std::time::Duration;

use apalis_redis::Config;
use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::target::RedisConn;
use crate::{
    BATCH_CHUNK, Job, RegisterRefresh, RevokeBatch, RevokeIssuer, RevokeItem, RevokeSubject,
    RevokeToken,
    queue::{self, queue_config},
};

/// Why a job could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Redis could not be reached or refused the command.
    #[error("queue unreachable: {0}")]
    Redis(#[from] redis::RedisError),
    /// The queue script failed.
    #[error("queue error: {0}")]
    Queue(#[from] apalis_redis::Error),
    /// The job could not be serialised.
    #[error("cannot encode job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Pushes revoke and revoke-all jobs into revokd's queue.
///
/// Cheap to clone; clones share one multiplexed Redis connection.
#[derive(Clone)]
pub struct Producer {
    conn: RedisConn,
    config: Config,
    requested_by: String,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.config.queue)
            .field("requested_by", &self.requested_by)
            .finish()
    }
}

impl Producer {
    /// Connects to Redis at `redis_url` and targets the queue under `prefix`
    /// (revokd's `REVOKD_KEY_PREFIX`, default `revokd:`). `requested_by` is
    /// recorded in revokd's audit log for jobs that do not set their own.
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        requested_by: &str,
    ) -> Result<Self, ProduceError> {
        let client = Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::new(conn, prefix, requested_by))
    }

    /// Uses an existing connection (a `ConnectionManager`, or a
    /// [`RedisConn`] that follows a Sentinel-managed primary).
    pub fn new(conn: impl Into<RedisConn>, prefix: &str, requested_by: &str) -> Self {
        Self {
            conn: conn.into(),
            config: queue_config(prefix),
            requested_by: requested_by.to_owned(),
        }
    }

    /// Enqueues a revocation of one token; returns its job id.
    pub async fn revoke(&self, mut job: RevokeToken) -> Result<String, ProduceError> {
        if job.meta.requested_by.is_empty() {
            job.meta.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::Revoke(job)).await
    }

    /// Enqueues the revocation of many tokens: one `revoke_batch` job per
    /// [`BATCH_CHUNK`] (1,000) items, in order, all pushed in one atomic
    /// script call. Returns the job ids, one per chunk (none for no items).
    /// Each chunk is applied in one pass (one pipelined Redis write, one
    /// Postgres statement); like every job pushed straight into the queue,
    /// the chunks are only as durable as the queue (see the README).
    pub async fn revoke_many(
        &self,
        items: impl IntoIterator<Item = RevokeItem>,
    ) -> Result<Vec<String>, ProduceError> {
        let items: Vec<RevokeItem> = items.into_iter().collect();
        let mut ids = Vec::new();
        let mut payloads = Vec::new();
        for chunk in items.chunks(BATCH_CHUNK) {
            let mut job = RevokeBatch::new(chunk.to_vec());
            job.meta.requested_by.clone_from(&self.requested_by);
            ids.push(job.meta.job_id.clone());
            let task = ulid::Ulid::generate().to_string();
            payloads.push((task, serde_json::to_vec(&Job::RevokeBatch(job))?));
        }
        if payloads.is_empty() {
            return Ok(ids);
        }
        let invocation = queue::push_many(&self.config, payloads);
        let mut conn = self.conn.clone();
        let _: u32 = match invocation.invoke_async(&mut conn).await {
            // As in `push_payload`: one more try on a connection cut under
            // us (HSETNX keeps a repeat from queueing a chunk twice).
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                invocation.invoke_async(&mut conn).await?
            }
            other => other?,
        };
        Ok(ids)
    }

    /// Enqueues a revoke-all of a subject; returns its job id.
    pub async fn revoke_all(&self, mut job: RevokeSubject) -> Result<String, ProduceError> {
        if job.meta.requested_by.is_empty() {
            job.meta.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::RevokeAll(job)).await
    }

    /// Enqueues a revoke-all of an issuer (every token whose `iss` is
    /// `job.issuer`, as [`crate::issuer_id`] gives it, issued before
    /// `job.not_before`); returns its job id.
    pub async fn revoke_issuer(&self, mut job: RevokeIssuer) -> Result<String, ProduceError> {
        if job.meta.requested_by.is_empty() {
            job.meta.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::RevokeIssuer(job)).await
    }

    /// Enqueues the registration of a refresh token (or a rotation, see
    /// [`RegisterRefresh::rotating`]); returns its job id.
    pub async fn register_refresh(&self, mut job: RegisterRefresh) -> Result<String, ProduceError> {
        if job.meta.requested_by.is_empty() {
            job.meta.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::RegisterRefresh(job)).await
    }

    /// Enqueues any job as is; returns its job id.
    pub async fn push(&self, job: &Job) -> Result<String, ProduceError> {
        self.push_with_key(job, None).await
    }

    /// Enqueues a job unless another job with the same idempotency key was
    /// pushed within the last 24 hours. Returns whether it was enqueued.
    pub async fn push_once(&self, job: &Job, key: &str) -> Result<bool, ProduceError> {
        let (queued, scheduled) = self.push_raw(job, Some(key)).await?;
        Ok(queued + scheduled > 0)
    }

    /// Enqueues a job as the queue's task [`task_id_of`] its job id, so that
    /// whoever knows the job id can tell whether the queue still holds it
    /// (the payload stays in the queue's data hash until the job is done
    /// and vacuumed). Pushed once: a second push of the same job id while
    /// the queue holds the first is skipped. A job id that is not a UUID
    /// gets a fresh task id, as [`push`](Self::push) gives. Returns the job
    /// id.
    pub async fn push_as_job_task(&self, job: &Job) -> Result<String, ProduceError> {
        let job_id = job.job_id().unwrap_or_default();
        let task = task_id_of(job_id).unwrap_or_else(|| ulid::Ulid::generate().to_string());
        self.push_payload(&task, serde_json::to_vec(job)?, "")
            .await?;
        Ok(job_id.to_owned())
    }

    async fn push_with_key(&self, job: &Job, key: Option<&str>) -> Result<String, ProduceError> {
        self.push_raw(job, key).await?;
        Ok(job.job_id().unwrap_or_default().to_owned())
    }

    async fn push_raw(&self, job: &Job, key: Option<&str>) -> Result<(u32, u32), ProduceError> {
        // The push script publishes the wake-up itself.
        let task = ulid::Ulid::generate().to_string();
        let queued = self
            .push_payload(&task, serde_json::to_vec(job)?, key.unwrap_or(""))
            .await?;
        Ok((queued, 0))
    }

    /// Pushes one payload as task `id` straight onto the active list in
    /// apalis-redis's format. (apalis-redis's own push parks every job in
    /// the scheduled set, whose promotion fails once 8,000 jobs are due at
    /// once.)
    async fn push_payload(
        &self,
        id: &str,
        payload: Vec<u8>,
        key: &str,
    ) -> Result<u32, ProduceError> {
        let invocation = queue::push(&self.config, id, payload, key);
        let mut conn = self.conn.clone();
        match invocation.invoke_async(&mut conn).await {
            // The connection was cut under us; the manager reconnects, so try
            // once more. A duplicate is harmless: applying is idempotent.
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                Ok(invocation.invoke_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Enqueues a job to run once `delay` has passed (whole seconds, rounded
    /// up; a worker picks it up within a second after that). Returns its job
    /// id. The job starts with a fresh attempt count: revokd's workers use
    /// this to hand a job back after a store outage without ever reaching
    /// apalis-redis's limit of 25 attempts.
    pub async fn push_after(&self, job: &Job, delay: Duration) -> Result<String, ProduceError> {
        let payload = serde_json::to_vec(job)?;
        let due = crate::now_unix()
            .saturating_add(i64::try_from(delay.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(i64::from(delay.subsec_nanos() > 0));
        let id = ulid::Ulid::generate().to_string();
        let invocation = queue::schedule(&self.config, &id, payload, due);
        let mut conn = self.conn.clone();
        let _: i64 = match invocation.invoke_async(&mut conn).await {
            // As in `push_payload`: one more try on a connection cut under us.
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                invocation.invoke_async(&mut conn).await?
            }
            other => other?,
        };
        Ok(job.job_id().unwrap_or_default().to_owned())
    }

    /// Pushes raw bytes as a job payload, bypassing serialisation. Meant for
    /// tests and tools that need to exercise a worker with a bad payload.
    #[doc(hidden)]
    pub async fn push_bytes(&self, payload: Vec<u8>) -> Result<(), ProduceError> {
        let task = ulid::Ulid::generate().to_string();
        self.push_payload(&task, payload, "").await.map(|_| ())
    }

    /// The queue name this producer pushes to.
    pub fn queue(&self) -> &str {
        self.config.queue.as_ref()
    }
}

/// The queue's task id under which [`Producer::push_as_job_task`] pushes the
/// job `job_id`: the same 128 bits, as a ULID (apalis-redis's task ids).
/// `None` when `job_id` is not a UUID (revokd's are UUIDv7).
pub fn task_id_of(job_id: &str) -> Option<String> {
    let uuid = uuid::Uuid::parse_str(job_id).ok()?;
    Some(ulid::Ulid::from(uuid.as_u128()).to_string())
}

#[cfg(test)]
mod tests {
    use super::task_id_of;

    #[test]
    fn a_job_ids_task_id_is_its_uuid_as_a_ulid_with_the_same_time() {
        let job_id = crate::new_job_id();
        let task = task_id_of(&job_id).expect("a UUIDv7");
        let ulid = ulid::Ulid::from_string(&task).expect("a ULID");
        let uuid = uuid::Uuid::parse_str(&job_id).unwrap();
        assert_eq!(ulid.0, uuid.as_u128());
        let (secs, _) = uuid.get_timestamp().unwrap().to_unix();
        assert_eq!(ulid.timestamp_ms() / 1000, secs);
        assert_eq!(task_id_of(&job_id), Some(task), "the same every time");
        assert_eq!(task_id_of("not-a-uuid"), None);
    }
}
