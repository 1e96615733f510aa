//! The HA topology as `deploy/compose.yaml` lays it out, checked where it
//! cannot be run (dependencies, healthchecks, volumes, the sentinels' view
//! of the primary, revokd's settings) and turned into what the test runs:
//! the Sentinel [`Recipe`] and the revokd commands.

use std::{collections::BTreeSet, path::PathBuf};

use super::{
    compose::{Compose, Dockerfile, Service},
    network::Network,
};
use crate::helpers::{Ports, Recipe};

/// A Redis data server or a sentinel of the file.
pub struct RedisService<'a> {
    pub name: &'a str,
    /// The port it listens on in compose's network.
    pub inside: u16,
    /// A data server's `redis-server` arguments; a sentinel's file.
    setup: Vec<String>,
    healthcheck: Option<&'a [String]>,
}

/// A revokd service of the file.
pub struct RevokdService<'a> {
    pub name: &'a str,
    /// `serve --roles ...` (the entry point is `revokd`).
    pub command: &'a [String],
    pub roles: &'a str,
    /// The port of its REVOKD_LISTEN.
    pub listen: u16,
    healthcheck: Option<&'a [String]>,
}

/// A healthcheck to run here: a service's `test`, its port mapped.
#[derive(Clone, Debug)]
pub struct Check {
    pub service: String,
    pub argv: Vec<String>,
}

pub struct Layout<'a> {
    primary: RedisService<'a>,
    replica: RedisService<'a>,
    sentinels: Vec<RedisService<'a>>,
    pub revokd: Vec<RevokdService<'a>>,
    master: String,
    /// The sentinels' `down-after-milliseconds`, as written.
    pub down_after: String,
}

impl<'a> Layout<'a> {
    /// The layout, checked; panics on what would not work.
    pub fn read(compose: &'a Compose, image: &Dockerfile) -> Layout<'a> {
        check_references(compose);
        let (primary, replica) = data_servers(compose);
        let sentinels: Vec<_> = compose.services.iter().filter_map(sentinel).collect();
        assert_eq!(sentinels.len(), 3, "three sentinels");
        let conf = &sentinels[0].setup;
        let directive = |key: &str| -> Vec<&str> {
            let line = conf.iter().find(|l| l.starts_with(key));
            line.unwrap_or_else(|| panic!("sentinel.conf: no {key}"))
                .split_whitespace()
                .collect()
        };
        let monitor = directive("sentinel monitor ");
        assert_eq!(
            monitor[3..],
            [primary.name, &primary.inside.to_string(), "2"]
        );
        let master = monitor[2].to_owned();
        let down_after = format!("{} ms", directive("sentinel down-after-milliseconds ")[3]);
        let layout = Layout {
            revokd: revokd_services(compose, image, &master, &sentinels),
            primary,
            replica,
            sentinels,
            master,
            down_after,
        };
        let count = |role: &str| {
            layout
                .revokd
                .iter()
                .filter(|s| s.roles.split(',').any(|r| r == role))
                .count()
        };
        assert_eq!(
            (count("api"), count("worker"), count("scheduler")),
            (2, 1, 1)
        );
        layout
    }

    /// The Sentinel recipe for `ports`, which it adds to `net`.
    pub fn recipe(&self, ports: &Ports, net: &mut Network) -> Recipe {
        net.add(self.primary.name, self.primary.inside, ports.primary);
        net.add(self.replica.name, self.replica.inside, ports.replica);
        for (sentinel, &port) in self.sentinels.iter().zip(&ports.sentinels) {
            net.add(sentinel.name, sentinel.inside, port);
        }
        Recipe {
            master: self.master.clone(),
            primary: net.args(&self.primary.setup),
            replica: net.args(&self.replica.setup),
            sentinels: std::array::from_fn(|i| net.conf(&self.sentinels[i].setup.join("\n"))),
        }
    }

    /// The API services.
    pub fn apis(&self) -> impl Iterator<Item = &RevokdService<'a>> {
        self.revokd
            .iter()
            .filter(|s| s.roles.split(',').any(|r| r == "api"))
    }

