//! `spilo-build`: the `spilo build` steps alone, built from this directory
//! by the Dockerfile (see Cargo.toml here).

use std::process::ExitCode;

use clap::Parser;

/// Assemble the image from image/spec.toml (the steps of `spilo build`).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    build: spilo_build::BuildArgs,
}

fn main() -> ExitCode {
    match spilo_build::main(&Cli::parse().build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spilo-build: error: {e}");
            ExitCode::FAILURE
        }
    }
}
