//! When the replica may answer: loaded, and proven current no longer ago
//! than `REVOKD_REPLICA_MAX_LAG`. A proof is the send time of a stream read
//! that came back with fewer entries than asked.
//!
//! Time here is monotonic (`tokio::time::Instant`): on the wall clock, a step
//! backwards would make an old proof look young and keep a stale replica
//! answering. Tokio's clock also lets tests pause and advance it. A proof is
//! stored as nanoseconds since this replica's own origin in one atomic, so a
//! check costs one atomic load and one clock read.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

/// Whether the replica is loaded and how recently it was proven current.
#[derive(Debug)]
pub(super) struct Freshness {
    /// A snapshot has been loaded; until then no read proves anything.
    loaded: AtomicBool,
    /// Where this replica's clock starts.
    origin: Instant,
    /// 1 + nanoseconds from `origin` to the latest proof; 0 when not proven
    /// since the last (re)connect.
    proven: AtomicU64,
    /// `max_lag` in nanoseconds.
    max_lag: u64,
}

impl Freshness {
    pub(super) fn new(max_lag: Duration) -> Self {
        Self {
            loaded: AtomicBool::new(false),
            origin: Instant::now(),
            proven: AtomicU64::new(0),
            max_lag: u64::try_from(max_lag.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// `at` on this replica's clock; never 0, the "not proven" mark.
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether the replica may answer now.
    pub(super) fn is_fresh(&self) -> bool {
        let proven = self.proven.load(Ordering::Acquire);
        proven != 0 && self.stamp(Instant::now()).saturating_sub(proven) <= self.max_lag
    }

    /// A snapshot is in: proofs count from now on.
    pub(super) fn loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// A read sent at `sent` came back short: the replica was current then.
    /// Ignored before the first load (no read can prove an empty replica).
    pub(super) fn proven_at(&self, sent: Instant) {
        if self.loaded.load(Ordering::Acquire) {
            self.proven.fetch_max(self.stamp(sent), Ordering::AcqRel);
        }
    }

    /// The stream broke: nothing is proven until a read on the new
    /// connection comes back short.
    pub(super) fn invalidate(&self) {
        self.proven.store(0, Ordering::Release);
    }

    /// Whether the latest proof was sent at or after `since`.
    pub(super) fn proven_since(&self, since: Instant) -> bool {
        self.proven.load(Ordering::Acquire) >= self.stamp(since)
    }
}