    /// `name: roles, ...`.
    pub fn roles(&self) -> String {
        let roles = self
            .revokd
            .iter()
            .map(|s| format!("{}: {}", s.name, s.roles));
        roles.collect::<Vec<_>>().join(", ")
    }

    /// Every sentinel's and API's healthcheck, with its port mapped.
    pub fn healthchecks(&self, net: &Network) -> Vec<Check> {
        let sentinels = self
            .sentinels
            .iter()
            .map(|s| (s.name, s.inside, s.healthcheck));
        let apis = self.apis().map(|s| (s.name, s.listen, s.healthcheck));
        sentinels
            .chain(apis)
            .map(|(name, inside, test)| {
                let test = test.unwrap_or_else(|| panic!("{name} has no healthcheck"));
                let local = net.local(name, inside).to_string();
                let argv = match test[0].as_str() {
                    "CMD" => test[1..].to_vec(),
                    "CMD-SHELL" => vec!["sh".into(), "-c".into(), test[1].clone()],
                    other => panic!("{name}'s healthcheck: {other}?"),
                };
                let argv = argv
                    .iter()
                    .map(|a| a.replace(&inside.to_string(), &local))
                    .collect();
                Check {
                    service: name.to_owned(),
                    argv,
                }
            })
            .collect()
    }
}

/// Runs a healthcheck here; true when it exits 0.
pub async fn healthcheck(check: Check) -> bool {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(&check.argv[0])
            .args(&check.argv[1..])
            .output();
        let output = output
            .unwrap_or_else(|e| panic!("{}'s healthcheck {:?}: {e}", check.service, check.argv));
        output.status.success()
    })
    .await
    .unwrap()
}

/// The primary (no `--replicaof`) and the replica (of the primary).
fn data_servers<'a>(compose: &'a Compose) -> (RedisService<'a>, RedisService<'a>) {
    let servers: Vec<_> = compose.running("redis-server").collect();
    assert_eq!(servers.len(), 2, "a primary and a replica");
    let redis = |(name, s): (&'a str, &'a Service)| RedisService {
        name,
        inside: arg_after(&s.command, "--port").parse().expect("--port"),
        setup: s.command[1..].to_vec(),
        healthcheck: s.healthcheck.as_ref().map(|h| h.test.as_slice()),
    };
    let (replicas, primaries): (Vec<_>, Vec<_>) = servers
        .into_iter()
        .partition(|(_, s)| s.command.iter().any(|a| a == "--replicaof"));
    let (primary, replica) = (redis(primaries[0]), redis(replicas[0]));
    let of = &replica.setup[replica
        .setup
        .iter()
        .position(|a| a == "--replicaof")
        .unwrap()
        + 1..];
    assert_eq!(
        of[..2],
        [primary.name, &primary.inside.to_string()],
        "the replica's --replicaof"
    );
    (primary, replica)
}

