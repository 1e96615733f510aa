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

/// The replica as it was before the compact token table (exact ids, `i64`
/// times): the property test below holds the compact one to its answers.
#[derive(Debug, Default)]
struct Reference {
    tokens: std::collections::HashMap<String, i64>,
    subjects: std::collections::HashMap<String, (i64, i64)>,
}

impl Reference {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::Token { id, until } => {
                let e = self.tokens.entry(id.clone()).or_insert(*until);
                *e = (*e).max(*until);
            }
            Event::Subject {
                id,
                not_before,
                until,
            } => {
                let e = self
                    .subjects
                    .entry(id.clone())
                    .or_insert((*not_before, *until));
                *e = (e.0.max(*not_before), e.1.max(*until));
            }
            _ => unreachable!("only tokens and watermarks are generated"),
        }
    }

    fn sweep(&mut self, now: i64) {
        self.tokens.retain(|_, until| *until > now);
        self.subjects.retain(|_, (_, until)| *until > now);
    }

    fn lookup(&self, token: &str, subject: &str, now: i64) -> (bool, Option<i64>) {
        let denied = self.tokens.get(token).is_some_and(|until| *until > now);
        let nb = self
            .subjects
            .get(subject)
            .and_then(|(nb, until)| (*until > now).then_some(*nb));
        (denied, nb)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Event),
    Sweep(i64),
    Check(String, String, i64),
}

const BASE: i64 = 1_800_000_000;

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let time = (-50i64..50).prop_map(|d| BASE + d);
    let token = (0..24u8).prop_map(|i| format!("jti-{i}"));
    let subject = (0..8u8).prop_map(|i| format!("user-{i}"));
    prop_oneof![
        4 => (token.clone(), time.clone()).prop_map(|(id, until)| Op::Apply(Event::Token { id, until })),
        2 => (subject.clone(), time.clone(), time.clone()).prop_map(|(id, not_before, until)| {
            Op::Apply(Event::Subject { id, not_before, until })
        }),
        1 => time.clone().prop_map(Op::Sweep),
        4 => (token, subject, time).prop_map(|(t, s, now)| Op::Check(t, s, now)),
    ]
}

proptest::proptest! {
    /// Same answers as the reference for any mix of inserts, watermarks,
    /// sweeps and checks, at any time.
    #[test]
    fn the_compact_replica_answers_as_the_reference_does(ops in proptest::collection::vec(op(), 1..200)) {
        let replica = Replica::new(Duration::from_secs(3600));
        replica.mark_current();
        let mut reference = Reference::default();
        for op in &ops {
            match op {
                Op::Apply(event) => {
                    replica.apply(event);
                    reference.apply(event);
                }
                Op::Sweep(now) => {
                    replica.sweep(*now);
                    reference.sweep(*now);
                }
                Op::Check(token, subject, now) => {
                    proptest::prop_assert_eq!(
                        replica.lookup(token, Some(subject), *now),
                        Some(reference.lookup(token, subject, *now)),
                        "{} / {} at {}", token, subject, now
                    );
                }
            }
        }
        for now in (BASE - 60..BASE + 60).step_by(7) {
            for i in 0..24 {
                let (token, subject) = (format!("jti-{i}"), format!("user-{}", i % 8));
                proptest::prop_assert_eq!(
                    replica.lookup(&token, Some(&subject), now),
                    Some(reference.lookup(&token, &subject, now))
                );
            }
        }
        let live = reference.tokens.len();
        replica.sweep(BASE - 60);
        proptest::prop_assert_eq!(replica.len().0, live, "sweeping the past drops nothing");
    }
}

#[test]
fn a_reserved_table_takes_that_many_tokens_without_growing() {
    let replica = Replica::new(Duration::from_secs(1));
    replica.insert_token(super::table::TokenKey::of(b"before"), 1_000);
    replica.reserve_tokens(50_000);
    let capacities = || -> Vec<usize> {
        replica
            .tokens
            .shards()
            .iter()
            .map(|s| s.read().capacity())
            .collect()
    };
    let reserved = capacities();
    assert!(reserved.iter().sum::<usize>() >= 50_000, "{reserved:?}");
    for i in 0..45_000 {
        let id = format!("token-{i}");
        replica.insert_token(super::table::TokenKey::of(id.as_bytes()), 1_000);
    }
    assert_eq!(capacities(), reserved, "no shard grew");
    replica.mark_current();
    assert_eq!(replica.lookup("token-44999", None, 10), Some((true, None)));
    assert_eq!(replica.lookup("before", None, 10), Some((true, None)));
    assert_eq!(replica.lookup("token-45000", None, 10), Some((false, None)));
}

/// A stream entry's fields, as the follower reads them.
fn entry(fields: &[(&str, &str)]) -> std::collections::HashMap<String, redis::Value> {
    fields
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                redis::Value::BulkString(v.as_bytes().to_vec()),
            )
        })
        .collect()
}

#[test]
fn a_grouped_entry_parses_to_its_tokens_and_a_malformed_one_to_nothing() {
    let ids = r#"["a","100","b\"\/é","200"]"#;
    let event = Event::parse(&entry(&[("k", "T"), ("ids", ids)])).unwrap();
    assert_eq!(
        event,
        Event::Tokens(vec![("a".into(), 100), ("b\"/é".into(), 200)])
    );
    assert_eq!(event.token_ids().collect::<Vec<_>>(), ["a", "b\"/é"]);
    for bad in [r#"["a","100","b"]"#, r#"["a","soon"]"#, "{}", "not json"] {
        assert_eq!(
            Event::parse(&entry(&[("k", "T"), ("ids", bad)])),
            None,
            "{bad}"
        );
    }
    assert_eq!(Event::parse(&entry(&[("k", "T")])), None);
    let one = Event::parse(&entry(&[("k", "t"), ("id", "c"), ("until", "300")])).unwrap();
    assert_eq!(one.token_ids().collect::<Vec<_>>(), ["c"]);

    let replica = Replica::new(Duration::from_secs(1));
    replica.apply(&event);
    replica.apply(&Event::Tokens(vec![("a".into(), 50)]));
    for (id, denied) in [("a", true), ("b\"/é", true), ("c", false)] {
        assert_eq!(replica.denies(id, 60), denied, "{id}");
    }
    assert!(replica.denies("a", 99), "the later end stays");
}
