//! The apalis-redis queue seen from the outside: its depth for stats and
//! metrics, and the vacuum of finished and dead job records (apalis-redis
//! never expires them).

use super::redis::DenyList;

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
    pub async fn queue_depth(
        &self,
        queue: &apalis_redis::Config,
    ) -> redis::RedisResult<QueueDepth> {
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
                pipe.scard(format!("{}:{worker}", queue.inflight_jobs_set()));
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

    /// Deletes finished (`done`) and set-aside (`dead`) job records of the
    /// queue older than the cutoffs, in batches; returns how many.
    pub async fn vacuum_jobs(
        &self,
        queue: &apalis_redis::Config,
        done_before: i64,
        dead_before: i64,
    ) -> redis::RedisResult<u64> {
        let mut removed = 0;
        for (set, cutoff) in [
            (queue.done_jobs_set(), done_before),
            (queue.dead_jobs_set(), dead_before),
        ] {
            removed += self.vacuum_set(queue, &set, cutoff).await?;
        }
        self.vacuum_dead_workers(queue).await?;
        Ok(removed)
    }

    /// apalis-redis leaves the metadata of a worker that died without
    /// deregistering (a killed process) behind, one hash per worker name;
    /// drop those whose worker is no longer registered and holds no job.
    async fn vacuum_dead_workers(&self, queue: &apalis_redis::Config) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let start = format!("{}:workers:metadata:", queue.queue.as_ref());
        for keys in self.scan_batches(&start).await? {
            let names: Vec<&str> = keys.iter().map(|k| &k[start.len()..]).collect();
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.zscore(queue.workers_set(), *name);
                pipe.scard(format!("{}:{name}", queue.inflight_jobs_set()));
            }
            let found: Vec<(Option<f64>, u64)> = pipe.query_async(&mut conn).await?;
            let gone: Vec<&String> = keys
                .iter()
                .zip(found)
                .filter(|(_, (registered, inflight))| registered.is_none() && *inflight == 0)
                .map(|(key, _)| key)
                .collect();
            if !gone.is_empty() {
                redis::cmd("DEL")
                    .arg(&gone)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn vacuum_set(
        &self,
        queue: &apalis_redis::Config,
        set: &str,
        cutoff: i64,
    ) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(set)
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            if !ids.is_empty() {
                let meta = |id: &str| format!("{}:{id}", queue.job_meta_hash());
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.hget(meta(id), "done_at");
                }
                let done_at: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
                let old: Vec<&String> = ids
                    .iter()
                    .zip(done_at)
                    .filter(|(_, at)| at.is_none_or(|at| at < cutoff))
                    .map(|(id, _)| id)
                    .collect();
                if !old.is_empty() {
                    let mut pipe = redis::pipe();
                    for id in &old {
                        pipe.srem(set, *id).ignore();
                        pipe.hdel(queue.job_data_hash(), *id).ignore();
                        pipe.del(meta(id)).ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await?;
                    removed += old.len() as u64;
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}
