//! The chaos run: a deployment of real processes — 2 API (replica and redis
//! read mode), 2 workers, 2 schedulers — on a private Redis and a Postgres
//! reached through a proxy, under a steady stream of revocations, while
//! workers and APIs are killed -9, Redis restarts empty, Postgres is cut,
//! and both at once. The audit at the end: every revocation answered 2xx is
//! in Postgres, in Redis, and refused by every API process (a new one too).
//! Figures are printed (`cargo test chaos -- --nocapture`).

use std::time::{Duration, Instant};

use crate::helpers::{
    Load, PrivateRedis, Process, Proxy, TestDb, enforced_everywhere, free_port, healthy,
    in_both_stores, proxied, serve, spool_dir, unique_prefix,
};

/// The deployment under test.
struct Deployment {
    prefix: String,
    redis: String,
    db_url: String,
    log: std::path::PathBuf,
    api_ports: [u16; 2],
    apis: [Process; 2],
    workers: [Process; 2],
    _schedulers: [Process; 2],
}

impl Deployment {
    fn api(&self, i: usize) -> Process {
        let mode = if i == 0 { "replica" } else { "redis" };
        serve(
            &self.prefix,
            &self.redis,
            &self.db_url,
            self.api_ports[i],
            "api",
            &["--read-mode", mode],
            Some(&self.log),
        )
    }

    fn worker(&self) -> Process {
        serve(
            &self.prefix,
            &self.redis,
            &self.db_url,
            free_port(),
            "worker",
            &[],
            Some(&self.log),
        )
    }
}

#[tokio::test]
async fn chaos_every_accepted_revocation_survives_kills_restarts_and_cuts() {
    let mut redis = PrivateRedis::start();
    let db = TestDb::create().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let prefix = unique_prefix();
    let log =
        std::env::temp_dir().join(format!("revokd-chaos-{}.log", prefix.trim_end_matches(':')));
    let cron = ["--cleanup-cron", "*/5 * * * * *"];
    let mut d = Deployment {
        redis: redis.url(),
        db_url: proxied(&db, &proxy),
        api_ports: [free_port(), free_port()],
        apis: [Process::idle(), Process::idle()],
        workers: [Process::idle(), Process::idle()],
        _schedulers: [Process::idle(), Process::idle()],
        log,
        prefix,
    };
    d.apis = [d.api(0), d.api(1)];
    d.workers = [d.worker(), d.worker()];
    let scheduler = || {
        serve(
            &d.prefix,
            &d.redis,
            &d.db_url,
            free_port(),
            "scheduler",
            &cron,
            Some(&d.log),
        )
    };
    d._schedulers = [scheduler(), scheduler()];
    let http = reqwest::Client::new();
    for port in d.api_ports {
        healthy(&http, port).await;
    }

    let load = Load::start("chaos", &d.api_ports, 3, Duration::from_millis(20));
    // The scenario's timeline: faults land while load runs, so the pauses
    // between them are the point.
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let mut timeline = Vec::new();
    let started = Instant::now();
    let mut mark =
        |what: &str| timeline.push(format!("{:>6.1}s {what}", started.elapsed().as_secs_f64()));

    pause(2_000).await;
    mark("kill -9 worker 1, restart it");
    d.workers[0].kill();
    pause(1_000).await;
    d.workers[0] = d.worker();
    pause(2_000).await;
    mark("kill -9 api 1 (replica mode), restart it");
    d.apis[0].kill();
    pause(1_000).await;
    d.apis[0] = d.api(0);
    healthy(&http, d.api_ports[0]).await;
    pause(1_000).await;
    mark("redis restarts empty");
    redis.restart();
    pause(3_000).await;
    mark("postgres cut for 3 s");
    proxy.set_enabled(false);
    pause(3_000).await;
    proxy.set_enabled(true);
    pause(2_000).await;
    mark("double fault: postgres cut, redis restarts empty, api 2 killed -9 with its spool");
    proxy.set_enabled(false);
    pause(2_000).await;
    redis.restart();
    pause(1_000).await;
    d.apis[1].kill();
    pause(1_000).await;
    mark("postgres back, api 2 restarted, worker 2 killed -9 and restarted");
    proxy.set_enabled(true);
    d.apis[1] = d.api(1);
    d.workers[1].kill();
    d.workers[1] = d.worker();
    healthy(&http, d.api_ports[1]).await;
    pause(2_000).await;
    let tally = load.stop().await;
    mark("load stopped; audit");

    let (tokens, ids) = (tally.tokens(), tally.ids());
    assert!(ids.len() > 100, "too little load: {}", ids.len());
    // A process started after everything.
    let late = free_port();
    let _late = serve(&d.prefix, &d.redis, &db.url, late, "api", &[], Some(&d.log));
    healthy(&http, late).await;
    let ports = [d.api_ports[0], d.api_ports[1], late];
    let recovery = enforced_everywhere(&http, &ports, &tokens).await;
    in_both_stores(&db, &d.redis, &d.prefix, &ids).await;
    println!("chaos timeline:\n{}", timeline.join("\n"));
    println!(
        "chaos: {} revocations accepted (2xx), {} refused or cut off, 0 lost; \
         every one refused by all {} API processes (audit of every token on each took {recovery:?}), \
         and in Postgres and Redis",
        ids.len(),
        tally.refused.len(),
        ports.len(),
    );
    let _ = std::fs::remove_dir_all(spool_dir(&d.prefix));
    let _ = std::fs::remove_file(&d.log);
}
