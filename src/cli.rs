//! The `revokd` command line: `serve` and the one-shot commands.

use std::{sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use revokd_jobs::{JobMeta, RevokeToken, now_unix};
use serde_json::json;

use crate::{
    app::{Roles, Services, serve},
    config::{Config, parse_duration},
    read::checker::Verdict,
    store::Scope,
    token::Minter,
    write::submit::{SubmitError, Submitted},
};

/// revokd: JWT revocation service — deny-list in Redis, durable record in
/// Postgres, a check API that costs next to nothing.
#[derive(Debug, Parser)]
#[command(name = "revokd", version, about, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments as `Cli::try_parse` does, except that
    /// `--help` shows a setting whose environment value holds a password
    /// (a URL's `user:password@`, or a query value) masked, never as is.
    pub fn try_parse_redacted() -> Result<Self, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = redact_env_values(Self::command());
        let mut matches = command.try_get_matches_from_mut(std::env::args_os())?;
        Self::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// Every argument (of every subcommand) whose environment value would show
/// a secret in `--help`: its value is hidden, and its help ends with the
/// value masked. Settings hidden already (keys, secrets) stay as they are.
fn redact_env_values(command: clap::Command) -> clap::Command {
    let leaky: Vec<(clap::Id, String)> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_env_values_set())
        .filter_map(|arg| {
            let value = std::env::var(arg.get_env()?).ok()?;
            let shown = crate::config::redact::url(&value);
            (shown != value).then(|| (arg.get_id().clone(), shown))
        })
        .collect();
    let mut command = command;
    for (id, shown) in leaky {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let masked = format!("{help} (now {shown})");
            let arg = arg.hide_env_values(true).help(masked);
            match arg.get_long_help().map(ToString::to_string) {
                Some(long) => arg.long_help(format!("{long}\n\nNow {shown}.")),
                None => arg,
            }
        });
    }
    command.mut_subcommands(redact_env_values)
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: API + worker + scheduler by default.
    Serve {
        /// Roles to run, any of api,worker,scheduler.
        #[arg(long, env = "REVOKD_ROLES", default_value = "api,worker,scheduler")]
        roles: String,
    },
    /// Create the database if needed and apply migrations, then exit.
    Migrate,
    /// Revoke one token (pushes a job, as an application would).
    Revoke {
        /// The token itself (its signature is verified, its expiry is not).
        #[arg(
            long,
            env = "REVOKD_TOKEN",
            hide_env_values = true,
            conflicts_with = "jti",
            required_unless_present = "jti"
        )]
        token: Option<String>,
        /// The token's jti, when revoking without the token.
        #[arg(long, env = "REVOKD_JTI", requires = "exp")]
        jti: Option<String>,
        /// The token's subject (with --jti; a token carries its own).
        #[arg(long, env = "REVOKD_SUB")]
        sub: Option<String>,
        /// The token's exp (unix seconds; with --jti).
        #[arg(long, env = "REVOKD_EXP")]
        exp: Option<i64>,
        /// Why (free text).
        #[arg(long, env = "REVOKD_REASON")]
        reason: Option<String>,
        /// Wait until the worker has applied it (up to REVOKD_WAIT_TIMEOUT).
        #[arg(long, env = "REVOKD_WAIT")]
        wait: bool,
    },
    /// Revoke every token of a subject (--sub), or of an issuer (--issuer),
    /// issued before now.
    RevokeAll {
        /// The subject (exactly one of --sub and --issuer).
        #[arg(
            long,
            env = "REVOKD_SUB",
            required_unless_present = "issuer",
            conflicts_with = "issuer"
        )]
        sub: Option<String>,
        /// The issuer: every token whose `iss` claim is this (exactly one
        /// of --sub and --issuer).
        #[arg(long, env = "REVOKD_ISSUER")]
        issuer: Option<String>,
        /// Why (free text).
        #[arg(long, env = "REVOKD_REASON")]
        reason: Option<String>,
        /// Wait until the worker has applied it.
        #[arg(long, env = "REVOKD_WAIT")]
        wait: bool,
    },
    /// Check a token; prints the /v1/check JSON, exits 0 active, 1 inactive.
    Check {
        /// The token.
        #[arg(long, env = "REVOKD_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Delete expired rows, vacuum the queue and restore Redis from Postgres, now.
    Cleanup,
    /// Rebuild the Redis deny-list from Postgres, now.
    Rehydrate,
    /// Print the /v1/stats JSON.
    Stats,
    /// Print a signed token for testing (uses JWT_SECRET or JWT_PRIVATE_KEY_FILE).
    Mint {
        /// Subject.
        #[arg(long, env = "REVOKD_SUB")]
        sub: String,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, env = "REVOKD_TTL", default_value = "15m", value_parser = parse_duration)]
        ttl: Duration,
        /// Leave out the jti claim (the token is then tracked by its SHA-256).
        #[arg(long, env = "REVOKD_NO_JTI")]
        no_jti: bool,
    },
}

