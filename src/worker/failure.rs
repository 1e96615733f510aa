//! What becomes of a job that failed: set aside for good, or handed back to
//! the queue to run again later.
//!
//! A failure is deterministic when the same payload fails the same way on
//! every attempt: a payload revokd cannot decode or apply, or Postgres
//! refusing the data itself — SQLSTATE class 21 (cardinality violation, e.g.
//! an upsert touching one row twice), 22 (data exception, e.g. a NUL byte in
//! text), 23 (integrity constraint) — or a value that cannot be encoded or a
//! row that cannot be decoded. Retrying such a job only takes a worker slot
//! from real revocations, so it goes to the queue's dead set at once.
//!
//! Everything else (connection errors, pool timeouts, other SQLSTATEs such
//! as deadlocks or a shutting-down server, every Redis error) is transient.
//! The worker retries it briefly in its slot, then pushes the job back into
//! the queue with a delay and reports this delivery done. apalis-redis would
//! reschedule a failed job itself, but only 25 times (a delay of 1 s, 2 s,
//! ... each): a Postgres outage of ~5 minutes would then kill revocations.
//! The delay grows with the job's age instead of an attempt count, so the
//! wire format needs none: see [`requeue_delay`].

use std::time::Duration;

use revokd_jobs::Job;

use super::ApplyError;

/// Shortest delay before a handed-back job runs again.
const MIN_DELAY: Duration = Duration::from_secs(1);
/// Longest delay: a job is applied at most this long after its stores return.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// What to do with a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It can never apply: into the dead set, counted under this cause.
    Dead(&'static str),
    /// A store is unavailable: run it again later.
    Transient,
}

/// Classifies a failure; see the module documentation.
pub fn classify(error: &ApplyError) -> Verdict {
    match error {
        ApplyError::Invalid(_) => Verdict::Dead("invalid"),
        ApplyError::Store(error) => error.refused().map_or(Verdict::Transient, Verdict::Dead),
    }
}

/// How long a job handed back after a transient failure waits: a quarter of
/// its age (`now - requested_at`), between 1 s and 30 s. A fresh job comes
/// back at once; during a long outage each job tries twice a minute.
pub fn requeue_delay(job: &Job, now: i64) -> Duration {
    let age = requested_at(job).map_or(0, |at| now.saturating_sub(at).max(0));
    Duration::from_secs(u64::try_from(age / 4).unwrap_or(0)).clamp(MIN_DELAY, MAX_DELAY)
}

fn requested_at(job: &Job) -> Option<i64> {
    match job {
        Job::Revoke(j) => Some(j.requested_at),
        Job::RevokeAll(j) => Some(j.requested_at),
        Job::Cleanup(j) => Some(j.requested_at),
        Job::RegisterRefresh(j) => Some(j.requested_at),
        Job::RevokeFamily(j) => Some(j.requested_at),
        Job::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use revokd_jobs::{RevokeToken, now_unix};

    use super::*;

    #[test]
    fn store_outages_are_transient_and_bad_payloads_dead() {
        assert_eq!(
            classify(&ApplyError::Invalid("x".into())),
            Verdict::Dead("invalid")
        );
        let io = sqlx::Error::Io(std::io::Error::other("connection refused"));
        assert_eq!(classify(&ApplyError::from(io)), Verdict::Transient);
        assert_eq!(
            classify(&ApplyError::from(sqlx::Error::PoolTimedOut)),
            Verdict::Transient
        );
        let redis = redis::RedisError::from((redis::ErrorKind::Io, "gone"));
        assert_eq!(classify(&ApplyError::from(redis)), Verdict::Transient);
        let decode = sqlx::Error::Decode("bad".into());
        assert_eq!(
            classify(&ApplyError::from(decode)),
            Verdict::Dead("postgres_decode")
        );
    }

    #[test]
    fn delay_is_a_quarter_of_the_age_between_1_and_30_seconds() {
        let now = now_unix();
        let aged = |age: i64| {
            let mut job = RevokeToken::new("t", None, now + 60);
            job.requested_at = now - age;
            requeue_delay(&Job::Revoke(job), now)
        };
        assert_eq!(aged(0), MIN_DELAY);
        assert_eq!(aged(-3600), MIN_DELAY, "a clock ahead is no reason to wait");
        assert_eq!(aged(40), Duration::from_secs(10));
        assert_eq!(aged(86_400), MAX_DELAY);
        assert_eq!(requeue_delay(&Job::Unknown, now), MIN_DELAY);
    }
}
