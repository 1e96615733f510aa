//! What `bench/run.sh` leaves in its output directory, read into one flat
//! map of named values (the names the table asks for):
//!
//! - `results.env`: `KEY=VALUE` lines the script records (process CPU
//!   ticks, RSS, readiness times, how busy the machine was, the run's
//!   settings);
//! - `<key>.wrk.json`: one wrk run as `bench/report.lua` reports it →
//!   `<key>_rps`, `_p50`, `_p90`, `_p99` (ms), `_bad` (non-2xx answers and
//!   socket errors), `_requests`;
//! - `propagation_idle.txt`, `propagation_load.txt`, `worker.txt`,
//!   `idle.txt`: the result line (`<tag> k=v k=v ...`) of a bench binary →
//!   `<prefix>_<k>`;
//! - `criterion.txt`: `cargo bench -- --output-format bencher` →
//!   `verify_HS256_ns`, `verify_lookup_HS256_ns`, `replica_lookup_hit_ns`, …

use std::{collections::BTreeMap, fs, io, path::Path};

use anyhow::Context;
use serde::Deserialize;

/// Every value of one run, by name; missing ones show as `-` in the table.
#[derive(Debug, Default)]
pub struct Values(BTreeMap<String, String>);

impl Values {
    /// The value of `key` as recorded.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key` as a number (NaN when missing or not a number).
    pub fn num(&self, key: &str) -> f64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// Every recorded name.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Sets `key`.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) {
        self.0.insert(key.into(), value.to_string());
    }

    /// Reads everything a run left in `dir`.
    pub fn read_dir(dir: &Path) -> anyhow::Result<Self> {
        let mut values = Self::default();
        if let Some(text) = read_optional(&dir.join("results.env"))? {
            values.add_env(&text);
        }
        let mut names: Vec<String> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if let Some(key) = name.strip_suffix(".wrk.json") {
                let text = fs::read_to_string(dir.join(&name))?;
                let report: WrkReport =
                    serde_json::from_str(&text).with_context(|| format!("parsing {name}"))?;
                values.add_wrk(key, &report);
            }
        }
        for (file, tag, prefix) in [
            ("propagation_idle.txt", "propagation", "prop_idle"),
            ("propagation_load.txt", "propagation", "prop_load"),
            ("worker.txt", "worker", "worker"),
            ("idle.txt", "idle", "idle"),
        ] {
            if let Some(text) = read_optional(&dir.join(file))? {
                values.add_result_line(&text, tag, prefix);
            }
        }
        if let Some(text) = read_optional(&dir.join("criterion.txt"))? {
            values.add_criterion(&text);
        }
        Ok(values)
    }

    /// `KEY=VALUE` lines; the value is the rest of the line, unquoted.
    pub fn add_env(&mut self, text: &str) {
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                self.set(key.trim(), value);
            }
        }
    }

    /// One wrk run under `key`, latencies in milliseconds.
    pub fn add_wrk(&mut self, key: &str, report: &WrkReport) {
        let ms = |us: f64| format!("{:.2}", us / 1000.0);
        let seconds = report.duration_us as f64 / 1e6;
        let rps = if seconds > 0.0 {
            report.requests as f64 / seconds
        } else {
            0.0
        };
        self.set(format!("{key}_rps"), format!("{rps:.0}"));
        self.set(format!("{key}_requests"), report.requests);
        self.set(format!("{key}_p50"), ms(report.latency_us.p50));
        self.set(format!("{key}_p90"), ms(report.latency_us.p90));
        self.set(format!("{key}_p99"), ms(report.latency_us.p99));
        self.set(format!("{key}_bad"), report.errors.total());
    }

    /// The first line of `text` that starts with `tag`: its `k=v` words
    /// as `{prefix}_{k}` (its `label` aside).
    pub fn add_result_line(&mut self, text: &str, tag: &str, prefix: &str) {
        let Some(line) = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(tag))
        else {
            return;
        };
        for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            if key != "label" {
                self.set(format!("{prefix}_{key}"), value);
            }
        }
    }

    /// criterion's bencher lines, `test verify+lookup/HS256 ... bench: 1,940
    /// ns/iter (+/- 12)` → `verify_lookup_HS256_ns` = 1940.
    pub fn add_criterion(&mut self, text: &str) {
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["test", name, "...", "bench:", ns, ..] = words[..] {
                self.set(format!("{}_ns", key_of(name)), ns.replace(',', ""));
            }
        }
    }
}