/// A command failure: message for stderr and exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

impl Failure {
    fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::input(format!("{e:#}"))
    }
}

/// Runs a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let Cli { config, command } = cli;
    match command {
        Command::Serve { roles } => {
            let roles = Roles::parse(&roles).map_err(Failure::input)?;
            serve(config, roles, crate::app::shutdown::on_signal()).await?;
            Ok(0)
        }
        Command::Migrate => {
            crate::store::pg::prepare(&config.database_url).await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Mint { sub, ttl, no_jti } => {
            if sub.is_empty() {
                return Err(Failure::input("--sub must not be empty"));
            }
            let minter =
                Minter::new(&config.key_settings()).map_err(|e| Failure::input(e.to_string()))?;
            let ttl = i64::try_from(ttl.as_secs()).map_err(|_| Failure::input("ttl too large"))?;
            let token = minter
                .mint(&sub, ttl, !no_jti, now_unix())
                .map_err(|e| Failure::input(e.to_string()))?;
            println!("{token}");
            Ok(0)
        }
        Command::Check { token } => check(config, &token).await,
        Command::Cleanup => {
            let services = store_services(config)?;
            let maintenance = services.maintenance(services.deny_patient.clone());
            let bar = Bar::new();
            let report = maintenance
                .cleanup(now_unix(), &bar)
                .await
                .map_err(|e| Failure::input(e.to_string()))?;
            bar.finish();
            println!("{}", json!(report));
            Ok(0)
        }
        Command::Rehydrate => {
            let services = store_services(config)?;
            let maintenance = services.maintenance(services.deny_patient.clone());
            let bar = Bar::new();
            let report = maintenance
                .rebuild(now_unix(), &bar)
                .await
                .map_err(|e| Failure::input(e.to_string()))?;
            bar.finish();
            println!("{}", json!(report));
            Ok(0)
        }
        Command::Stats => {
            let services = store_services(config)?;
            let queue = revokd_jobs::queue_config(&services.config.key_prefix);
            let stats =
                crate::http::stats::collect(&services.deny_fast, &queue, &services.db).await;
            // Nothing answered: there are no figures to print, only nulls.
            if ["redis", "postgres", "queue"]
                .iter()
                .all(|store| stats[store].is_null())
            {
                return Err(Failure::input(
                    "no store can answer (Redis and Postgres unreachable)",
                ));
            }
            println!("{stats}");
            Ok(0)
        }
        Command::Revoke {
            token,
            jti,
            sub,
            exp,
            reason,
            wait,
        } => {
            let services = if token.is_some() {
                Services::build(config)?
            } else {
                store_services(config)?
            };
            let job = match token {
                Some(token) => {
                    load_keys(&services).await?;
                    let (claims, _) = services
                        .verifier
                        .verify_signature_latest(&token)
                        .await
                        .map_err(|r| {
                            Failure::input(format!("invalid token: {}", r.reason().as_str()))
                        })?;
                    RevokeToken::new(claims.token_id, claims.subject_id, claims.exp)
                }
                None => {
                    let jti =
                        jti.ok_or_else(|| Failure::input("give --token, or --jti with --exp"))?;
                    if jti.is_empty() {
                        return Err(Failure::input("--jti must not be empty"));
                    }
                    let exp = exp.ok_or_else(|| Failure::input("--exp is required with --jti"))?;
                    if sub.as_deref() == Some("") {
                        return Err(Failure::input("--sub must not be empty"));
                    }
                    // The ids a check computes for a token with these claims.
                    RevokeToken::new(
                        revokd_jobs::jti_id(&jti),
                        sub.as_deref().map(revokd_jobs::subject_id),
                        exp,
                    )
                }
            };
            let job = RevokeToken {
                reason,
                meta: job.meta.clone().by("cli"),
                ..job
            };
            let token_id = job.token_id.clone();
            let job_id = job.meta.job_id.clone();
            let submitter = cli_submitter(&services).await;
            report(
                submitter.revoke(job, wait).await,
                &job_id,
                services.config.wait_timeout,
                services.spool.dir(),
            )?;
            println!("{}", json!({ "job_id": job_id, "token_id": token_id }));
            Ok(0)
        }
        Command::RevokeAll {
            sub,
            issuer,
            reason,
            wait,
        } => {
            let (scope, id) = match (sub, issuer) {
                (Some(sub), None) => (Scope::Subject, sub),
                (None, Some(iss)) => (Scope::Issuer, iss),
                _ => return Err(Failure::input("give exactly one of --sub and --issuer")),
            };
            if id.is_empty() {
                let flag = if scope == Scope::Subject {
                    "--sub"
                } else {
                    "--issuer"
                };
                return Err(Failure::input(format!("{flag} must not be empty")));
            }
            // As the API refuses it (`unknown_issuer`): an issuer the
            // configuration does not trust has its tokens refused already,
            // and a near miss (`https://idp/` for `https://idp`) would match
            // nothing. Without key settings there is nothing to compare with.
            if scope == Scope::Issuer
                && matches!(
                    crate::token::trusts_issuer(&config.key_settings(), &id),
                    Ok(false)
                )
            {
                return Err(Failure::input(format!(
                    "no configured issuer has the iss {id:?} (compare it with JWT_ISSUER or the issuers file, character for character): its tokens are refused already"
                )));
            }
            let (not_before, meta) = (now_unix(), JobMeta::now().by("cli"));
            let job = crate::write::watermark::job(scope, &id, not_before, reason, meta);
            let services = store_services(config)?;
            let job_id = job.job_id().unwrap_or_default().to_owned();
            let submitter = cli_submitter(&services).await;
            report(
                submitter.job(job, wait).await,
                &job_id,
                services.config.wait_timeout,
                services.spool.dir(),
            )?;
            println!("{}", json!({ "job_id": job_id, "not_before": not_before }));
            Ok(0)
        }
    }
}

