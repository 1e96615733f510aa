//! High availability on Redis Sentinel: two revokd processes configured
//! only with the sentinels (one with every role, one API + worker) keep
//! accepting revocations while the Redis primary is killed -9 and a
//! replica is promoted; no process is restarted by hand. The audit: every
//! revocation answered 2xx is in Postgres, on the new primary, and refused
//! by both processes; each local replica reloaded after the switch; the
//! scheduler fired on every tick after it. Figures are printed
//! (`-- --nocapture`).

use std::time::{Duration, Instant};

use crate::helpers::{
    Failover, Recipe, SentinelTopology, TestDb, free_port, healthy, scrape_sum, serve,
    unique_prefix,
};

/// The password of every process of the failover test's topology (data
/// servers and sentinels).
const PASSWORD: &str = "ha-Secret-1";
/// Its cleanup schedule: a tick every 2 s.
const CRON: &str = "*/2 * * * * *";

/// The `/readyz` replica state of the process on `port` ("current",
/// "stale", ...), or "down" when it does not answer.
async fn replica_state(http: &reqwest::Client, port: u16) -> String {
    let answer = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    match answer {
        Ok(response) => response.json::<serde_json::Value>().await.map_or_else(
            |_| "unreadable".to_owned(),
            |body| body["replica"].as_str().unwrap_or("none").to_owned(),
        ),
        Err(_) => "down".to_owned(),
    }
}

