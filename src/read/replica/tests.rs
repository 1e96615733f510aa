//! Unit tests of the replica: convergence of events in any order, freshness
//! on the paused tokio clock, stream id order.

use std::time::Duration;

use tokio::time::{Instant, advance};

use super::{Event, Replica, follower::id_lt};

#[test]
fn events_in_any_order_converge() {
    let a = Replica::new(Duration::from_secs(1));
    let b = Replica::new(Duration::from_secs(1));
    let events = [
        Event::Token {
            id: "t".into(),
            until: 100,
        },
        Event::Token {
            id: "t".into(),
            until: 50,
        },
        Event::Subject {
            id: "s".into(),
            not_before: 10,
            until: 90,
        },
        Event::Subject {
            id: "s".into(),
            not_before: 5,
            until: 95,
        },
    ];
    events.iter().for_each(|e| a.apply(e));
    events.iter().rev().for_each(|e| b.apply(e));
    for r in [&a, &b] {
        r.mark_current();
        assert_eq!(r.lookup("t", Some("s"), 60), Some((true, Some(10))));
        assert_eq!(r.lookup("t", Some("s"), 100), Some((false, None)));
    }
}

#[tokio::test(start_paused = true)]
async fn an_unproven_replica_declines() {
    let r = Replica::new(Duration::from_secs(1));
    assert_eq!(r.lookup("t", None, 0), None, "not loaded");
    r.freshness.proven_at(Instant::now());
    assert_eq!(
        r.lookup("t", None, 0),
        None,
        "a read before the load proves nothing"
    );
    r.mark_current();
    assert_eq!(r.lookup("t", None, 0), Some((false, None)));
    r.freshness.invalidate();
    assert_eq!(r.lookup("t", None, 0), None, "stream broken");
}

#[tokio::test(start_paused = true)]
async fn freshness_lapses_after_max_lag_and_not_before() {
    let r = Replica::new(Duration::from_secs(1));
    r.mark_current();
    advance(Duration::from_millis(1_000)).await;
    assert!(r.is_fresh(), "proof exactly max_lag old");
    advance(Duration::from_millis(1)).await;
    assert!(!r.is_fresh(), "proof older than max_lag");
    r.freshness
        .proven_at(Instant::now() - Duration::from_millis(1_500));
    assert!(!r.is_fresh(), "an older proof does not renew it");
    r.freshness.proven_at(Instant::now());
    assert!(r.is_fresh(), "a new proof does");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_proof_since_an_instant() {
    let r = Replica::new(Duration::from_secs(10));
    r.mark_current();
    let since = Instant::now();
    assert!(r.freshness.proven_since(since), "proven at `since` counts");
    advance(Duration::from_millis(5)).await;
    let since = Instant::now();
    assert!(!r.freshness.proven_since(since));
    let started = Instant::now();
    r.wait_current_since(since, Duration::from_millis(50)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "waited to the timeout"
    );
    r.freshness.proven_at(Instant::now());
    assert!(r.freshness.proven_since(since));
}

#[test]
fn stream_ids_compare_numerically() {
    assert!(id_lt("9-0", "10-0"));
    assert!(id_lt("10-4", "10-5"));
    assert!(!id_lt("10-5", "10-5"));
}
