//! The producer client: pushes jobs into revokd's apalis-redis queue.

use std::{sync::LazyLock, time::Duration};

use apalis_redis::Config;
use redis::{
    AsyncCommands, Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use crate::{Job, RegisterRefresh, RevokeSubject, RevokeToken, queue_name};

/// Enqueues jobs in apalis-redis's layout, straight onto the active list.
/// KEYS: data hash, active list, signal list, meta prefix, idempotency prefix;
/// ARGV[1] idempotency TTL, then per job: id, payload, idempotency key ('' for
/// none). Returns how many were queued.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local queued = 0
for i = 2, #ARGV, 3 do
  local id, data, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fresh = true
  if #key > 0 then
    fresh = redis.call('SET', KEYS[5] .. ':' .. key, id, 'NX', 'EX', ARGV[1]) ~= false
  end
  if fresh and redis.call('HSETNX', KEYS[1], id, data) == 1 then
    redis.call('HSET', KEYS[4] .. ':' .. id, 'attempts', 0, 'max_attempts', 25, 'status', 'Pending',
      'idempotency_key', key)
    redis.call('RPUSH', KEYS[2], id)
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
end
return queued",
    )
});

/// Parks one job in apalis-redis's scheduled set, from which workers promote
/// it once due. KEYS: data hash, scheduled set, meta prefix; ARGV: id,
/// payload, due time (unix seconds).
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3] .. ':' .. ARGV[1], 'attempts', 0, 'max_attempts', 25, 'status', 'Pending',
  'idempotency_key', '')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1",
    )
});

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

/// The apalis-redis configuration of revokd's queue under `prefix`.
///
/// Workers and producers must agree on it; producers only use the queue name.
/// Heartbeats every 3 s with 3 missed allowed let a live worker reclaim a
/// killed worker's jobs within about 12 s (apalis-redis's default is 300 s).
pub fn queue_config(prefix: &str) -> Config {
    Config::default()
        .queue(queue_name(prefix))
        .batch_size(32)
        .heartbeat_interval(Duration::from_secs(3))
        .missed_heartbeats(3)
        // Jobs take milliseconds, far below one heartbeat: leases buy nothing.
        .lock_tasks(false)
        // Completion must be recorded, or jobs stay in flight forever.
        .persist_results(true)
        // revokd publishes its own wake-up signal (see `wake_channel`).
        .emit_events(false)
        .idempotency_ttl(Some(Duration::from_secs(24 * 3600)))
}

/// The pub/sub channel a producer publishes on after a push so that idle
/// workers fetch at once instead of at their next poll tick.
pub fn wake_channel(prefix: &str) -> String {
    format!("{}:wake", queue_name(prefix))
}

/// Pushes revoke and revoke-all jobs into revokd's queue.
///
/// Cheap to clone; clones share one multiplexed Redis connection.
#[derive(Clone)]
pub struct Producer {
    conn: ConnectionManager,
    config: Config,
    wake: String,
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

    /// Uses an existing connection.
    pub fn new(conn: ConnectionManager, prefix: &str, requested_by: &str) -> Self {
        Self {
            conn,
            config: queue_config(prefix),
            wake: wake_channel(prefix),
            requested_by: requested_by.to_owned(),
        }
    }

    /// Enqueues a revocation of one token; returns its job id.
    pub async fn revoke(&self, mut job: RevokeToken) -> Result<String, ProduceError> {
        if job.requested_by.is_empty() {
            job.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::Revoke(job)).await
    }

    /// Enqueues a revoke-all of a subject; returns its job id.
    pub async fn revoke_all(&self, mut job: RevokeSubject) -> Result<String, ProduceError> {
        if job.requested_by.is_empty() {
            job.requested_by.clone_from(&self.requested_by);
        }
        self.push(&Job::RevokeAll(job)).await
    }

    /// Enqueues the registration of a refresh token (or a rotation, see
    /// [`RegisterRefresh::rotating`]); returns its job id.
    pub async fn register_refresh(&self, mut job: RegisterRefresh) -> Result<String, ProduceError> {
        if job.requested_by.is_empty() {
            job.requested_by.clone_from(&self.requested_by);
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

    async fn push_with_key(&self, job: &Job, key: Option<&str>) -> Result<String, ProduceError> {
        self.push_raw(job, key).await?;
        Ok(job.job_id().unwrap_or_default().to_owned())
    }

    async fn push_raw(&self, job: &Job, key: Option<&str>) -> Result<(u32, u32), ProduceError> {
        let queued = self
            .push_payload(serde_json::to_vec(job)?, key.unwrap_or(""))
            .await?;
        // A lost wake-up only costs one poll tick; the job is already queued.
        let mut conn = self.conn.clone();
        let _: Result<i64, _> = conn.publish(&self.wake, 1).await;
        Ok((queued, 0))
    }

    /// Pushes one payload straight onto the active list in apalis-redis's
    /// format. (apalis-redis's own push parks every job in the scheduled set,
    /// whose promotion fails once 8,000 jobs are due at once.)
    async fn push_payload(&self, payload: Vec<u8>, key: &str) -> Result<u32, ProduceError> {
        let id = ulid::Ulid::generate().to_string();
        let ttl = self
            .config
            .idempotency_ttl
            .map(|d| d.as_secs())
            .unwrap_or(86_400)
            .max(1);
        let mut invocation = PUSH.prepare_invoke();
        invocation
            .key(self.config.job_data_hash())
            .key(self.config.active_jobs_list())
            .key(self.config.signal_list())
            .key(self.config.job_meta_hash())
            .key(self.config.idempotency_key_set())
            .arg(ttl)
            .arg(id)
            .arg(payload)
            .arg(key);
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
        let mut invocation = SCHEDULE.prepare_invoke();
        invocation
            .key(self.config.job_data_hash())
            .key(self.config.scheduled_jobs_set())
            .key(self.config.job_meta_hash())
            .arg(ulid::Ulid::generate().to_string())
            .arg(payload)
            .arg(due);
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
        self.push_payload(payload, "").await.map(|_| ())
    }

    /// The queue name this producer pushes to.
    pub fn queue(&self) -> &str {
        self.config.queue.as_ref()
    }
}
