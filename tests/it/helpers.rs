//! The harness (the `testkit` crate), under the name the test modules use,
//! and what only this package's tests can do: run its binary.

pub use testkit::*;

/// `revokd serve --roles <roles>` as a process of its own, with the write
/// key `test-key`, the deployment's spool directory and `extra` options;
/// its log (warnings and up) goes to `log` when given.
pub fn serve(
    prefix: &str,
    redis: &str,
    db_url: &str,
    port: u16,
    roles: &str,
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> Process {
    let bin = env!("CARGO_BIN_EXE_revokd");
    let mut command = revokd_command(bin, prefix, redis, db_url, port);
    command
        .args(extra)
        .args(["serve", "--roles", roles])
        .stderr(log_to(log));
    Process::spawn(&mut command)
}
