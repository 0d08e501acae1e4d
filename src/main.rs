//! The `readiness` binary: parse the command line and carry it out (see `readiness::cli`).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    readiness::cli::run(readiness::cli::Cli::parse())
}
