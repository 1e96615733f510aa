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

    /// Waits until `deadline` for the job's completion message.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Outcome {
        let mut messages = self.pubsub.on_message();
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(_)) => Outcome::Applied,
            // The connection ended (Redis restarted, connection killed):
            // not a timeout, and a completion may have been missed.
            Ok(None) => Outcome::Dropped,
            Err(_) => Outcome::TimedOut,
        }
    }
}

/// How a wait for a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker announced the job applied.
    Applied,
    /// The deadline passed.
    TimedOut,
    /// The subscription was lost before either.
    Dropped,
}
