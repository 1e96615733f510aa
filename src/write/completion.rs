//! Waiting for a job to be applied (`?wait=true`, `--wait`). The worker
//! publishes each applied job's id on one channel per deployment,
//! `{prefix}done`; each process holds one subscription to it, shared by
//! all its waiters (a map job_id → waiters), opened on the first wait.
//!
//! A completion published after a waiter registered is never missed: a
//! waiter registers only while the subscription is confirmed, under the
//! same lock the subscriber takes to deliver a message or to give up a
//! connection. When the connection drops, every registered waiter is told
//! (`Dropped`, not a timeout): it registers again once the subscription is
//! back and asks Postgres whether the job was applied meanwhile.
//!
//! Waiters are bounded (`REVOKD_MAX_WAITERS`): beyond the bound a wait is
//! refused before anything is recorded, so the caller can retry it.

use revokd_jobs::RedisTarget;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::store::Keys;

/// Longest a waiter waits for the shared subscription to be (re)established.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's completion subscriber, shared by every waiter.
#[derive(Clone)]
pub struct Completions {
    hub: Arc<Hub>,
}

struct Hub {
    redis: RedisTarget,
    channel: String,
    waiters: Mutex<Waiters>,
    /// Mirrors `Waiters::live`, for registrations waiting for it.
    live: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    started: AtomicBool,
    next_id: AtomicU64,
    stop: CancellationToken,
}

#[derive(Default)]
struct Waiters {
    /// The subscription is confirmed on the current connection.
    live: bool,
    by_job: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The wait bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests are waiting for their jobs")]
pub struct TooManyWaiters;

impl Completions {
    /// Completions of the deployment under `prefix`, for at most
    /// `max_waiters` concurrent waits. Opens no connection until the first.
    pub fn new(redis: &RedisTarget, prefix: &str, max_waiters: usize) -> Self {
        Self {
            hub: Arc::new(Hub {
                redis: redis.clone(),
                channel: Keys::new(prefix).done_channel(),
                waiters: Mutex::new(Waiters::default()),
                live: watch::Sender::new(false),
                permits: Arc::new(Semaphore::new(max_waiters)),
                started: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// A place among the waiters, held for the whole wait.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, TooManyWaiters> {
        Arc::clone(&self.hub.permits)
            .try_acquire_owned()
            .map_err(|_| TooManyWaiters)
    }

    /// Registers for `job_id`'s completion; call before pushing the job.
    /// Fails when the subscription cannot be (re)established in time.
    pub async fn subscribe(&self, job_id: &str) -> redis::RedisResult<Completion> {
        if !self.hub.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(subscriber(Arc::downgrade(&self.hub), self.hub.stop.clone()));
        }
        let mut live = self.hub.live.subscribe();
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            {
                let mut waiters = lock(&self.hub.waiters);
                if waiters.live {
                    let id = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    waiters
                        .by_job
                        .entry(job_id.to_owned())
                        .or_default()
                        .push((id, tx));
                    return Ok(Completion {
                        hub: Arc::clone(&self.hub),
                        job_id: job_id.to_owned(),
                        id,
                        rx,
                    });
                }
            }
            let changed = tokio::time::timeout_at(deadline, live.wait_for(|l| *l)).await;
            if !matches!(changed, Ok(Ok(_))) {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "completion subscription unavailable",
                )));
            }
        }
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the one subscription up until the hub goes; delivers messages.
async fn subscriber(hub: std::sync::Weak<Hub>, stop: CancellationToken) {
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let (redis, channel) = (strong.redis.clone(), strong.channel.clone());
        drop(strong);
        let mut moved = redis.changed();
        match connect(&redis, &channel).await {
            Ok(pubsub) => {
                set_live(&hub, true);
                let mut messages = pubsub.into_on_message();
                moved.mark_unchanged();
                loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        // A new primary: this subscription hears nothing more.
                        _ = moved.changed() => None,
                        () = stop.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    let Ok(job_id) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Some(strong) = hub.upgrade() else { return };
                    let done = lock(&strong.waiters).by_job.remove(&job_id);
                    for (_, waiter) in done.into_iter().flatten() {
                        let _ = waiter.send(());
                    }
                }
                tracing::debug!("completion subscription dropped; renewing it");
                set_live(&hub, false);
            }
            Err(error) => tracing::debug!(%error, "cannot subscribe to completions"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Marks the subscription live or lost; lost, every waiter is told
/// (its sender dropped), as a completion may have been missed.
fn set_live(hub: &std::sync::Weak<Hub>, live: bool) {
    let Some(hub) = hub.upgrade() else { return };
    let mut waiters = lock(&hub.waiters);
    waiters.live = live;
    if !live {
        waiters.by_job.clear();
    }
    hub.live.send_replace(live);
}

async fn connect(redis: &RedisTarget, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let (_, client) = redis.client().await?;
    let mut pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    // Returns once Redis confirmed the subscription.
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// One registered wait for one job's completion.
pub struct Completion {
    hub: Arc<Hub>,
    job_id: String,
    id: u64,
    rx: oneshot::Receiver<()>,
}

impl Completion {
    /// Waits until `deadline` for the job's completion message.
    pub async fn wait_until(mut self, deadline: tokio::time::Instant) -> Outcome {
        match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(Ok(())) => Outcome::Applied,
            // The subscription was lost (Redis restarted, connection
            // killed): not a timeout, and a completion may have been missed.
            Ok(Err(_)) => Outcome::Dropped,
            Err(_) => Outcome::TimedOut,
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let mut waiters = lock(&self.hub.waiters);
        if let Some(list) = waiters.by_job.get_mut(&self.job_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiters.by_job.remove(&self.job_id);
            }
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
