//! The table `bench/run.sh` prints: every measurement of the run, the ratios
//! to the bare handler and to read mode `redis` measured in the same run,
//! and the targets. Targets are reported, never enforced.

use std::fmt::Write as _;

use crate::input::Values;

/// One target: a measured value, the bound it must meet, and whether it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What is measured.
    pub name: &'static str,
    /// The measured value (NaN when the run did not measure it).
    pub value: f64,
    /// The bound.
    pub bound: f64,
    /// Whether the value must be at least (`true`) or at most the bound.
    pub at_least: bool,
}

impl Target {
    /// Whether the measurement meets the target (a missing one does not).
    pub fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.bound
        } else {
            self.value <= self.bound
        }
    }

    fn word(&self) -> &'static str {
        if self.met() { "yes" } else { "NO" }
    }
}

/// A ratio of two measured rates (NaN when either is missing or the
/// divisor is zero).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The targets, from the values of one run.
pub fn targets(v: &Values) -> Vec<Target> {
    let rps = |key: &str| v.num(&format!("{key}_rps"));
    vec![
        Target {
            name: "replica / bare, HS256",
            value: ratio(rps("replica_hs256"), rps("bare_hs256")),
            bound: 0.70,
            at_least: true,
        },
        Target {
            name: "replica / bare, ES256",
            value: ratio(rps("replica_es256"), rps("bare_es256")),
            bound: 0.70,
            at_least: true,
        },
        Target {
            name: "replica / redis, HS256",
            value: ratio(rps("replica_hs256"), rps("redis_hs256")),
            bound: 3.0,
            at_least: true,
        },
        Target {
            name: "replica / redis, ES256",
            value: ratio(rps("replica_es256"), rps("redis_es256")),
            bound: 3.0,
            at_least: true,
        },
        Target {
            name: "propagation idle p99 (ms)",
            value: v.num("prop_idle_p99_ms"),
            bound: 20.0,
            at_least: false,
        },
        Target {
            name: "worker revocations/s",
            value: v.num("worker_applied_per_s"),
            bound: 5000.0,
            at_least: true,
        },
    ]
}

/// `1234567` → `1,234,567`; the digits before any `.` are grouped, the rest
/// is kept; a missing value is `-`.
pub fn fmt_int(value: Option<&str>) -> String {
    let Some(value) = value else {
        return "-".into();
    };
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (int, rest) = value.split_at(digits);
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out + rest
}

/// A number with `decimals` places, `-` when it is missing.
fn fixed(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".into()
    }
}

