//! Command-line arguments: plain data, no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pyshrink",
    version,
    about = "Bundle a Python app into one static executable that runs FROM scratch"
)]
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
    /// Write a Dockerfile (and what it copies) for a `FROM scratch` image of the app.
    Dockerfile(DockerfileArgs),
    /// Write an image archive that `docker load` and `podman load` accept, without a daemon.
    Image(ImageArgs),
}

/// What to bundle and with which interpreter: shared by every command that builds a bundle.
#[derive(Debug, Args, Clone)]
pub struct AppArgs {
    /// The app: a script, a directory with `__main__.py`, or a project directory (with
    /// `pyproject.toml`), installed for the bundle and run through its console script.
    #[arg(
        value_name = "APP",
        required_unless_present_any = ["module", "entry"],
        conflicts_with = "module"
    )]
    pub app: Option<PathBuf>,

    /// Run a module as `python -m MODULE` (found from the current directory and site-packages).
    #[arg(
        short = 'm',
        long = "module",
        value_name = "MODULE",
        conflicts_with = "entry"
    )]
    pub module: Option<String>,

    /// Run this console script ([project.scripts]) of the project directory APP, or without
    /// APP of an installed distribution.
    #[arg(long, value_name = "NAME")]
    pub entry: Option<String>,

    /// Install these requirements for the bundle (pip, into a private directory; the
    /// interpreter's environment is left alone); repeatable.
    #[arg(short = 'r', long = "requirements", value_name = "FILE")]
    pub requirements: Vec<PathBuf>,

    /// Copy a file or directory into the bundle at DEST, relative to the app's directory
    /// [default DEST: the source's name]; repeatable.
    #[arg(long = "include-data", value_name = "SRC[:DEST]")]
    pub include_data: Vec<String>,

    /// Leave out the build host's CA certificates (bundled when the app uses `ssl`).
    #[arg(long = "no-ca-certs")]
    pub no_ca_certs: bool,

    /// Leave out the build host's time zone database (bundled when the app uses `zoneinfo`
    /// and no `tzdata` distribution is installed).
    #[arg(long = "no-tzdata")]
    pub no_tzdata: bool,

    /// The interpreter to bundle [default: $VIRTUAL_ENV/bin/python, else python3 on PATH].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Bundle the whole (pruned) stdlib instead of the modules the app reaches.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "all"])]
    pub stdlib: String,

    /// Also bundle this module (and what it imports); repeatable.
    #[arg(long = "include-module", value_name = "NAME")]
    pub include_module: Vec<String>,

    /// Never bundle this module (a package: nor its submodules), even one the analysis or
    /// `--stdlib all` would add on its own; repeatable. A bundled module that imports it
    /// unconditionally is named in a warning.
    #[arg(long = "exclude-module", value_name = "NAME")]
    pub exclude_module: Vec<String>,

    /// zstd level of the payload (1-22).
    #[arg(long = "compression-level", value_name = "N", default_value_t = 19,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub compression_level: i32,

    /// Where the bundle runs from by default: `disk` extracts once into a cache directory and
    /// reuses it; `memory` writes nothing anywhere (read-only root, no tmpfs) and unpacks into
    /// memory on every start; `auto` uses disk when a usable directory exists, memory otherwise.
    /// `PYSHRINK_RUNTIME` overrides it at run time.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,

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

    /// Why NAME is in the bundle (a module, a library such as `libcrypto.so.3`, or a bundled
    /// file): the chain of imports and library needs from the app to it.
    #[arg(long, value_name = "NAME")]
    pub why: Option<String>,
}

#[derive(Debug, Args)]
pub struct DockerfileArgs {
    #[command(flatten)]
    pub app: AppArgs,

    /// Directory to write the Dockerfile, .dockerignore and the files they copy into.
    #[arg(short, long, value_name = "DIR", default_value = "docker")]
    pub output: PathBuf,

    /// A builder stage on python:X.Y-slim that installs the requirements and runs pyshrink,
    /// then a `FROM scratch` stage, instead of packing a bundle built here.
    #[arg(long)]
    pub multi_stage: bool,

    /// Port the app listens on (EXPOSE); repeatable.
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub app: AppArgs,

    /// Where to write the image archive [default: dist/<name>.tar].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Image name and tag [default: <name>:<bundle hash prefix>].
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,

    /// Port the app listens on (ExposedPorts); repeatable.
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,

    /// Environment variable for the image config, KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Disk,
    Memory,
}

impl From<RuntimeArg> for pyshrink_stub::Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Auto => pyshrink_stub::Runtime::Auto,
            RuntimeArg::Disk => pyshrink_stub::Runtime::Disk,
            RuntimeArg::Memory => pyshrink_stub::Runtime::Memory,
        }
    }
}
