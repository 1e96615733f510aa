//! Configuration: every setting is a command-line option and an environment variable.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::token::KeySettings;

pub mod redact;

/// Settings shared by every command. `--help` lists each with its variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres connections this process opens at most. Default by role:
    /// 8 for the API, 8 for a worker, 2 for the scheduler, summed over the
    /// roles a process runs but at most 16 (all three); 2 for one-shot
    /// commands.
    #[arg(long, env = "REVOKD_PG_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub pg_max_connections: Option<u32>,

    /// Redis server for the queue and the deny-list.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,

    /// Postgres database, the durable record; created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/revokd",
        global = true
    )]
    pub database_url: String,

    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "REVOKD_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: String,

    /// Address the gRPC ext_authz service (Envoy's
    /// `envoy.service.auth.v3.Authorization/Check`, as Istio and Envoy's
    /// `grpc_service` call it) listens on, in each process running the API;
    /// it answers as `/v1/auth` does. Off when unset.
    #[arg(long, env = "REVOKD_GRPC_LISTEN", global = true)]
    pub grpc_listen: Option<String>,

    /// Prefix of every Redis key revokd creates, the queue's included.
    #[arg(long, env = "REVOKD_KEY_PREFIX", default_value = revokd_jobs::DEFAULT_PREFIX, global = true)]
    pub key_prefix: String,

    /// Write-API keys as `name:key,...`; the name is recorded as `requested_by`.
    #[arg(
        long,
        env = "REVOKD_API_KEYS",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub api_keys: Secret,

    /// Optional keys (`name:key,...`) that /v1/check and /introspect then require.
    #[arg(
        long,
        env = "REVOKD_CHECK_KEYS",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub check_keys: Secret,

    /// Redis Sentinel nodes, `host:port,...`: the primary of
    /// REDIS_SENTINEL_MASTER is found through them and followed across
    /// failovers (REDIS_URL's host and port are then unused; its password,
    /// user and database apply).
    #[arg(
        long,
        env = "REDIS_SENTINELS",
        global = true,
        requires = "redis_sentinel_master"
    )]
    pub redis_sentinels: Option<String>,

    /// The name Sentinel monitors the primary under.
    #[arg(
        long,
        env = "REDIS_SENTINEL_MASTER",
        global = true,
        requires = "redis_sentinels"
    )]
    pub redis_sentinel_master: Option<String>,

    /// Password of the sentinels themselves, when they require one.
    #[arg(
        long,
        env = "REDIS_SENTINEL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub redis_sentinel_password: Option<Secret>,

    /// HMAC secret (UTF-8) for HS256/384/512 tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// Algorithm of the configured key: HS256 (default for a secret), HS384,
    /// HS512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    #[arg(long, env = "JWT_ALGORITHM", global = true)]
    pub jwt_algorithm: Option<String>,

    /// PEM public key for RS*/PS*/ES*/EdDSA tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWK Set file; the key is chosen by the token's `kid`.
    #[arg(long, env = "JWT_JWKS_FILE", global = true)]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Identity provider to follow: its keys are found by OIDC discovery
    /// (`<issuer>/.well-known/openid-configuration`) and kept current, and
    /// `iss` must equal it.
    #[arg(long, env = "JWT_OIDC_ISSUER", global = true)]
    pub jwt_oidc_issuer: Option<String>,

    /// JWK Set URL to follow (with JWT_ISSUER as the required `iss`).
    #[arg(long, env = "JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,

    /// TOML file of several trusted issuers (`[[issuer]]` tables); a token
    /// is verified with the keys of the issuer its `iss` names.
    #[arg(long, env = "REVOKD_ISSUERS_FILE", global = true)]
    pub issuers_file: Option<PathBuf>,

    /// PEM private key, read only by `revokd mint` for asymmetric algorithms.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE", global = true)]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Clock leeway for `exp`/`nbf`, in seconds; also added to deny-list TTLs.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 30, global = true)]
    pub jwt_leeway_secs: u64,

    /// Longest token lifetime revokd trusts; caps deny-list TTLs and `exp`.
    #[arg(long, env = "REVOKD_MAX_TOKEN_LIFETIME", default_value = "30d", value_parser = parse_duration, global = true)]
    pub max_token_lifetime: Duration,

    /// Cleanup schedule: 6-field cron with seconds.
    #[arg(
        long,
        env = "REVOKD_CLEANUP_CRON",
        default_value = "0 */10 * * * *",
        global = true
    )]
    pub cleanup_cron: String,

    /// What a check answers when no store can: `closed` (503) or `open` (active).
    #[arg(long, env = "REVOKD_FAIL_MODE", value_enum, default_value_t = FailMode::Closed, global = true)]
    pub fail_mode: FailMode,

    /// How long `?wait=true` and `--wait` wait for a job to be applied.
    #[arg(long, env = "REVOKD_WAIT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub wait_timeout: Duration,

    /// Where checks look first: `replica` (in-process copy of the deny-list,
    /// kept current from a Redis stream) or `redis`.
    #[arg(long, env = "REVOKD_READ_MODE", value_enum, default_value_t = ReadMode::Replica, global = true)]
    pub read_mode: ReadMode,

    /// Oldest proof of being current the replica may answer with; older, and
    /// checks go to Redis/Postgres until it catches up.
    #[arg(long, env = "REVOKD_REPLICA_MAX_LAG", default_value = "1s", value_parser = parse_duration, global = true)]
    pub replica_max_lag: Duration,

    /// Tokens whose verified signature the API keeps (keyed by SHA-256, never
    /// the token), so a token presented again costs a hash instead of a
    /// signature check; `exp`/`nbf` and revocation are still checked on every
    /// request. Memory is bounded at 512 bytes per entry. 0 turns it off.
    #[arg(
        long,
        env = "REVOKD_VERIFY_CACHE_SIZE",
        default_value_t = 65_536,
        global = true
    )]
    pub verify_cache_size: usize,

    /// How long the audit log keeps a request.
    #[arg(long, env = "REVOKD_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration, global = true)]
    pub audit_retention: Duration,

    /// How long finished and set-aside queue jobs are kept before cleanup
    /// vacuums them.
    #[arg(long, env = "REVOKD_JOB_RETENTION", default_value = "1d", value_parser = parse_duration, global = true)]
    pub job_retention: Duration,

    /// Directory of the local spool: revocations accepted while Postgres is
    /// unreachable are appended there (fsync'd) before the answer, and
    /// replayed into Postgres when it returns. Default:
    /// `$XDG_STATE_HOME/revokd/spool`, else `revokd-spool` in the working
    /// directory. One directory per deployment (key prefix).
    #[arg(long, env = "REVOKD_SPOOL_DIR", global = true)]
    pub spool_dir: Option<PathBuf>,

    /// Jobs a worker applies at once, shared by its lanes
    /// ([`crate::worker::LANES`]). By Little's law the drain rate is at most
    /// this over one job's time, and that time is mostly the group commit's
    /// wait for Postgres's disk: 4096 keeps ~25,000 revocations/s with
    /// commits taking 20 ms (256 gave 7,400/s), at no cost with a fast disk.
    #[arg(
        long,
        env = "REVOKD_WORKER_CONCURRENCY",
        default_value_t = 4096,
        global = true
    )]
    pub worker_concurrency: usize,

    /// Longest time to receive a request head: from connecting, and from the
    /// first byte of each later request on a kept-alive connection. Slower,
    /// and the connection is closed without an answer.
    #[arg(long, env = "REVOKD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout, global = true)]
    pub header_timeout: Duration,

    /// Longest time to receive a request body, from the end of its head;
    /// slower, and the answer is 408 and the connection is closed.
    #[arg(long, env = "REVOKD_BODY_TIMEOUT", default_value = "10s", value_parser = parse_timeout, global = true)]
    pub body_timeout: Duration,

    /// How long a kept-alive connection may wait for its next request.
    #[arg(long, env = "REVOKD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout, global = true)]
    pub idle_timeout: Duration,

    /// Most HTTP connections open at once; beyond, new connections wait in
    /// the listen backlog until one closes.
    #[arg(long, env = "REVOKD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_connections: u32,

    /// Requests (`?wait=true`, `--wait`) one process lets wait for their
    /// job at once, all sharing one Redis subscription; beyond it a wait
    /// is answered 429 with `Retry-After`, before anything is recorded.
    #[arg(
        long,
        env = "REVOKD_MAX_WAITERS",
        default_value_t = 1000,
        global = true
    )]
    pub max_waiters: usize,
}

