//! Postgres, the record: revoked tokens ([`tokens`]), subject watermarks
//! ([`subjects`]), the refresh-token registry ([`refresh`]), the audit log
//! ([`audit`]), what still waits for Redis ([`pending`]), and database
//! setup ([`setup`]). Every statement is idempotent so that a job applied
//! twice changes nothing.

pub mod audit;
pub mod batch;
pub mod pending;
pub mod refresh;
pub mod setup;
pub mod subjects;
pub mod tokens;

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use refresh::RefreshRow;
pub use setup::prepare;
pub use tokens::{RevokeRow, RevokedRow};

/// Handle on the Postgres record.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// A pool that connects on first use, so the service can start while
    /// Postgres is down; at most 16 connections (a process of every role).
    pub fn connect_lazy(url: &str) -> Result<Self, sqlx::Error> {
        Self::connect_lazy_sized(url, 16)
    }

    /// [`connect_lazy`](Self::connect_lazy) with at most `max_connections`.
    pub fn connect_lazy_sized(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip: is `token_id` revoked, and what is `subject`'s watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
    ) -> sqlx::Result<(bool, Option<i64>)> {
        sqlx::query_as(
            "select exists(select 1 from revoked_tokens where token_id = $1 or token_id = $3),
                    (select not_before from subject_watermarks where subject = $2)",
        )
        .bind(token_id)
        .bind(subject)
        .bind(twin)
        .fetch_one(&self.pool)
        .await
    }

    /// Live counts for `/v1/stats`: revoked tokens not yet expired, watermarks,
    /// and how many of each still wait for Redis.
    pub async fn counts(&self, now: i64) -> sqlx::Result<(i64, i64, i64)> {
        sqlx::query_as(
            "select (select count(*) from revoked_tokens where expires_at > $1),
                    (select count(*) from subject_watermarks),
                    (select count(*) from revoked_tokens where not in_redis)
                      + (select count(*) from subject_watermarks where not in_redis)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    /// How many live revocations and watermarks a rebuild will stream.
    pub async fn rebuild_size(&self, cutoff: i64) -> sqlx::Result<(i64, i64)> {
        sqlx::query_as(
            "select (select count(*) from revoked_tokens where expires_at >= $1),
                    (select count(*) from subject_watermarks)",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await
    }

    /// Round trip to check Postgres answers.
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
