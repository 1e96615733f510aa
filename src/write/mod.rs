//! The write path shared by HTTP and the CLI: input validation ([`validate`]),
//! the [`submit`]ter that makes a revocation durable first (Postgres, or
//! the local [`spool`] when Postgres is down) and then queues it,
//! and [`completion`] for callers that wait until a worker applied the job;
//! [`watermark`] builds the revoke-all jobs of subjects and issuers.
//! (Copying revocations Redis may not hold yet into Redis is
//! [`crate::store::resync`].)

pub mod completion;
pub mod spool;
pub mod submit;
pub mod validate;
pub mod watermark;
