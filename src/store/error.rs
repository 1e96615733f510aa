//! One error for "a store failed": Redis, Postgres, or Redis losing its data
//! while a rebuild ran. Cleanup, rebuild, resync and the worker's stores all
//! return it; what a caller does with it (retry, set the job aside) is
//! decided by [`StoreError::refused`].

/// A store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Postgres failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Redis lost its data while a rebuild ran; it must run again.
    #[error("redis lost its data during the rebuild")]
    Interrupted,
    /// A job's application took longer than an attempt may
    /// ([`crate::worker::apply::ATTEMPT`]): it runs again.
    #[error("the stores took longer than {0:?} to apply the job")]
    TimedOut(std::time::Duration),
}

impl StoreError {
    /// Why the store refused the data itself, if it did: asking again with
    /// the same data cannot help. `None` for an unavailable store.
    pub fn refused(&self) -> Option<&'static str> {
        match self {
            StoreError::Postgres(error) => refused_by_postgres(error),
            StoreError::Redis(_) | StoreError::Interrupted | StoreError::TimedOut(_) => None,
        }
    }
}

/// Why Postgres refused the data itself: SQLSTATE class 21 (cardinality
/// violation, e.g. an upsert touching one row twice), 22 (data exception,
/// e.g. a NUL byte in text), 23 (integrity constraint), a value that cannot
/// be encoded or a row that cannot be decoded. `None` for everything else
/// (connection errors, pool timeouts, deadlocks, a server shutting down).
pub fn refused_by_postgres(error: &sqlx::Error) -> Option<&'static str> {
    match error {
        sqlx::Error::Database(e) => match e.code().as_deref().map(|c| c.get(..2)) {
            Some(Some("21")) => Some("postgres_cardinality"),
            Some(Some("22")) => Some("postgres_data"),
            Some(Some("23")) => Some("postgres_integrity"),
            _ => None,
        },
        sqlx::Error::Encode(_) => Some("postgres_encode"),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => Some("postgres_decode"),
        _ => None,
    }
}
