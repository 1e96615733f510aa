//! What `/readyz` and `/metrics` report about shared state, refreshed at
//! most once per interval whatever the request rate: both endpoints are
//! unauthenticated, so their cost per request must not depend on the rate
//! or on the size of the tables.
//!
//! - Store state (`/readyz`): one Redis `EXISTS` of the marker and one
//!   trivial Postgres lookup, at most every [`STORES_EVERY`]; requests in
//!   between read the cached answer. The breakers are read on every request,
//!   so a store that failed a request shows as down at once.
//! - Gauges (`/metrics`): queue depth, deny-list size (Postgres's live
//!   counts, a table-wide query) and the last cleanup, at most every
//!   [`GAUGES_EVERY`], in a background task started by a scrape that finds
//!   them older; the scrape answers with the values it has. Refreshing on
//!   demand rather than on a timer costs nothing in a process nobody scrapes
//!   (a deployment's workers and idle API processes).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use revokd_jobs::now_unix;
use tokio::time::{Instant, timeout};

use crate::{
    instruments,
    store::{pg::Db, redis::DenyList},
    worker::maintenance::LastCleanup,
};

/// Oldest store state `/readyz` answers with.
pub const STORES_EVERY: Duration = Duration::from_secs(1);
/// Oldest gauges `/metrics` answers with (a scrape then refreshes them).
pub const GAUGES_EVERY: Duration = Duration::from_secs(10);
/// Longest one probe of a store may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What the last probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreState {
    /// Redis answered and holds the whole deny-list (marker present).
    pub redis_complete: bool,
    /// Postgres answered a lookup (its tables exist).
    pub postgres: bool,
}

/// The cached state of the operations endpoints; one per API process.
pub struct Probe {
    deny: DenyList,
    db: Db,
    queue: apalis_redis::Config,
    stores: tokio::sync::Mutex<Option<(Instant, StoreState)>>,
    gauges_at: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl Probe {
    /// Probes `deny`'s Redis and `db`, and reads `queue`'s depth.
    pub fn new(deny: DenyList, db: Db, queue: apalis_redis::Config) -> Arc<Self> {
        Arc::new(Self {
            deny,
            db,
            queue,
            stores: tokio::sync::Mutex::new(None),
            gauges_at: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The stores' state, probed at most once per [`STORES_EVERY`]:
    /// concurrent callers wait for the one probe in flight.
    pub async fn stores(&self) -> StoreState {
        let mut cached = self.stores.lock().await;
        if let Some((at, state)) = *cached
            && at.elapsed() < STORES_EVERY
        {
            return state;
        }
        let (redis, pg) = tokio::join!(
            timeout(PROBE_TIMEOUT, self.deny.marker_present()),
            timeout(PROBE_TIMEOUT, self.db.lookup("readyz", None, None)),
        );
        let state = StoreState {
            redis_complete: matches!(redis, Ok(Ok(true))),
            postgres: matches!(pg, Ok(Ok(_))),
        };
        *cached = Some((Instant::now(), state));
        state
    }

    /// Makes the shared-state gauges at most [`GAUGES_EVERY`] old: the
    /// first scrape waits for them, later ones start a refresh in the
    /// background when they are due and answer at once.
    pub async fn refresh_gauges(self: &Arc<Self>) {
        let last = *self.gauges_at.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < GAUGES_EVERY)
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = Arc::clone(self);
        let refresh = async move {
            this.sample_gauges().await;
            *this.gauges_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            this.refreshing.store(false, Ordering::Release);
        };
        // Spawned even when awaited: a scrape that goes away must not leave
        // `refreshing` set.
        let task = tokio::spawn(refresh);
        if last.is_none() {
            let _ = task.await;
        }
    }

    /// A store that does not answer leaves its gauges at their last value.
    async fn sample_gauges(&self) {
        let (depth, counts, cleanup) = tokio::join!(
            timeout(PROBE_TIMEOUT, self.deny.queue_depth(&self.queue)),
            // A table-wide count: bounded by the interval, not by scrapes.
            timeout(Duration::from_secs(5), self.db.counts(now_unix())),
            timeout(PROBE_TIMEOUT, self.deny.cleanup_report::<LastCleanup>()),
        );
        if let Ok(Ok(depth)) = depth {
            instruments::queue_depth(depth);
        }
        if let Ok(Ok((tokens, subjects, issuers, _))) = counts {
            instruments::denylist_size(tokens, subjects, issuers);
        }
        if let Ok(Ok(Some(last))) = cleanup {
            instruments::last_cleanup(&last.report.counts(), last.finished_at);
        }
    }
}
