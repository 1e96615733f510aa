//! The scheduler role: pushes a cleanup job on `REVOKD_CLEANUP_CRON`. Every
//! process runs its own schedule; an idempotency key per tick makes the tick
//! fire once across all of them.

use revokd_jobs::{Cleanup, Job, new_job_id, now_unix};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::app::Services;

/// Runs the schedule until `stop` fires.
pub async fn run(services: Services, stop: CancellationToken) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new().await?;
    let producer = services.producer.clone();
    let cron = services.config.cleanup_cron.clone();
    let job = CronJob::new_async(cron.as_str(), move |_id, _scheduler| {
        let producer = producer.clone();
        Box::pin(async move {
            // Ticks fire on whole seconds; rounding to the nearest one gives
            // every instance the same key despite scheduling jitter.
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            let tick = (millis + 500) / 1000;
            let job = Job::Cleanup(Cleanup {
                job_id: new_job_id(),
                requested_at: now_unix(),
            });
            match producer.push_once(&job, &format!("cleanup:{tick}")).await {
                Ok(true) => tracing::info!(tick = %tick, "cleanup job pushed"),
                Ok(false) => {
                    tracing::debug!(tick = %tick, "cleanup already pushed by another instance")
                }
                Err(error) => tracing::warn!(%error, "cannot push cleanup job"),
            }
        })
    })
    .map_err(|e| anyhow::anyhow!("invalid REVOKD_CLEANUP_CRON {cron:?}: {e}"))?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    stop.cancelled().await;
    scheduler.shutdown().await?;
    Ok(())
}
