//! The edge of configuration: weak keys refused at start, secrets never
//! printed, every setting checked before anything listens, Postgres pools
//! sized by role. Each test runs the real binary.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// What a finished (or stopped) `revokd` run left behind.
struct Run {
    /// Exit code; `None` when the process was still running at the deadline.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `revokd` with `env` and `args` (after a clean environment of
/// `REVOKD_*`/`JWT_*`/URL variables), stopping it after `deadline`.
fn revokd(env: &[(&str, &str)], args: &[&str], deadline: Duration) -> Run {
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
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("revokd binary");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code,
        stdout,
        stderr,
    }
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
