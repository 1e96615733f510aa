//! High availability on Redis Sentinel: two revokd processes configured
//! only with the sentinels (one with every role, one API + worker) keep
//! accepting revocations while the Redis primary is killed -9 and a
//! replica is promoted; no process is restarted by hand. The audit: every
//! revocation answered 2xx is in Postgres, on the new primary, and refused
//! by both processes. Figures are printed (`-- --nocapture`).

use std::time::{Duration, Instant};

use crate::helpers::{
    Failover, SentinelTopology, TestDb, free_port, healthy, serve, unique_prefix,
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

    // Before, during and after the failover: ~400 revocations in all.
    let times = [3, 4, 20].map(Duration::from_secs);
    let run = Failover::under_load(&mut topology, "ha", &ports, times).await;
    eprintln!("figure: {}", run.report(200));
    let enforced = run.audit(&topology, &db, &prefix, &ports).await;
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
