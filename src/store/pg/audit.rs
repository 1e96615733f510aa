//! `revocation_audit`: every request, keyed by job id; rows are written with
//! the change they log (see [`super::tokens`], [`super::subjects`],
//! [`super::refresh`]) and only deleted here, once old enough.

use super::Db;

impl Db {
    /// Deletes up to `batch` audit rows requested before `cutoff`.
    pub async fn delete_old_audit(&self, cutoff: i64, batch: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "delete from revocation_audit where id in
                 (select id from revocation_audit where requested_at < $1 limit $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
