//! Prometheus metrics (the `metrics` facade with the Prometheus exporter):
//! names in one place, recorded where things happen, rendered by `/metrics`.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::queue::QueueDepth;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The log target of one revocation's way to the replicas, stage by stage
/// (`RUST_LOG=revokd::propagation=debug`; the log's timestamps time them):
/// recorded and queued in the API, woken, picked up and written to Redis in
/// the worker, read off the stream by each replica. `bench/run.sh` turns
/// them into per-stage figures with `BENCH_PROPAGATION_STAGES=1`.
pub const PROPAGATION: &str = "revokd::propagation";

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(CHECK_SECONDS.into()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Histograms buffer samples until drained: drain them every few
        // seconds, or an unscraped process grows without bound.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        // Fails only when another recorder is installed; ours still renders
        // what it sees (nothing), never panics.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// `# HELP` text of every metric family revokd records.
const HELP: &[(&str, &str)] = &[
    (
        "revokd_checks_total",
        "Token checks answered, by result (active, unavailable, or the reason) and by the store that answered",
    ),
    (
        CHECK_SECONDS,
        "Time to answer a check (verification and lookup), in seconds",
    ),
    (
        "revokd_verify_cache_total",
        "Token verifications through the verify cache, by outcome (hit, miss)",
    ),
    (
        "revokd_verify_cache_entries",
        "Tokens held in the verify cache",
    ),
    (
        "revokd_jwks_refresh_total",
        "Fetches of an identity provider's keys, by issuer and result (ok, error)",
    ),
    ("revokd_jwks_keys", "Verification keys held, by issuer"),
    (
        "revokd_jwks_age_seconds",
        "Seconds since an identity provider's keys were last fetched, by issuer",
    ),
    (
        "revokd_replica_loads_total",
        "Full loads of the local replica, by source (redis, postgres)",
    ),
    (
        "revokd_jobs_applied_total",
        "Jobs a worker of this process applied, by kind",
    ),
    (
        "revokd_jobs_retried_total",
        "Job attempts that failed on a store and were retried in the worker slot",
    ),
    (
        "revokd_jobs_requeued_total",
        "Jobs handed back to the queue with a delay after a store failure",
    ),
    (
        "revokd_jobs_dead_total",
        "Jobs set aside in the queue's dead set, by cause",
    ),
    (
        "revokd_refresh_reuse_total",
        "Rotated refresh tokens presented again (their family revoked)",
    ),
    (
        "revokd_fallback_activations_total",
        "Times a store's breaker opened and checks fell back, by store",
    ),
    (
        "revokd_postgres_switches_total",
        "Times the Postgres pool was pointed at another host of a multi-host DATABASE_URL",
    ),
    ("revokd_queue_jobs", "Jobs in the queue, by state"),
    (
        "revokd_denylist_entries",
        "Live revocations in Postgres, by kind (token, subject)",
    ),
    (
        "revokd_last_cleanup",
        "Counts of the last cleanup, by what it counted",
    ),
    (
        "revokd_last_cleanup_timestamp_seconds",
        "When the last cleanup finished (unix seconds): a scheduler or worker that stopped shows as its age",
    ),
    (
        "revokd_spool_appended_total",
        "Revocations appended to the local spool while Postgres was unreachable",
    ),
    (
        "revokd_spool_pending_jobs",
        "Revocations in the local spool not yet recorded in Postgres",
    ),
    (
        "revokd_spool_replayed_total",
        "Spooled revocations recorded in Postgres",
    ),
    (
        "revokd_writes_degraded_total",
        "Revocations accepted without the queue, by where they were made durable (postgres, spool)",
    ),
    (
        "revokd_pending_revocations",
        "Revocations in Postgres that Redis may not hold yet, as this process last read them, by kind",
    ),
    (
        "revokd_pending_overflow",
        "1 while more revocations are pending than can be listed (checks then go to Postgres)",
    ),
];

fn describe() {
    for &(name, help) in HELP {
        if name.ends_with("_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else {
            metrics::describe_gauge!(name, help);
        }
    }
}

const CHECK_SECONDS: &str = "revokd_check_duration_seconds";

/// Every `result` label of `revokd_checks_total`: `active`, `unavailable`,
/// then each reason.
const CHECK_RESULTS: [&str; 15] = [
    "active",
    "unavailable",
    "keys_unavailable",
    "revoked",
    "subject_revoked",
    "issuer_revoked",
    "expired",
    "not_yet_valid",
    "invalid_signature",
    "invalid_issuer",
    "invalid_audience",
    "malformed",
    "unsupported_algorithm",
    "reused",
    "unknown",
];
/// Every `source` label of `revokd_checks_total`.
const CHECK_SOURCES: [&str; 5] = ["replica", "redis", "postgres", "pending", "none"];

/// The read path's metrics, registered once: recording a check is then an
/// atomic add and a histogram sample, with no registry lookup per request.
struct CheckInstruments {
    /// `revokd_checks_total`, by result (row) and source (column).
    checks: Vec<Counter>,
    duration: Histogram,
}

fn check_instruments() -> &'static CheckInstruments {
    static INSTRUMENTS: OnceLock<CheckInstruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        // Handles taken before the recorder is installed would record nowhere.
        handle();
        let checks = CHECK_RESULTS
            .iter()
            .flat_map(|&result| {
                CHECK_SOURCES.iter().map(move |&source| {
                    counter!("revokd_checks_total", "result" => result, "source" => source)
                })
            })
            .collect();
        CheckInstruments {
            checks,
            duration: histogram!(CHECK_SECONDS),
        }
    })
}

