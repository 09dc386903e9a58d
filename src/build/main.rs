//! `spilo-build`: the image's build steps, run by the Dockerfile's rootfs
//! stage (see lib.rs).

use std::process::ExitCode;

use clap::Parser;

/// Assemble the image from image/spec.toml: install → slim → [compress] →
/// manifest.
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
