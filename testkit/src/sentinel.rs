//! Redis Sentinel on loopback, for high-availability tests: real
//! redis-server processes — a primary, a replica and three sentinels
//! (`redis-server <conf> --sentinel`) — that a test starts, kills the
//! primary of (SIGKILL) and watches fail over.
//!
//! The sentinels judge the primary down after 1 s without an answer
//! (`down-after-milliseconds 1000`), with a quorum of 2 of the 3, so a
//! failover takes a few seconds. Each process has a directory of its own
//! in the topology's temp dir: its log (stdout and stderr) and, for a
//! sentinel, the configuration file it rewrites as it learns (its id, the
//! other sentinels, the replicas, the epochs).
//!
//! What each process runs is a [`Recipe`]: [`SentinelTopology::start`] has
//! the harness's own; a test may bring another (the deployment test reads
//! `deploy/compose.yaml`'s). Whatever the recipe, every process listens on
//! 127.0.0.1 only, on a port the topology chose, in its own directory.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use redis::{AsyncConnectionConfig, Value};

use crate::redis_server::free_port;

/// How long a process may take to listen on its port.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);
/// How long the topology may take to form once every process listens: the
/// replica in sync, each sentinel seeing it and the two others.
const FORM_WITHIN: Duration = Duration::from_secs(30);
/// How long one connection or one command to a process may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between two looks at the topology.
const POLL: Duration = Duration::from_millis(50);
/// How many sentinels, and how many of them must agree the primary is down.
const SENTINELS: usize = 3;
const QUORUM: usize = 2;
/// How many lines of each log a failure message shows.
const LOG_TAIL: usize = 25;

/// What a process of the topology is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A redis-server holding data: the primary or a replica.
    Server,
    Sentinel,
}

/// How a process starts: a data server's arguments, or a sentinel's file.
enum Setup {
    Args(Vec<String>),
    Conf(String),
}

/// One process of the topology.
struct Member {
    kind: Kind,
    port: u16,
    /// Its own directory: `redis.log`, and `sentinel.conf` for a sentinel.
    dir: PathBuf,
    /// None once killed.
    child: Option<Child>,
}

impl Member {
    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Server => format!("redis-server :{}", self.port),
            Kind::Sentinel => format!("sentinel :{}", self.port),
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ports a topology chose, for a [`Recipe`] to name.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub primary: u16,
    pub replica: u16,
    pub sentinels: [u16; SENTINELS],
}

/// What each process of a topology runs. The topology adds, last (so they
/// win): `--port <its port> --bind 127.0.0.1 --dir <its dir>` to a data
/// server's arguments, and `port`, `bind 127.0.0.1` and `dir` lines to a
/// sentinel's file, which it runs as `redis-server <file> --sentinel`.
pub struct Recipe {
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// `redis-server` arguments of the first primary.
    pub primary: Vec<String>,
    /// `redis-server` arguments of the replica (`--replicaof` included).
    pub replica: Vec<String>,
    /// Each sentinel's configuration file.
    pub sentinels: [String; SENTINELS],
    /// The password every process requires, when one does (for the
    /// topology's own connections).
    pub password: Option<String>,
}

impl Recipe {
    /// The harness's own: quorum 2, `down-after-milliseconds 1000`,
    /// `failover-timeout 5000`, `parallel-syncs 1`; data servers without
    /// persistence (`--save "" --appendonly no`), and a primary that syncs a
    /// replica at once (`--repl-diskless-sync-delay 0`, not the 5 s a
    /// diskless primary waits by default for more replicas).
    pub fn harness(ports: &Ports) -> Recipe {
        let server = ["--save", "", "--appendonly", "no"]
            .into_iter()
            .chain(["--repl-diskless-sync-delay", "0"])
            .map(String::from)
            .collect::<Vec<_>>();
        let mut replica = server.clone();
        replica.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            ports.primary.to_string(),
        ]);
        let master = SentinelTopology::MASTER;
        let conf = format!(
            "sentinel monitor {master} 127.0.0.1 {} {QUORUM}\n\
             sentinel down-after-milliseconds {master} 1000\n\
             sentinel failover-timeout {master} 5000\n\
             sentinel parallel-syncs {master} 1\n",
            ports.primary
        );
        Recipe {
            master: master.to_owned(),
            primary: server,
            replica,
            sentinels: std::array::from_fn(|_| conf.clone()),
            password: None,
        }
    }

    /// This recipe with `password` required by every process: the data
    /// servers (`requirepass`, and `masterauth` to replicate) and the
    /// sentinels (`requirepass`, which they also use with one another;
    /// `auth-pass` to the data servers).
    pub fn with_password(mut self, password: &str) -> Recipe {
        for args in [&mut self.primary, &mut self.replica] {
            args.extend(["--requirepass", password, "--masterauth", password].map(String::from));
        }
        for conf in &mut self.sentinels {
            conf.push_str(&format!(
                "requirepass \"{password}\"\nsentinel auth-pass {} \"{password}\"\n",
                self.master
            ));
        }
        self.password = Some(password.to_owned());
        self
    }
}

