//! Micro-benchmarks of the read path's CPU work: `Verifier::verify` of one
//! token for each algorithm family revokd supports (HS256, RS256, ES256,
//! EdDSA), keys parsed once as the server does.
//!
//! The replica lookup that follows verification in a check
//! (`Replica::lookup`) is not measured here: it answers only once the
//! replica is loaded and proven current, which only its follower can mark
//! (from a live Redis stream), and a stand-in map would measure something
//! else. `bench/run.sh` measures the whole check over HTTP instead.
//!
//! The keys are the throwaway test keys of `tests/fixtures/keys/`.
//! Measurement time is kept short (2 s per benchmark, 0.5 s warm-up) so the
//! suite runs in well under a minute; pass criterion's own options after
//! `--` to change that:
//!
//! ```text
//! cargo bench --bench verify
//! cargo bench --bench verify -- --measurement-time 5 ES256
//! ```

use std::{hint::black_box, path::PathBuf, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use revokd::token::{KeySettings, Minter, Verifier};
use revokd_jobs::now_unix;

const SECRET: &str = "bench-secret-that-is-long-enough-for-hs256";

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

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for (name, settings) in families() {
        let verifier = Verifier::new(&settings).expect("verification key");
        let minter = Minter::new(&settings).expect("signing key");
        let now = now_unix();
        // As `revokd mint` makes them: sub, iat, exp and a UUIDv7 jti.
        let token = minter.mint("bench", 3600, true, now).expect("mint");
        verifier
            .verify(&token, now)
            .expect("the minted token verifies");
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(black_box(&token), black_box(now)))
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
    targets = verify
}
criterion_main!(benches);
