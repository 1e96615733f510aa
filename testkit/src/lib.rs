//! revokd's shared harness, for its integration tests (`tests/it`) and its
//! benchmark examples; dev-only (`publish = false`). Everything is
//! re-exported at the root, so a test writes `testkit::TestApp`.
//!
//! - `config` — where the shared servers are; a test app's configuration.
//! - `pg`, `template`, `db` — database URLs; the migrated template database;
//!   [`TestDb`], a copy of it per test.
//! - `prefix` — unique Redis key prefixes and [`PrefixGuard`], which deletes
//!   exactly their keys.
//! - `roles` — the roles an app runs in the background, awaited on stop.
//! - `app`, `app_api` — [`TestApp`], the real API and worker in-process, and
//!   its endpoint helpers.
//! - `node` — [`Node`], another process of a deployment, in-process.
//! - `process` — revokd as a process of its own ([`Process`]).
//! - `redis_server`, `proxy` — a private redis-server; a TCP proxy that
//!   takes a store down and back, or moves to another server.
//! - `sentinel` — [`SentinelTopology`], a primary, a replica and three
//!   Redis Sentinels on loopback, run as a [`Recipe`] says (the harness's
//!   own, or one read from a deployment file): kill the primary, watch the
//!   failover.
//! - `pg_pair` — [`PgPair`], a Postgres primary and its synchronous hot
//!   standby of the test's own: kill the primary, promote the standby.
//! - `idp` — [`Idp`], a real OpenID provider (oidc-provider under node):
//!   discovery, JWKS, access tokens, key rotation by restart.
//! - `load` — [`Load`], revocations through a deployment's APIs while a
//!   fault test breaks things, and [`enforced_everywhere`], the audit's
//!   last step.
//! - `failover` — [`Failover`], a Sentinel failover under that load, its
//!   figures and its audit.
//! - `mint`, `wait`, `assert` — tokens without an app; waiting on a
//!   condition; assertions and skips.
//! - [`bench`] — a benchmark's own prefix and database, cleaned up whatever
//!   the outcome.

// Harness code: a failure is a failed test.
#![allow(clippy::unwrap_used)]

mod app;
mod app_api;
mod assert;
pub mod bench;
mod config;
mod db;
mod failover;
mod idp;
mod load;
mod mint;
mod node;
mod pg;
mod pg_pair;
mod prefix;
mod process;
mod proxy;
mod redis_server;
mod roles;
mod sentinel;
mod template;
mod wait;

pub use app::{Options, TestApp};
pub use assert::{assert_answer, missing_program};
pub use config::{SECRET, pg_admin_url, redis_url, spool_dir, test_config};
pub use db::TestDb;
pub use failover::Failover;
pub use idp::Idp;
pub use load::{Accepted, Load, Tally, enforced_everywhere};
pub use mint::{mint, mint_issued_ago};
pub use node::{Node, NodeOptions, check_reason};
pub use pg::{database_url, drop_database};
pub use pg_pair::PgPair;
pub use prefix::{PrefixGuard, glob_escape, own_deployment, unique_prefix};
pub use process::{Process, healthy, log_to, revokd_command, scrape_sum};
pub use proxy::{Proxy, proxied};
pub use redis_server::{PrivateRedis, free_port};
pub use roles::{Roles, worker_deps};
pub use sentinel::{Ports, Recipe, SentinelTopology};
pub use wait::{current_replica, eventually, in_both_stores, in_both_stores_at, wait_current};
