//! [`Follower`]: the task that keeps a [`Replica`] current. Each connection
//! first resyncs revocations Postgres holds that Redis lacks (so they are on
//! the stream), loads a snapshot when it has no place in the stream or the
//! stream was trimmed past it, then reads the stream with XREAD from the last
//! seen id. Any error drops the proof of being current and reconnects.

use std::{sync::Arc, time::Duration};

use redis::aio::MultiplexedConnection;
use revokd_jobs::now_unix;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Event, Replica, snapshot::LoadProgress};
use crate::{
    store::resync::Resync,
    store::{TtlPolicy, pg::Db, redis::DenyList},
};

/// Stream entries read per request.
const READ_COUNT: usize = 1_000;
/// How long one read blocks when there is nothing new.
const BLOCK_MS: u64 = 100;

/// What the follower needs.
#[derive(Clone)]
pub struct Follower {
    /// The replica to fill.
    pub replica: Arc<Replica>,
    /// Redis (the follower uses a dedicated connection: XREAD BLOCK would
    /// stall a shared one). After a Sentinel failover it reads the new
    /// primary's stream from the start, as after any gap.
    pub redis: revokd_jobs::RedisTarget,
    /// The deny-list (key names, snapshot reads).
    pub deny: DenyList,
    /// Postgres, for a snapshot while Redis's deny-list is incomplete.
    pub db: Db,
    /// Copies revocations written to Postgres during a Redis outage into
    /// Redis (and so into the stream) before the replica claims to be current.
    pub resync: Resync,
    /// Lifetimes of what is loaded.
    pub ttl: TtlPolicy,
    /// The generation of the primary last followed.
    pub followed: Arc<std::sync::atomic::AtomicU64>,
    /// Heap blocks of `revoked_tokens` per `COPY` of a load
    /// ([`super::snapshot::COPY_BLOCKS`]; tests make it small).
    pub copy_blocks: u32,
    /// Called with the next block to read after each `COPY` of a load (a
    /// test's way to interrupt one at a known place).
    #[doc(hidden)]
    pub after_copy: Option<Arc<dyn Fn(u32) + Send + Sync>>,
}

impl Follower {
    /// Loads and follows until `stop` fires, reconnecting forever.
    pub async fn run(self, stop: CancellationToken) {
        let sweeper = {
            let replica = Arc::clone(&self.replica);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(10)) => replica.sweep(now_unix()),
                        () = stop.cancelled() => return,
                    }
                }
            })
        };
        let mut last_id: Option<String> = None;
        let mut progress: Option<LoadProgress> = None;
        loop {
            let outcome = tokio::select! {
                outcome = self.follow(&mut last_id, &mut progress) => outcome,
                () = stop.cancelled() => break,
            };
            self.replica.freshness.invalidate();
            if let Err(error) = outcome {
                tracing::debug!(%error, "replica stream interrupted; checks use redis/postgres until it resumes");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = stop.cancelled() => break,
            }
        }
        sweeper.abort();
        let _ = sweeper.await;
    }

    /// One connection's life: (re)load if needed, then read the stream.
    async fn follow(
        &self,
        last_id: &mut Option<String>,
        progress: &mut Option<LoadProgress>,
    ) -> anyhow::Result<()> {
        let (generation, client) = self.redis.client().await?;
        if self
            .followed
            .swap(generation, std::sync::atomic::Ordering::AcqRel)
            != generation
        {
            // Another primary: its stream is not the one `last_id` is in
            // (replication is asynchronous, so it may lack the last entries).
            *last_id = None;
        }
        let mut conn = client.get_multiplexed_async_connection().await?;
        let stream = self.deny.keys().events();
        if let Err(error) = self.resync.run_once().await {
            tracing::debug!(%error, "resync before following failed");
        }
        if stream_trimmed_past(&mut conn, &stream, last_id.as_deref()).await? {
            *last_id = Some(
                self.complete_load(&mut conn, &stream, generation, progress)
                    .await?,
            );
        }
        loop {
            if self.redis.generation() != generation {
                anyhow::bail!("the redis primary changed");
            }
            let id = last_id.clone().unwrap_or_else(|| "0-0".into());
            let sent = Instant::now();
            let reply: redis::streams::StreamReadReply = tokio::time::timeout(
                Duration::from_millis(BLOCK_MS + 2_000),
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&id)
                    .query_async(&mut conn),
            )
            .await??;
            let mut read = 0;
            for key in reply.keys {
                for entry in key.ids {
                    read += 1;
                    if let Some(event) = Event::parse(&entry.map) {
                        self.replica.apply(&event);
                        for token_id in event.token_ids() {
                            tracing::debug!(target: crate::instruments::PROPAGATION, token_id, waited_us = sent.elapsed().as_micros(), "replica applied");
                        }
                    }
                    *last_id = Some(entry.id);
                }
            }
            if read < READ_COUNT {
                self.replica.freshness.proven_at(sent);
            } else if stream_trimmed_past(&mut conn, &stream, last_id.as_deref()).await? {
                // We fell further behind than the stream keeps: start over.
                *last_id = Some(
                    self.complete_load(&mut conn, &stream, generation, progress)
                        .await?,
                );
            }
        }
    }
}

