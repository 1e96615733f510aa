//! Each kind of service of `deploy/compose.yaml` read and checked: the
//! Redis primary and replica (their `redis-server` arguments), the
//! sentinels (the command that copies the mounted template, and the
//! template), the revokd services (roles, settings, volumes, dependencies
//! and healthchecks against the rest), and the references between
//! services that compose would refuse or never satisfy.

use std::{collections::BTreeSet, path::PathBuf};

use super::compose::{Compose, Dockerfile, Service};

/// A Redis data server or a sentinel of the file.
pub struct RedisService<'a> {
    pub name: &'a str,
    /// The port it listens on in compose's network.
    pub inside: u16,
    /// A data server's `redis-server` arguments; a sentinel's file.
    pub setup: Vec<String>,
    pub healthcheck: Option<&'a [String]>,
}

/// A revokd service of the file.
pub struct RevokdService<'a> {
    pub name: &'a str,
    /// `serve --roles ...` (the entry point is `revokd`).
    pub command: &'a [String],
    pub roles: &'a str,
    /// The port of its REVOKD_LISTEN.
    pub listen: u16,
    pub healthcheck: Option<&'a [String]>,
}

impl RevokdService<'_> {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.split(',').any(|r| r == role)
    }
}

/// The primary (no `--replicaof`) and the replica (of the primary).
pub fn data_servers<'a>(compose: &'a Compose) -> (RedisService<'a>, RedisService<'a>) {
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
pub fn sentinel<'a>((name, s): (&'a String, &'a Service)) -> Option<RedisService<'a>> {
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
pub fn revokd_services<'a>(
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
pub fn check_references(compose: &Compose) {
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
