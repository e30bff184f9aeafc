use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pyshrink::cli::Cli::parse();
    match pyshrink::run(cli) {
        Ok(code) => code,
        Err(err) => {
            pyshrink::report(&err);
            ExitCode::from(1)
        }
    }
}
