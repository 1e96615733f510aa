//! # revokd-jobs
//!
//! The wire contract between applications and revokd, the JWT revocation service:
//! the job payloads revokd's workers apply, the queue names they live under, and
//! a small [`Producer`] that pushes them into the apalis-redis queue.
//!
//! An application links this crate to enqueue a revocation without pulling in
//! the service (no axum, no sqlx, no JWT library):
//!
//! ```no_run
//! # async fn demo() -> Result<(), revokd_jobs::ProduceError> {
//! use revokd_jobs::{Producer, RevokeIssuer, RevokeSubject, RevokeToken, now_unix};
//!
//! let producer = Producer::connect("redis://127.0.0.1:6379", "revokd:", "my-app").await?;
//! // Logout: revoke one token (its `jti` and `exp` come from the app's own claims).
//! producer.revoke(RevokeToken::new("3f2a-jti", Some("alice".into()), now_unix() + 900)).await?;
//! // Password change: revoke every token of alice issued before now.
//! producer.revoke_all(RevokeSubject::new("alice", now_unix())).await?;
//! // Leaked signing key: revoke every token that issuer signed before now.
//! producer.revoke_issuer(RevokeIssuer::new("https://idp.example.com/", now_unix())).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod job;
mod producer;
mod queue;
mod target;

pub use job::{
    BATCH_CHUNK, Cleanup, ISSUER_HASH_PREFIX, JTI_HASH_PREFIX, Job, JobMeta, MAX_BATCH_ITEMS,
    MAX_VERBATIM_ID, RegisterRefresh, RevokeBatch, RevokeFamily, RevokeIssuer, RevokeItem,
    RevokeSubject, RevokeToken, RotatedFrom, SUBJECT_HASH_PREFIX, TOKEN_HASH_PREFIX, issuer_id,
    jti_id, new_job_id, now_unix, now_unix_ms, subject_id, token_id,
};
pub use producer::{ProduceError, Producer, task_id_of};
pub use queue::{queue_config, wake_channel};
pub use target::{RedisConn, RedisTarget};

/// Suffix of the queue name under the key prefix: the queue is `{prefix}queue:jobs`.
pub const QUEUE_SUFFIX: &str = "queue:jobs";

/// Default key prefix of every Redis key revokd creates.
pub const DEFAULT_PREFIX: &str = "revokd:";

/// The apalis-redis queue name for a key prefix (`{prefix}queue:jobs`).
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}{QUEUE_SUFFIX}")
}
