//! High availability of Postgres: a primary and its synchronous hot
//! standby of the test's own ([`PgPair`]); two revokd processes (every
//! role; API + worker) under a steady revocation load while the primary's
//! postmaster is killed -9 and, a second later, the standby is promoted
//! (as an operator or Patroni would). Reached two ways: a multi-host
//! `DATABASE_URL` listing both servers, and a single host behind a TCP
//! proxy that moves to the promoted standby (a virtual IP, PgBouncer).
//! The audit: every revocation answered 2xx is in Postgres on the new
//! primary, in Redis, and refused by both processes. Figures are printed
//! (`cargo test --test it pg_failover -- --nocapture`).

use std::time::{Duration, Instant};

use revokd::store::pg::Db;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Load, PgPair, PrefixGuard, Proxy, Tally, enforced_everywhere, free_port, healthy,
    in_both_stores_at, redis_url, serve, spool_dir, unique_prefix,
};

#[tokio::test]
async fn a_multi_host_url_follows_the_promoted_standby_and_loses_no_accepted_revocation() {
    let Some(pair) = PgPair::start().await else {
        return;
    };
    let db = format!("revokd_pgfail_{}", uuid::Uuid::new_v4().simple());
    let url = pair.multi_host_url(&db);
    let run = Failover::start("pg-multi", &url, &db).await;
    standby_caught_up(&pair).await;
    // The standby is listed first: a pool of our own holds connections to
    // the primary only (after_connect refuses the standby's until the first
    // probe points the pool at the primary).
    let own = Db::connect_lazy(&url).unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = own.pool().acquire().await.unwrap();
        let standby: bool = sqlx::query_scalar("select pg_is_in_recovery()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(!standby, "a pooled connection is on the standby");
        held.push(conn);
    }
    drop((held, own));
    // Given only the standby, a pool that must write hands out nothing.
    let standby_only = format!("{}?target_session_attrs=read-write", pair.url(1, &db));
    let standby_only = Db::connect_lazy(&standby_only).unwrap();
    assert!(
        standby_only.pool().acquire().await.is_err(),
        "a read-write pool handed out a connection to the standby"
    );
    let run = run.fail_over(&pair, || {}).await;
    let switches = run.switches().await;
    for port in run.ports {
        let ready: serde_json::Value = serde_json::from_str(&get(port, "/readyz").await).unwrap();
        assert_eq!(ready["postgres_host"], pair.addr(1).as_str(), "{ready}");
    }
    run.audit(&pair, "multi-host URL").await;
    // To the primary at start, to the promoted standby after the kill.
    assert!(
        switches.iter().all(|&n| n >= 2),
        "a process did not follow the primary: {switches:?}"
    );
}

