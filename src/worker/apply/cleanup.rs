//! `cleanup`: the scheduled maintenance (purge expired rows, vacuum the
//! queue, restore Redis entries Postgres holds), on workers that were given
//! a [`Maintenance`](crate::worker::maintenance::Maintenance).

use super::{Applied, Applier, ApplyError};
use crate::worker::maintenance::{LastCleanup, Quiet};

impl Applier {
    pub(super) async fn cleanup(&self, now: i64) -> Result<Applied, ApplyError> {
        let Some(maintenance) = &self.maintenance else {
            return Err(ApplyError::Invalid(
                "this worker cannot run maintenance".into(),
            ));
        };
        let report = maintenance.cleanup(now, &Quiet).await?;
        tracing::info!(
            tokens_deleted = report.tokens_deleted,
            subjects_deleted = report.subjects_deleted,
            audit_deleted = report.audit_deleted,
            refresh_deleted = report.refresh_deleted,
            jobs_vacuumed = report.jobs_vacuumed,
            redis_restored = report.redis_restored,
            "cleanup done"
        );
        let last = LastCleanup {
            finished_at: revokd_jobs::now_unix(),
            report,
        };
        self.stores.deny.store_cleanup_report(&last).await;
        Ok(Applied::Cleaned(report))
    }
}
