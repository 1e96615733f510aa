//! The deployment of `deploy/`, without a container engine: the test reads
//! `deploy/compose.yaml` (and the Dockerfile's entry point and `ENV`),
//! checks what it cannot run (every `depends_on` names a service, a
//! healthy condition has a healthcheck, each API's healthcheck is its
//! `/readyz`, ...), and runs the rest as local processes — each Redis and
//! sentinel service's own command and configuration file, each revokd
//! service's roles and environment — with compose's addresses mapped to
//! loopback ports ([`network`]) and a fresh database that revokd creates
//! itself. Then the failover: load through both APIs, kill -9 of the
//! primary, and the audit. A compose file that drifts from what works
//! fails here.

mod balancer;
mod compose;
mod layout;
mod network;
mod services;

use std::{
    collections::{BTreeMap, HashMap},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use compose::{Compose, Dockerfile};
use layout::Layout;
use network::Network;

use crate::gateway::{Gateway, gateway_binary};
use crate::helpers::{
    Failover, Process, SECRET, SentinelTopology, TestDb, free_port, healthy, log_to, spool_dir,
    unique_prefix,
};

/// What the operator exports before `docker compose up` (the file says so).
fn operator_vars() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("JWT_SECRET", SECRET),
        ("REVOKD_API_KEYS", "test:test-key"),
        // the machine's Postgres trusts local connections
        ("POSTGRES_PASSWORD", "unused-with-trust-auth"),
    ])
}

#[tokio::test]
async fn the_compose_topology_runs_and_a_primary_killed_under_load_loses_no_accepted_revocation() {
    let compose = Compose::load(&operator_vars());
    let image = Dockerfile::load();
    let layout = Layout::read(&compose, &image);

    let db = TestDb::unborn();
    let prefix = unique_prefix();
    let log = std::env::temp_dir().join(format!(
        "revokd-deploy-{}.log",
        prefix.trim_end_matches(':')
    ));
    let mut net = Network::default();
    let mut topology = SentinelTopology::start_with(|ports| layout.recipe(ports, &mut net)).await;
    let started = Instant::now();
    let mut processes = BTreeMap::new();
    for service in &layout.revokd {
        net.add(service.name, service.listen, free_port());
    }
    for service in &layout.revokd {
        let port = net.local(service.name, service.listen);
        let env = local_env(&compose, &image, service.name, &net, &db.url, &prefix, port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_revokd"));
        command
            .env_clear()
            .envs(env)
            .args(service.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_to(Some(&log)));
        processes.insert(service.name, Process::spawn(&mut command));
    }
    let http = reqwest::Client::new();
    let apis: Vec<u16> = layout.apis().map(|s| net.local(s.name, s.listen)).collect();
    for &port in &apis {
        healthy(&http, port).await;
    }
    // compose's healthchecks, run here: every sentinel's and every API's.
    layout.wait_healthy(&net, Duration::from_secs(10)).await;
    // The load balancer too, where HAProxy is installed (CI insists): the
    // load then goes through it as well as to each API.
    let balancer = free_port();
    let config = std::env::temp_dir().join(format!(
        "revokd-deploy-{}.cfg",
        prefix.trim_end_matches(':')
    ));
    let mut ports = apis.clone();
    let _lb = match gateway_binary("haproxy") {
        Some(haproxy) => {
            std::fs::write(&config, layout.balancer_config(&net, balancer)).unwrap();
            let mut command = Command::new(haproxy);
            command.args(["-db", "-f"]).arg(&config);
            let lb = Gateway::start(command, balancer).await;
            healthy(&http, balancer).await;
            ports.push(balancer);
            Some(lb)
        }
        None => None,
    };
    eprintln!(
        "figure: compose topology formed in {:?}; {} revokd processes ({}) ready {:?} later, the database created and migrated by them",
        topology.formed_in(),
        layout.revokd.len(),
        layout.roles(),
        started.elapsed()
    );

    let times = [3, 3, 25].map(Duration::from_secs);
    let run = Failover::under_load(&mut topology, "deploy", &ports, times).await;
    eprintln!(
        "figure: through {} APIs{}, sentinels with down-after {}: {}",
        apis.len(),
        if ports.len() > apis.len() {
            " and the load balancer"
        } else {
            ""
        },
        layout.down_after,
        run.report(150)
    );

    // Every process is still up, and every compose healthcheck passes again.
    for (name, process) in &mut processes {
        assert!(
            process.running(),
            "{name} exited after the failover (log: {log:?})"
        );
    }
    layout.wait_healthy(&net, Duration::from_secs(15)).await;
    eprintln!("figure: after the failover every process still runs and every healthcheck passes");

    // The audit: every 2xx in Postgres, on the new primary, refused by both
    // APIs (and through the load balancer).
    let enforced = run.audit(&topology, &db, &prefix, &ports).await;
    eprintln!(
        "figure: audit of {} revocations enforced through every port after {enforced:?}",
        run.tally.accepted.len()
    );
    drop(processes);
    let _ = std::fs::remove_dir_all(spool_dir(&prefix));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&config);
}

/// A revokd service's environment as compose gives it, its addresses
/// mapped: the sentinels to their local ports, Postgres to the test's
/// database, the listen address to `port`; and the test's own key prefix,
/// spool directory (shared by the deployment, as the volume is) and log
/// level.
fn local_env(
    compose: &Compose,
    image: &Dockerfile,
    service: &str,
    net: &Network,
    db_url: &str,
    prefix: &str,
    port: u16,
) -> BTreeMap<String, String> {
    let mut env = compose.environment(service, image);
    let url = env.get("DATABASE_URL").expect("DATABASE_URL set");
    assert!(
        url.contains("@postgres:5432/"),
        "{service}'s DATABASE_URL names the postgres service: {url}"
    );
    env.insert("DATABASE_URL".into(), db_url.into());
    env.insert("REVOKD_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert(
        "REVOKD_SPOOL_DIR".into(),
        spool_dir(prefix).display().to_string(),
    );
    env.insert("REVOKD_KEY_PREFIX".into(), prefix.into());
    env.insert("RUST_LOG".into(), "warn".into());
    env.into_iter().map(|(k, v)| (k, net.address(&v))).collect()
}
