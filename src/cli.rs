//! Command-line arguments: plain data, no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "pyshrink", version, about = "Bundle a Python app into one static executable that runs FROM scratch")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bundle an app into one executable.
    Bundle(BundleArgs),
    /// Show what is inside a bundle: interpreter, entry point, files by size.
    Inspect(InspectArgs),
}

/// What to bundle and with which interpreter: shared by every command that builds a bundle.
#[derive(Debug, Args, Clone)]
pub struct AppArgs {
    /// The app: a script, or a directory with `__main__.py`.
    #[arg(value_name = "APP", required_unless_present = "module", conflicts_with = "module")]
    pub app: Option<PathBuf>,

    /// Run a module as `python -m MODULE` (found from the current directory and site-packages).
    #[arg(short = 'm', long = "module", value_name = "MODULE")]
    pub module: Option<String>,

    /// The interpreter to bundle [default: $VIRTUAL_ENV/bin/python, else python3 on PATH].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Bundle the whole (pruned) stdlib instead of the modules the app reaches.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "all"])]
    pub stdlib: String,

    /// Also bundle this module (and what it imports); repeatable.
    #[arg(long = "include-module", value_name = "NAME")]
    pub include_module: Vec<String>,

    /// Never bundle this module; repeatable.
    #[arg(long = "exclude-module", value_name = "NAME")]
    pub exclude_module: Vec<String>,

    /// zstd level of the payload (1-22).
    #[arg(long = "compression-level", value_name = "N", default_value_t = 19,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub compression_level: i32,

    /// Use this launcher instead of the embedded one.
    #[arg(long, value_name = "PATH")]
    pub stub: Option<PathBuf>,

    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub app: AppArgs,

    /// Where to write the executable [default: dist/<name>].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle to look into.
    pub bundle: PathBuf,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
