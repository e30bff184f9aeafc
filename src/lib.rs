pub mod cli;
pub mod elf;

use std::process::ExitCode;

pub fn run(_cli: cli::Cli) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}

/// Prints an error chain as `error:` and `Caused by:` lines.
pub fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  Caused by: {cause}");
    }
}
