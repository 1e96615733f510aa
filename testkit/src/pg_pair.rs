//! A Postgres primary and a hot standby of the test's own, for failover
//! tests: two clusters on free loopback ports in a temp dir, never the
//! machine's shared server.
//!
//! The primary is made by `initdb` (fast settings: `fsync=off`, small
//! buffers), the standby by `pg_basebackup -R` from it; replication is
//! **synchronous** (`synchronous_standby_names='*'`, set once the standby
//! streams), so a commit the primary answered is on the standby: what an
//! operator must run for a failover to lose no acknowledged write. A test
//! kills the primary's postmaster (SIGKILL) and promotes the standby
//! (`pg_ctl promote`), as Patroni would. As root, every Postgres command
//! runs as the `postgres` user (`initdb` refuses root), in a directory it
//! owns. Both clusters are stopped (immediate) and the directory removed
//! on drop.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection};

use crate::{missing_program, redis_server::free_port};

/// How long the standby may take to stream synchronously.
const SYNC_WITHIN: Duration = Duration::from_secs(30);

/// A primary and its synchronous hot standby, both on 127.0.0.1.
pub struct PgPair {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// Ports of the first primary (0) and the standby (1).
    pub ports: [u16; 2],
}

impl PgPair {
    /// Starts both and returns once the standby replicates synchronously;
    /// `None` (the test skips; CI fails) when Postgres's server binaries
    /// are not installed.
    pub async fn start() -> Option<Self> {
        let Some(bin) = server_bin() else {
            missing_program("Postgres server binaries (initdb)", &[]);
            return None;
        };
        let pair = Self {
            dir: std::env::temp_dir()
                .join(format!("revokd-pgpair-{}", uuid::Uuid::new_v4().simple())),
            bin,
            as_postgres: std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
            ports: [free_port(), free_port()],
        };
        let pair = tokio::task::spawn_blocking(move || {
            pair.create();
            pair
        })
        .await
        .unwrap();
        let mut primary = PgConnection::connect(&pair.url(0, "postgres"))
            .await
            .unwrap();
        sqlx::query("alter system set synchronous_standby_names = '*'")
            .execute(&mut primary)
            .await
            .unwrap();
        sqlx::query("select pg_reload_conf()")
            .execute(&mut primary)
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let sync: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_replication where sync_state = 'sync'",
            )
            .fetch_one(&mut primary)
            .await
            .unwrap();
            if sync == 1 {
                break;
            }
            assert!(
                started.elapsed() < SYNC_WITHIN,
                "standby not synchronous; logs:\n{}",
                pair.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(pair)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>` of server `i` (0: the
    /// first primary, 1: the standby).
    pub fn url(&self, i: usize, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.ports[i])
    }

    /// `host:port` of server `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Both servers in one URL, libpq's multi-host form, read-write; the
    /// standby first, so a client must skip it to find the primary.
    pub fn multi_host_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@{},{}/{db}?target_session_attrs=read-write",
            self.addr(1),
            self.addr(0)
        )
    }

    /// kill -9 of the first primary's postmaster (its backends end when they
    /// notice).
    pub fn kill_primary(&self) {
        let pid = postmaster_pid(&self.data(0)).expect("primary running");
        let status = Command::new("kill").args(["-9", &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -9 {pid}");
    }

    /// `pg_ctl promote` of the standby, waiting until it takes writes.
    pub async fn promote_standby(&self) {
        let mut command = self.command("pg_ctl");
        command
            .args(["promote", "-w", "-t", "30", "-D"])
            .arg(self.data(1));
        tokio::task::spawn_blocking(move || run(command, "pg_ctl promote"))
            .await
            .unwrap();
    }

    /// The servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- server {i} ---\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.join(["primary", "standby"][i])
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("server{i}.log"))
    }

    /// `program` from the server binaries, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.stdin(Stdio::null());
        command
    }

    /// initdb, the primary up, a base backup, the standby up.
    fn create(&self) {
        std::fs::create_dir_all(&self.dir).expect("pg pair temp dir");
        if self.as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&self.dir);
            run(chown, "chown");
        }
        let mut initdb = self.command("initdb");
        initdb
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(self.data(0));
        run(initdb, "initdb");
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 100\n\
             wal_level = replica\nmax_wal_senders = 4\nsynchronous_commit = on\n",
            self.ports[0],
            self.dir.display()
        );
        append(&self.data(0).join("postgresql.conf"), &settings);
        self.pg_ctl_start(0);
        let mut backup = self.command("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &self.ports[0].to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
            .arg(self.data(1));
        run(backup, "pg_basebackup");
        append(
            &self.data(1).join("postgresql.auto.conf"),
            &format!("\nport = {}\n", self.ports[1]),
        );
        self.pg_ctl_start(1);
    }

    fn pg_ctl_start(&self, i: usize) {
        let mut start = self.command("pg_ctl");
        start
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data(i))
            .arg("-l")
            .arg(self.log(i))
            .stdout(Stdio::null());
        if !start.status().is_ok_and(|s| s.success()) {
            panic!("pg_ctl start of server {i} failed:\n{}", self.logs());
        }
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for i in 0..2 {
            let data = self.data(i);
            if postmaster_pid(&data).is_none() {
                continue;
            }
            let mut stop = self.command("pg_ctl");
            stop.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let stopped = stop.status().is_ok_and(|s| s.success());
            if !stopped && let Some(pid) = postmaster_pid(&data) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, else the
/// directory of an `initdb` on PATH.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

/// The pid in `data`'s `postmaster.pid`, while the server runs.
fn postmaster_pid(data: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    // A pid file left by a killed postmaster names a process that is gone.
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}
