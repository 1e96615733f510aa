//! Storage: every query lives here, shared by the API, the worker and the
//! scheduler.
//! - [`redis`]: the deny-list, the refresh-token registry, the keys that
//!   coordinate processes and a replica's snapshot.
//! - [`pg`]: the Postgres record, one file per table or concern.
//! - [`scope`]: subject or issuer, the two kinds of watermark.
//! - [`queue`]: the fence around apalis-redis's key layout (depth, vacuum,
//!   promotion, rescue).

pub mod error;
pub mod group;
pub mod keys;
pub mod pg;
pub mod queue;
pub mod redis;
pub mod resync;
pub mod scope;
pub mod ttl;

pub use error::StoreError;
pub use keys::Keys;
pub use scope::Scope;
pub use ttl::TtlPolicy;

use std::time::Duration;

use ::redis::aio::ConnectionManagerConfig;
use revokd_jobs::{RedisConn, RedisTarget};

/// A Redis connection for latency-sensitive reads: short timeouts and a
/// single reconnect attempt, so a dead Redis fails fast. Lazy: it does not
/// need Redis to be up when it is made. It follows the primary when the
/// target is Sentinel's.
pub fn fast_redis(target: &RedisTarget) -> RedisConn {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(250)))
        .set_response_timeout(Some(Duration::from_millis(250)))
        .set_number_of_retries(0)
        .set_max_delay(Duration::from_millis(500));
    target.connection(config)
}

/// A Redis connection for the worker and producers: patient timeouts, since
/// apalis-redis treats any error as fatal for the worker.
pub fn patient_redis(target: &RedisTarget) -> RedisConn {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    target.connection(config)
}

/// Both stores of one deployment: the Redis deny-list and the Postgres
/// record, as the worker, maintenance and resync write them together.
#[derive(Clone)]
pub struct Stores {
    /// The Redis deny-list (and registry, coordination keys).
    pub deny: redis::DenyList,
    /// The Postgres record.
    pub db: pg::Db,
}
