//! revokd as a process of its own (`serve`), killed on drop, and waiting
//! for it to answer.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    config::{SECRET, spool_dir},
    wait::eventually,
};

/// A child process (or none yet), killed (SIGKILL) on drop.
pub struct Process(Option<std::process::Child>);

impl Process {
    /// No process.
    pub fn idle() -> Self {
        Self(None)
    }

    /// Starts `command`.
    pub fn spawn(command: &mut Command) -> Self {
        Self(Some(command.spawn().expect("revokd binary")))
    }

    /// Whether it is still running (false once it exited or was killed).
    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `revokd` with the options every process of a test deployment shares:
/// the test secret, the write key `test-key`, `prefix`, the stores, the
/// port and the deployment's spool directory; warnings and up logged. The
/// caller adds its options and the command (`serve --roles ...`). `bin` is
/// the binary, `env!("CARGO_BIN_EXE_revokd")`, which only the root
/// package's tests know.
pub fn revokd_command(bin: &str, prefix: &str, redis: &str, db_url: &str, port: u16) -> Command {
    let mut command = Command::new(bin);
    command
        .env("RUST_LOG", "warn")
        .args(["--jwt-secret", SECRET])
        .args(["--key-prefix", prefix, "--redis-url", redis])
        .args(["--database-url", db_url, "--api-keys", "test:test-key"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--spool-dir", spool_dir(prefix).to_str().expect("utf-8")])
        .stdout(Stdio::null());
    command
}

/// A process's stderr: appended to `log` when given, else discarded.
pub fn log_to(log: Option<&Path>) -> Stdio {
    match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => Stdio::null(),
    }
}

/// Waits until the process on `port` answers `/healthz`.
pub async fn healthy(http: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually(Duration::from_secs(20), "process up", || {
        let request = http.get(&url).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

/// The sum of the samples of `series` in the `/metrics` text of the process
/// on `port`: `series` is a metric name (every label set counts) or a name
/// with its labels as rendered (`name{label="value"}`, that set only).
pub async fn scrape_sum(http: &reqwest::Client, port: u16, series: &str) -> f64 {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text");
    text.lines()
        .filter(|line| {
            line.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
