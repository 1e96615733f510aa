//! Integration tests against the real Redis and Postgres of this machine.
//! One binary (each file in tests/ would be a separate link step).

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

mod batch_api;
mod chaos;
mod deploy;
mod durability;
mod edge_config;
mod edge_cost;
mod edge_http;
mod gateway;
mod grpc;
mod helpers;
mod identity;
mod idp;
mod issuer;
mod maintenance;
mod oauth;
mod pg_failover;
mod pipeline;
mod poison;
mod privacy;
mod queue_contract;
mod refresh;
mod replica;
mod resilience;
mod sentinel;
mod verification;
mod write_api;
