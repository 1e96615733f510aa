//! The fence around apalis-redis: the only place in the service that knows
//! its key layout (`{queue}:active`, `:scheduled`, `:inflight:{worker}`,
//! `:workers`, `:workers:metadata:{worker}`, `:data`, `:meta:{id}`, `:done`,
//! `:dead`, `:signal`, `:idempotency:{key}`). The producer half lives in the light `revokd-jobs`
//! crate, in its `queue` module (`jobs/src/queue.rs`: the queue's
//! configuration, the push and schedule scripts, the wake-up channel);
//! `tests/it/queue_contract.rs` holds both halves to the stock
//! `RedisStorage`, so an apalis-redis upgrade that changes the layout fails
//! there, loudly.
//!
//! What each piece works around in apalis-redis 1.0:
//! - **Push parks every job in the scheduled set** (`push_tasks` schedules at
//!   `max(run_at, now)`), and **fetch promotes all due jobs with one Lua
//!   `unpack`**, which fails from about 8,000 due jobs on — after which the
//!   worker fails every fetch, forever. The producer pushes straight onto the
//!   active list; [`promote`] moves due jobs 1,000 at a time, every 500 ms
//!   and after a worker fails.
//! - **A worker ends for good on any backend error, and its in-flight jobs
//!   wait for its heartbeat to lapse** (heartbeat × missed heartbeats) before
//!   another worker re-enqueues them; **a graceful stop does not
//!   deregister** (`poll_close` removes the in-flight set's name from the
//!   workers set, not the worker's). [`mod@rescue`] hands a failed worker's jobs
//!   back at once and deregisters it; the worker role restarts it under a
//!   fresh name (`crate::worker`).
//! - **Nothing expires**: the done and dead sets, the payloads, the job
//!   metadata and a dead worker's metadata grow forever, and the built-in
//!   vacuum reads the whole data hash in one script. [`vacuum`] deletes them
//!   in batches by `done_at`.
//! - **The built-in stats script fails** (`ZCARD` on the done and dead
//!   sets). [`depth`] reads the keys directly.
//! - **Retries past 25 attempts go to the dead set, whatever
//!   `max_attempts` says.** The worker hands a job back through
//!   `Producer::push_after`, which schedules it afresh with attempt 0.
//! - **Idempotency keys vanish at once without a TTL**; revokd's push sets
//!   the key with its TTL in the same step (`queue_config`: 24 h).
//! - **An idle worker wakes only on its heartbeat**, and the built-in
//!   events are not listened to: producers publish on revokd's own wake
//!   channel, and the worker's poll strategy (`crate::worker`'s backend)
//!   never loses a wake-up; its codec never fails on a bad payload.
//! - **The queue name defaults to the Rust type name**: `queue_config`
//!   always sets `{prefix}queue:jobs`.

pub mod depth;
pub mod held;
pub mod promote;
pub mod rescue;
pub mod vacuum;

use apalis_redis::Config;

pub use depth::QueueDepth;
pub use promote::{keep_promoting, promote_due};
pub use rescue::rescue;

/// `{queue}:inflight:{worker}`: the jobs `worker` has claimed.
fn inflight_set(config: &Config, worker: &str) -> String {
    format!("{}:{worker}", config.inflight_jobs_set())
}

/// `{queue}:workers:metadata:{worker}` (apalis-redis's `worker_metadata_key`,
/// which wants a whole worker context); with `""`, the prefix of them all.
fn worker_metadata_key(config: &Config, worker: &str) -> String {
    format!("{}:workers:metadata:{worker}", config.queue.as_ref())
}