impl Follower {
    /// Loads until a load ends with the stream still holding every entry
    /// since the id it noted (a load so slow that the stream was trimmed
    /// past that id lost changes: it is done again).
    async fn complete_load(
        &self,
        conn: &mut MultiplexedConnection,
        stream: &str,
        generation: u64,
        progress: &mut Option<LoadProgress>,
    ) -> anyhow::Result<String> {
        loop {
            let from = self.load(conn, stream, generation, progress).await?;
            if !stream_trimmed_past(conn, stream, Some(&from)).await? {
                return Ok(from);
            }
            tracing::warn!("the events stream was trimmed during the replica load; loading again");
        }
    }
}

/// What `XINFO STREAM` says of the events stream; `None` while it does not
/// exist.
pub(super) struct StreamInfo {
    /// The id of the last entry ever added.
    pub last_generated: String,
    /// The highest id trimmed away so far (`0-0`: none).
    pub max_deleted: String,
}

pub(super) async fn stream_info(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<Option<StreamInfo>> {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await;
    let fields = match reply {
        Ok(redis::Value::Map(pairs)) => pairs,
        Ok(redis::Value::Array(items)) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        Ok(other) => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected XINFO STREAM reply",
                format!("{other:?}"),
            )));
        }
        // No such key: nothing was ever added (or Redis lost it).
        Err(error) if error.code() == Some("ERR") => return Ok(None),
        Err(error) => return Err(error),
    };
    let text = |name: &str| {
        fields.iter().find_map(|(k, v)| {
            let k: String = redis::from_redis_value(k.clone()).ok()?;
            (k == name)
                .then(|| redis::from_redis_value::<String>(v.clone()).ok())
                .flatten()
        })
    };
    match (text("last-generated-id"), text("max-deleted-entry-id")) {
        (Some(last_generated), Some(max_deleted)) => Ok(Some(StreamInfo {
            last_generated,
            max_deleted,
        })),
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "XINFO STREAM without last-generated-id and max-deleted-entry-id (Redis 7 is needed)",
        ))),
    }
}

/// True when an entry after `last_id` was trimmed away (a gap), or when
/// there is no `last_id`.
pub(super) async fn stream_trimmed_past(
    conn: &mut MultiplexedConnection,
    stream: &str,
    last_id: Option<&str>,
) -> redis::RedisResult<bool> {
    let Some(last) = last_id else { return Ok(true) };
    Ok(stream_info(conn, stream)
        .await?
        .is_some_and(|info| id_lt(last, &info.max_deleted)))
}

/// Stream ids compare as (ms, seq).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

pub(super) fn id_lt(a: &str, b: &str) -> bool {
    parse_id(a) < parse_id(b)
}
