//! pyshrink: bundle a Python app, its interpreter and every shared library it needs into one
//! static executable.

pub mod bundle;
pub mod cli;
pub mod elf;
pub mod inspect;
pub mod oci;
pub mod payload;
pub mod progress;
pub mod python;
pub mod pyzip;
pub mod stub;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{BundleArgs, Cli, Command};
use crate::progress::Progress;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bundle(args) => bundle_cmd(&args),
        Command::Inspect(args) => inspect_cmd(&args),
        Command::Dockerfile(args) => oci::dockerfile_cmd(&args),
        Command::Image(args) => oci::image_cmd(&args),
    }
}

fn bundle_cmd(args: &BundleArgs) -> Result<ExitCode> {
    if let Some(out) = &args.output {
        if out.is_dir() {
            anyhow::bail!(
                "output `{}` is a directory\n\nhint: pass the path of the file to write, e.g. `-o {}/{}`",
                out.display(),
                out.display(),
                "app"
            );
        }
    }
    let progress = Progress::new(args.app.quiet);
    let built = bundle::build(&args.app, &progress);
    progress.finish();
    let built = built?;
    let output = match &args.output {
        Some(p) => p.clone(),
        None => {
            let dir = PathBuf::from("dist");
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("failed to create `dist`: {e}"))?;
            dir.join(&built.name)
        }
    };
    payload::write_atomic(&output, &built.bytes, 0o755)?;
    if !args.app.quiet {
        for w in &built.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "wrote {} ({:.2} MB, Python {}, {} files, {} libraries)",
            output.display(),
            built.bytes.len() as f64 / 1e6,
            built.python,
            built.files,
            built.libraries
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_cmd(args: &cli::InspectArgs) -> Result<ExitCode> {
    use std::io::Write;
    let mut value = inspect::inspect(&args.bundle)?;
    if let Some(name) = &args.why {
        value = inspect::why(&value, name)?;
    }
    let text = if args.json {
        serde_json::to_string_pretty(&value)? + "\n"
    } else if args.why.is_some() {
        inspect::render_why(&value)
    } else {
        inspect::render(&value, 25)
    };
    // `pyshrink inspect … | head` closes the pipe early: that is success, not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Prints an error chain as `error:` and `Caused by:` lines.
pub fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  Caused by: {cause}");
    }
}
