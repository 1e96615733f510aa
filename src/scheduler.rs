//! The scheduler role: pushes a cleanup job on `REVOKD_CLEANUP_CRON`. Every
//! process runs its own schedule; an idempotency key per tick makes the tick
//! fire once across all of them.
//!
//! The key is the instant the tick was scheduled for, not the clock when the
//! callback runs: tokio-cron-scheduler polls every 500 ms and a busy process
//! runs a callback later still, so rounding the clock gives two instances
//! different keys for one tick (a callback 0.5 s late took the next second's
//! key). The scheduled instant is the latest occurrence of the cron at or
//! before the callback's clock, by the same parser (croner) the scheduler
//! uses; callbacks are never early, so a late one still names its own tick
//! as long as it is less than one period late.

use croner::{Cron, errors::CronError, parser::CronParser};
use revokd_jobs::{Cleanup, Job, JobMeta, Producer, now_unix};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;

/// Pushes a cleanup job with `producer` on each tick of `cron` until `stop`
/// fires.
pub async fn run(producer: Producer, cron: String, stop: CancellationToken) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new().await?;
    let invalid =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("invalid REVOKD_CLEANUP_CRON {cron:?}: {e}");
    let schedule = std::sync::Arc::new(parse(&cron).map_err(|e| invalid(&e))?);
    let job = CronJob::new_async(cron.as_str(), move |_id, _scheduler| {
        let producer = producer.clone();
        let schedule = schedule.clone();
        Box::pin(async move {
            // Cron ticks fall on whole seconds: the clock in seconds names
            // the same latest tick as the clock in milliseconds.
            let millis = now_unix().saturating_mul(1000);
            let tick = scheduled_tick(&schedule, millis).unwrap_or(millis.div_euclid(1000));
            let job = Job::Cleanup(Cleanup {
                meta: JobMeta::now(),
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
    .map_err(|e| invalid(&e))?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    stop.cancelled().await;
    scheduler.shutdown().await?;
    Ok(())
}

/// Parses a 6-field cron (with seconds) exactly as tokio-cron-scheduler does.
pub fn parse(cron: &str) -> Result<Cron, CronError> {
    CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
}

/// The tick (unix seconds, UTC as the scheduler reads the cron) that a
/// callback running at `now_millis` was scheduled for: the latest occurrence
/// of `cron` at or before that second. `None` if there is none (out of range).
pub fn scheduled_tick(cron: &Cron, now_millis: i64) -> Option<i64> {
    let now = chrono::DateTime::from_timestamp(now_millis.div_euclid(1000), 0)?;
    cron.find_previous_occurrence(&now, true)
        .ok()
        .map(|tick| tick.timestamp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// 2026-01-01T12:10:00Z.
    const SCHEDULED: i64 = 1_767_269_400;

    #[test]
    fn late_callbacks_of_one_tick_share_its_key_on_a_one_second_cron() {
        let every_second = parse("* * * * * *").unwrap();
        let millis = SCHEDULED * 1000;
        assert_eq!(scheduled_tick(&every_second, millis), Some(SCHEDULED));
        assert_eq!(scheduled_tick(&every_second, millis + 400), Some(SCHEDULED));
        // Rounding the clock gave this one the next second's key.
        assert_eq!(scheduled_tick(&every_second, millis + 600), Some(SCHEDULED));
        assert_eq!(scheduled_tick(&every_second, millis + 999), Some(SCHEDULED));
        assert_eq!(
            scheduled_tick(&every_second, millis + 1000),
            Some(SCHEDULED + 1)
        );
    }

    #[test]
    fn a_late_callback_names_the_scheduled_instant_of_a_sparse_cron() {
        let every_ten_minutes = parse("0 */10 * * * *").unwrap();
        for late_millis in [0, 400, 600, 1_200, 59_000] {
            assert_eq!(
                scheduled_tick(&every_ten_minutes, SCHEDULED * 1000 + late_millis),
                Some(SCHEDULED),
                "{late_millis} ms late"
            );
        }
        assert_eq!(
            scheduled_tick(&every_ten_minutes, (SCHEDULED + 600) * 1000),
            Some(SCHEDULED + 600)
        );
    }

    #[test]
    fn the_default_schedule_parses_and_nonsense_does_not() {
        assert!(parse("0 */10 * * * *").is_ok());
        assert!(parse("every now and then").is_err());
        assert!(parse("*/10 * * * *").is_err(), "seconds are required");
    }
}
