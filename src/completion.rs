//! Waiting for a job to be applied: the waiter subscribes to the job's
//! channel before the job is pushed, the worker publishes on it once both
//! stores are written. Nobody waiting costs one PUBLISH to no subscriber.

use std::time::Duration;

use futures::StreamExt;

use crate::worker::apply::done_channel_prefix;

/// A subscription to one job's completion.
pub struct Completion {
    pubsub: redis::aio::PubSub,
}

impl Completion {
    /// Subscribes to `job_id`'s completion; call before pushing the job.
    pub async fn subscribe(
        redis_url: &str,
        prefix: &str,
        job_id: &str,
    ) -> redis::RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        pubsub
            .subscribe(format!("{}{job_id}", done_channel_prefix(prefix)))
            .await?;
        Ok(Self { pubsub })
    }

    /// Waits up to `timeout`; true when the job was applied.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        let mut messages = self.pubsub.on_message();
        matches!(
            tokio::time::timeout(timeout, messages.next()).await,
            Ok(Some(_))
        )
    }
}
