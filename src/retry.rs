//! One retry policy for every loop that waits out a failing dependency:
//! backon's exponential backoff (doubling from a first delay up to a cap),
//! with every wait cut short by the process's stop signal.
//!
//! Used by the worker's in-slot retry of a job, the worker supervisor's
//! restarts, the wait for Postgres at start and the accept loop's pause
//! when the process runs out of file descriptors.

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Delays doubling from `first` up to `cap`, without end and without
/// jitter (every caller waits on one dependency of its own process).
pub fn doubling(first: Duration, cap: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(2.0)
        .without_max_times()
}

/// A sleeper for backon's `Retryable::sleep` that wakes when `stop` fires.
pub fn stoppable(
    stop: &CancellationToken,
) -> impl Fn(Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let stop = stop.clone();
    move |delay| {
        let stop = stop.clone();
        Box::pin(async move { pause(delay, &stop).await })
    }
}

/// Sleeps `delay`, or less if `stop` fires first.
pub async fn pause(delay: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = stop.cancelled() => {}
    }
}

/// The delays of a loop that retries until it is stopped, and starts over
/// from the first delay after a healthy run.
pub struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    /// Delays doubling from `first` up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        let policy = doubling(first, cap);
        Self {
            delays: policy.build(),
            policy,
            cap,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        // `without_max_times` never ends the iterator.
        self.delays.next().unwrap_or(self.cap)
    }

    /// Waits the next delay, or less if `stop` fires.
    pub async fn wait(&mut self, stop: &CancellationToken) {
        pause(self.next_delay(), stop).await;
    }

    /// Starts over from the first delay.
    pub fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_on_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_when_stopped() {
        let stop = CancellationToken::new();
        stop.cancel();
        let started = tokio::time::Instant::now();
        pause(Duration::from_secs(60), &stop).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
