//! A 2xx is a promise: a revocation answered 2xx is refused by every API
//! process, whatever Redis does next — refuses writes, restarts empty, or
//! both while Postgres is down — and ends up in Postgres and in Redis.
//!
//! By fault: `redis_faults` (Redis refuses writes, goes down, loses
//! entries), `postgres_faults` (Postgres cut, alone or with a Redis crash or
//! a killed process), `resync` (the pass that copies Postgres into Redis).

mod postgres_faults;
mod redis_faults;
mod resync;

use std::time::{Duration, Instant};

use crate::helpers::{Node, eventually};

pub(super) fn token_id(node: &Node, token: &str) -> String {
    node.services
        .verifier
        .verify_signature(token)
        .unwrap()
        .token_id
}

/// Waits until the deny-list is complete in Redis (the marker is set).
pub(super) async fn marker_set(node: &Node) {
    let deny = node.services.deny_fast.clone();
    eventually(Duration::from_secs(10), "marker set", || {
        let deny = deny.clone();
        async move { deny.marker_present().await.unwrap_or(false) }
    })
    .await;
}

/// Waits until every node gives `want` for every token.
pub(super) async fn all_say(
    nodes: &[&Node],
    tokens: &[&str],
    want: &str,
    deadline: Duration,
    what: &str,
) {
    let started = Instant::now();
    for (node, token) in nodes
        .iter()
        .flat_map(|n| tokens.iter().map(move |t| (n, *t)))
    {
        loop {
            let got = node.reason(token).await;
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: {} says {got:?}, not {want:?}, after {:?}",
                node.addr,
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
