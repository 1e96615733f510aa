//! The bench's table (stdout) and its checks of what each step did.

use std::time::Duration;

use anyhow::bail;

use crate::{BATCH, Results, to_i64};

pub(crate) fn print_report(r: &Results) {
    let secs = |d: Duration| d.as_secs_f64();
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let c = &r.cleanup.value;
    let b = &r.rebuild.value;
    println!(
        "revokd maintenance, {} rows; Postgres {}, Redis {}; delete batch {BATCH}, leeway {} s",
        r.rows, r.pg_version, r.redis_version, r.leeway
    );
    println!(
        "{} cores; load average {} at the start, {} at the end",
        std::thread::available_parallelism().map_or(0, usize::from),
        r.load_start,
        r.load_end
    );
    println!(
        "{:<44} {:>9} {:>9} {:>11}",
        "step", "rows", "time s", "rows/s"
    );
    let line = |name: &str, n: u64, d: Duration| {
        println!(
            "{:<44} {:>9} {:>9.2} {:>11.0}",
            name,
            n,
            secs(d),
            rate(n, d)
        );
    };
    line("insert expired (generate_series)", r.rows, r.insert_expired);
    line(
        "cleanup: Maintenance::cleanup (deleted/s)",
        c.tokens_deleted,
        r.cleanup.took,
    );
    line(
        "insert expired again (generate_series)",
        r.rows,
        r.insert_expired_again,
    );
    line(
        "delete only: delete_expired_tokens loop",
        r.delete.value,
        r.delete.took,
    );
    line("insert live (generate_series)", r.rows, r.insert_live);
    line(
        "rebuild: Maintenance::rebuild (entries/s)",
        b.tokens,
        r.rebuild.took,
    );
    println!(
        "cleanup report: tokens_deleted {}, subjects_deleted {}, audit_deleted {}, \
         jobs_vacuumed {}, redis_restored {} (of {} live rows); rows left {}",
        c.tokens_deleted,
        c.subjects_deleted,
        c.audit_deleted,
        c.jobs_vacuumed,
        c.redis_restored,
        r.live,
        r.rows_after_cleanup
    );
    println!(
        "delete only: {} statements of up to {BATCH} rows, {:.1} ms each on average",
        r.delete_batches,
        secs(r.delete.took) * 1e3 / r.delete_batches.max(1) as f64
    );
    println!(
        "rebuild report: tokens {}, subjects {}, restored {}; {{prefix}}jti:* keys in Redis \
         after: {} ({})",
        b.tokens,
        b.subjects,
        b.restored,
        r.jti_keys,
        if r.jti_keys == r.rows {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    let delta = r.used_memory_after as f64 - r.used_memory_before as f64;
    print!(
        "redis memory (approximate, shared server): used_memory {:.1} -> {:.1} MiB, \
         delta {:.1} MiB = {:.0} B/key",
        mib(r.used_memory_before as f64),
        mib(r.used_memory_after as f64),
        mib(delta),
        delta / r.jti_keys.max(1) as f64
    );
    match r.sampled_bytes_per_key {
        Some(per_key) => println!(
            "; MEMORY USAGE of {} sampled keys: {:.0} B/key x {} keys = {:.1} MiB",
            r.sampled_keys,
            per_key,
            r.jti_keys,
            mib(per_key * r.jti_keys as f64)
        ),
        None => println!(),
    }
    if !r.other_keys.is_empty() {
        let keys: Vec<String> = r
            .other_keys
            .iter()
            .map(|(key, bytes)| match bytes {
                Some(bytes) => format!("{key} {:.1} MiB", mib(*bytes as f64)),
                None => format!("{key} ?"),
            })
            .collect();
        println!(
            "other keys under the prefix after the rebuild (MEMORY USAGE): {}",
            keys.join(", ")
        );
    }
}

/// Fails the run when a step did not do what it should have.
pub(crate) fn check(r: &Results) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if r.cleanup.value.tokens_deleted != r.rows {
        problems.push(format!(
            "cleanup deleted {} rows, expected {}",
            r.cleanup.value.tokens_deleted, r.rows
        ));
    }
    if r.rows_after_cleanup != to_i64(r.live)? {
        problems.push(format!(
            "{} rows left after cleanup, expected {}",
            r.rows_after_cleanup, r.live
        ));
    }
    if r.cleanup.value.redis_restored != r.live {
        problems.push(format!(
            "cleanup restored {} keys, expected {}",
            r.cleanup.value.redis_restored, r.live
        ));
    }
    if r.delete.value != r.rows {
        problems.push(format!(
            "delete loop deleted {} rows, expected {}",
            r.delete.value, r.rows
        ));
    }
    if r.rebuild.value.tokens != r.rows || r.rebuild.value.restored != r.rows {
        problems.push(format!(
            "rebuild streamed {} and restored {} entries, expected {}",
            r.rebuild.value.tokens, r.rebuild.value.restored, r.rows
        ));
    }
    if r.jti_keys != r.rows {
        problems.push(format!(
            "{} jti keys in Redis after the rebuild, expected {}",
            r.jti_keys, r.rows
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}
