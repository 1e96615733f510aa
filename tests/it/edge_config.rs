//! The edge of configuration: weak keys refused at start, secrets never
//! printed, every setting checked before anything listens, Postgres pools
//! sized by role. Each test runs the real binary.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use revokd::token::Minter;

use crate::helpers::{
    PrefixGuard, TestDb, free_port, healthy, redis_url, spool_dir, unique_prefix,
};

/// What a finished (or stopped) `revokd` run left behind.
struct Run {
    /// Exit code; `None` when the process was still running at the deadline.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `revokd` with `env` and `args`, in an environment cleared of every
/// `REVOKD_*`/`JWT_*`/URL/`RUST_LOG` variable of the test process; its
/// output goes to files (a pipe nobody reads would block a chatty process).
struct Revokd {
    child: std::process::Child,
    out: tempfile_pair::Pair,
}

mod tempfile_pair {
    use std::path::PathBuf;

    /// Two files in the temp dir, removed on drop.
    pub struct Pair(pub PathBuf, pub PathBuf);

    impl Pair {
        pub fn new() -> Self {
            let stem =
                std::env::temp_dir().join(format!("revokd-edge-{}", uuid::Uuid::new_v4().simple()));
            Self(stem.with_extension("out"), stem.with_extension("err"))
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(&self.1);
        }
    }
}

impl Revokd {
    fn start(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_revokd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("REVOKD_")
                || key.starts_with("JWT_")
                || key == "DATABASE_URL"
                || key == "REDIS_URL"
                || key == "RUST_LOG"
            {
                command.env_remove(key);
            }
        }
        let out = tempfile_pair::Pair::new();
        let child = command
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out.0).unwrap())
            .stderr(std::fs::File::create(&out.1).unwrap())
            .spawn()
            .expect("revokd binary");
        Self { child, out }
    }

    /// Waits up to `deadline` for the exit, then stops the process.
    fn finish(mut self, deadline: Duration) -> Run {
        let start = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code,
            stdout: std::fs::read_to_string(&self.out.0).unwrap(),
            stderr: std::fs::read_to_string(&self.out.1).unwrap(),
        }
    }
}

/// Runs `revokd` to its end, or stops it after `deadline`.
fn revokd(env: &[(&str, &str)], args: &[&str], deadline: Duration) -> Run {
    Revokd::start(env, args).finish(deadline)
}

/// Stores nobody listens on: a start that fails must fail before using them.
const NOWHERE: [(&str, &str); 3] = [
    ("REDIS_URL", "redis://127.0.0.1:1"),
    ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/revokd"),
    ("REVOKD_LISTEN", "127.0.0.1:0"),
];

#[track_caller]
fn assert_refused_at_start(run: &Run, says: &str, secret: &str) {
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains(says), "stderr: {}", run.stderr);
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "the key was printed: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("listening"),
        "refused only after listening: {}",
        run.stderr
    );
}

