//! Micro-benchmarks of the read path's CPU work:
//!
//! - `verify/<alg>`: `Verifier::verify` of one token for each algorithm
//!   family revokd supports (HS256, RS256, ES256, EdDSA), keys parsed once as
//!   the server does;
//! - `verify+lookup/<alg>`: the same, then `Replica::lookup` of the verified
//!   token id and subject, as a check in read mode `replica` does;
//! - `cached+lookup/<alg>`: the same through a warm `VerifyCache` (a token
//!   presented again: SHA-256 of the token, a cache hit, the time checks),
//!   then the lookup — what a check costs the server for a token it has
//!   verified before;
//! - `replica_lookup/hit` and `replica_lookup/miss`: `Replica::lookup` alone,
//!   for a token id on the deny-list and one not on it (a fresh UUIDv7 jti),
//!   both with a subject that has no watermark.
//!
//! The replica holds 100,000 revoked tokens (random 32-hex ids, as UUID jtis
//! are, ending in 6 h), as `bench/run.sh` loads, filled with
//! `Replica::apply` and marked current with `Replica::mark_current` (the
//! follower does that from a live Redis stream in the server). Its maximum
//! lag is an hour, so it stays current for the whole run: a lookup on a
//! replica that is not answers `None`, and the setup checks that it answers.
//! The tokens benchmarked are not revoked, so `verify+lookup` is the path of
//! a check answering 200.
//!
//! The keys are the throwaway test keys of `tests/fixtures/keys/`.
//! Measurement time is kept short (2 s per benchmark, 0.5 s warm-up) so the
//! suite runs in about half a minute; pass criterion's own options after
//! `--` to change that:
//!
//! ```text
//! cargo bench --features bench --bench verify
//! cargo bench --features bench --bench verify -- --measurement-time 5 ES256
//! cargo bench --features bench --bench verify -- replica_lookup
//! ```

use std::{hint::black_box, path::PathBuf, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use revokd::{
    read::replica::{Event, Replica},
    read::verify_cache::{Lookup, VerifyCache},
    token::{KeySettings, Minter, Verifier},
};
use revokd_jobs::now_unix;
use uuid::Uuid;

const SECRET: &str = "bench-secret-that-is-long-enough-for-hs256";
/// Revoked tokens in the replica, as `bench/run.sh` loads.
const ENTRIES: usize = 100_000;
/// The subject of the minted tokens.
const SUBJECT: &str = "bench";

fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// The four families, each as `revokd serve` would be configured.
fn families() -> Vec<(&'static str, KeySettings)> {
    let asymmetric = |alg: &str, public: &str, private: &str| KeySettings {
        algorithm: Some(alg.to_owned()),
        public_key_file: Some(key(public)),
        private_key_file: Some(key(private)),
        leeway_secs: 30,
        ..KeySettings::default()
    };
    vec![
        (
            "HS256",
            KeySettings {
                secret: Some(SECRET.to_owned()),
                leeway_secs: 30,
                ..KeySettings::default()
            },
        ),
        (
            "RS256",
            asymmetric("RS256", "rsa_public.pem", "rsa_private.pem"),
        ),
        (
            "ES256",
            asymmetric("ES256", "ec256_public.pem", "ec256_private.pem"),
        ),
        (
            "EdDSA",
            asymmetric("EdDSA", "ed25519_public.pem", "ed25519_private.pem"),
        ),
    ]
}

/// A token as `revokd mint` makes it (sub, iat, exp and a UUIDv7 jti),
/// checked to verify.
fn minted(verifier: &Verifier, settings: &KeySettings, now: i64) -> String {
    let minter = Minter::new(settings).expect("signing key");
    let token = minter.mint(SUBJECT, 3600, true, now).expect("mint");
    verifier
        .verify(&token, now)
        .expect("the minted token verifies");
    token
}

/// A replica holding `ENTRIES` revoked tokens, current for an hour, and one
/// of their ids.
fn filled_replica(now: i64) -> (Arc<Replica>, String) {
    let replica = Replica::new(Duration::from_secs(3600));
    let mut revoked = String::new();
    for _ in 0..ENTRIES {
        let id = Uuid::new_v4().simple().to_string();
        replica.apply(&Event::Token {
            id: id.clone(),
            until: now + 21_600,
        });
        revoked = id;
    }
    replica.mark_current();
    assert_eq!(replica.len(), (ENTRIES, 0));
    assert_eq!(
        replica.lookup(&revoked, Some(SUBJECT), now),
        Some((true, None)),
        "the replica answers, and has the revoked id"
    );
    (replica, revoked)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for (name, settings) in families() {
        let verifier = Verifier::new(&settings).expect("verification key");
        let now = now_unix();
        let token = minted(&verifier, &settings, now);
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(black_box(&token), black_box(now)))
        });
    }
    group.finish();
}

fn verify_and_lookup(c: &mut Criterion) {
    let now = now_unix();
    let (replica, _) = filled_replica(now);
    let mut group = c.benchmark_group("verify+lookup");
    for (name, settings) in families() {
        let verifier = Verifier::new(&settings).expect("verification key");
        let token = minted(&verifier, &settings, now);
        let claims = verifier.verify(&token, now).expect("verifies");
        assert_eq!(
            replica.lookup(&claims.token_id, claims.sub.as_deref(), now),
            Some((false, None)),
            "the minted token is not revoked"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let claims = verifier
                    .verify(black_box(&token), black_box(now))
                    .expect("verifies");
                replica.lookup(&claims.token_id, claims.sub.as_deref(), black_box(now))
            })
        });
    }
    group.finish();
}

fn cached_and_lookup(c: &mut Criterion) {
    let now = now_unix();
    let (replica, _) = filled_replica(now);
    let mut group = c.benchmark_group("cached+lookup");
    for (name, settings) in families() {
        let verifier = Verifier::new(&settings).expect("verification key");
        let token = minted(&verifier, &settings, now);
        let cache = VerifyCache::new(1024).expect("a cache");
        assert_eq!(cache.verify(&verifier, &token, now).1, Lookup::Miss);
        assert_eq!(cache.verify(&verifier, &token, now).1, Lookup::Hit);
        group.bench_function(name, |b| {
            b.iter(|| {
                let (claims, _) = cache.verify(&verifier, black_box(&token), black_box(now));
                let claims = claims.expect("verifies");
                replica.lookup(&claims.token_id, claims.sub.as_deref(), black_box(now))
            })
        });
    }
    group.finish();
}

fn replica_lookup(c: &mut Criterion) {
    let now = now_unix();
    let (replica, revoked) = filled_replica(now);
    let live = Uuid::now_v7().simple().to_string();
    assert_eq!(
        replica.lookup(&live, Some(SUBJECT), now),
        Some((false, None))
    );
    let mut group = c.benchmark_group("replica_lookup");
    for (name, id) in [("hit", &revoked), ("miss", &live)] {
        group.bench_function(name, |b| {
            b.iter(|| replica.lookup(black_box(id), black_box(Some(SUBJECT)), black_box(now)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = verify, verify_and_lookup, cached_and_lookup, replica_lookup
}
criterion_main!(benches);
