//! High availability on Redis Sentinel: two revokd processes configured
//! only with the sentinels (one with every role, one API + worker) keep
//! accepting revocations while the Redis primary is killed -9 and a
//! replica is promoted; no process is restarted by hand. The audit: every
//! revocation answered 2xx is in Postgres, on the new primary, and refused
//! by both processes. Figures are printed (`-- --nocapture`).

use std::time::{Duration, Instant};

use crate::helpers::{
    Load, SentinelTopology, TestDb, enforced_everywhere, free_port, healthy, serve, unique_prefix,
};

#[tokio::test]
async fn a_primary_killed_under_load_loses_no_accepted_revocation() {
    let mut topology = SentinelTopology::start().await;
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let log = std::env::temp_dir().join(format!("revokd-ha-{}.log", prefix.trim_end_matches(':')));
    let sentinels = topology.sentinels();
    // REDIS_URL's host and port are not used with Sentinel: a port nothing
    // listens on proves it.
    let unused = format!("redis://127.0.0.1:{}", free_port());
    let extra = [
        "--redis-sentinels",
        sentinels.as_str(),
        "--redis-sentinel-master",
        topology.master_name(),
        "--cleanup-cron",
        "*/2 * * * * *",
    ];
    let ports = [free_port(), free_port()];
    let _all = serve(
        &prefix,
        &unused,
        &db.url,
        ports[0],
        "api,worker,scheduler",
        &extra,
        Some(&log),
    );
    let _api_worker = serve(
        &prefix,
        &unused,
        &db.url,
        ports[1],
        "api,worker",
        &extra,
        Some(&log),
    );
    let http = reqwest::Client::new();
    for port in ports {
        healthy(&http, port).await;
    }

    let load = Load::start("ha", &ports, 2, Duration::from_millis(25));
    // Before, during and after the failover: ~400 revocations in all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    let old = topology.kill_primary().await;
    let (new, failover) = topology.wait_failover(old, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;
    let after: Vec<_> = tally.accepted.iter().filter(|a| a.at > killed_at).collect();
    let degraded = after.iter().filter(|a| a.degraded).count();
    // Writes queued in Redis again (not only recorded in Postgres).
    let first_write = tally.writes_resumed(killed_at);
    eprintln!(
        "figure: {} revocations accepted, {} after the kill ({degraded} of them degraded: in Postgres, queued later), {} refused {:?}; sentinels promoted :{new} in {failover:?}; writes queued in Redis again {first_write:?} after the kill",
        tally.accepted.len(),
        after.len(),
        tally.refused.len(),
        tally.refused_statuses(),
    );
    assert!(first_write.is_some(), "no write reached the new primary");
    assert!(
        tally.accepted.len() >= 200,
        "too few accepted to mean anything"
    );
    assert!(!after.is_empty(), "nothing accepted after the kill");

    // The audit: every 2xx in Postgres, on the new primary, and refused by
    // both processes.
    let new_primary = topology.redis_url(new);
    crate::helpers::in_both_stores(&db, &new_primary, &prefix, &tally.ids()).await;
    let enforced = enforced_everywhere(&http, &ports, &tally.tokens()).await;
    eprintln!("figure: audit enforced everywhere after {enforced:?}");
}

#[tokio::test]
async fn after_a_failover_the_deny_list_marker_copied_from_the_old_primary_is_not_trusted() {
    let mut topology = SentinelTopology::start().await;
    let prefix = unique_prefix();
    let target = revokd_jobs::RedisTarget::sentinel(
        &topology.sentinels(),
        topology.master_name(),
        "redis://127.0.0.1:1",
        None,
    )
    .unwrap();
    let deny = revokd::store::redis::DenyList::new(revokd::store::fast_redis(&target), &prefix);
    // The old primary's rebuild set the marker: the deny-list is complete.
    let server = deny.server_id().await.unwrap();
    deny.begin_rebuild("r1").await.unwrap();
    assert!(deny.finish_rebuild("r1", &server).await.unwrap());
    assert!(deny.lookup("t1", None, None).await.unwrap().complete);
    let before = target.generation();

    let old = topology.kill_primary().await;
    let (new, _) = topology.wait_failover(old, Duration::from_secs(20)).await;
    // Replication copied the marker to the new primary ...
    let mut direct = redis::Client::open(topology.redis_url(new))
        .unwrap()
        .get_connection()
        .unwrap();
    let marker = revokd::store::Keys::new(&prefix).marker();
    let copied: bool = redis::Commands::exists(&mut direct, &marker).unwrap();
    // ... but the new primary may lack the old one's last writes: the first
    // lookup there says incomplete (Postgres answers) and drops the marker.
    let started = Instant::now();
    let lookup = loop {
        if target.generation() > before
            && let Ok(lookup) = deny.lookup("t1", None, None).await
        {
            break lookup;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no lookup on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        copied,
        "the marker was not replicated, so this test proves nothing"
    );
    assert!(!lookup.complete);
    let left: bool = redis::Commands::exists(&mut direct, &marker).unwrap();
    assert!(!left, "the copied marker is still there");
}
