//! The keys by which revokd's processes coordinate through Redis: the
//! marker (`{prefix}marker`, set to the server's run id while Redis holds
//! the whole deny-list) and the rebuilds that earn it, short leases
//! (`{prefix}lease:{name}`), pub/sub notices, and the last cleanup's report
//! (`{prefix}cleanup:last`) kept for every process's `/metrics`. The report
//! is opaque JSON here: its type belongs to the maintenance job.

use serde::{Serialize, de::DeserializeOwned};

use super::{
    DenyList,
    scripts::{FINISH_REBUILD, RELEASE},
};

impl DenyList {
    /// Keeps the last cleanup's counts (`{prefix}cleanup:last`, as JSON) for
    /// `/metrics` of every process; best effort.
    pub async fn store_cleanup_report<T: Serialize>(&self, report: &T) {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(report).unwrap_or_default();
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.keys.cleanup_last())
            .arg(value)
            .query_async(&mut conn)
            .await;
        if let Err(error) = stored {
            tracing::debug!(%error, "cannot store the cleanup report");
        }
    }

    /// The last cleanup's counts, if any (and if they decode as a `T`).
    pub async fn cleanup_report<T: DeserializeOwned>(&self) -> redis::RedisResult<Option<T>> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.keys.cleanup_last())
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Whether the marker is present.
    pub async fn marker_present(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.keys.marker())
            .query_async(&mut conn)
            .await
    }

    /// Starts a rebuild: a key that lasts only as long as Redis keeps its
    /// data, so the marker is not set over a rebuild that a flush cut short.
    pub async fn begin_rebuild(&self, id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.keys.rebuilding(id))
            .arg(1)
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await
    }

    /// Ends a rebuild: sets the marker to `server` (the server's run id, see
    /// [`server_id`](Self::server_id)) if Redis kept its data throughout;
    /// false when it did not (the rebuild must run again).
    pub async fn finish_rebuild(&self, id: &str, server: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let done: i64 = FINISH_REBUILD
            .key(self.keys.rebuilding(id))
            .key(self.keys.marker())
            .arg(server)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    /// The run id of the Redis server this connection reaches: a restart
    /// (even from an older snapshot) or a failover to a replica changes it.
    pub async fn server_id(&self) -> redis::RedisResult<String> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "no run_id in INFO")))
    }

    /// Whether the marker says this very server holds the whole deny-list.
    /// A marker set on another server — it came here by replication before
    /// a failover, or from a snapshot this server restarted from — proves
    /// nothing about what this server lost meanwhile: it is deleted (checks
    /// go to Postgres) and false is returned, so the deny-list is rebuilt.
    pub async fn marker_current(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let marker: Option<String> = redis::cmd("GET")
            .arg(self.keys.marker())
            .query_async(&mut conn)
            .await?;
        let Some(marker) = marker else {
            return Ok(false);
        };
        if marker == self.server_id().await? {
            return Ok(true);
        }
        let _: i64 = RELEASE
            .key(self.keys.marker())
            .arg(&marker)
            .invoke_async(&mut conn)
            .await?;
        tracing::warn!(
            "redis is not the server that was rebuilt (restart from a snapshot, or failover): rebuilding the deny-list from postgres"
        );
        Ok(false)
    }

    /// Takes a short lease named `name` (SET NX PX); true when taken.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.lease(name))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await?;
        Ok(taken.is_some())
    }

    /// Releases a lease if `holder` still holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(self.keys.lease(name))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Publishes `message` on `channel`; failures are only logged (a
    /// waiter that misses it asks Postgres at its deadline, nothing is lost).
    pub async fn publish(&self, channel: &str, message: &str) {
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "publish failed");
        }
    }
}
