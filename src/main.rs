//! The `revokd` binary: parse, init telemetry, run, exit with the command's code.

use std::process::ExitCode;

use clap::Parser;
use revokd::cli::{Cli, Command, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    revokd::telemetry::init(level);
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("revokd: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
