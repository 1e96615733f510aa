//! The queue's depth for `/v1/stats` and `/metrics`, read from apalis-redis's
//! keys directly: its own stats script counts the done and dead sets with
//! `ZCARD` (they are sets: the script fails) and the workers' names instead
//! of their in-flight sets.

use apalis_redis::Config;

use super::inflight_set;
use crate::store::redis::DenyList;

/// Jobs in the queue by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Waiting to run (queued or scheduled for a retry).
    pub pending: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Set aside for good (dead set).
    pub failed: u64,
    /// Finished, not yet vacuumed.
    pub done: u64,
}

impl DenyList {
    /// Depth of the apalis-redis queue, read from its keys directly.
    pub async fn queue_depth(&self, queue: &Config) -> redis::RedisResult<QueueDepth> {
        let mut conn = self.conn.clone();
        let (active, scheduled, failed, done, workers): (u64, u64, u64, u64, Vec<String>) =
            redis::pipe()
                .llen(queue.active_jobs_list())
                .zcard(queue.scheduled_jobs_set())
                .scard(queue.dead_jobs_set())
                .scard(queue.done_jobs_set())
                .zrange(queue.workers_set(), 0, -1)
                .query_async(&mut conn)
                .await?;
        let mut running = 0;
        if !workers.is_empty() {
            let mut pipe = redis::pipe();
            for worker in &workers {
                pipe.scard(inflight_set(queue, worker));
            }
            let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
            running = counts.iter().sum();
        }
        Ok(QueueDepth {
            pending: active + scheduled,
            running,
            failed,
            done,
        })
    }
}
