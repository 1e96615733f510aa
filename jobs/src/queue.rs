//! The producer's half of the fence around apalis-redis: the one place in
//! this crate that knows its key layout. revokd's queue configuration, the
//! scripts that write jobs as apalis-redis's fetch expects them, and the
//! wake-up channel. The service's half (promotion, rescue, depth, vacuum)
//! is `revokd::store::queue`, whose doc names each apalis-redis 1.0
//! behaviour worked around; revokd's `tests/it/queue_contract.rs` holds both
//! to the stock `RedisStorage`.

use std::{sync::LazyLock, time::Duration};

use apalis_redis::Config;
use redis::{Script, ScriptInvocation};

use crate::queue_name;

/// `lua/push.lua`: straight onto the active list. apalis-redis's own push
/// parks every job in the scheduled set, whose promotion fails once 8,000
/// jobs are due at once.
static PUSH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/push.lua")));

/// `lua/schedule.lua`: into the scheduled set, due at a given time.
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/schedule.lua")));

/// The apalis-redis configuration of revokd's queue under `prefix`.
///
/// Workers and producers must agree on it; producers only use the queue name.
/// Heartbeats every 3 s with 3 missed allowed let a live worker reclaim a
/// killed worker's jobs within about 12 s (apalis-redis's default is 300 s).
pub fn queue_config(prefix: &str) -> Config {
    Config::default()
        .queue(queue_name(prefix))
        .batch_size(32)
        .heartbeat_interval(Duration::from_secs(3))
        .missed_heartbeats(3)
        // Jobs take milliseconds, far below one heartbeat: leases buy nothing.
        .lock_tasks(false)
        // Completion must be recorded, or jobs stay in flight forever.
        .persist_results(true)
        // revokd publishes its own wake-up signal (see `wake_channel`).
        .emit_events(false)
        .idempotency_ttl(Some(Duration::from_secs(24 * 3600)))
}

/// The pub/sub channel a producer publishes on after a push so that idle
/// workers fetch at once instead of at their next poll tick.
pub fn wake_channel(prefix: &str) -> String {
    wake_channel_of(&queue_config(prefix))
}

/// [`wake_channel`] of the queue `config` names.
fn wake_channel_of(config: &Config) -> String {
    format!("{}:wake", config.queue.as_ref())
}

/// The push of one payload under job id `id`, with idempotency key `key`
/// (`""` for none), in apalis-redis's format.
pub(crate) fn push(
    config: &Config,
    id: &str,
    payload: Vec<u8>,
    key: &str,
) -> ScriptInvocation<'static> {
    let mut invocation = push_script(config);
    invocation.arg(id).arg(payload).arg(key);
    invocation
}

/// The push of several payloads (job id, payload), without idempotency
/// keys, in one script call: atomic, one round trip.
pub(crate) fn push_many(
    config: &Config,
    jobs: Vec<(String, Vec<u8>)>,
) -> ScriptInvocation<'static> {
    let mut invocation = push_script(config);
    for (id, payload) in jobs {
        invocation.arg(id).arg(payload).arg("");
    }
    invocation
}

/// `lua/push.lua` with its keys, the idempotency TTL and the wake-up
/// channel; the jobs follow as (id, payload, key) argument triples.
fn push_script(config: &Config) -> ScriptInvocation<'static> {
    // Without a TTL apalis-redis's own push deletes the key at once; revokd's
    // keeps it at least a second.
    let ttl = config
        .idempotency_ttl
        .map(|d| d.as_secs())
        .unwrap_or(86_400)
        .max(1);
    let mut invocation = PUSH.prepare_invoke();
    invocation
        .key(config.job_data_hash())
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .key(config.job_meta_hash())
        .key(config.idempotency_key_set())
        .arg(ttl)
        .arg(wake_channel_of(config));
    invocation
}

/// The scheduling of one payload under job id `id`, due at `due` (unix
/// seconds), with a fresh attempt count.
pub(crate) fn schedule(
    config: &Config,
    id: &str,
    payload: Vec<u8>,
    due: i64,
) -> ScriptInvocation<'static> {
    let mut invocation = SCHEDULE.prepare_invoke();
    invocation
        .key(config.job_data_hash())
        .key(config.scheduled_jobs_set())
        .key(config.job_meta_hash())
        .arg(id)
        .arg(payload)
        .arg(due);
    invocation
}
