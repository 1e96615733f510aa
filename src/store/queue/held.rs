//! Whether the queue still holds some jobs: their payloads in apalis-redis's
//! data hash (`{queue}:data`), under the task id the job id gives
//! ([`revokd_jobs::task_id_of`]), which a push writes first and only the
//! vacuum deletes, once a job is done. The resync asks it of chunks whose
//! record in Postgres has waited a while for its worker: a job the queue
//! lost (a failover to a replica that lacked it, a flush, an API process
//! that died between recording the chunk and pushing it) is then known
//! lost at once, not only once the record is a minute old.

use apalis_redis::Config;

use crate::store::redis::DenyList;

impl DenyList {
    /// Of the jobs `job_ids`, pushed with
    /// [`revokd_jobs::Producer::push_as_job_task`], those whose payload the
    /// queue `queue` does not hold, in one pipelined round trip. A job id
    /// that is not a UUID counts as held: its task cannot be named.
    pub async fn jobs_not_held<'a>(
        &self,
        queue: &Config,
        job_ids: &[&'a str],
    ) -> redis::RedisResult<Vec<&'a str>> {
        let tasks: Vec<(&str, String)> = job_ids
            .iter()
            .filter_map(|id| Some((*id, revokd_jobs::task_id_of(id)?)))
            .collect();
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let data = queue.job_data_hash();
        let mut pipe = redis::pipe();
        for (_, task) in &tasks {
            pipe.hexists(&data, task);
        }
        let mut conn = self.conn.clone();
        let held: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(tasks
            .into_iter()
            .zip(held)
            .filter_map(|((id, _), held)| (!held).then_some(id))
            .collect())
    }
}