/// Reports a submission: exit 0 once durable and queued or applied (or,
/// the queue unreachable, durable in Postgres or the local spool — said on
/// stderr).
fn report(
    submitted: Result<Submitted, SubmitError>,
    job_id: &str,
    timeout: Duration,
    spool_dir: &std::path::Path,
) -> Result<(), Failure> {
    match submitted.map_err(|e| Failure::input(e.to_string()))? {
        Submitted::Queued | Submitted::Applied => Ok(()),
        Submitted::Degraded => {
            eprintln!(
                "revokd: queue unreachable; revocation recorded in Postgres (degraded), Redis gets it once it takes writes"
            );
            Ok(())
        }
        Submitted::Spooled => {
            eprintln!(
                "revokd: Postgres and the queue unreachable; revocation kept in the local spool {} until a revokd process with that REVOKD_SPOOL_DIR replays it",
                spool_dir.display()
            );
            Ok(())
        }
        Submitted::TimedOut => Err(Failure::input(format!(
            "job {job_id} recorded and queued but not applied within {timeout:?}"
        ))),
    }
}

/// The CLI's write path; spooled revocations left by earlier runs are
/// replayed first when Postgres answers.
async fn cli_submitter(services: &Services) -> crate::write::submit::Submitter {
    let checker = Arc::new(services.checker());
    let replay = crate::write::submit::replay_spool(
        &services.spool,
        &services.db,
        Some(&checker),
        services.ttl_policy(),
    );
    if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(3), replay).await {
        tracing::debug!(%error, "spool not replayed");
    }
    services.submitter(checker)
}