/// The table and its notes, as `bench/run.sh` prints them.
pub fn render(v: &Values) -> String {
    let s = |key: &str| v.get(key).unwrap_or("-").to_owned();
    let int = |key: &str| fmt_int(v.get(key));
    let lat = |a: &str, b: &str| format!("{} / {} ms", s(a), s(b));
    let mib = |key: &str| format!("{} MiB", fixed(v.num(key) / 1024.0, 1));
    // Signed: the RSS may shrink over a run.
    let growth = |key: &str| match v.num(key) / 1024.0 {
        mib if mib.is_finite() => format!("{mib:+.1} MiB"),
        _ => "- MiB".into(),
    };
    let us = |key: &str| format!("{} us", fixed(v.num(key) / 1000.0, 2));
    let ns = |key: &str| format!("{} ns", int(key));
    let flag = |key: &str| match v.get(key) {
        None | Some("0") => String::new(),
        Some(bad) => format!(" [{bad} non-2xx/errors]"),
    };
    let busy = |key: &str| {
        let busy = v.num(&format!("busy_{key}"));
        if busy > 15.0 {
            format!(" (*{busy}%)")
        } else {
            String::new()
        }
    };
    let rps = |key: &str| {
        format!(
            "{}{}{}",
            int(&format!("{key}_rps")),
            flag(&format!("{key}_bad")),
            busy(key)
        )
    };
    // Server CPU microseconds per request over the measured run, plus
    // redis-server's in read mode redis when it runs on this machine.
    let cpu = |key: &str| {
        let per_request = |ticks: &str| {
            let ticks = v.num(&format!("{key}_{ticks}"));
            let requests = v.num(&format!("{key}_requests"));
            fixed(ticks / v.num("clk_tck") * 1e6 / requests, 1)
        };
        if key.starts_with("redis_") && v.get("redis_local") == Some("1") {
            format!(
                "{} + redis {} us",
                per_request("cpu_ticks"),
                per_request("redis_cpu_ticks")
            )
        } else {
            format!("{} us", per_request("cpu_ticks"))
        }
    };
    let rate = |a: &str, b: &str| {
        fixed(
            ratio(v.num(&format!("{a}_rps")), v.num(&format!("{b}_rps"))),
            2,
        )
    };
    let met = |t: &Target| t.word();
    let targets = targets(v);

    let mut out = String::new();
    row(&mut out, ["measurement", "HS256", "ES256", "target", "met"]);
    let widths = [48, 26, 26, 15, 9].map(|n| "-".repeat(n));
    let _ = writeln!(out, "|{}|", widths.join("|"));
    for (label, mode) in [
        ("1a bare axum handler: req/s", "bare"),
        ("1b /v1/auth, read mode redis: req/s", "redis"),
        ("1c /v1/auth, read mode replica: req/s", "replica"),
        ("1d replica, verify cache off: req/s", "nocache"),
    ] {
        let (hs, es) = (format!("{mode}_hs256"), format!("{mode}_es256"));
        row(&mut out, [label, &rps(&hs), &rps(&es), "", ""]);
        row(
            &mut out,
            [
                "   p50 / p99",
                &lat(&format!("{hs}_p50"), &format!("{hs}_p99")),
                &lat(&format!("{es}_p50"), &format!("{es}_p99")),
                "",
                "",
            ],
        );
        row(
            &mut out,
            ["   server CPU per request", &cpu(&hs), &cpu(&es), "", ""],
        );
    }
    row(
        &mut out,
        [
            "2  replica / bare (req/s)",
            &rate("replica_hs256", "bare_hs256"),
            &rate("replica_es256", "bare_es256"),
            ">= 0.70",
            &format!("{}/{}", met(&targets[0]), met(&targets[1])),
        ],
    );
    row(
        &mut out,
        [
            "   replica / redis (req/s)",
            &rate("replica_hs256", "redis_hs256"),
            &rate("replica_es256", "redis_es256"),
            ">= 3.0",
            &format!("{}/{}", met(&targets[2]), met(&targets[3])),
        ],
    );
    row(
        &mut out,
        [
            "   cache off: / bare, / redis",
            &format!(
                "{}, {}",
                rate("nocache_hs256", "bare_hs256"),
                rate("nocache_hs256", "redis_hs256")
            ),
            &format!(
                "{}, {}",
                rate("nocache_es256", "bare_es256"),
                rate("nocache_es256", "redis_es256")
            ),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            &format!(
                "3  propagation idle: p50 / p99 (n={}){}",
                s("prop_idle_n"),
                busy("prop_idle")
            ),
            &lat("prop_idle_p50_ms", "prop_idle_p99_ms"),
            "",
            "p99 <= 20 ms",
            met(&targets[4]),
        ],
    );
    row(
        &mut out,
        [
            "   idle: p90 / max; POST alone p50",
            &lat("prop_idle_p90_ms", "prop_idle_max_ms"),
            &format!("POST {} ms", s("prop_idle_post_p50_ms")),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            &format!("   under wrk load: p50 / p99 (n={})", s("prop_load_n")),
            &lat("prop_load_p50_ms", "prop_load_p99_ms"),
            "",
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "   under load: p90 / max; POST alone p50",
            &lat("prop_load_p90_ms", "prop_load_max_ms"),
            &format!("POST {} ms", s("prop_load_post_p50_ms")),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "   the wrk load meanwhile: req/s; p99",
            &format!("{}{}", int("prop_load_wrk_rps"), flag("prop_load_wrk_bad")),
            &format!("p99 {} ms", s("prop_load_wrk_p99")),
            "",
            "",
        ],
    );
    let timeouts = |key: &str| v.get(key).is_some_and(|t| t != "0");
    if timeouts("prop_idle_timeouts") || timeouts("prop_load_timeouts") {
        row(
            &mut out,
            [
                "   probes not seen revoked within 5 s",
                &format!("idle {}", s("prop_idle_timeouts")),
                &format!("load {}", s("prop_load_timeouts")),
                "",
                "",
            ],
        );
    }
    row(
        &mut out,
        [
            &format!(
                "4  worker, {}-job backlog: revocations/s{}",
                int("worker_jobs"),
                busy("worker")
            ),
            &int("worker_applied_per_s"),
            &format!("after 1st row {}", int("worker_steady_per_s")),
            ">= 5,000",
            met(&targets[5]),
        ],
    );
    row(
        &mut out,
        [
            &format!(
                "   drain time (worker concurrency {})",
                s("worker_concurrency")
            ),
            &format!("{} s", s("worker_drain_s")),
            &format!("1st row after {} ms", s("worker_first_row_ms")),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "   push rate (no worker running)",
            &format!("{}/s", int("worker_push_per_s")),
            "",
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "5  API RSS, replica, 0 entries",
            &mib("rss0_rss_kb"),
            &format!("peak {}", mib("rss0_hwm_kb")),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            &format!("   API RSS, replica, {} entries", int("rss_entries")),
            &mib("rss1m_rss_kb"),
            &format!("peak {}", mib("rss1m_hwm_kb")),
            "",
            "",
        ],
    );
    let per_entry = (v.num("rss1m_rss_kb") - v.num("rss0_rss_kb")) * 1024.0 / v.num("rss_entries");
    row(
        &mut out,
        [
            "   bytes per entry (RSS difference / entries)",
            &fixed(per_entry, 0),
            "",
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            &format!("   start to replica current, 0 / {}", int("rss_entries")),
            &format!("{} ms", s("rss0_ready_ms")),
            &format!("{} ms", s("rss1m_ready_ms")),
            "",
            "",
        ],
    );
    let idle_kb = v.num("idle_rss1_kb") - v.num("idle_rss0_kb");
    row(
        &mut out,
        [
            &format!("   {} idle connections: RSS, fds", int("idle_n")),
            &format!("+{} MiB", fixed(idle_kb / 1024.0, 1)),
            &format!("+{} fds", fixed(v.num("idle_fds1") - v.num("idle_fds0"), 0)),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "   per idle connection",
            &format!("{} KiB", fixed(idle_kb / v.num("idle_n"), 1)),
            "",
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            "   RSS growth over 1c's wrk runs (no scrape)",
            &growth("replica_hs256_rss_growth_kb"),
            &growth("replica_es256_rss_growth_kb"),
            "",
            "",
        ],
    );
    row(
        &mut out,
        [
            &format!("6  verify (criterion): HS256 | ES256{}", busy("criterion")),
            &us("verify_HS256_ns"),
            &us("verify_ES256_ns"),
            "",
            "",
        ],
    );
    for (label, bench) in [
        ("verify", "verify"),
        ("verify+lookup", "verify_lookup"),
        ("cached+lookup", "cached_lookup"),
    ] {
        if bench != "verify" {
            row(
                &mut out,
                [
                    &format!("   {label} (criterion): HS256 | ES256"),
                    &us(&format!("{bench}_HS256_ns")),
                    &us(&format!("{bench}_ES256_ns")),
                    "",
                    "",
                ],
            );
        }
        row(
            &mut out,
            [
                &format!("   {label} (criterion): RS256 | EdDSA"),
                &format!("RS256 {}", us(&format!("{bench}_RS256_ns"))),
                &format!("EdDSA {}", us(&format!("{bench}_EdDSA_ns"))),
                "",
                "",
            ],
        );
    }
    row(
        &mut out,
        [
            "   replica lookup, 100,000 entries: hit | miss",
            &format!("hit {}", ns("replica_lookup_hit_ns")),
            &format!("miss {}", ns("replica_lookup_miss_ns")),
            "",
            "",
        ],
    );

    let mut text = format!(
        "\nrevokd benchmark — {}, commit {}\n{}; {} --latency on GET /v1/auth; {} revoked entries loaded\n\n",
        s("date"),
        s("commit"),
        s("machine"),
        s("wrk"),
        int("entries")
    );
    text.push_str(&out);
    let _ = writeln!(
        text,
        "\nBuild {} s, measurements {} s. Latencies: wrk --latency percentiles; propagation: POST sent → first 401.",
        s("build_s"),
        s("measure_s")
    );
    text.push_str(
        "Server CPU per request: user+system time of the server process (and of redis-server in redis mode) over the measured run / requests.\n",
    );
    if v.max_busy() > 15.0 {
        let _ = writeln!(
            text,
            "(*N%): other processes were using N % of the CPUs just before that measurement (after waiting up to {} s in all); those numbers are low.",
            s("quiet_wait")
        );
    }
    text
}

/// One row of the table.
fn row(out: &mut String, cells: [&str; 5]) {
    let _ = writeln!(
        out,
        "| {:<46} | {:<24} | {:<24} | {:<13} | {:<7} |",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    );
}

impl Values {
    /// The busiest the machine was before any measurement, in percent.
    fn max_busy(&self) -> f64 {
        self.keys()
            .filter(|k| k.starts_with("busy_"))
            .map(|k| self.num(k))
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests;