/// Polls the replica state of each process until `stop`; the changes, with
/// when they were seen.
async fn watch_replicas(
    ports: [u16; 2],
    stop: tokio_util::sync::CancellationToken,
) -> Vec<(u16, Instant, String)> {
    let http = reqwest::Client::new();
    let mut last: [Option<String>; 2] = [None, None];
    let mut changes = Vec::new();
    while !stop.is_cancelled() {
        for (i, port) in ports.into_iter().enumerate() {
            let state = replica_state(&http, port).await;
            if last[i].as_ref() != Some(&state) {
                changes.push((port, Instant::now(), state.clone()));
                last[i] = Some(state);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    changes
}

#[tokio::test]
async fn a_primary_killed_under_load_loses_no_accepted_revocation() {
    // Sentinel auth too: every process requires a password.
    let mut topology =
        SentinelTopology::start_with(|ports| Recipe::harness(ports).with_password(PASSWORD)).await;
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let log = std::env::temp_dir().join(format!("revokd-ha-{}.log", prefix.trim_end_matches(':')));
    let sentinels = topology.sentinels();
    // REDIS_URL's host and port are not used with Sentinel: a port nothing
    // listens on proves it.
    // Its password applies to the primary.
    let unused = format!("redis://:{PASSWORD}@127.0.0.1:{}", free_port());
    let extra = [
        "--redis-sentinels",
        sentinels.as_str(),
        "--redis-sentinel-master",
        topology.master_name(),
        "--redis-sentinel-password",
        PASSWORD,
        "--cleanup-cron",
        CRON,
    ];
    let ports = [free_port(), free_port()];
    let started_unix = revokd_jobs::now_unix();
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
    let loads = "revokd_replica_loads_total";
    let loads_before = [
        scrape_sum(&http, ports[0], loads).await,
        scrape_sum(&http, ports[1], loads).await,
    ];
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_replicas(ports, watching.clone()));
    let times = [3, 4, 20].map(Duration::from_secs);
    let run = Failover::under_load(&mut topology, "ha", &ports, times).await;
    watching.cancel();
    let replica_states = watcher.await.unwrap();
    let promoted_unix = revokd_jobs::now_unix()
        - i64::try_from((run.killed_at + run.took).elapsed().as_secs()).unwrap();
    eprintln!("figure: {}", run.report(200));
    let enforced = run.audit(&topology, &db, &prefix, &ports).await;
    eprintln!("figure: audit enforced everywhere after {enforced:?}");

    // Each replica follower reloaded after the switch (it must not carry
    // on from its place in the old primary's stream), and is current again.
    let states: Vec<String> = replica_states
        .iter()
        .map(|(port, at, state)| {
            let since = at.saturating_duration_since(run.killed_at);
            format!(":{port} {state} at {since:.2?}")
        })
        .collect();
    eprintln!("figure: /readyz replica states from the kill: {states:?}");
    for (i, port) in ports.into_iter().enumerate() {
        let reloads = scrape_sum(&http, port, loads).await - loads_before[i];
        assert!(
            reloads >= 1.0,
            "the replica on :{port} did not reload after the switch ({states:?})"
        );
        assert_eq!(replica_state(&http, port).await, "current", ":{port}");
    }

    // The scheduler fired on every tick after the switch: each tick's
    // cleanup was pushed, once, to the new primary.
    let mut redis = redis::Client::open(topology.redis_url(run.new_primary))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ticks_key = revokd_jobs::queue_config(&prefix).idempotency_key_set();
    let pushed: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ticks_key}:cleanup:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let pushed: std::collections::BTreeSet<i64> = pushed
        .iter()
        .filter_map(|key| key.rsplit(':').next()?.parse().ok())
        .collect();
    let now = revokd_jobs::now_unix();
    let expected: Vec<i64> = (promoted_unix + 1..now)
        .filter(|tick| tick % 2 == 0)
        .collect();
    let missing: Vec<&i64> = expected.iter().filter(|t| !pushed.contains(t)).collect();
    assert!(
        missing.is_empty(),
        "ticks after the switch not pushed: {missing:?} (pushed {pushed:?})"
    );
    let cleanups = scrape_sum(
        &http,
        ports[0],
        "revokd_jobs_applied_total{kind=\"cleanup\"}",
    )
    .await
        + scrape_sum(
            &http,
            ports[1],
            "revokd_jobs_applied_total{kind=\"cleanup\"}",
        )
        .await;
    let ticks = (now - started_unix) / 2 + 1;
    assert!(
        cleanups <= ticks as f64,
        "{cleanups} cleanups applied for at most {ticks} ticks: a tick fired twice"
    );
    eprintln!(
        "figure: {} ticks after the switch, all pushed to the new primary; {cleanups} cleanups applied for {ticks} ticks in the run",
        expected.len()
    );
}

/// A target following `topology`'s primary (REDIS_URL's host and port
/// unused).
fn follow(topology: &SentinelTopology) -> revokd_jobs::RedisTarget {
    revokd_jobs::RedisTarget::sentinel(
        &topology.sentinels(),
        topology.master_name(),
        "redis://127.0.0.1:1",
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn after_a_failover_the_deny_list_marker_copied_from_the_old_primary_is_not_trusted() {
    let mut topology = SentinelTopology::start().await;
    let prefix = unique_prefix();
    let target = follow(&topology);
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

#[tokio::test]
async fn a_sentinel_announcement_moves_the_primary_with_no_command_and_no_poll() {
    let mut topology = SentinelTopology::start().await;
    let target = follow(&topology);
    // Only `+switch-master` can move it: the safety-net lookup is an hour
    // away once subscribed, and no command runs (no error to act on).
    target.set_poll_while_subscribed(Duration::from_secs(3600));
    let started = Instant::now();
    while !(target.is_subscribed() && target.generation() == 1) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no subscription or no primary: {target:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lookup's pause taken before the subscription ends.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let killed = Instant::now();
    let old = topology.kill_primary().await;
    let (new, promoted) = topology.wait_failover(old, Duration::from_secs(20)).await;
    while target.generation() == 1 {
        assert!(
            killed.elapsed() < promoted + Duration::from_secs(5),
            "the target did not follow the announced switch: {target:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let followed = killed.elapsed();
    let (_, client) = target.client().await.unwrap();
    assert_eq!(
        client.get_connection_info().addr().to_string(),
        format!("127.0.0.1:{new}")
    );
    eprintln!(
        "figure: sentinels agreed on the new primary {promoted:?} after the kill (polled every 50 ms); the target followed {followed:?} after it, on the announcement alone"
    );
}
