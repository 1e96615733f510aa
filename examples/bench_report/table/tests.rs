//! The table's ratios, targets and formatting.

use super::*;

fn run() -> Values {
    let mut v = Values::default();
    for (key, rps) in [
        ("bare_hs256", 187_078),
        ("bare_es256", 189_848),
        ("redis_hs256", 85_381),
        ("redis_es256", 86_299),
        ("replica_hs256", 144_411),
        ("replica_es256", 135_751),
    ] {
        v.set(format!("{key}_rps"), rps);
    }
    v.set("prop_idle_p99_ms", "9.29");
    v.set("worker_applied_per_s", 18_227);
    v
}

#[test]
fn targets_are_ratios_to_the_same_runs_baselines() {
    let t = targets(&run());
    assert_eq!(fixed(t[0].value, 2), "0.77");
    assert_eq!(fixed(t[1].value, 2), "0.72");
    assert!(t[0].met() && t[1].met());
    assert_eq!(fixed(t[2].value, 2), "1.69");
    assert!(!t[2].met() && !t[3].met());
    assert!(t[4].met() && t[5].met());
}

#[test]
fn an_unmeasured_target_is_not_met() {
    let t = targets(&Values::default());
    assert!(t.iter().all(|t| !t.met()), "{t:?}");
    assert!(ratio(1.0, 0.0).is_nan());
}

#[test]
fn integers_are_grouped_by_thousands() {
    assert_eq!(fmt_int(Some("187078")), "187,078");
    assert_eq!(fmt_int(Some("1000000")), "1,000,000");
    assert_eq!(fmt_int(Some("999")), "999");
    assert_eq!(fmt_int(Some("18227.5")), "18,227.5");
    assert_eq!(fmt_int(None), "-");
}

#[test]
fn table_shows_ratios_targets_and_flags() {
    let mut v = run();
    v.set("replica_hs256_bad", 3);
    v.set("busy_worker", 40);
    v.set("quiet_wait", 180);
    let table = render(&v);
    let line = |start: &str| {
        table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{table}"))
            .to_owned()
    };
    assert!(line("| 2  replica / bare").contains("| 0.77 "));
    assert!(line("| 2  replica / bare").contains("| yes/yes "));
    assert!(line("|    replica / redis").contains("| NO/NO "));
    assert!(line("| 1c /v1/auth").contains("144,411 [3 non-2xx/errors]"));
    assert!(line("| 4  worker").contains("(*40%)"));
    assert!(line("| 4  worker").contains("| 18,227 "));
    assert!(table.contains("(*N%): other processes"));
    // Every row is there, measured or not.
    let rows = table
        .lines()
        .filter(|l| l.starts_with('|') && l.ends_with('|'));
    assert_eq!(rows.count(), 39, "{table}");
}

#[test]
fn cpu_per_request_adds_redis_server_only_when_it_is_local() {
    let mut v = Values::default();
    v.set("clk_tck", 100);
    for key in ["redis_hs256", "replica_hs256"] {
        v.set(format!("{key}_requests"), 1_000_000);
        v.set(format!("{key}_cpu_ticks"), 1500);
        v.set(format!("{key}_redis_cpu_ticks"), 600);
    }
    v.set("redis_local", 1);
    let table = render(&v);
    assert!(table.contains("15.0 + redis 6.0 us"), "{table}");
    assert!(table.contains("| 15.0 us "), "{table}");
}
