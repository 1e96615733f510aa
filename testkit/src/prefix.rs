//! Unique Redis key prefixes, and the guard that deletes exactly the keys
//! under one (the servers are shared: never FLUSHDB).

use std::time::Duration;

use crate::{config::redis_url, db::TestDb};

/// apalis's global list of queues, where a running worker registers its own.
pub const QUEUES_LIST: &str = "core:apalis:queues:list";

/// The entry of the queue under `prefix` in [`QUEUES_LIST`].
pub fn queue_entry(prefix: &str) -> String {
    format!("{prefix}queue:jobs:workers")
}

/// A unique key prefix.
pub fn unique_prefix() -> String {
    format!("revokd-test-{}:", uuid::Uuid::new_v4().simple())
}

/// A database and a key prefix of a deployment the test runs itself (as
/// processes or nodes); the guard deletes the prefix's keys when dropped.
pub async fn own_deployment() -> (TestDb, String, PrefixGuard) {
    let prefix = unique_prefix();
    let guard = PrefixGuard {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    (TestDb::create().await, prefix, guard)
}

/// Deletes every Redis key under a prefix when dropped.
pub struct PrefixGuard {
    /// The Redis server.
    pub url: String,
    /// The prefix; empty deletes nothing.
    pub prefix: String,
}

impl PrefixGuard {
    /// Deletes the prefix's keys now, in one pass: for when nothing writes
    /// under it any more (every role of the test has ended).
    pub fn clean(mut self) {
        self.delete_keys(&[0]);
        self.prefix.clear();
    }

    /// One pass after each pause (milliseconds).
    fn delete_keys(&self, pauses: &[u64]) {
        // An empty prefix would be every key of the shared server.
        if self.prefix.is_empty() {
            return;
        }
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        for pause in pauses {
            std::thread::sleep(Duration::from_millis(*pause));
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", glob_escape(&self.prefix)))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
            // apalis registers each queue in one global key; remove only ours.
            let _: redis::RedisResult<()> = redis::cmd("ZREM")
                .arg(QUEUES_LIST)
                .arg(queue_entry(&self.prefix))
                .query(&mut conn);
        }
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        // Dropped while roles may still run (a test that panicked, or one
        // that aborts its tasks): again after a pause, for a background task
        // on another thread that lands a last write after the first pass.
        self.delete_keys(&[0, 200, 800]);
    }
}

/// `s` with the glob metacharacters of a `KEYS` or `SCAN MATCH` pattern
/// escaped.
pub fn glob_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if "*?[]\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
