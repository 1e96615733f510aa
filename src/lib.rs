//! # revokd
//!
//! An event-driven JWT revocation service. Producers push revoke jobs to an
//! apalis-redis queue; workers apply them to a Redis deny-list (with TTLs) and
//! to Postgres (the durable record); the check API verifies a token and looks
//! it up, Redis first, Postgres when Redis is down.
//!
//! ## Layout
//! - [`config`]: every setting, as a CLI option and an environment variable.
//! - [`token`]: JWT verification (jsonwebtoken), `token_id`, minting.
//! - [`read`]: the read path — verify (cached), then pending revocations, the
//!   local replica, Redis, Postgres, behind circuit breakers; refresh tokens.
//! - [`write`]: the write path shared by HTTP and CLI — validation, durable
//!   first (Postgres or the local spool), then queued; waiting for completion.
//! - [`worker`]: supervised apalis workers applying jobs to both stores, and
//!   maintenance (cleanup, rebuild of Redis from Postgres).
//! - [`scheduler`]: the cron role pushing cleanup jobs once per tick.
//! - [`store`]: every query — the Redis deny-list, the Postgres record, the
//!   queue's apalis-redis layout, key names, TTL rules, the resync of Redis
//!   from Postgres.
//! - [`http`]: the axum API (`check`, `revoke`, `ops`, errors, extractors, API
//!   keys), `grpc` (Envoy's ext_authz), `probe` (what `/readyz` and
//!   `/metrics` report) and `server`, the hyper server under it.
//! - [`app`]: wiring of services and roles, telemetry and shutdown; [`cli`]: the command line.
//! - [`instruments`]: Prometheus metrics; [`retry`]: the one backoff policy.

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod instruments;
pub mod read;
pub mod retry;
pub mod scheduler;
pub mod store;
pub mod token;
pub mod worker;
pub mod write;

/// The Postgres migrations in `migrations/`, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();
