//! The HA topology as `deploy/compose.yaml` lays it out (its services read
//! and checked by [`super::services`]: two data servers, three sentinels,
//! two APIs, a worker, a scheduler) and turned into what the test runs:
//! the Sentinel [`Recipe`], the revokd services, the healthchecks.

use std::time::Duration;

use super::{
    balancer::{Balancer, balancer},
    compose::{Compose, Dockerfile},
    network::Network,
    services::{
        RedisService, RevokdService, check_references, data_servers, revokd_services, sentinel,
    },
};
use crate::helpers::{Ports, Recipe, eventually};

/// A healthcheck to run here: a service's `test`, its port mapped.
#[derive(Clone, Debug)]
struct Check {
    service: String,
    argv: Vec<String>,
}

pub struct Layout<'a> {
    primary: RedisService<'a>,
    replica: RedisService<'a>,
    sentinels: Vec<RedisService<'a>>,
    pub revokd: Vec<RevokdService<'a>>,
    balancer: Balancer,
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
        let revokd = revokd_services(compose, image, &master, &sentinels);
        let apis: Vec<_> = revokd.iter().filter(|s| s.has_role("api")).collect();
        let balancer = balancer(compose, &apis);
        let layout = Layout {
            revokd,
            primary,
            replica,
            sentinels,
            balancer,
            master,
            down_after,
        };
        let count = |role: &str| layout.revokd.iter().filter(|s| s.has_role(role)).count();
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
            password: None,
        }
    }

    /// The load balancer's configuration for local processes: it binds
    /// 127.0.0.1:`port`, its servers are the APIs' local addresses.
    pub fn balancer_config(&self, net: &Network, port: u16) -> String {
        let bind = format!("bind :{}", self.balancer.inside);
        let lines = self.balancer.config.iter().map(|line| match line.trim() {
            b if b == bind => format!("    bind 127.0.0.1:{port}"),
            _ => net.address(line),
        });
        lines.collect::<Vec<_>>().join("\n") + "\n"
    }

    /// The API services.
    pub fn apis(&self) -> impl Iterator<Item = &RevokdService<'a>> {
        self.revokd.iter().filter(|s| s.has_role("api"))
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
    fn healthchecks(&self, net: &Network) -> Vec<Check> {
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

impl Layout<'_> {
    /// Waits until every healthcheck passes, each within `within`.
    pub async fn wait_healthy(&self, net: &Network, within: Duration) {
        for check in self.healthchecks(net) {
            let what = format!("{}'s healthcheck passes", check.service);
            eventually(within, &what, || healthcheck(check.clone())).await;
        }
    }
}

/// Runs a healthcheck here; true when it exits 0.
async fn healthcheck(check: Check) -> bool {
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