/// A check answered: its result (`active`, a reason, `unavailable`) and the
/// store that answered (`replica`, `redis`, `postgres`, `none` when
/// verification alone decided).
pub fn check(result: &'static str, source: &'static str, seconds: f64) {
    let instruments = check_instruments();
    let row = CHECK_RESULTS.iter().position(|&r| r == result);
    let column = CHECK_SOURCES.iter().position(|&s| s == source);
    match (row, column) {
        (Some(row), Some(column)) => {
            instruments.checks[row * CHECK_SOURCES.len() + column].increment(1);
        }
        _ => counter!("revokd_checks_total", "result" => result, "source" => source).increment(1),
    }
    instruments.duration.record(seconds);
}

/// The verify cache's counts so far (kept by the checker), sampled at
/// scrape time.
pub fn verify_cache(hits: u64, misses: u64, entries: usize) {
    counter!("revokd_verify_cache_total", "outcome" => "hit").absolute(hits);
    counter!("revokd_verify_cache_total", "outcome" => "miss").absolute(misses);
    gauge!("revokd_verify_cache_entries").set(entries as f64);
}

/// A fetch of an issuer's keys, by issuer and result (`ok`, `error`).
pub fn jwks_refresh(issuer: &str, result: &'static str) {
    counter!("revokd_jwks_refresh_total", "issuer" => issuer.to_owned(), "result" => result)
        .increment(1);
}

/// An issuer's keys, sampled at scrape time: how many, and seconds since
/// they were fetched (absent before the first fetch, and for local keys).
pub fn jwks_keys(issuer: &str, keys: usize, age_secs: Option<f64>) {
    gauge!("revokd_jwks_keys", "issuer" => issuer.to_owned()).set(keys as f64);
    if let Some(age) = age_secs {
        gauge!("revokd_jwks_age_seconds", "issuer" => issuer.to_owned()).set(age);
    }
}

/// The local replica loaded in full, from `source` (`redis`, `postgres`).
pub fn replica_loaded(source: &'static str) {
    counter!("revokd_replica_loads_total", "source" => source).increment(1);
}

/// A job applied, by kind.
pub fn job_applied(kind: &'static str) {
    counter!("revokd_jobs_applied_total", "kind" => kind).increment(1);
}

/// A job attempt failed on a store and will be retried.
pub fn job_retried() {
    counter!("revokd_jobs_retried_total").increment(1);
}

/// A job set aside for good, by cause (`invalid`, `undecodable`,
/// `unknown_kind`, `postgres_data`, ...).
pub fn job_dead(cause: &'static str) {
    counter!("revokd_jobs_dead_total", "cause" => cause).increment(1);
}

/// A job handed back to the queue after a transient failure.
pub fn job_requeued() {
    counter!("revokd_jobs_requeued_total").increment(1);
}

/// A rotated refresh token was presented again (family revoked).
pub fn refresh_reuse() {
    counter!("revokd_refresh_reuse_total").increment(1);
}

/// A store's breaker opened: reads fall back.
pub fn fallback_activated(store: &'static str) {
    counter!("revokd_fallback_activations_total", "store" => store).increment(1);
}

/// The Postgres pool was pointed at another host.
pub fn postgres_switched() {
    counter!("revokd_postgres_switches_total").increment(1);
}

/// Queue depth, sampled at scrape time.
pub fn queue_depth(depth: QueueDepth) {
    gauge!("revokd_queue_jobs", "state" => "pending").set(depth.pending as f64);
    gauge!("revokd_queue_jobs", "state" => "running").set(depth.running as f64);
    gauge!("revokd_queue_jobs", "state" => "failed").set(depth.failed as f64);
    gauge!("revokd_queue_jobs", "state" => "done").set(depth.done as f64);
}

/// Deny-list size (live revocations and watermarks in Postgres, the source
/// of truth), sampled at scrape time.
pub fn denylist_size(tokens: i64, subjects: i64, issuers: i64) {
    gauge!("revokd_denylist_entries", "kind" => "token").set(tokens as f64);
    gauge!("revokd_denylist_entries", "kind" => "subject").set(subjects as f64);
    gauge!("revokd_denylist_entries", "kind" => "issuer").set(issuers as f64);
}

/// The counts of the last cleanup, as stored by the worker that ran it.
pub fn last_cleanup(counts: &[(&'static str, u64)], finished_at: i64) {
    for &(what, n) in counts {
        gauge!("revokd_last_cleanup", "count" => what).set(n as f64);
    }
    if finished_at > 0 {
        gauge!("revokd_last_cleanup_timestamp_seconds").set(finished_at as f64);
    }
}

/// A revocation appended to the local spool (Postgres unreachable); the
/// spool's pending count after it.
pub fn spool_appended(pending: u64) {
    counter!("revokd_spool_appended_total").increment(1);
    spool_pending(pending);
}

/// Jobs waiting in the local spool for Postgres.
pub fn spool_pending(pending: u64) {
    gauge!("revokd_spool_pending_jobs").set(pending as f64);
}

/// Spooled jobs recorded in Postgres.
pub fn spool_replayed(jobs: u64) {
    counter!("revokd_spool_replayed_total").increment(jobs);
}

/// A revocation answered without the queue (Redis refused it): recorded in
/// Postgres, or only in the spool.
pub fn write_degraded(durable_in: &'static str) {
    counter!("revokd_writes_degraded_total", "durable_in" => durable_in).increment(1);
}

/// Revocations in Postgres that Redis does not hold yet, as this process
/// last read them (checks consult them before Redis and the replica).
pub fn pending_revocations(tokens: usize, subjects: usize, overflow: bool) {
    gauge!("revokd_pending_revocations", "kind" => "token").set(tokens as f64);
    gauge!("revokd_pending_revocations", "kind" => "subject").set(subjects as f64);
    gauge!("revokd_pending_overflow").set(f64::from(u8::from(overflow)));
}
