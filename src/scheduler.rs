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
//!
//! A push that fails is retried until the next tick is due, so a Redis
//! outage or a Sentinel failover at the tick delays that cleanup instead of
//! skipping it (for 10 minutes, at the default schedule).

use croner::{Cron, errors::CronError, parser::CronParser};
use revokd_jobs::{Cleanup, Job, JobMeta, Producer, now_unix, now_unix_ms};
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
            push_tick(&producer, &schedule, &job, tick).await;
        })
    })
    .map_err(|e| invalid(&e))?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    stop.cancelled().await;
    scheduler.shutdown().await?;
    Ok(())
}

/// Pushes `tick`'s cleanup job once across every scheduler (its
/// idempotency key). A push that fails (Redis down, a Sentinel failover in
/// progress) is retried, backing off up to 5 s, until the next tick is due:
/// an outage at the tick delays its cleanup rather than skipping it.
async fn push_tick(producer: &Producer, schedule: &Cron, job: &Job, tick: i64) {
    let key = format!("cleanup:{tick}");
    let mut pause = RETRY_FIRST;
    loop {
        match producer.push_once(job, &key).await {
            Ok(true) => return tracing::info!(tick = %tick, "cleanup job pushed"),
            Ok(false) => {
                return tracing::debug!(tick = %tick, "cleanup already pushed by another instance");
            }
            Err(error) => {
                let retry_at = now_unix_ms().saturating_add(millis(pause));
                if scheduled_tick(schedule, retry_at) != Some(tick) {
                    return tracing::warn!(%error, tick = %tick, "cannot push cleanup job; the next tick will");
                }
                tracing::debug!(%error, tick = %tick, "cannot push cleanup job yet; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// The first pause before a failed push is retried, and the longest.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
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