/// Services for commands that verify no token (revoke by jti, revoke-all,
/// cleanup, rehydrate, stats): they must work without a verification key,
/// and without asking an identity provider for one, so a random one stands
/// in when no local key is configured. It verifies nothing.
fn store_services(mut config: Config) -> anyhow::Result<Services> {
    let has_local_key = config.jwt_secret.is_some()
        || config.jwt_public_key_file.is_some()
        || config.jwt_jwks_file.is_some();
    if !has_local_key {
        config.jwt_secret = Some(uuid::Uuid::new_v4().simple().to_string().into());
        config.jwt_algorithm = None;
        config.jwt_oidc_issuer = None;
        config.jwt_jwks_url = None;
        config.issuers_file = None;
        config.jwt_issuer = None;
    }
    Services::build(config)
}

/// A one-shot command cannot wait for the background refresh: fetches an
/// identity provider's keys now, and says why if they cannot be.
async fn load_keys(services: &Services) -> Result<(), Failure> {
    services
        .verifier
        .load_now()
        .await
        .map_err(|error| Failure::input(format!("cannot load the issuer's keys: {error}")))
}

async fn check(config: Config, token: &str) -> Result<u8, Failure> {
    let services = Services::build(config)?;
    // A one-shot command cannot wait for the background refresh: fetch an
    // identity provider's keys now, and say why if they cannot be.
    if let Err(error) = services.verifier.load_now().await {
        return Err(Failure::input(format!(
            "cannot load the issuer's keys: {error}"
        )));
    }
    let checker = services.checker();
    let verdict = checker.check(token, now_unix()).await;
    let (body, code) = match verdict {
        Verdict::Active(t) => (
            json!({ "active": true, "sub": t.sub, "jti": t.jti, "token_id": t.token_id, "iat": t.iat, "exp": t.exp }),
            0,
        ),
        Verdict::Inactive(reason) => (json!({ "active": false, "reason": reason.as_str() }), 1),
        Verdict::Unavailable => {
            println!("{}", json!({ "active": false, "reason": "unavailable" }));
            return Err(Failure::input(
                "no store can answer (Redis and Postgres unreachable)",
            ));
        }
        Verdict::KeysUnavailable => {
            println!(
                "{}",
                json!({ "active": false, "reason": "keys_unavailable" })
            );
            return Err(Failure::input(
                "the token issuer's keys could not be loaded",
            ));
        }
    };
    println!("{body}");
    Ok(code)
}

/// A progress bar on stderr when it is a terminal; silent otherwise (the
/// summary on stdout is the plain report).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self(
            std::io::stderr()
                .is_terminal()
                .then(indicatif::ProgressBar::no_length),
        )
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl crate::worker::maintenance::Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        if let Some(bar) = &self.0 {
            bar.reset();
            match total {
                Some(total) => {
                    bar.set_length(total);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:28} {wide_bar} {pos}/{len} ({eta})",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                }
                None => {
                    bar.unset_length();
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{msg:28} {spinner} {pos}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                }
            }
            bar.set_message(name.to_owned());
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}
