//! The Sentinel topology ([`testkit::SentinelTopology`]) does what revokd's
//! high-availability tests rely on: a formed topology whose replica follows
//! the primary, and a failover to the replica, with the data, after the
//! primary is killed.

// Test code: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redis::Commands;
use testkit::SentinelTopology;

fn connect(topology: &SentinelTopology, port: u16) -> redis::Connection {
    redis::Client::open(topology.redis_url(port))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

#[tokio::test]
async fn sentinels_fail_over_to_the_replica() {
    let started = Instant::now();
    let mut topology = SentinelTopology::start().await;
    eprintln!(
        "figure: topology formed in {:?} ({:?} in all)",
        topology.formed_in(),
        started.elapsed()
    );
    assert_eq!(topology.master_name(), SentinelTopology::MASTER);
    let sentinels = topology.sentinels();
    assert_eq!(sentinels.split(',').count(), 3, "{sentinels}");
    assert!(
        sentinels.split(',').all(|s| s.starts_with("127.0.0.1:")),
        "{sentinels}"
    );
    let [first, replica] = topology.server_ports();
    assert_eq!(topology.primary_port().await, first);
    assert_eq!(topology.replica_port().await, replica);

    // A write on the primary reaches the replica, which refuses writes.
    let mut primary = connect(&topology, first);
    let () = primary.set("sentinel-harness", "before").unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut primary)
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the write");
    let mut on_replica = connect(&topology, replica);
    let read: Option<String> = on_replica.get("sentinel-harness").unwrap();
    assert_eq!(read.as_deref(), Some("before"));
    let refused: redis::RedisResult<()> = on_replica.set("sentinel-harness", "on the replica");
    assert!(refused.is_err(), "a replica accepted a write");

    // kill -9 of the primary: the sentinels promote the replica.
    let killed = topology.kill_primary().await;
    assert_eq!(killed, first);
    let (promoted, took) = topology
        .wait_failover(killed, Duration::from_secs(15))
        .await;
    eprintln!("figure: failover in {took:?}");
    assert_eq!(promoted, replica);
    assert_eq!(topology.primary_port().await, replica);

    // The new primary has the data and takes writes.
    let mut new_primary = connect(&topology, promoted);
    let read: Option<String> = new_primary.get("sentinel-harness").unwrap();
    assert_eq!(read.as_deref(), Some("before"));
    let () = new_primary.set("sentinel-harness", "after").unwrap();
    let read: Option<String> = new_primary.get("sentinel-harness").unwrap();
    assert_eq!(read.as_deref(), Some("after"));
}
