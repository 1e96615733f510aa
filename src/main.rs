//! The `revokd` binary: parse, init telemetry, run, exit with the command's code.

use std::process::ExitCode;

use clap::error::ErrorKind;
use revokd::cli::{Cli, Command, run};

/// mimalloc: the check path allocates a few small buffers per request
/// (hyper's, the router's), which glibc's malloc serves markedly slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse_redacted() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("revokd: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // One-shot commands speak in one line on failure: logs only on request.
    let level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "off"
    };
    revokd::app::telemetry::init(level);
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("revokd: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// clap's message without its usage block, on one line.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}
