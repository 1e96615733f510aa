//! Where the shared servers are, and the configuration of a test app: the
//! test secret, its key prefix, its spool directory.

use clap::Parser;
use revokd::{
    cli::{Cli, Command},
    config::Config,
};

/// HMAC secret of every test app.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// Redis every test uses unless it starts its own.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Postgres server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The spool directory of every app under `prefix` (in the temp dir).
pub fn spool_dir(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("revokd-spool-{}", prefix.trim_end_matches(':')))
}

/// Configuration of a test app.
pub fn test_config(prefix: &str, redis: &str, db_url: &str, extra: &[&str]) -> Config {
    let mut args = vec!["revokd"];
    // The test secret, unless the test names other keys.
    let other_keys = [
        "--jwt-public-key-file",
        "--jwt-jwks-file",
        "--jwt-oidc-issuer",
        "--jwt-jwks-url",
        "--issuers-file",
    ];
    if !extra
        .iter()
        .any(|a| other_keys.iter().any(|k| a.starts_with(k)))
    {
        args.extend(["--jwt-secret", SECRET]);
    }
    let spool = spool_dir(prefix);
    let spool = spool.to_str().expect("utf-8 temp dir");
    args.extend([
        "--spool-dir",
        spool,
        "--key-prefix",
        prefix,
        "--redis-url",
        redis,
        "--database-url",
        db_url,
        "--listen",
        "127.0.0.1:0",
    ]);
    args.extend_from_slice(extra);
    args.push("migrate");
    let cli = Cli::try_parse_from(args).expect("valid test config");
    assert!(matches!(cli.command, Command::Migrate));
    cli.config
}
