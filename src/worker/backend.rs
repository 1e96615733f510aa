//! The pieces around apalis-redis that make the worker robust: a codec that
//! never fails and a wake-up strategy that never loses a wake-up. What knows
//! apalis-redis's keys (promotion of scheduled jobs, the rescue of a failed
//! worker's jobs) lives in [`crate::store::queue`].

use revokd_jobs::{RedisConn, RedisTarget};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{Codec, PollSnapshot, PollStrategy, PollWith};
use apalis_core::backend::ext::with_codec::WithCodec;
use apalis_redis::RedisStorage;
use futures::{StreamExt, task::AtomicWaker};
use revokd_jobs::Job;
use tokio_util::sync::CancellationToken;

use crate::instruments::PROPAGATION;

pub use crate::store::queue::{keep_promoting, promote_due, rescue};

/// How often an idle worker looks for jobs without being woken (retries and
/// jobs pushed by producers that do not publish a wake-up).
const POLL_TICK: Duration = Duration::from_millis(100);

/// A job payload as the worker sees it: decoded, or set aside with the reason.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// A payload that decoded.
    Job(Job),
    /// A payload that did not; the worker aborts it into the dead set.
    Undecodable(String),
}

/// JSON codec that never fails to decode: a bad payload becomes
/// [`Envelope::Undecodable`] instead of an error that ends the worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct TolerantCodec;

impl Codec<Envelope> for TolerantCodec {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, value: &Envelope) -> Result<Vec<u8>, Self::Error> {
        match value {
            Envelope::Job(job) => serde_json::to_vec(job),
            Envelope::Undecodable(_) => Ok(Vec::new()),
        }
    }

    fn decode(&self, compact: &Vec<u8>) -> Result<Envelope, Self::Error> {
        Ok(match serde_json::from_slice(compact) {
            Ok(job) => Envelope::Job(job),
            Err(error) => Envelope::Undecodable(error.to_string()),
        })
    }
}

/// A wake-up flag shared by the pub/sub listener and the worker.
#[derive(Debug, Default)]
pub struct Wake {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Wakes the worker to fetch now.
    pub fn signal(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Fetch when woken or when the tick fires. Unlike apalis's interval
/// strategy it drains every ready source before returning, so a waker is
/// always registered and no wake-up is lost.
struct WakeStrategy {
    wake: Arc<Wake>,
    tick: tokio::time::Interval,
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        self.wake.waker.register(cx.waker());
        let woken = self.wake.flag.swap(false, Ordering::AcqRel);
        let mut ticked = false;
        while self.tick.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if woken {
            tracing::debug!(target: PROPAGATION, "wake-up seen by the worker");
        }
        if woken || ticked {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// The backend a worker runs on.
pub type WorkerBackend =
    WithCodec<PollWith<RedisStorage<Envelope, RedisConn>, WakeStrategyBox>, TolerantCodec>;

/// Boxed so the strategy type stays private.
pub struct WakeStrategyBox(WakeStrategy);

impl PollStrategy for WakeStrategyBox {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        self.0.poll_drive(cx, snapshot)
    }
}

/// Wraps a storage with the tolerant codec and the wake-up strategy.
pub fn wrap(storage: RedisStorage<Envelope, RedisConn>, wake: Arc<Wake>) -> WorkerBackend {
    let mut tick = tokio::time::interval(POLL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    WithCodec::new(
        PollWith::new(storage, WakeStrategyBox(WakeStrategy { wake, tick })),
        TolerantCodec,
    )
}

/// Listens on the wake-up channel and signals the worker, reconnecting
/// forever; without it the worker still polls every [`POLL_TICK`].
pub async fn listen_for_wakeups(
    redis: RedisTarget,
    channel: String,
    wake: Arc<Wake>,
    stop: CancellationToken,
) {
    let listen = async {
        loop {
            let mut moved = redis.changed();
            match subscribe(&redis, &channel).await {
                Ok(mut pubsub) => {
                    // Jobs may have arrived while we were not listening.
                    wake.signal();
                    moved.mark_unchanged();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            m = messages.next() => if m.is_none() { break },
                            // A new primary: listen there.
                            _ = moved.changed() => break,
                        }
                        tracing::debug!(target: PROPAGATION, "wake-up received");
                        wake.signal();
                    }
                }
                Err(error) => tracing::debug!(%error, "wake-up channel unavailable"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = listen => {}
        () = stop.cancelled() => {}
    }
}

async fn subscribe(redis: &RedisTarget, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let (_, client) = redis.client().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
