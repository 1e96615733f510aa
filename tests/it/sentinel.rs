//! High availability on Redis Sentinel: two revokd processes configured
//! only with the sentinels (one with every role, one API + worker) keep
//! accepting revocations while the Redis primary is killed -9 and a
//! replica is promoted; no process is restarted by hand. The audit: every
//! revocation answered 2xx is in Postgres, on the new primary, and refused
//! by both processes. Figures are printed (`-- --nocapture`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    SentinelTopology, TestDb, check_reason, free_port, healthy, mint, serve, unique_prefix,
};

/// Revocations answered 2xx (token, id, when, whether degraded: recorded
/// in Postgres while Redis took no write), and the other answers.
#[derive(Default)]
struct Tally {
    accepted: Vec<(String, String, Instant, bool)>,
    refused: Vec<(u16, Instant)>,
}

/// Revokes fresh tokens through both processes in turn until `stop`.
async fn load(ports: [u16; 2], tally: Arc<Mutex<Tally>>, stop: CancellationToken, lane: usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0usize;
    while !stop.is_cancelled() {
        n += 1;
        let port = ports[n % 2];
        let token = mint(&format!("ha-{lane}-{n}"));
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v1/revocations"))
            .bearer_auth("test-key")
            .json(&json!({ "token": token }))
            .send()
            .await;
        let at = Instant::now();
        let outcome = match sent {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap();
                let id = body["token_id"].as_str().expect("a 2xx names its token_id");
                Ok((id.to_owned(), body["degraded"] == true))
            }
            Ok(response) => Err(response.status().as_u16()),
            Err(_) => Err(0),
        };
        {
            let mut tally = tally.lock().unwrap();
            match outcome {
                Ok((id, degraded)) => tally.accepted.push((token, id, at, degraded)),
                Err(status) => tally.refused.push((status, at)),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

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

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = CancellationToken::new();
    let lanes: Vec<_> = (0..2)
        .map(|lane| tokio::spawn(load(ports, Arc::clone(&tally), stop.clone(), lane)))
        .collect();
    // Before, during and after the failover: ~400 revocations in all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    let old = topology.kill_primary().await;
    let (new, failover) = topology.wait_failover(old, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    for lane in lanes {
        lane.await.unwrap();
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    let after: Vec<_> = tally
        .accepted
        .iter()
        .filter(|(_, _, at, _)| *at > killed_at)
        .collect();
    let degraded = after.iter().filter(|(.., degraded)| *degraded).count();
    // Writes queued in Redis again (not only recorded in Postgres): the
    // first such answer after the last degraded one.
    let last_degraded = after
        .iter()
        .filter(|(.., degraded)| *degraded)
        .map(|(_, _, at, _)| *at)
        .max()
        .unwrap_or(killed_at);
    let first_write = after
        .iter()
        .filter(|(_, _, at, degraded)| !*degraded && *at > last_degraded)
        .map(|(_, _, at, _)| *at - killed_at)
        .min();
    eprintln!(
        "figure: {} revocations accepted, {} after the kill ({degraded} of them degraded: in Postgres, queued later), {} refused {:?}; sentinels promoted :{new} in {failover:?}; writes queued in Redis again {first_write:?} after the kill",
        tally.accepted.len(),
        after.len(),
        tally.refused.len(),
        tally.refused.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
    );
    assert!(first_write.is_some(), "no write reached the new primary");
    assert!(
        tally.accepted.len() >= 200,
        "too few accepted to mean anything"
    );
    assert!(!after.is_empty(), "nothing accepted after the kill");

    // The audit: every 2xx in Postgres, on the new primary, and refused by
    // both processes.
    let ids: Vec<String> = tally
        .accepted
        .iter()
        .map(|(_, id, ..)| id.clone())
        .collect();
    let new_primary = topology.redis_url(new);
    crate::helpers::in_both_stores(&db, &new_primary, &prefix, &ids).await;
    let started = Instant::now();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/v1/check");
        for (token, ..) in &tally.accepted {
            loop {
                let reason = check_reason(&http, &url, token).await;
                if reason == "revoked" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "an accepted revocation reads {reason:?} on :{port}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "figure: audit enforced everywhere after {:?}",
        started.elapsed()
    );
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
