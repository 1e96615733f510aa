//! # revokd
//!
//! An event-driven JWT revocation service. Producers push revoke jobs to an
//! apalis-redis queue; workers apply them to a Redis deny-list (with TTLs) and
//! to Postgres (the durable record); the check API verifies a token and looks
//! it up, Redis first, Postgres when Redis is down.
//!
//! ## Layout
//! - [`config`]: every setting, as a CLI option and an environment variable.
//! - [`token`]: JWT verification (jsonwebtoken), `token_id`, minting;
//!   [`verify_cache`]: tokens verified once are not verified again.
//! - [`store`]: the Redis deny-list and the Postgres record; every query.
//! - [`check`]: the read path — verify, then the local [`replica`], Redis, Postgres.
//! - [`refresh`]: refresh tokens on the read path — registry, rotation, reuse.
//! - [`health`]: circuit breakers so an outage costs one failed attempt.
//! - [`worker`]: supervised apalis workers applying jobs to both stores.
//! - [`submit`]: the write path shared by HTTP and CLI — durable first (Postgres,
//!   or the local [`spool`]), then queued; [`pending`]: revocations Redis may
//!   not hold yet, consulted by every check; [`resync`] copies them into Redis.
//! - [`completion`]: waiting for a job to be applied (`?wait=true`, `--wait`).
//! - [`scheduler`]: the cron role pushing cleanup jobs once per tick;
//!   [`maintenance`]: the cleanup job and the rebuild of Redis from Postgres.
//! - [`http`]: the axum API (`check`, `ops`, errors, extractors, API keys) and
//!   `server`, the hyper server under it (timeouts, connection cap);
//!   [`probe`]: what `/readyz` and `/metrics` report, refreshed at most once per interval.
//! - [`app`]: wiring of services and roles; [`cli`]: the command line.
//! - [`instruments`]: Prometheus metrics; [`limits`]: input bounds; [`telemetry`], [`shutdown`]: process plumbing.

pub mod app;
pub mod check;
pub mod cli;
pub mod completion;
pub mod config;
pub mod health;
pub mod http;
pub mod instruments;
pub mod limits;
pub mod maintenance;
pub mod pending;
pub mod probe;
pub mod refresh;
pub mod replica;
pub mod resync;
pub mod scheduler;
pub mod shutdown;
pub mod spool;
pub mod store;
pub mod submit;
pub mod telemetry;
pub mod token;
pub mod verify_cache;
pub mod worker;

/// The Postgres migrations in `migrations/`, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
