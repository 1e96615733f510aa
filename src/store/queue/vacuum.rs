//! The vacuum of finished jobs: apalis-redis never expires its done and dead
//! sets, the payloads and metadata of their jobs, nor the metadata of a
//! worker that died without deregistering (its `vacuum` scripts read the
//! whole data hash in one call and leave the sets alone). Deleted here in
//! batches, by each job's `done_at`.

use apalis_redis::Config;

use super::{inflight_set, worker_metadata_key};
use crate::store::redis::DenyList;

impl DenyList {
    /// Deletes finished (`done`) and set-aside (`dead`) job records of the
    /// queue older than the cutoffs, in batches; returns how many.
    pub async fn vacuum_jobs(
        &self,
        queue: &Config,
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

    /// Drops the metadata hashes of workers no longer registered and holding
    /// no job (a killed process leaves one per worker name behind).
    async fn vacuum_dead_workers(&self, queue: &Config) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let start = worker_metadata_key(queue, "");
        for keys in self.scan_batches(&start).await? {
            let names: Vec<&str> = keys.iter().map(|k| &k[start.len()..]).collect();
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.zscore(queue.workers_set(), *name);
                pipe.scard(inflight_set(queue, name));
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

    async fn vacuum_set(&self, queue: &Config, set: &str, cutoff: i64) -> redis::RedisResult<u64> {
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
