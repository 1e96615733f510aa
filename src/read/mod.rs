//! The read path: a check verifies the token once ([`verify_cache`]), then
//! asks, in order, the revocations this process holds as pending
//! ([`pending`]), the local [`replica`] of the deny-list, Redis and Postgres,
//! each guarded by a circuit breaker ([`health`]). [`refresh`] adds refresh
//! tokens (registry, rotation, reuse) on top of the same lookups.

pub mod checker;
pub mod health;
pub mod pending;
pub mod refresh;
pub mod replica;
pub mod verify_cache;
