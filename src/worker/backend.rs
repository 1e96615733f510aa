//! The pieces around apalis-redis that make the worker robust: a codec that
//! never fails and a wake-up strategy that never loses a wake-up (see
//! [`super::wake`]). What knows
//! apalis-redis's keys (promotion of scheduled jobs, the rescue of a failed
//! worker's jobs) lives in [`crate::store::queue`].

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use apalis::prelude::{Codec, PollSnapshot, PollStrategy, PollWith};
use apalis_core::backend::ext::with_codec::WithCodec;
use apalis_redis::RedisStorage;
use revokd_jobs::{Job, RedisConn};

use super::wake::{TrackedConn, Wake, WakeStrategy};

pub use crate::store::queue::{keep_promoting, promote_due, rescue};

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

/// The backend a worker runs on.
pub type WorkerBackend =
    WithCodec<PollWith<RedisStorage<Envelope, TrackedConn>, WakeStrategyBox>, TolerantCodec>;

/// Boxed so the strategy type stays private.
pub struct WakeStrategyBox(WakeStrategy);

impl PollStrategy for WakeStrategyBox {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        self.0.poll_drive(cx, snapshot)
    }

    fn on_poll(&mut self, snapshot: &PollSnapshot) {
        self.0.on_poll(snapshot);
    }
}

/// A worker's backend on `conn`: the queue's storage with the tolerant
/// codec and the wake-up strategy.
pub fn wrap(conn: RedisConn, config: apalis_redis::Config, wake: Arc<Wake>) -> WorkerBackend {
    let (conn, commands) = TrackedConn::new(conn);
    let storage = RedisStorage::<Envelope, _>::new(conn).with_config(config);
    WithCodec::new(
        PollWith::new(storage, WakeStrategyBox(WakeStrategy::new(wake, commands))),
        TolerantCodec,
    )
}
