//! The report of `bench/run.sh`: reads what the run left in its output
//! directory (see `input.rs`) and prints the table with the targets (see
//! `table.rs`). Exit code 0 whether or not the targets are met; 1 when the
//! directory cannot be read.
//!
//! ```text
//! cargo run --release --example bench_report -- target/bench/<timestamp>
//! ```
//!
//! No `bench` feature needed, and built as a test too, so `cargo test` runs
//! the unit tests of the parsing and the table (cheap: std, serde_json).

mod input;
mod table;

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: bench_report <output directory of bench/run.sh>");
        return ExitCode::from(2);
    };
    match input::Values::read_dir(&dir) {
        Ok(values) => {
            print!("{}", table::render(&values));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench_report: {error:#}");
            ExitCode::FAILURE
        }
    }
}