/// A primary, a replica and three sentinels on loopback, run as a
/// [`Recipe`] says; every process killed and its directory removed on drop.
pub struct SentinelTopology {
    /// The temp dir this topology owns, one subdirectory per process.
    dir: PathBuf,
    /// The data servers (the first primary, then the replica), then the
    /// sentinels.
    members: Vec<Member>,
    /// When each killed process was killed, by port.
    killed: Vec<(u16, Instant)>,
    formed_in: Duration,
    /// The name the sentinels monitor the primary under.
    master: String,
    /// The password every process requires, if any (the recipe's).
    password: Option<String>,
}

impl SentinelTopology {
    /// The name the harness's sentinels monitor the primary under (each
    /// topology has sentinels of its own, so one name for all does not
    /// clash).
    pub const MASTER: &str = "revokd";

    /// [`SentinelTopology::start_with`] the harness's [`Recipe`].
    pub async fn start() -> SentinelTopology {
        Self::start_with(Recipe::harness).await
    }

    /// Starts the primary, then the replica, then the three sentinels, as
    /// `recipe` says for the ports chosen, and returns once the topology is
    /// formed: the replica's link to the primary is up, and each sentinel
    /// sees the primary up, the replica in sync and the two other
    /// sentinels, and has its quorum (`SENTINEL CKQUORUM`). Panics, with
    /// the logs' tails, when that takes more than 30 s (or a process does
    /// not start).
    pub async fn start_with(recipe: impl FnOnce(&Ports) -> Recipe) -> SentinelTopology {
        let dir =
            std::env::temp_dir().join(format!("revokd-sentinel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("sentinel topology temp dir");
        // Built first, so that a panic below kills what was started.
        let mut topology = SentinelTopology {
            dir,
            members: Vec::new(),
            killed: Vec::new(),
            formed_in: Duration::ZERO,
            master: String::new(),
            password: None,
        };
        let mut chosen: Vec<u16> = Vec::new();
        while chosen.len() < 2 + SENTINELS {
            let port = free_port();
            if !chosen.contains(&port) {
                chosen.push(port);
            }
        }
        let ports = Ports {
            primary: chosen[0],
            replica: chosen[1],
            sentinels: std::array::from_fn(|i| chosen[2 + i]),
        };
        let recipe = recipe(&ports);
        topology.master = recipe.master;
        topology.password = recipe.password;
        let replica = ports.replica;
        topology
            .spawn(Kind::Server, ports.primary, Setup::Args(recipe.primary))
            .await;
        topology
            .spawn(Kind::Server, replica, Setup::Args(recipe.replica))
            .await;
        let started = Instant::now();
        // The sentinels learn of the replica from the primary's INFO, which
        // they ask for on connecting and then only every 10 s: the replica
        // must be attached before they start.
        topology
            .wait_formed(started, "the replica's link up", async |t: &Self| {
                t.replica_linked(replica).await
            })
            .await;
        for (port, conf) in ports.sentinels.into_iter().zip(recipe.sentinels) {
            topology
                .spawn(Kind::Sentinel, port, Setup::Conf(conf))
                .await;
        }
        topology
            .wait_formed(started, "the sentinels' view", async |t: &Self| {
                t.sentinels_formed().await
            })
            .await;
        topology.formed_in = started.elapsed();
        topology
    }

    /// The sentinels' addresses, `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`
    /// (the form of `REDIS_SENTINELS`), killed ones included.
    pub fn sentinels(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.kind == Kind::Sentinel)
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The name the sentinels monitor the primary under (the recipe's).
    pub fn master_name(&self) -> &str {
        &self.master
    }

    /// The data servers' ports: the first primary, then the replica (whatever
    /// their roles now).
    pub fn server_ports(&self) -> [u16; 2] {
        [self.members[0].port, self.members[1].port]
    }

    /// How long [`SentinelTopology::start`] waited, once the data servers
    /// listened, for the replica's link and the sentinels' view.
    pub fn formed_in(&self) -> Duration {
        self.formed_in
    }

    /// The current primary's port, as the live sentinels report it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`; during a failover, what most of
    /// them say). Panics when no sentinel answers.
    pub async fn primary_port(&self) -> u16 {
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for answer in self.masters_reported().await.into_iter().flatten() {
            *counts.entry(answer).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(port, count)| (count, port))
            .map(|(port, _)| port)
            .unwrap_or_else(|| {
                panic!(
                    "no sentinel reports a primary for {}:\n{}",
                    self.master,
                    self.logs()
                )
            })
    }

    /// The data server that is not the current primary (as
    /// [`SentinelTopology::primary_port`] says), alive or not.
    pub async fn replica_port(&self) -> u16 {
        let primary = self.primary_port().await;
        let [a, b] = self.server_ports();
        if primary == a { b } else { a }
    }

    /// `redis://127.0.0.1:<port>`, with the password when there is one.
    pub fn redis_url(&self, port: u16) -> String {
        url(port, self.password.as_deref())
    }

    /// SIGKILLs the current primary (as the sentinels report it); returns
    /// its port. [`SentinelTopology::wait_failover`] counts from this kill.
    pub async fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port().await;
        self.kill(port);
        port
    }

    /// SIGKILLs the process on `port`, a data server or a sentinel (it is
    /// not restarted). Panics when no live process of the topology is there.
    pub fn kill(&mut self, port: u16) {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.port == port && m.alive())
            .unwrap_or_else(|| panic!("no live process of the topology on port {port}"));
        member.kill();
        self.killed.push((port, Instant::now()));
    }

    /// Waits until every live sentinel reports the same primary other than
    /// `old_primary` and `ROLE` on it answers `master`; returns its port and
    /// how long since `old_primary` was killed (or since this call, if it
    /// was not killed through the topology). Panics, with what each
    /// sentinel last said and the logs' tails, after `within`.
    pub async fn wait_failover(&self, old_primary: u16, within: Duration) -> (u16, Duration) {
        let called = Instant::now();
        let since = self
            .killed
            .iter()
            .rev()
            .find(|&&(port, _)| port == old_primary)
            .map_or(called, |&(_, at)| at);
        loop {
            let reported = self.masters_reported().await;
            if let Some(Some(port)) = reported.first()
                && *port != old_primary
                && reported.iter().all(|r| *r == Some(*port))
                && self.role(*port).await.as_deref() == Some("master")
            {
                return (*port, since.elapsed());
            }
            if called.elapsed() > within {
                panic!(
                    "no failover from :{old_primary} within {within:?}: the sentinels \
                     report {reported:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts one process and waits until it listens.
    async fn spawn(&mut self, kind: Kind, port: u16, setup: Setup) {
        let dir = self.dir.join(match kind {
            Kind::Server => format!("server-{port}"),
            Kind::Sentinel => format!("sentinel-{port}"),
        });
        std::fs::create_dir_all(&dir).expect("process dir");
        let mut member = Member {
            kind,
            port,
            dir,
            child: None,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(member.log())
            .expect("process log");
        let mut command = Command::new("redis-server");
        match setup {
            Setup::Args(args) => {
                command
                    .args(args)
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
                    .arg(&member.dir);
            }
            Setup::Conf(text) => {
                // Its own file: a sentinel rewrites it as it learns.
                let conf = member.dir.join("sentinel.conf");
                let own = format!(
                    "{text}\nport {port}\nbind 127.0.0.1\ndir \"{}\"\n",
                    member.dir.display()
                );
                std::fs::write(&conf, own).expect("sentinel conf");
                command.arg(&conf).arg("--sentinel");
            }
        }
        member.child = Some(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("process log"))
                .stderr(log)
                .spawn()
                .expect("redis-server on PATH"),
        );
        self.members.push(member);
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            self.check_running();
            let member = self.members.last().expect("just pushed");
            assert!(
                started.elapsed() < LISTEN_WITHIN,
                "{} did not listen within {LISTEN_WITHIN:?}:\n{}",
                member.name(),
                tail(&member.log())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `ready` says nothing is missing (None), up to
    /// [`FORM_WITHIN`] after `started`; panics with what is missing.
    async fn wait_formed(
        &mut self,
        started: Instant,
        stage: &str,
        ready: impl AsyncFn(&Self) -> Option<String>,
    ) {
        loop {
            self.check_running();
            let Some(missing) = ready(&*self).await else {
                return;
            };
            if started.elapsed() > FORM_WITHIN {
                panic!(
                    "the sentinel topology did not form within {FORM_WITHIN:?} \
                     ({stage}): {missing}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics, with its log, if a process of the topology has exited.
    fn check_running(&mut self) {
        for member in &mut self.members {
            let exited = member
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                member.child = None;
                panic!(
                    "{} exited ({status}):\n{}",
                    member.name(),
                    tail(&member.log())
                );
            }
        }
    }

    /// None once the replica on `port` reports its link to the primary up.
    async fn replica_linked(&self, port: u16) -> Option<String> {
        let info: String = match self
            .query(port, redis::cmd("INFO").arg("replication"))
            .await
        {
            Ok(info) => info,
            Err(e) => return Some(format!("INFO on the replica: {e}")),
        };
        if info.lines().any(|l| l.trim() == "master_link_status:up") {
            None
        } else {
            Some(format!("the replica's INFO replication: {info}"))
        }
    }

    /// None once every sentinel sees the primary up, one replica in sync and
    /// the two other sentinels, and has its quorum; else what is missing.
    async fn sentinels_formed(&self) -> Option<String> {
        for sentinel in self.members.iter().filter(|m| m.kind == Kind::Sentinel) {
            let name = sentinel.name();
            let port = sentinel.port;
            let master: Vec<String> = match self
                .query(port, redis::cmd("SENTINEL").arg("MASTER").arg(&self.master))
                .await
            {
                Ok(fields) => fields,
                Err(e) => return Some(format!("{name}: SENTINEL MASTER: {e}")),
            };
            let master = pairs(&master);
            let field = |key: &str| master.get(key).map_or("(none)", String::as_str);
            if field("flags") != "master"
                || field("num-slaves") != "1"
                || field("num-other-sentinels") != (SENTINELS - 1).to_string()
            {
                return Some(format!(
                    "{name}: flags {}, num-slaves {}, num-other-sentinels {}",
                    field("flags"),
                    field("num-slaves"),
                    field("num-other-sentinels")
                ));
            }
            let replicas: Vec<Vec<String>> = match self
                .query(
                    port,
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(&self.master),
                )
                .await
            {
                Ok(replicas) => replicas,
                Err(e) => return Some(format!("{name}: SENTINEL REPLICAS: {e}")),
            };
            let in_sync = replicas.iter().map(|r| pairs(r)).any(|r| {
                r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            });
            if !in_sync {
                return Some(format!("{name}: no replica in sync: {replicas:?}"));
            }
            let quorum: Result<String, _> = self
                .query(
                    port,
                    redis::cmd("SENTINEL").arg("CKQUORUM").arg(&self.master),
                )
                .await;
            if let Err(e) = quorum {
                return Some(format!("{name}: SENTINEL CKQUORUM: {e}"));
            }
        }
        None
    }

    /// What each live sentinel reports as the primary's port (None: no
    /// answer).
    async fn masters_reported(&self) -> Vec<Option<u16>> {
        let mut reported = Vec::new();
        for sentinel in self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Sentinel && m.alive())
        {
            let mut command = redis::cmd("SENTINEL");
            command.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master);
            let answer: Option<Vec<String>> =
                self.query(sentinel.port, &command).await.ok().flatten();
            reported.push(answer.and_then(|addr| addr.get(1)?.parse().ok()));
        }
        reported
    }

    /// [`query`] on `port`, with this topology's password.
    async fn query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        query(port, self.password.as_deref(), command).await
    }

    /// [`role`] on `port`, with this topology's password.
    async fn role(&self, port: u16) -> Option<String> {
        role(port, self.password.as_deref()).await
    }

    /// The tail of every process's log, for a failure message.
    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let state = if m.alive() { "" } else { " (killed)" };
                format!("--- {}{state}:\n{}", m.name(), tail(&m.log()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SentinelTopology {
    fn drop(&mut self) {
        // The sentinels first, so that none acts on the servers going away.
        for member in self.members.iter_mut().rev() {
            member.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis://127.0.0.1:<port>`, with `password` when given.
fn url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    }
}

/// One command on a fresh connection to the process on `port`
/// (authenticated with `password`), each step bounded by [`QUERY_TIMEOUT`].
async fn query<T: redis::FromRedisValue>(
    port: u16,
    password: Option<&str>,
    command: &redis::Cmd,
) -> redis::RedisResult<T> {
    let client = redis::Client::open(url(port, password))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(QUERY_TIMEOUT))
        .set_response_timeout(Some(QUERY_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    command.query_async(&mut conn).await
}

/// The first element of `ROLE` on `port` (`master`, `slave`, `sentinel`);
/// None when it does not answer.
async fn role(port: u16, password: Option<&str>) -> Option<String> {
    let answer: Vec<Value> = query(port, password, &redis::cmd("ROLE")).await.ok()?;
    match answer.first()? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A flat `[field, value, ...]` answer as a map.
fn pairs(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// The last lines of a log.
fn tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
        }
        Err(e) => format!("(no log: {e})"),
    }
}