/// A sentinel service: `sh -c "cp TEMPLATE COPY && exec redis-server COPY --sentinel"`
/// (a sentinel rewrites its file, so it runs on a copy), TEMPLATE mounted
/// from deploy/.
fn sentinel<'a>((name, s): (&'a String, &'a Service)) -> Option<RedisService<'a>> {
    let script = match s.command.as_slice() {
        [sh, c, script] if sh == "sh" && c == "-c" && script.contains("--sentinel") => script,
        _ => return None,
    };
    let steps: Vec<Vec<&str>> = script
        .split("&&")
        .map(|s| s.split_whitespace().collect())
        .collect();
    let [copy, run] = steps.as_slice() else {
        panic!("{name}: {script}")
    };
    let [cp, template, file] = copy.as_slice() else {
        panic!("{name}: {script}")
    };
    assert_eq!(
        (*cp, run.as_slice()),
        (
            "cp",
            ["exec", "redis-server", *file, "--sentinel"].as_slice()
        )
    );
    let path: PathBuf = s
        .mounted_at(template)
        .unwrap_or_else(|| panic!("{name}: {template} not mounted"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let setup: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(String::from)
        .collect();
    let port = setup
        .iter()
        .find_map(|l| l.strip_prefix("port "))
        .expect("sentinel.conf: port");
    Some(RedisService {
        name,
        inside: port.trim().parse().expect("port"),
        setup,
        healthcheck: s.healthcheck.as_ref().map(|h| h.test.as_slice()),
    })
}

/// The revokd services, their settings checked against the topology.
fn revokd_services<'a>(
    compose: &'a Compose,
    image: &Dockerfile,
    master: &str,
    sentinels: &[RedisService<'_>],
) -> Vec<RevokdService<'a>> {
    assert_eq!(image.entrypoint, ["revokd"], "the Dockerfile's ENTRYPOINT");
    let wanted: BTreeSet<String> = sentinels
        .iter()
        .map(|s| format!("{}:{}", s.name, s.inside))
        .collect();
    compose
        .revokd()
        .into_iter()
        .map(|(name, service, roles)| {
            let env = compose.environment(name, image);
            let listed: BTreeSet<String> = env["REDIS_SENTINELS"]
                .split(',')
                .map(String::from)
                .collect();
            assert_eq!(listed, wanted, "{name}: REDIS_SENTINELS");
            assert_eq!(
                env["REDIS_SENTINEL_MASTER"], master,
                "{name}: REDIS_SENTINEL_MASTER"
            );
            let spool = &env["REVOKD_SPOOL_DIR"];
            assert_eq!(
                service.volume_at(spool),
                Some("spool"),
                "{name}: the shared spool volume"
            );
            for needed in sentinels.iter().map(|s| s.name).chain(["postgres"]) {
                let on = service.depends_on.get(needed).map(|d| d.condition.as_str());
                assert_eq!(on, Some("service_healthy"), "{name} depends on {needed}");
            }
            let listen = env["REVOKD_LISTEN"]
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let healthcheck = service.healthcheck.as_ref().map(|h| h.test.as_slice());
            if roles.split(',').any(|r| r == "api") {
                let test = healthcheck
                    .unwrap_or_else(|| panic!("{name}: no healthcheck"))
                    .join(" ");
                assert!(
                    test.contains(&format!(":{listen}/readyz")),
                    "{name}'s healthcheck: {test}"
                );
            }
            assert_eq!(service.command[0], "serve", "{name}'s command");
            RevokdService {
                name,
                command: &service.command,
                roles,
                listen,
                healthcheck,
            }
        })
        .collect()
}

/// What compose would refuse or never satisfy: a dependency on a missing
/// service, a healthy condition without a healthcheck, an undeclared
/// volume, a missing bind-mounted file, a host port published twice, a
/// service without a restart policy.
fn check_references(compose: &Compose) {
    let conditions = [
        "service_started",
        "service_healthy",
        "service_completed_successfully",
    ];
    let mut published = BTreeSet::new();
    for (name, service) in &compose.services {
        assert!(service.restart.is_some(), "{name}: no restart policy");
        assert!(
            service.image.is_some() || service.build.is_some(),
            "{name}: no image"
        );
        for (on, dependency) in &service.depends_on {
            let target = compose
                .services
                .get(on)
                .unwrap_or_else(|| panic!("{name} depends on {on}?"));
            assert!(
                conditions.contains(&dependency.condition.as_str()),
                "{name}: {}",
                dependency.condition
            );
            if dependency.condition == "service_healthy" {
                assert!(
                    target.healthcheck.is_some(),
                    "{name} waits for {on} healthy: no healthcheck"
                );
            }
        }
        for volume in &service.volumes {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') {
                let path = super::compose::deploy_dir().join(source);
                assert!(path.exists(), "{name} mounts {path:?}, which is missing");
            } else {
                assert!(
                    compose.volumes.contains_key(source),
                    "{name}: volume {source} undeclared"
                );
            }
        }
        for port in &service.ports {
            let host = port
                .rsplit_once(':')
                .map_or(port.as_str(), |(host, _)| host);
            assert!(
                published.insert(host.to_owned()),
                "{name} publishes {host} again"
            );
        }
    }
}

fn arg_after<'s>(args: &'s [String], flag: &str) -> &'s str {
    let i = args.iter().position(|a| a == flag);
    &args[i.unwrap_or_else(|| panic!("no {flag} in {args:?}")) + 1]
}
