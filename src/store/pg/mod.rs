//! Postgres, the record: revoked tokens ([`tokens`]), subject and issuer
//! watermarks ([`subjects`], [`issuers`], sharing [`watermarks`]), the refresh-token registry ([`refresh`]), the audit log
//! ([`audit`]), what still waits for Redis ([`pending`]), database setup
//! ([`setup`]), and which of several hosts is the primary ([`hosts`],
//! [`target`]). Every statement is idempotent so that a job applied twice
//! changes nothing.

pub mod audit;
pub mod batch;
pub mod copy;
pub mod hosts;
pub mod issuers;
pub mod pending;
pub mod refresh;
pub mod setup;
pub mod subjects;
pub mod target;
pub mod tokens;
pub mod watermarks;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

pub use refresh::RefreshRow;
pub use setup::prepare;
pub use tokens::{RevokeRow, RevokedRow};

/// Handle on the Postgres record.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    /// With several hosts (or `target_session_attrs`): which one the pool
    /// connects to.
    target: Option<target::PgTarget>,
}

impl Db {
    /// A pool that connects on first use, so the service can start while
    /// Postgres is down; at most 16 connections (a process of every role).
    pub fn connect_lazy(url: &str) -> Result<Self, sqlx::Error> {
        Self::connect_lazy_sized(url, 16)
    }

    /// [`connect_lazy`](Self::connect_lazy) with at most `max_connections`.
    /// A URL with several hosts (see [`hosts`]) gets a pool that follows
    /// the primary among them ([`target`]).
    pub fn connect_lazy_sized(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        // Idle connections are pinged before use (sqlx's default), so a
        // connection the server or a proxy cut is replaced at once.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2));
        Ok(match hosts::parse(url)? {
            hosts::Parsed::Single(options) => Self {
                pool: pool.connect_lazy_with(*options),
                target: None,
            },
            hosts::Parsed::Several(hosts, attrs) => {
                let (pool, target) = target::PgTarget::pool(hosts, attrs, pool);
                Self {
                    pool,
                    target: Some(target),
                }
            }
        })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Which of several hosts the pool connects to (`None` with one).
    pub fn target(&self) -> Option<&target::PgTarget> {
        self.target.as_ref()
    }

    /// A query failed: with several hosts, an error that says the server is
    /// gone or read-only has them probed soon.
    pub fn failed(&self, error: &sqlx::Error) {
        if target::server_moved(error) {
            self.poke();
        }
    }

    /// Postgres failed in a way the caller cannot name (a timeout): with
    /// several hosts, they are probed soon.
    pub fn poke(&self) {
        if let Some(target) = &self.target {
            target.poke();
        }
    }

    /// One round trip: is `token_id` revoked, and what is `subject`'s watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
    ) -> sqlx::Result<(bool, Option<i64>)> {
        let (denied, not_before, _) = self.lookup_all(token_id, twin, subject, None).await?;
        Ok((denied, not_before))
    }

    /// [`lookup`](Self::lookup), and `issuer`'s watermark, in one round trip.
    pub async fn lookup_all(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
        issuer: Option<&str>,
    ) -> sqlx::Result<(bool, Option<i64>, Option<i64>)> {
        sqlx::query_as(
            "select exists(select 1 from revoked_tokens where token_id = $1 or token_id = $3),
                    (select not_before from subject_watermarks where subject = $2),
                    (select not_before from issuer_watermarks where issuer = $4)",
        )
        .bind(token_id)
        .bind(subject)
        .bind(twin)
        .bind(issuer)
        .fetch_one(&self.pool)
        .await
    }

    /// Live counts for `/v1/stats`: revoked tokens not yet expired, subject
    /// and issuer watermarks, and how many of them all still wait for Redis
    /// (pending, or queued in a chunk).
    pub async fn counts(&self, now: i64) -> sqlx::Result<(i64, i64, i64, i64)> {
        sqlx::query_as(
            "select (select count(*) from revoked_tokens where expires_at > $1),
                    (select count(*) from subject_watermarks),
                    (select count(*) from issuer_watermarks),
                    (select count(*) from revoked_tokens where in_redis is false)
                      + (select coalesce(sum(cardinality(token_ids)), 0) from queued_chunks)
                      + (select count(*) from subject_watermarks where not in_redis)
                      + (select count(*) from issuer_watermarks where not in_redis)",
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
        let result = sqlx::query("select 1").execute(&self.pool).await;
        if let Err(error) = &result {
            self.failed(error);
        }
        result.map(|_| ())
    }
}