#[tokio::test]
async fn behind_a_proxy_that_moves_to_the_promoted_standby_no_accepted_revocation_is_lost() {
    let Some(pair) = PgPair::start().await else {
        return;
    };
    let proxy = Proxy::start(&pair.addr(0)).await;
    let db = format!("revokd_pgfail_{}", uuid::Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let run = Failover::start("pg-vip", &url, &db).await;
    let run = run.fail_over(&pair, || proxy.retarget(&pair.addr(1))).await;
    run.audit(&pair, "proxy moved").await;
}

/// Two revokd processes on `url`, and what happened to them.
struct Failover {
    // Dropped first: no process writes under the prefix once its keys go.
    _processes: Vec<crate::helpers::Process>,
    _keys: PrefixGuard,
    prefix: String,
    db: String,
    log: std::path::PathBuf,
    ports: [u16; 2],
    load: Option<Load>,
    tally: Tally,
    killed_at: Instant,
    promoted_at: Instant,
    /// When a revocation first committed on the new primary.
    first_commit: Option<Instant>,
}

impl Failover {
    async fn start(name: &str, url: &str, db: &str) -> Self {
        let prefix = unique_prefix();
        let keys = PrefixGuard {
            url: redis_url(),
            prefix: prefix.clone(),
        };
        let log = std::env::temp_dir().join(format!(
            "revokd-{name}-{}.log",
            prefix.trim_end_matches(':')
        ));
        let ports = [free_port(), free_port()];
        let redis = redis_url();
        let processes = vec![
            serve(
                &prefix,
                &redis,
                url,
                ports[0],
                "api,worker,scheduler",
                &[],
                Some(&log),
            ),
            serve(
                &prefix,
                &redis,
                url,
                ports[1],
                "api,worker",
                &[],
                Some(&log),
            ),
        ];
        let http = reqwest::Client::new();
        for port in ports {
            healthy(&http, port).await;
        }
        // The processes created and migrated the database on the primary;
        // the standby has it by replication.
        let load = Load::start(name, &ports, 2, Duration::from_millis(25));
        let now = Instant::now();
        Self {
            prefix,
            _keys: keys,
            db: db.to_owned(),
            log,
            ports,
            _processes: processes,
            load: Some(load),
            tally: Tally::default(),
            killed_at: now,
            promoted_at: now,
            first_commit: None,
        }
    }

    /// Load for 3 s, kill -9 of the primary, promotion of the standby 1 s
    /// later (then `promoted`, e.g. the proxy moves), 4 s more of load.
    async fn fail_over(mut self, pair: &PgPair, promoted: impl FnOnce()) -> Self {
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.killed_at = Instant::now();
        pair.kill_primary();
        tokio::time::sleep(Duration::from_secs(1)).await;
        pair.promote_standby().await;
        self.promoted_at = Instant::now();
        promoted();
        let stop = CancellationToken::new();
        let watch = tokio::spawn(first_commit(pair.url(1, &self.db), stop.clone()));
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        self.first_commit = watch.await.unwrap();
        self.tally = self.load.take().unwrap().stop().await;
        self
    }

    /// `revokd_postgres_switches_total` of each process.
    async fn switches(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for port in self.ports {
            let count = get(port, "/metrics")
                .await
                .lines()
                .find_map(|line| line.strip_prefix("revokd_postgres_switches_total "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            counts.push(count);
        }
        counts
    }

    /// Figures, then every 2xx in Postgres on the new primary, in Redis,
    /// and refused by both processes.
    async fn audit(self, pair: &PgPair, how: &str) {
        let tally = &self.tally;
        let since_kill = |at: Instant| at.saturating_duration_since(self.killed_at);
        let refused: Vec<String> = tally
            .refused
            .iter()
            .map(|(status, at)| format!("{status} at +{:.2}s", since_kill(*at).as_secs_f64()))
            .collect();
        let after = tally
            .accepted
            .iter()
            .filter(|a| a.at > self.killed_at)
            .count();
        let commit = self
            .first_commit
            .map(|at| at.saturating_duration_since(self.promoted_at));
        eprintln!(
            "figure ({how}): {} revocations accepted, {after} after the kill -9; standby promoted {:?} after the kill; \
             first revocation committed on the new primary {commit:?} after the promotion; {} refused {refused:?}",
            tally.accepted.len(),
            self.promoted_at - self.killed_at,
            tally.refused.len(),
        );
        assert!(
            tally.accepted.len() >= 50,
            "too few accepted to mean anything: {}",
            tally.accepted.len()
        );
        assert!(
            commit.is_some(),
            "nothing committed on the new primary; logs:\n{}",
            pair.logs()
        );
        let new_primary = Db::connect_lazy(&pair.url(1, &self.db)).unwrap();
        in_both_stores_at(&new_primary, &redis_url(), &self.prefix, &tally.ids()).await;
        let http = reqwest::Client::new();
        let enforced = enforced_everywhere(&http, &self.ports, &tally.tokens()).await;
        eprintln!("figure ({how}): audit enforced everywhere after {enforced:?}");
        let _ = std::fs::remove_dir_all(spool_dir(&self.prefix));
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls the new primary until a revocation commits there (the count of
/// revoked tokens grows), or `stop`.
async fn first_commit(url: String, stop: CancellationToken) -> Option<Instant> {
    let db = Db::connect_lazy(&url).ok()?;
    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from revoked_tokens")
            .fetch_one(db.pool())
            .await
            .ok()
    };
    let mut baseline = None;
    while !stop.is_cancelled() {
        match (baseline, count().await) {
            (None, Some(n)) => baseline = Some(n),
            (Some(before), Some(n)) if n > before => return Some(Instant::now()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The body of `GET path` on the process at `port`.
async fn get(port: u16, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = reqwest::get(url).await.expect("request");
    response.text().await.expect("body")
}

/// Waits until the standby has replayed everything the primary has written
/// so far (the database the processes created and migrated among it): a
/// synchronous commit waits for the standby to flush its WAL, not to replay
/// it, and until then a connection to the standby's copy of the database
/// fails with 3D000.
async fn standby_caught_up(pair: &PgPair) {
    use sqlx::Connection as _;
    let mut primary = sqlx::PgConnection::connect(&pair.url(0, "postgres"))
        .await
        .unwrap();
    let written: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(&mut primary)
        .await
        .unwrap();
    let standby = pair.url(1, "postgres");
    crate::helpers::eventually(
        Duration::from_secs(10),
        "the standby replays the primary",
        || {
            let (standby, written) = (standby.clone(), written.clone());
            async move {
                let Ok(mut conn) = sqlx::PgConnection::connect(&standby).await else {
                    return false;
                };
                sqlx::query_scalar::<_, bool>("select pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(written)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or(false)
            }
        },
    )
    .await;
}
