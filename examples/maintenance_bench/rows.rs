//! The bulk rows of the bench: expired and live revocations inserted with
//! `generate_series`, the table settled and counted.

use anyhow::Context;
use sqlx::PgPool;

use crate::to_i64;

/// Distinct subjects of the inserted rows.
const SUBJECTS: i64 = 100_000;

/// Inserts `n` rows that expired between 1 h and 25 h before `now`.
pub(crate) async fn insert_expired_rows(pool: &PgPool, n: u64, now: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by)
         select gen_random_uuid()::text,
                'user-' || (i % $3),
                $2 - 3600 - (i % 86400),
                $2 - 3600 - (i % 86400) - 900,
                case when i % 4 = 0 then 'logout' end,
                'bench'
         from generate_series(1, $1::bigint) as i",
    )
    .bind(to_i64(n)?)
    .bind(now)
    .bind(SUBJECTS)
    .execute(pool)
    .await
    .context("insert expired rows")?;
    Ok(())
}

/// Inserts `n` rows expiring one hour after `now`, revoked in the last hour.
pub(crate) async fn insert_live_rows(pool: &PgPool, n: u64, now: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by)
         select gen_random_uuid()::text,
                'user-' || (i % $3),
                $2 + 3600,
                $2 - (i % 3600),
                case when i % 4 = 0 then 'logout' end,
                'bench'
         from generate_series(1, $1::bigint) as i",
    )
    .bind(to_i64(n)?)
    .bind(now)
    .bind(SUBJECTS)
    .execute(pool)
    .await
    .context("insert live rows")?;
    Ok(())
}

/// Settles the table after a bulk change (visibility map, statistics), so
/// that no autovacuum runs during a measurement.
pub(crate) async fn vacuum(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql("vacuum analyze revoked_tokens")
        .execute(pool)
        .await
        .context("vacuum analyze")?;
    Ok(())
}

pub(crate) async fn count_rows(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar("select count(*) from revoked_tokens")
        .fetch_one(pool)
        .await
        .context("count rows")
}