/// Where checks look first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadMode {
    /// The in-process replica, then Redis, then Postgres.
    Replica,
    /// Redis, then Postgres.
    Redis,
}

/// Fail-closed or fail-open when neither Redis nor Postgres answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailMode {
    /// Answer 503 `unavailable`: a possibly revoked token is not let through.
    Closed,
    /// Answer active: availability over safety.
    Open,
}

impl Config {
    /// The verification key settings.
    pub fn key_settings(&self) -> KeySettings {
        KeySettings {
            secret: self.jwt_secret.as_ref().map(|s| s.expose().to_owned()),
            public_key_file: self.jwt_public_key_file.clone(),
            jwks_file: self.jwt_jwks_file.clone(),
            oidc_issuer: self.jwt_oidc_issuer.clone(),
            jwks_url: self.jwt_jwks_url.clone(),
            issuers_file: self.issuers_file.clone(),
            private_key_file: self.jwt_private_key_file.clone(),
            algorithm: self.jwt_algorithm.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_secs: self.jwt_leeway_secs,
        }
    }

    /// The spool directory: `REVOKD_SPOOL_DIR`, else under
    /// `$XDG_STATE_HOME`, else `revokd-spool` in the working directory.
    pub fn spool_dir(&self) -> PathBuf {
        if let Some(dir) = &self.spool_dir {
            return dir.clone();
        }
        match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(state) => PathBuf::from(state).join("revokd").join("spool"),
            None => PathBuf::from("revokd-spool"),
        }
    }

    /// Maximum token lifetime in seconds.
    pub fn max_lifetime_secs(&self) -> i64 {
        i64::try_from(self.max_token_lifetime.as_secs()).unwrap_or(i64::MAX / 4)
    }

    /// A duration in whole seconds as a signed number.
    pub fn secs(d: Duration) -> i64 {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
    }

    /// Leeway in seconds as a signed number.
    pub fn leeway(&self) -> i64 {
        i64::try_from(self.jwt_leeway_secs).unwrap_or(0)
    }
}

/// A string that never prints: secrets and key lists.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Parses `30d`, `15m`, `5s`, `500ms` (humantime), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A duration that must be more than zero (a zero timeout would close
/// every connection at once).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("invalid timeout {s:?}: must be more than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn timeouts_refuse_zero() {
        assert_eq!(parse_timeout("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0s").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::from("hunter2".to_owned())),
            "Secret(***)"
        );
    }
}