/// A benchmark's name as a key: every run of other characters than ASCII
/// letters and digits becomes one `_`.
fn key_of(name: &str) -> String {
    let mut key = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c);
        } else if !key.ends_with('_') {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_owned()
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What `bench/report.lua` writes at the end of a wrk run.
#[derive(Debug, Deserialize)]
pub struct WrkReport {
    /// How long the run took, in microseconds.
    pub duration_us: u64,
    /// Answers received.
    pub requests: u64,
    /// Socket errors and non-2xx/3xx answers.
    pub errors: WrkErrors,
    /// Latency distribution, in microseconds.
    pub latency_us: WrkLatency,
}

/// wrk's error counts.
#[derive(Debug, Deserialize)]
pub struct WrkErrors {
    connect: u64,
    read: u64,
    write: u64,
    /// Answers with another status than 2xx or 3xx.
    status: u64,
    timeout: u64,
}

impl WrkErrors {
    fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
}

/// wrk's latency percentiles.
#[derive(Debug, Deserialize)]
pub struct WrkLatency {
    p50: f64,
    p90: f64,
    p99: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = r#"{"duration_us":10000000,"requests":1500000,"bytes":9,
        "errors":{"connect":0,"read":2,"write":0,"status":3,"timeout":1},
        "latency_us":{"min":20,"mean":350.5,"max":9000,"p50":310,"p90":700,"p99":2880,"p999":5000}}"#;

    #[test]
    fn wrk_report_gives_rate_latencies_in_ms_and_every_error() {
        let mut values = Values::default();
        values.add_wrk("replica_hs256", &serde_json::from_str(WRK).unwrap());
        assert_eq!(values.get("replica_hs256_rps"), Some("150000"));
        assert_eq!(values.get("replica_hs256_p50"), Some("0.31"));
        assert_eq!(values.get("replica_hs256_p99"), Some("2.88"));
        assert_eq!(values.get("replica_hs256_bad"), Some("6"));
        assert_eq!(values.get("replica_hs256_requests"), Some("1500000"));
    }

    #[test]
    fn result_line_is_found_among_others_and_drops_its_label() {
        let mut values = Values::default();
        values.add_result_line(
            "warming up\npropagation label=idle n=500 p99_ms=9.29\n",
            "propagation",
            "prop_idle",
        );
        assert_eq!(values.get("prop_idle_n"), Some("500"));
        assert_eq!(values.num("prop_idle_p99_ms"), 9.29);
        assert_eq!(values.get("prop_idle_label"), None);
    }

    #[test]
    fn criterion_bencher_lines_become_keys_in_nanoseconds() {
        let mut values = Values::default();
        values.add_criterion(
            "test verify/HS256 ... bench:        1,940 ns/iter (+/- 12)\n\
             test verify+lookup/ES256 ... bench:       50,200 ns/iter (+/- 800)\n\
             test replica_lookup/hit ... bench:          88 ns/iter (+/- 1)\n\
             Benchmarking something else\n",
        );
        assert_eq!(values.get("verify_HS256_ns"), Some("1940"));
        assert_eq!(values.get("verify_lookup_ES256_ns"), Some("50200"));
        assert_eq!(values.get("replica_lookup_hit_ns"), Some("88"));
    }

    #[test]
    fn env_values_keep_everything_after_the_first_equals_sign() {
        let mut values = Values::default();
        values.add_env("commit=abc1234 + uncommitted changes\nbusy_bare=3\nnot a line\n");
        assert_eq!(values.get("commit"), Some("abc1234 + uncommitted changes"));
        assert_eq!(values.num("busy_bare"), 3.0);
        assert!(values.num("missing").is_nan());
    }

    #[test]
    fn a_directory_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("bare_hs256.wrk.json"), WRK).unwrap();
        fs::write(dir.join("results.env"), "clk_tck=100\n").unwrap();
        fs::write(
            dir.join("worker.txt"),
            "worker jobs=50000 applied_per_s=18227\n",
        )
        .unwrap();
        let values = Values::read_dir(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(values.get("bare_hs256_rps"), Some("150000"));
        assert_eq!(values.get("clk_tck"), Some("100"));
        assert_eq!(values.get("worker_applied_per_s"), Some("18227"));
    }
}