#[test]
fn hmac_secrets_shorter_than_rfc_7518_requires_are_refused_at_start() {
    for (alg, required) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let secret = "w".repeat(required - 1);
        let mut env = NOWHERE.to_vec();
        env.extend([("JWT_SECRET", secret.as_str()), ("JWT_ALGORITHM", alg)]);
        for command in [&["serve"][..], &["mint", "--sub", "a"]] {
            let run = revokd(&env, command, Duration::from_secs(20));
            assert_refused_at_start(&run, &format!("at least {required} bytes"), &secret);
        }
    }
    let run = revokd(
        &[NOWHERE.as_slice(), &[("JWT_SECRET", "hunter2")]].concat(),
        &["serve"],
        Duration::from_secs(20),
    );
    assert_refused_at_start(&run, "JWT_SECRET is too short for HS256", "hunter2");
    let strong = "s".repeat(32);
    let run = revokd(
        &[("JWT_SECRET", strong.as_str())],
        &["mint", "--sub", "a"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn empty_and_short_oct_keys_in_a_jwk_set_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("revokd-edge-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // "k" of "short-oct-key" (base64url).
    let short = "c2hvcnQtb2N0LWtleQ";
    for (name, k, says) in [
        ("empty.json", "", "empty oct key"),
        ("short.json", short, "at least 32 bytes"),
    ] {
        let path = dir.join(name);
        let set = serde_json::json!({"keys": [{"kty": "oct", "kid": "k1", "k": k}]});
        std::fs::write(&path, set.to_string()).unwrap();
        let env = [
            NOWHERE.as_slice(),
            &[("JWT_JWKS_FILE", path.to_str().unwrap())],
        ]
        .concat();
        let run = revokd(&env, &["serve"], Duration::from_secs(20));
        let secret = if k.is_empty() { "\"k\"" } else { k };
        assert_refused_at_start(&run, says, secret);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Secrets of every kind a deployment configures, each a distinct string a
/// log or a message can be searched for.
const PG_PASSWORD: &str = "pg-Passw0rd-in-the-url";
const REDIS_PASSWORD: &str = "redis-Passw0rd-in-the-url";
const API_KEY: &str = "api-key-never-printed-1";
const CHECK_KEY: &str = "check-key-never-printed-2";
const JWT_SECRET: &str = "jwt-secret-never-printed-and-long-enough-3";
const TOKEN_IN_QUERY: &str = "token-in-a-query-string-4";
const ALL_SECRETS: [&str; 6] = [
    PG_PASSWORD,
    REDIS_PASSWORD,
    API_KEY,
    CHECK_KEY,
    JWT_SECRET,
    TOKEN_IN_QUERY,
];

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
    }
}

fn secret_env(database_url: &str, redis_url: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("REVOKD_API_KEYS", format!("app:{API_KEY}")),
        ("REVOKD_CHECK_KEYS", format!("gw:{CHECK_KEY}")),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn help_shows_url_settings_with_their_passwords_masked_and_keys_hidden() {
    let env = secret_env(
        &format!("postgres://app:{PG_PASSWORD}@db.internal:5432/revokd"),
        &format!("redis://default:{REDIS_PASSWORD}@cache.internal:6379/0"),
    );
    for args in [
        &["--help"][..],
        &["-h"],
        &["serve", "--help"],
        &["revoke", "--help"],
        &["help", "serve"],
    ] {
        let run = revokd(&as_refs(&env), args, Duration::from_secs(20));
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        let shown = format!("{}{}", run.stdout, run.stderr);
        assert_no_secret(&format!("{args:?}"), &shown);
        assert!(
            shown.contains("postgres://app:***@db.internal:5432/revokd")
                && shown.contains("redis://default:***@cache.internal:6379/0"),
            "{args:?} should show the masked URLs:\n{shown}"
        );
    }
}

#[test]
fn a_malformed_key_list_is_reported_by_entry_position_not_its_text() {
    for (variable, value, position) in [
        ("REVOKD_API_KEYS", format!("ok:fine,{API_KEY}"), "entry 2"),
        ("REVOKD_CHECK_KEYS", format!(":{CHECK_KEY}"), "entry 1"),
        ("REVOKD_API_KEYS", format!("a:b,,c:d,{API_KEY}:"), "entry 4"),
    ] {
        let mut env = NOWHERE.to_vec();
        env.extend([("JWT_SECRET", JWT_SECRET), (variable, value.as_str())]);
        let run = revokd(&env, &["serve"], Duration::from_secs(20));
        assert_eq!(run.code, Some(2), "{variable}: {}", run.stderr);
        assert!(
            run.stderr.contains(variable) && run.stderr.contains(position),
            "{variable}={value}: {}",
            run.stderr
        );
        assert_no_secret(variable, &format!("{}{}", run.stdout, run.stderr));
    }
}

#[test]
fn config_errors_about_urls_do_not_echo_their_passwords() {
    for (database_url, redis_url) in [
        (
            format!("postgres://app:{PG_PASSWORD}@db:not-a-port/revokd"),
            "redis://127.0.0.1:1".to_owned(),
        ),
        (
            format!("postgres://app@db/revokd?sslmode={PG_PASSWORD}"),
            "redis://127.0.0.1:1".to_owned(),
        ),
        (
            "postgres://postgres@127.0.0.1:1/revokd".to_owned(),
            format!("redis://:{REDIS_PASSWORD}@cache/0?protocol={REDIS_PASSWORD}"),
        ),
        (
            "postgres://postgres@127.0.0.1:1/revokd".to_owned(),
            format!("redis://:{REDIS_PASSWORD}@cache:not-a-port"),
        ),
    ] {
        let env = secret_env(&database_url, &redis_url);
        let mut env = as_refs(&env);
        env.push(("REVOKD_LISTEN", "127.0.0.1:0"));
        for args in [&["serve"][..], &["migrate"], &["stats"]] {
            let run = revokd(&env, args, Duration::from_secs(20));
            assert_eq!(
                run.code,
                Some(2),
                "{args:?} {database_url} {redis_url}: {}",
                run.stderr
            );
            if args != ["migrate"] {
                assert!(run.stderr.contains("invalid "), "{}", run.stderr);
            }
            assert_no_secret(
                &format!("{args:?}"),
                &format!("{}{}", run.stdout, run.stderr),
            );
        }
    }
}

#[tokio::test]
async fn trace_level_logs_of_a_serving_process_hold_no_secret() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let _guard = PrefixGuard {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    let spool = spool_dir(&prefix);
    // Postgres trusts local connections: the password is sent nowhere but
    // the process has it. Redis has none, so it refuses this one, and the
    // refusals are logged too.
    let database_url = db
        .url
        .replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1);
    assert_ne!(database_url, db.url, "test database URL has a user");
    let redis = redis_url().replacen("redis://", &format!("redis://default:{REDIS_PASSWORD}@"), 1);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = secret_env(&database_url, &redis);
    let mut env = as_refs(&env);
    env.extend([
        ("RUST_LOG", "trace"),
        ("REVOKD_LISTEN", listen.as_str()),
        ("REVOKD_KEY_PREFIX", prefix.as_str()),
        ("REVOKD_SPOOL_DIR", spool.to_str().unwrap()),
    ]);
    let process = Revokd::start(&env, &["serve"]);
    let http = reqwest::Client::new();
    healthy(&http, port).await;
    let base = format!("http://{listen}");
    let token = Minter::new(&revokd::token::KeySettings {
        secret: Some(JWT_SECRET.to_owned()),
        ..Default::default()
    })
    .unwrap()
    .mint("alice", 600, true, revokd_jobs::now_unix())
    .unwrap();
    let requests = [
        http.post(format!("{base}/v1/check?token={TOKEN_IN_QUERY}"))
            .bearer_auth(CHECK_KEY)
            .json(&serde_json::json!({ "token": token })),
        http.get(format!("{base}/v1/auth?x={TOKEN_IN_QUERY}"))
            .bearer_auth(&token),
        http.get(format!("{base}/v1/stats?token={TOKEN_IN_QUERY}")),
        http.post(format!("{base}/v1/revocations?wait={TOKEN_IN_QUERY}"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({ "token": token })),
        http.get(format!("{base}/nowhere?{TOKEN_IN_QUERY}")),
    ];
    for request in requests {
        request.send().await.unwrap();
    }
    let run = process.finish(Duration::from_millis(1500));
    assert!(
        run.stderr.contains("/v1/check") && run.stderr.contains("TRACE"),
        "trace logging with request spans expected:\n{}",
        &run.stderr[..run.stderr.len().min(4000)]
    );
    assert_no_secret("the trace log", &run.stderr);
    assert!(
        !run.stderr.contains(&token),
        "the trace log shows the token"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn postgres_pools_are_sized_by_role_unless_configured() {
    use revokd::app::{Roles, Services};
    let config = |extra: &[&str]| {
        crate::helpers::test_config(
            "revokd-test-pool:",
            "redis://127.0.0.1:6379",
            "postgres://postgres@127.0.0.1:5432/revokd_pool_unused",
            extra,
        )
    };
    let max = |services: Services| services.db.pool().options().get_max_connections();
    let roles = |spec: &str| Roles::parse(spec).unwrap();
    assert_eq!(
        max(Services::build(config(&[])).unwrap()),
        2,
        "one-shot command"
    );
    assert_eq!(
        max(Services::build_for(config(&[]), roles("api")).unwrap()),
        8
    );
    assert_eq!(
        max(Services::build_for(config(&[]), roles("worker")).unwrap()),
        8
    );
    assert_eq!(
        max(Services::build_for(config(&[]), roles("scheduler")).unwrap()),
        2
    );
    assert_eq!(
        max(Services::build_for(config(&[]), Roles::ALL).unwrap()),
        16
    );
    let five = ["--pg-max-connections", "5"];
    assert_eq!(
        max(Services::build_for(config(&five), Roles::ALL).unwrap()),
        5
    );
    assert_eq!(max(Services::build(config(&five)).unwrap()), 5);
    let run = revokd(
        &[("REVOKD_PG_MAX_CONNECTIONS", "0")],
        &["serve"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("REVOKD_PG_MAX_CONNECTIONS")
            || run.stderr.contains("pg-max-connections"),
        "{}",
        run.stderr
    );
}

/// Connections the server holds on `database` (this test's own).
async fn connections_to(admin: &sqlx::PgPool, database: &str) -> i64 {
    sqlx::query_scalar("select count(*) from pg_stat_activity where datname = $1")
        .bind(database)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_process_opens_no_more_postgres_connections_than_configured_and_logs_without_colour()
 {
    let db = TestDb::create().await;
    db.db.pool().close().await;
    let prefix = unique_prefix();
    let _guard = PrefixGuard {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    let spool = spool_dir(&prefix);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let redis = redis_url();
    let process = Revokd::start(
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis.as_str()),
            ("REVOKD_LISTEN", listen.as_str()),
            ("REVOKD_KEY_PREFIX", prefix.as_str()),
            ("REVOKD_SPOOL_DIR", spool.to_str().unwrap()),
            ("REVOKD_API_KEYS", "app:app-key"),
            ("JWT_SECRET", JWT_SECRET),
            ("REVOKD_PG_MAX_CONNECTIONS", "2"),
            ("RUST_LOG", "info"),
        ],
        &["serve"],
    );
    let http = reqwest::Client::new();
    healthy(&http, port).await;
    let admin = sqlx::PgPool::connect(&crate::helpers::pg_admin_url())
        .await
        .unwrap();
    let now = revokd_jobs::now_unix();
    let posts = (0..200).map(|i| {
        http.post(format!("http://{listen}/v1/revocations"))
            .bearer_auth("app-key")
            .json(
                &serde_json::json!({ "jti": format!("pool-{i}"), "exp": now + 600, "sub": "pool" }),
            )
            .send()
    });
    let load = futures::future::join_all(posts);
    tokio::pin!(load);
    let mut most = 0;
    let answers = loop {
        tokio::select! {
            answers = &mut load => break answers,
            // Sampling the connection count while load runs: the pace is the point.
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                most = most.max(connections_to(&admin, &db.name).await);
            }
        }
    };
    for _ in 0..20 {
        most = most.max(connections_to(&admin, &db.name).await);
        // ... and for a while after (connections the pool opens late).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for answer in answers {
        let status = answer.unwrap().status();
        assert!(status.is_success(), "{status}");
    }
    assert!(most >= 1, "the process used Postgres");
    assert!(
        most <= 2,
        "{most} connections with REVOKD_PG_MAX_CONNECTIONS=2"
    );
    admin.close().await;
    let run = process.finish(Duration::from_millis(200));
    assert!(run.stderr.contains("API listening"), "{}", run.stderr);
    assert!(
        !run.stderr.contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{}",
        run.stderr
    );
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn a_bad_cleanup_cron_is_refused_before_anything_listens() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = NOWHERE.to_vec();
    env.retain(|(k, _)| *k != "REVOKD_LISTEN");
    env.extend([
        ("REVOKD_LISTEN", listen.as_str()),
        ("JWT_SECRET", JWT_SECRET),
        ("REVOKD_CLEANUP_CRON", "every tuesday"),
    ]);
    for roles in ["api,worker,scheduler", "api", "scheduler"] {
        let start = Instant::now();
        let run = revokd(&env, &["serve", "--roles", roles], Duration::from_secs(20));
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("REVOKD_CLEANUP_CRON"), "{}", run.stderr);
        assert!(!run.stderr.contains("listening"), "{}", run.stderr);
        // Before the 3 s wait for the database, let alone serving.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
    // A malformed key list too: before the wait for the database.
    env.retain(|(k, _)| *k != "REVOKD_CLEANUP_CRON");
    env.push(("REVOKD_API_KEYS", API_KEY));
    let start = Instant::now();
    let run = revokd(&env, &["serve"], Duration::from_secs(20));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("REVOKD_API_KEYS: entry 1"),
        "{}",
        run.stderr
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
