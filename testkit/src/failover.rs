//! A Redis Sentinel failover under revocation load, the core of the
//! high-availability tests: a [`Load`] through a deployment's APIs, kill -9
//! of the primary, the failover, more load; then what it came to, and the
//! audit (every revocation answered 2xx in Postgres, on the new primary and
//! refused by every API).

use std::time::{Duration, Instant};

use crate::{Load, SentinelTopology, Tally, TestDb, enforced_everywhere, in_both_stores};

/// What a failover under load came to.
pub struct Failover {
    pub tally: Tally,
    pub killed_at: Instant,
    /// The promoted replica's port.
    pub new_primary: u16,
    /// From the kill to every sentinel reporting the new primary.
    pub took: Duration,
}

impl Failover {
    /// Revocations (subjects `{name}-...`, two lanes, one request per 25 ms
    /// each) through `apis` for `before`, kill -9 of `topology`'s primary,
    /// the failover (panics if it takes more than `within`), then
    /// revocations for `after` more.
    pub async fn under_load(
        topology: &mut SentinelTopology,
        name: &str,
        apis: &[u16],
        [before, after, within]: [Duration; 3],
    ) -> Failover {
        let load = Load::start(name, apis, 2, Duration::from_millis(25));
        tokio::time::sleep(before).await;
        let killed_at = Instant::now();
        let old = topology.kill_primary().await;
        let (new_primary, took) = topology.wait_failover(old, within).await;
        tokio::time::sleep(after).await;
        Failover {
            tally: load.stop().await,
            killed_at,
            new_primary,
            took,
        }
    }

    /// The figures in one line. Panics when the run proves nothing: fewer
    /// than `min_accepted` revocations accepted, none after the kill, or
    /// none queued on the new primary.
    pub fn report(&self, min_accepted: usize) -> String {
        let tally = &self.tally;
        let after = tally.accepted.iter().filter(|a| a.at > self.killed_at);
        let degraded = after.clone().filter(|a| a.degraded).count();
        let after = after.count();
        // Writes queued in Redis again (not only recorded in Postgres).
        let resumed = tally.writes_resumed(self.killed_at);
        assert!(
            tally.accepted.len() >= min_accepted,
            "too few accepted to mean anything"
        );
        assert!(after > 0, "nothing accepted after the kill");
        assert!(resumed.is_some(), "no write reached the new primary");
        format!(
            "{} revocations accepted, {after} after the kill ({degraded} of them degraded: in Postgres, queued later), {} refused {:?}; sentinels promoted :{} {:?} after kill -9; writes queued in Redis again {resumed:?} after it",
            tally.accepted.len(),
            tally.refused.len(),
            tally.refused_statuses(),
            self.new_primary,
            self.took,
        )
    }

    /// The audit: every revocation answered 2xx is in `db`, on the new
    /// primary under `prefix`, and refused by every API in `apis`; how long
    /// until all of them were refused everywhere.
    pub async fn audit(
        &self,
        topology: &SentinelTopology,
        db: &TestDb,
        prefix: &str,
        apis: &[u16],
    ) -> Duration {
        let primary = topology.redis_url(self.new_primary);
        in_both_stores(db, &primary, prefix, &self.tally.ids()).await;
        let http = reqwest::Client::new();
        enforced_everywhere(&http, apis, &self.tally.tokens()).await
    }
}
